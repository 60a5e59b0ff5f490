"""The optimisers the book trains with, written out (chapter 3).

Each optimiser updates a list of tensors in place from their ``.grad``, with the same update rule as
its ``torch.optim`` counterpart (``tests/test_optim.py`` compares them step by step):

- :class:`SGD`: ``b_t = mu b_{t-1} + g_t`` (``b_1 = g_1``), ``theta_t = theta_{t-1} - lr b_t``;
- :class:`Adam`: ``m_t = beta1 m_{t-1} + (1 - beta1) g_t``, ``v_t = beta2 v_{t-1} + (1 - beta2) g_t^2``,
  ``m_hat = m_t / (1 - beta1^t)``, ``v_hat = v_t / (1 - beta2^t)``,
  ``theta_t = theta_{t-1} - lr m_hat / (sqrt(v_hat) + eps)``; its ``weight_decay`` is L2 in the gradient
  (``g_t <- g_t + lambda theta_{t-1}``), so Adam rescales it like the rest of the gradient;
- :class:`AdamW`: the same, with the weight decay *decoupled*: ``theta <- theta (1 - lr lambda)`` before
  the Adam step, never divided by ``sqrt(v_hat)``;
- :func:`warmup_cosine_lr`: linear warm-up then cosine decay, the schedule of ``llmcourse.train.lr_at``.

    >>> import torch
    >>> w = torch.tensor([1.0], requires_grad=True)
    >>> opt = Adam([w], lr=0.1)
    >>> (3 * w).sum().backward(); opt.step()
    >>> round(w.item(), 4)          # step 1: m_hat / sqrt(v_hat) = g / |g|, a step of lr
    0.9
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = ["SGD", "Adam", "AdamW", "warmup_cosine_lr"]


def _check_params(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(params, torch.Tensor):
        raise TypeError("params must be a list of tensors, not a single tensor (wrap it: [w])")
    params = list(params)
    if not params:
        raise ValueError("params is empty; give the optimiser at least one tensor")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"params[{i}] must be a floating-point tensor, got dtype {p.dtype}")
    return params


def _check_number(name: str, value: float, low: float, high: float | None = None, open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if value < low or (high is not None and (value >= high if open_high else value > high)):
        bound = "" if high is None else (f" and < {high}" if open_high else f" and <= {high}")
        raise ValueError(f"{name} must be >= {low}{bound}, got {value}")
    return value


class _Optimizer:
    """Shared parts: the parameter list, ``zero_grad`` and the step counter ``t``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float):
        self.params = _check_params(params)
        self.lr = _check_number("lr", lr, 0.0)
        self.weight_decay = _check_number("weight_decay", weight_decay, 0.0)
        self.t = 0

    def zero_grad(self) -> None:
        # like torch's default (set_to_none=True): the next backward() writes fresh gradients
        for p in self.params:
            p.grad = None


class SGD(_Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum, as ``torch.optim.SGD(momentum=mu)``.

    ``b_t = mu b_{t-1} + g_t`` with ``b_1 = g_1``; ``theta_t = theta_{t-1} - lr b_t``. ``momentum=0`` is
    plain gradient descent. ``weight_decay`` adds ``lambda theta`` to the gradient (L2).
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = _check_number("momentum", momentum, 0.0, 1.0, open_high=True)
        self.buffers: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            g = g + self.weight_decay * p if self.weight_decay else g
            if self.momentum:
                b = self.buffers.get(i)
                b = g.clone() if b is None else self.momentum * b + g   # the velocity
                self.buffers[i] = b
                g = b
            p -= self.lr * g


class Adam(_Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction, as ``torch.optim.Adam``.

    ``weight_decay`` is L2 regularisation *in the gradient*: ``g_t <- g_t + lambda theta``; it then goes
    through ``m`` and ``v`` like the loss's gradient, so large-gradient weights are decayed less.
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _check_number("beta1", betas[0], 0.0, 1.0, open_high=True)
        self.beta2 = _check_number("beta2", betas[1], 0.0, 1.0, open_high=True)
        self.eps = _check_number("eps", eps, 0.0)
        self.m = [torch.zeros_like(p) for p in self.params]   # first moment (mean of g)
        self.v = [torch.zeros_like(p) for p in self.params]   # second moment (mean of g^2)

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2, t = self.beta1, self.beta2, self.t
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                if self.decoupled:
                    p.mul_(1 - self.lr * self.weight_decay)     # AdamW: shrink the weight directly
                else:
                    g = g + self.weight_decay * p              # Adam: L2 term joins the gradient
            self.m[i].mul_(b1).add_(g, alpha=1 - b1)
            self.v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = self.m[i] / (1 - b1 ** t)                  # both start at 0: undo the bias towards 0
            v_hat = self.v[i] / (1 - b2 ** t)
            p -= self.lr * m_hat / (v_hat.sqrt() + self.eps)


class AdamW(Adam):
    """AdamW (Loshchilov and Hutter, 2019), as ``torch.optim.AdamW``: decoupled weight decay,
    ``theta <- theta (1 - lr lambda)``, then the Adam step on the loss's gradient alone."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def warmup_cosine_lr(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate of update ``step`` (0-based): ``lr (step + 1) / warmup_steps`` during warm-up, then
    ``min_lr + (lr - min_lr)(1 + cos(pi p)) / 2`` with ``p = (step - warmup_steps) / (max_steps -
    warmup_steps)``; ``min_lr`` from ``max_steps`` on. The same numbers as ``llmcourse.train.lr_at``."""
    for name, value in (("step", step), ("warmup_steps", warmup_steps), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    lr = _check_number("lr", lr, 0.0)
    min_lr = _check_number("min_lr", min_lr, 0.0)
    if min_lr > lr:
        raise ValueError(f"min_lr ({min_lr}) must not exceed lr ({lr})")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if max_steps <= warmup_steps or step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
