"""Files that survive a crash and refuse to load when wrong: an atomic ``torch.save`` and a checked
``torch.load(weights_only=True)``, shared by training checkpoints and shipped weights."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import torch


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
                       corrupt_hint: str, outdated_hint: str | None = None) -> dict:
    """``torch.load(path, weights_only=True)`` of a dict written by llmcourse, with clear errors: no file
    (``FileNotFoundError`` + ``missing_hint``), unreadable bytes (``CheckpointError`` + ``corrupt_hint``),
    another ``format`` tag, or missing keys. ``kind`` names the file in the messages. With
    ``outdated_hint``, a file in another version of the same format (``name/1`` for ``name/2``) is
    refused with that hint, as a file to rebuild rather than a foreign one."""
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
        if outdated_hint is not None and _same_format_family(found, fmt):
            raise CheckpointError(f"{kind} {path!r} is in format {found}, which this code no longer reads "
                                  f"(it reads {fmt}). {outdated_hint}")
        raise CheckpointError(f"{kind} {path!r} is not a {fmt} file (found {found!r})")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{kind} {path!r} lacks {missing}; it is incomplete")
    return state


def _same_format_family(found, fmt: str) -> bool:
    """Whether tag ``found`` is another version of ``fmt`` (``llmcourse.pretrained/1`` vs ``.../2``)."""
    family = fmt.rpartition("/")[0]
    return bool(family) and isinstance(found, str) and found.rpartition("/")[0] == family


def tensor_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A SHA-256 of a dict of tensors that changes with any name, dtype, shape or bit of a value.

    Canonical, so the same tensors hash the same whatever their dict order, device, strides or the
    zip layout of the file they came from: the names in sorted order, and for each one a JSON line
    ``[name, dtype, shape]`` followed by the raw bytes of its values in row-major order (the CPU's
    byte order, little-endian on x86 and ARM). The line fixes how many bytes follow, so no two
    different dicts feed the hash the same stream."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode() + b"\n")
        # a flat view as bytes: works for every dtype numpy lacks (bfloat16) and for 0-d tensors
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
