"""Seeds, devices and presets: the three things every chapter sets up first."""
from __future__ import annotations

import os
import random
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
