"""Input checks shared by the Transformer models: a clear error for token ids a model cannot take."""
from __future__ import annotations

import torch


def is_compiling() -> bool:
    """True inside ``torch.compile`` tracing, where data-dependent checks (``.item()``) would break the graph."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def check_token_ids(ids, name: str, max_len: int, max_len_name: str, hint: str, vocab_size: int) -> None:
    """``ids`` must be an integer (batch, time) tensor, 1 ≤ time ≤ ``max_len``, ids in ``[0, vocab_size)``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype not in (torch.long, torch.int32):
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(
            f"{name} must have shape (batch, time), got {ids.dim()}-D shape {tuple(ids.shape)}"
            + (f"; use {name}.unsqueeze(0) for a single sequence" if ids.dim() == 1 else "")
        )
    T = ids.size(1)
    if T == 0:
        raise ValueError(f"{name} is empty along time: give at least one token per sequence")
    if T > max_len:
        raise ValueError(f"sequence length {T} exceeds {max_len_name} {max_len}; {hint}")
    if not is_compiling():  # data-dependent check: skipped under torch.compile
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = hi if hi >= vocab_size else lo
            raise ValueError(f"token id {bad} is out of range for vocab_size {vocab_size}")
