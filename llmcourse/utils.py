"""Seeds, devices and presets: the three things every chapter sets up first (and an atomic save)."""
from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

PRESET_ENV = "LLMCOURSE_PRESET"


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so a chapter gives the same numbers on every run."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` forces one ("cpu", "cuda", "mps") and fails clearly if it is not available.
    """
    if prefer is not None:
        if prefer not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unknown device {prefer!r}; expected 'cpu', 'cuda' or 'mps'")
        if prefer == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
        if prefer == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeError("device 'mps' requested but MPS is not available on this machine")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Preset:
    """How much compute a chapter spends. ``small`` runs on a laptop CPU in minutes, ``full`` wants a GPU.

    ``scale`` multiplies training steps and data sizes; chapters read the fields they need.
    """

    name: str
    scale: float
    description: str
    options: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "small": Preset("small", 1.0, "default: each chapter runs in about 90 s on 2 CPU cores"),
    "full": Preset("full", 10.0, "for a GPU: more data, bigger models, longer training"),
}


def get_preset(name: str | None = None) -> Preset:
    """Return the preset named by ``name``, else by ``$LLMCOURSE_PRESET``, else ``small``."""
    chosen = name if name is not None else os.environ.get(PRESET_ENV, "small")
    chosen = chosen.strip().lower()
    if chosen not in PRESETS:
        source = "argument" if name is not None else f"${PRESET_ENV}"
        raise ValueError(
            f"unknown preset {chosen!r} (from {source}); expected one of {sorted(PRESETS)}"
        )
    return PRESETS[chosen]


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` atomically: to a temporary file in the same folder, then ``os.replace``,
    so a crash mid-write leaves the previous file intact and a reader never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be read or does not fit the model it is loaded into."""


def checked_torch_load(path: str, fmt: str, required: tuple[str, ...], kind: str, missing_hint: str,
                       corrupt_hint: str) -> dict:
    """``torch.load(path, weights_only=True)`` of a dict written by llmcourse, with clear errors: no file
    (``FileNotFoundError`` + ``missing_hint``), unreadable bytes (``CheckpointError`` + ``corrupt_hint``),
    another ``format`` tag, or missing keys. ``kind`` names the file in the messages."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {kind} at {path!r}; {missing_hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it ...
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{kind} {path!r} cannot be read: it is corrupt, truncated or not written by "
                              f"llmcourse ({type(e).__name__}: {first_line}). {corrupt_hint}") from e
    if not isinstance(state, dict) or state.get("format") != fmt:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{kind} {path!r} is not a {fmt} file (found {found!r})")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{kind} {path!r} lacks {missing}; it is incomplete")
    return state
