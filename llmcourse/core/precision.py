"""Mixed precision (混合精度) chosen per device, shared by ``llmcourse.train`` and the throughput
measurements of chapter 10, so that both always compute in the same number format.

* :func:`amp_dtype`: the 16-bit type that ``TrainConfig(amp=True)`` trains in on a device — bfloat16
  on CUDA GPUs with native bf16, float16 on older CUDA GPUs (Colab's T4), ``None`` (float32) elsewhere.
* :func:`autocast`: the matching ``torch.autocast`` context (or one that does nothing).
* :func:`grad_scaler`: a ``torch.amp.GradScaler`` for float16, ``None`` for the other types.
"""
from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = (torch.bfloat16, torch.float16)


def amp_dtype(device) -> torch.dtype | None:
    """The autocast type for mixed-precision training on ``device``, or ``None`` for float32.

    bfloat16 on CUDA GPUs of compute capability 8 or more (Ampere and newer) and on ROCm; float16 on
    older CUDA GPUs (Volta, Turing: V100, T4), which have float16 but no bfloat16 tensor cores; ``None``
    on CPUs, Apple's MPS and everything else, where the book trains in float32. The capability is read
    from the device itself, not from ``torch.cuda.is_bf16_supported()``: that answers True on a T4 too
    by default, because bf16 can be *emulated* there — slowly, in float32 arithmetic.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if torch.version.hip or torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.bfloat16
    return torch.float16


def check_amp_dtype(dtype) -> torch.dtype | None:
    """``dtype`` if it is ``None``, ``torch.bfloat16`` or ``torch.float16``; else a clear error."""
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"an autocast type must be None, torch.bfloat16 or torch.float16, got {type(dtype).__name__}")
    if dtype is not None and dtype not in AMP_DTYPES:
        raise ValueError(f"an autocast type must be None, torch.bfloat16 or torch.float16, got {dtype}")
    return dtype


def autocast(dtype: torch.dtype | None, device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``'s type with ``dtype``; for ``None`` a context that changes nothing."""
    if check_amp_dtype(dtype) is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(dtype: torch.dtype | None, device) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` when ``dtype`` is float16, else ``None``.

    float16's largest value is 65504 and its smallest normal one about 6e-5: small gradients of a
    float16 backward pass round to zero. The scaler multiplies the loss by a large factor before
    backward and divides the gradients by it before the update; when a gradient overflows to inf it
    skips that update and halves the factor. bfloat16 keeps float32's exponent range and needs none.
    """
    if check_amp_dtype(dtype) != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


__all__ = ["AMP_DTYPES", "amp_dtype", "autocast", "check_amp_dtype", "grad_scaler"]
