"""The one validation layer: every model, batcher, decoder and metric checks its inputs here.

A silent wrong result is the worst bug a teaching library can have, so each check names what was wrong
and what is expected. The checks that read tensor *values* (the id range, "no target in this batch")
run only for tensors on the CPU: on a GPU they would cost a host synchronisation per forward pass
(CUDA's own device-side assert still catches an id out of range), and under ``torch.compile`` they
would break the graph. Shape and dtype checks read no values and always run.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from contextlib import contextmanager

import torch

IGNORE_INDEX = -100  # a target that the loss skips: F.cross_entropy's default ignore_index
INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)


def is_compiling() -> bool:
    """True inside ``torch.compile`` tracing, where data-dependent checks (``.item()``) would break the graph."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def reads_values(t: torch.Tensor) -> bool:
    """Whether a check may read ``t``'s values: on the CPU and outside ``torch.compile`` (see the module doc)."""
    return t.device.type == "cpu" and not is_compiling()


# ---- plain values -------------------------------------------------------------------------------
def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integer (Python or NumPy, not bool) ``>= minimum``, returned as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_finite(name: str, value, minimum: float | None = None, strict: bool = False) -> float:
    """A finite real number (not bool), ``>= minimum`` (``> minimum`` when ``strict``), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


def check_generator(generator, purpose: str = "batches") -> torch.Generator:
    """A ``torch.Generator``: all randomness of a batcher or sampler comes from one the caller seeded."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"pass a seeded torch.Generator (e.g. torch.Generator().manual_seed(0)) so the {purpose} "
                        f"are reproducible; got {type(generator).__name__}")
    return generator


def check_texts(texts: Iterable[str], name: str = "texts", allow_empty_strings: bool = True) -> list[str]:
    """A non-empty list of str (not a single str), returned as a list."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of str, got a single str; wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be an iterable of str, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError(f"{name} is empty; expected at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name} must hold str, but item {i} is {type(text).__name__}")
    if not allow_empty_strings and not any(texts):
        raise ValueError(f"{name} holds only empty strings; pass at least one non-empty text")
    return texts


# ---- token ids and targets ----------------------------------------------------------------------
def check_token_ids(ids, vocab_size: int, name: str = "idx", max_len: int | None = None,
                    max_len_hint: str = "", max_len_name: str = "block_size") -> None:
    """``ids`` must be an integer (batch, time) tensor with batch ≥ 1, 1 ≤ time ≤ ``max_len``, values in
    ``[0, vocab_size)``. Float ids are refused: truncating 3.7 to 3 would be a silent wrong result."""
    _check_id_tensor(ids, name)
    B, T = ids.shape
    if B == 0:
        raise ValueError(f"{name} has no rows (shape {tuple(ids.shape)}): give at least one sequence")
    if T == 0:
        raise ValueError(f"{name} is empty along time: give at least one token per sequence")
    if max_len is not None and T > max_len:
        raise ValueError(f"sequence length {T} exceeds {max_len_name} {max_len}; {max_len_hint}".rstrip("; "))
    if reads_values(ids):
        lo, hi = torch.aminmax(ids)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} holds ids in [{lo}, {hi}] but the vocabulary has {vocab_size} ids "
                             f"(0 .. {vocab_size - 1})")


def check_targets(targets, vocab_size: int, shape: tuple | torch.Size | None = None,
                  name: str = "targets", unit: str = "token ids in the vocabulary") -> None:
    """Targets of a cross-entropy loss: integer ids in ``[0, vocab_size)`` or ``IGNORE_INDEX``, the
    ``shape`` of the inputs when given, and at least one position that is not ignored (otherwise the
    mean loss is 0/0: "no target in this batch" is its own error, not a NaN)."""
    _check_id_tensor(targets, name, dims=None)
    if shape is not None and tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{name} must have the same shape as the inputs {tuple(shape)}, got {tuple(targets.shape)}")
    if targets.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(targets.shape)}): give at least one target")
    if reads_values(targets):
        kept = targets != IGNORE_INDEX
        if not bool(kept.any()):
            raise ValueError(f"no target in this batch: every position of {name} is IGNORE_INDEX ({IGNORE_INDEX}), "
                             "so there is nothing to predict (all padding?); drop the batch or check the masking")
        lo, hi = torch.aminmax(targets[kept])
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} holds ids in [{lo}, {hi}] but there are {vocab_size} {unit} "
                             f"(0 .. {vocab_size - 1}); use IGNORE_INDEX ({IGNORE_INDEX}) for positions to skip")


def id_tensor(ids, name: str = "ids") -> torch.Tensor:
    """A list (or tensor) of token ids as a 1-D ``torch.long`` tensor; floats, bools and negative ids are
    refused rather than truncated (``torch.tensor([1.5], dtype=torch.long)`` would silently give 1)."""
    t = ids if isinstance(ids, torch.Tensor) else torch.tensor(list(ids))
    if t.numel() == 0:
        return t.long()
    if t.dtype not in INTEGER_DTYPES:
        raise TypeError(f"{name} must hold integer token ids, got {t.dtype} values such as "
                        f"{t.flatten()[:4].tolist()}; ids are never rounded")
    if reads_values(t) and int(t.min()) < 0:
        raise ValueError(f"{name} must hold token ids >= 0, found {int(t.min())}")
    return t.long()


def _check_id_tensor(t, name: str, dims: int | None = 2) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer token ids, got {type(t).__name__}")
    if t.dtype not in INTEGER_DTYPES:
        kind = "floats" if t.is_floating_point() else f"dtype {t.dtype}"
        raise TypeError(f"{name} must hold integer token ids (torch.long), got {kind} ({t.dtype}); "
                        "ids are never rounded: convert them with .long() only if they are whole numbers")
    if dims is not None and t.dim() != dims:
        raise ValueError(f"{name} must have shape (batch, time), got {t.dim()}-D shape {tuple(t.shape)}"
                         + (f"; use {name}.unsqueeze(0) for a single sequence" if t.dim() == 1 else ""))


def check_logits(logits: torch.Tensor, where: str = "the model") -> None:
    """Logits a decoder chooses from must be finite where they are not ``-inf`` (a banned token):
    NaN or ``+inf`` means the model is broken, and argmax or sampling would return a meaningless id."""
    if reads_values(logits) and not bool(torch.isfinite(logits).logical_or(logits == -math.inf).all()):
        raise ValueError(f"{where} returned NaN or +inf logits: decoding from them would pick arbitrary tokens. "
                         "Check the model's weights (torch.isfinite) and its last training run")


# ---- models -------------------------------------------------------------------------------------
def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: torch.nn.Module, no_grad: bool = True):
    """Run the body with ``model.eval()`` (and ``torch.no_grad()``), then restore the model's previous
    mode, also when the body raises."""
    was_training = model.training
    model.eval()
    try:
        if no_grad:
            with torch.no_grad():
                yield model
        else:
            yield model
    finally:
        model.train(was_training)
