"""The mathematics of a language model, as small reference functions (chapter 3).

A language model gives every sequence ``x = (x_1, ..., x_T)`` the probability
``p(x) = prod_t p(x_t | x_<t)`` (chain rule); each factor is a softmax over the vocabulary; training
minimises the cross-entropy (negative log-likelihood) of the observed tokens; perplexity is
``exp(mean NLL)``; the KL divergence measures how far one distribution is from another.

Every function accepts NumPy arrays (or nested lists, turned into float64 arrays) and torch tensors,
and returns the same kind it was given; torch inputs keep their autograd graph, so the functions can
be used inside a training loop. Probabilities are checked (non-negative, summing to 1), and bad input
raises a ``ValueError``/``TypeError`` that says what was wrong and what is expected.

    >>> cross_entropy([0.1, 0.2, 0.5, 0.2], 2)      # the articles' example: -log 0.5
    0.6931471805599453
"""
from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]
REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------------------------
# helpers: one code path for NumPy and torch
# ----------------------------------------------------------------------------------------------
def _as_float_array(x: Any, name: str) -> Array:
    """``x`` as a floating tensor (torch stays torch) or a float64 NumPy array."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name} must be a real-valued tensor, got dtype {x.dtype}")
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a NumPy array, a torch tensor or a list of numbers, got {type(x).__name__}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numbers (a NumPy array, tensor or list), got {type(x).__name__}: {err}") from None
    return arr


def _check_nonempty(x: Array, name: str) -> None:
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (a vector of scores or probabilities), got a scalar")
    if 0 in tuple(x.shape):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected at least one entry")


def _np(x: Array) -> np.ndarray:
    """A NumPy view for checks (never for results: torch results keep their graph)."""
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else x


def _default_atol(x: Array) -> float:
    # float32 sums of a few thousand probabilities are off by ~1e-6; float64 by ~1e-15.
    if isinstance(x, torch.Tensor) and x.dtype != torch.float64:
        return 1e-4
    return 1e-6


def check_distribution(p: Any, dim: int = -1, atol: float | None = None, name: str = "p") -> Array:
    """Return ``p`` as an array after checking it is a probability distribution along ``dim``.

    Entries must be finite and ``>= 0`` and each slice along ``dim`` must sum to 1 (within ``atol``).
    """
    p = _as_float_array(p, name)
    _check_nonempty(p, name)
    values = _np(p)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite entries; probabilities must be finite numbers in [0, 1]")
    if np.any(values < 0):
        where = tuple(int(i) for i in np.argwhere(values < 0)[0])
        raise ValueError(f"{name} has a negative entry {values[where]:.4g} at index {where}; probabilities must be >= 0")
    sums = values.sum(axis=dim)
    tol = _default_atol(p) if atol is None else atol
    bad = np.abs(sums - 1.0) > tol
    if np.any(bad):
        first = float(np.asarray(sums)[bad].flat[0])
        raise ValueError(
            f"{name} does not sum to 1 along dim {dim} (a sum is {first:.6g}); expected a probability "
            "distribution - pass logits with from_logits=True, or normalise first (softmax or p / p.sum())"
        )
    return p


def _check_same_shape(a: Array, b: Array, name_a: str, name_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; expected the same shape")


def _same_kind(a: Array, b: Array) -> tuple[Array, Array]:
    """Make two arrays the same kind: if either is a tensor, both become tensors of its dtype."""
    if isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    elif isinstance(b, torch.Tensor) and not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    return a, b


def _log(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.log(x)
    with np.errstate(divide="ignore"):  # log 0 = -inf is the right answer, not a warning
        return np.log(x)


def _reduce(values: Array, reduction: str) -> Any:
    if reduction == "none":
        return values
    total = values.sum() if reduction == "sum" else values.mean()
    return total if isinstance(total, torch.Tensor) else float(total)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")


def _check_targets(target: Any, batch_shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """Class indices as an int64 NumPy array of shape ``batch_shape``, each in ``[0, n_classes)``."""
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got a tensor of dtype {target.dtype}")
        idx = target.detach().cpu().numpy()
    else:
        if isinstance(target, (float, np.floating)) or isinstance(target, bool):
            raise TypeError(f"target must be an integer class index, got {target!r}")
        idx = np.asarray(target)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"target must hold integer class indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if tuple(idx.shape) != tuple(batch_shape):
        raise ValueError(
            f"target has shape {tuple(idx.shape)} but the scores have batch shape {tuple(batch_shape)}; "
            "expected one class index per distribution (scores are (..., V), targets (...))"
        )
    if idx.size and (idx.min() < 0 or idx.max() >= n_classes):
        bad = int(idx[(idx < 0) | (idx >= n_classes)].flat[0])
        raise ValueError(f"target index {bad} is out of range for {n_classes} classes; expected 0 <= target < {n_classes}")
    return idx


def _gather_last(x: Array, idx: np.ndarray) -> Array:
    """``x[..., idx]`` picked position by position: the score or probability of each target."""
    if isinstance(x, torch.Tensor):
        index = torch.as_tensor(idx, device=x.device).unsqueeze(-1)
        return torch.gather(x, -1, index).squeeze(-1)
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


# ----------------------------------------------------------------------------------------------
# softmax and log-softmax
# ----------------------------------------------------------------------------------------------
def _scaled_logits(logits: Any, temperature: float) -> Array:
    z = _as_float_array(logits, "logits")
    _check_nonempty(z, "logits")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return z / temperature if temperature != 1 else z


def logsumexp(logits: Any, dim: int = -1, keepdim: bool = False) -> Array:
    """``log sum_i exp(z_i)`` computed stably as ``m + log sum_i exp(z_i - m)`` with ``m = max_i z_i``."""
    z = _as_float_array(logits, "logits")
    _check_nonempty(z, "logits")
    if isinstance(z, torch.Tensor):
        m = z.amax(dim=dim, keepdim=True).detach()  # a constant shift: no gradient needed through it
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        out = m + torch.log(torch.exp(z - m).sum(dim=dim, keepdim=True))
        return out if keepdim else out.squeeze(dim)
    m = np.max(z, axis=dim, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # all -inf: keep -inf rather than produce NaN
    with np.errstate(divide="ignore"):
        out = m + np.log(np.sum(np.exp(z - m), axis=dim, keepdims=True))
    return out if keepdim else np.squeeze(out, axis=dim)


def log_softmax(logits: Any, dim: int = -1, temperature: float = 1.0) -> Array:
    """Log-probabilities ``log softmax(z / temperature)``, stable for large logits.

    ``log p_i = z_i - logsumexp(z)``: never forms ``exp(z_i)`` of a large ``z_i``, so nothing overflows,
    and never takes ``log`` of an underflowed 0, so tiny probabilities keep their exact logarithm.
    """
    z = _scaled_logits(logits, temperature)
    return z - logsumexp(z, dim=dim, keepdim=True)


def softmax(logits: Any, dim: int = -1, temperature: float = 1.0) -> Array:
    """Probabilities ``softmax(z / temperature)_i = exp(z_i / T) / sum_j exp(z_j / T)`` along ``dim``.

    Computed as ``exp(z_i - max z)`` / sum: subtracting the maximum changes nothing mathematically
    (it cancels) but keeps every exponent <= 0, so ``exp`` cannot overflow.
    ``temperature`` < 1 sharpens the distribution, > 1 flattens it.
    """
    z = _scaled_logits(logits, temperature)
    if isinstance(z, torch.Tensor):
        e = torch.exp(z - z.amax(dim=dim, keepdim=True).detach())
        return e / e.sum(dim=dim, keepdim=True)
    e = np.exp(z - np.max(z, axis=dim, keepdims=True))
    return e / np.sum(e, axis=dim, keepdims=True)


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------
def nll_from_log_probs(log_probs: Any, target: Any, reduction: str = "mean") -> Any:
    """Negative log-likelihood ``-log p[target]`` from log-probabilities of shape ``(..., V)``."""
    _check_reduction(reduction)
    lp = _as_float_array(log_probs, "log_probs")
    _check_nonempty(lp, "log_probs")
    idx = _check_targets(target, tuple(lp.shape[:-1]), int(lp.shape[-1]))
    return _reduce(-_gather_last(lp, idx), reduction)


def cross_entropy(probs_or_logits: Any, target: Any, *, from_logits: bool = False, reduction: str = "mean") -> Any:
    """Cross-entropy of class indices ``target`` under the predicted distributions: ``-log p[target]``.

    ``probs_or_logits`` has shape ``(V,)`` or ``(..., V)`` and ``target`` one index per distribution
    (an int, or shape ``(...)``). By default the input must be probabilities (checked: >= 0, rows sum
    to 1); with ``from_logits=True`` it is unnormalised scores, turned into log-probabilities with a
    stable log-softmax - that is what ``torch.nn.functional.cross_entropy`` computes.
    ``reduction``: ``"mean"`` (default, like torch), ``"sum"`` (the LM loss of a sequence) or ``"none"``.
    A target of probability 0 gives ``inf``: the model called the observed token impossible.
    """
    _check_reduction(reduction)
    if from_logits:
        log_p = log_softmax(probs_or_logits, dim=-1)
    else:
        p = check_distribution(probs_or_logits, dim=-1, name="probs")
        log_p = _log(p)
    return nll_from_log_probs(log_p, target, reduction)


def mse(pred: Any, target: Any, reduction: str = "mean") -> Any:
    """Mean squared error ``(1/n) sum_i (y_i - y_hat_i)^2`` (``"sum"``/``"none"`` like torch's ``mse_loss``)."""
    _check_reduction(reduction)
    pred, target = _as_float_array(pred, "pred"), _as_float_array(target, "target")
    _check_same_shape(pred, target, "pred", "target")
    pred, target = _same_kind(pred, target)
    if _np(pred).size == 0:
        raise ValueError("pred and target are empty; expected at least one value")
    return _reduce((pred - target) ** 2, reduction)


def entropy(p: Any, dim: int = -1) -> Array | float:
    """Shannon entropy ``H(p) = -sum_i p_i log p_i`` in nats, with ``0 log 0 = 0``."""
    p = check_distribution(p, dim=dim)
    if isinstance(p, torch.Tensor):
        terms = torch.where(p > 0, -p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
        return terms.sum(dim=dim)
    terms = np.where(p > 0, -p * _log(np.where(p > 0, p, 1.0)), 0.0)
    out = terms.sum(axis=dim)
    return float(out) if np.ndim(out) == 0 else out


def cross_entropy_dist(p: Any, q: Any, dim: int = -1) -> Array | float:
    """Cross-entropy between two distributions, ``H(p, q) = -sum_i p_i log q_i`` (nats).

    ``p`` is the "true" distribution (the data), ``q`` the model's. With a one-hot ``p`` this is
    :func:`cross_entropy` of the target index. ``H(p, q) = H(p) + KL(p || q)``.
    """
    p = check_distribution(p, dim=dim, name="p")
    q = check_distribution(q, dim=dim, name="q")
    _check_same_shape(p, q, "p", "q")
    p, q = _same_kind(p, q)
    if isinstance(p, torch.Tensor):
        terms = torch.where(p > 0, -p * torch.log(q), torch.zeros_like(p))
        return terms.sum(dim=dim)
    terms = np.where(p > 0, -p * _log(q), 0.0)
    out = terms.sum(axis=dim)
    return float(out) if np.ndim(out) == 0 else out


def kl_divergence(p: Any, q: Any, dim: int = -1) -> Array | float:
    """Kullback-Leibler divergence ``KL(p || q) = sum_i p_i log(p_i / q_i)`` along ``dim`` (nats).

    Conventions: ``0 log(0/q) = 0``; ``p_i > 0`` where ``q_i = 0`` gives ``inf``. Always ``>= 0``,
    zero only when ``p == q``, and not symmetric. In torch this is
    ``F.kl_div(q.log(), p, reduction="sum")`` - note the order: the *first* argument of ``F.kl_div``
    is the log of the second distribution of ``KL(p || q)``.
    """
    p = check_distribution(p, dim=dim, name="p")
    q = check_distribution(q, dim=dim, name="q")
    _check_same_shape(p, q, "p", "q")
    p, q = _same_kind(p, q)
    if isinstance(p, torch.Tensor):
        safe_p = torch.where(p > 0, p, torch.ones_like(p))
        terms = torch.where(p > 0, p * (torch.log(safe_p) - torch.log(q)), torch.zeros_like(p))
        return terms.sum(dim=dim)
    with np.errstate(divide="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - _log(q)), 0.0)
    out = terms.sum(axis=dim)
    return float(out) if np.ndim(out) == 0 else out


# ----------------------------------------------------------------------------------------------
# sequences: chain rule and perplexity
# ----------------------------------------------------------------------------------------------
def token_log_probs(cond_probs: Any, tokens: Any) -> Array:
    """``log p(x_t | x_<t)`` for each position: row ``t`` of ``cond_probs`` (shape ``(T, V)``) is the
    model's distribution for position ``t``, and ``tokens`` (shape ``(T,)``) the observed tokens."""
    p = check_distribution(cond_probs, dim=-1, name="cond_probs")
    if p.ndim != 2:
        raise ValueError(f"cond_probs must have shape (T, V): one distribution per position, got shape {tuple(p.shape)}")
    idx = _check_targets(tokens, (int(p.shape[0]),), int(p.shape[1]))
    return _log(_gather_last(p, idx))


def sequence_log_prob(cond_probs: Any, tokens: Any) -> Any:
    """Chain rule in log space: ``log p(x) = sum_t log p(x_t | x_<t)``.

    Summing logs instead of multiplying probabilities avoids underflow: a product of a few hundred
    probabilities of 0.01 is already 0 in float64, its logarithm is an ordinary number.
    """
    return _reduce(token_log_probs(cond_probs, tokens), "sum")


def sequence_prob(cond_probs: Any, tokens: Any) -> Any:
    """Chain rule: ``p(x) = prod_t p(x_t | x_<t)`` (as ``exp`` of :func:`sequence_log_prob`)."""
    lp = sequence_log_prob(cond_probs, tokens)
    return torch.exp(lp) if isinstance(lp, torch.Tensor) else math.exp(lp)


def perplexity_from_probs(probs: Any, tokens: Any = None) -> float:
    """Perplexity ``exp(-(1/T) sum_t log p(x_t | x_<t))``: exp of the mean negative log-likelihood.

    Two ways to call it:

    * ``perplexity_from_probs(target_probs)``: the probabilities the model gave the observed tokens,
      shape ``(T,)``, each in ``(0, 1]``;
    * ``perplexity_from_probs(cond_probs, tokens)``: full distributions ``(T, V)`` and the tokens ``(T,)``.

    A uniform model over ``V`` tokens has perplexity ``V``: perplexity is the number of equally likely
    choices the model is, on average, hesitating between.
    """
    if tokens is None:
        p = _as_float_array(probs, "probs")
        _check_nonempty(p, "probs")
        if p.ndim != 1:
            raise ValueError(
                f"probs has shape {tuple(p.shape)}; pass the probabilities of the observed tokens, shape (T,), "
                "or full distributions (T, V) together with tokens"
            )
        values = _np(p)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
            raise ValueError("probs must be probabilities in [0, 1]")
        log_p = _np(_log(p))
    else:
        log_p = _np(token_log_probs(probs, tokens))
    mean_nll = float(-np.mean(log_p))
    return math.exp(mean_nll) if math.isfinite(mean_nll) else math.inf


# ----------------------------------------------------------------------------------------------
# maximum likelihood and gradients (used to compare cross-entropy with MSE)
# ----------------------------------------------------------------------------------------------
def categorical_mle(counts: Any) -> np.ndarray:
    """Maximum-likelihood estimate of a categorical distribution from counts: ``n_k / N``."""
    c = np.asarray(_np(_as_float_array(counts, "counts")))
    _check_nonempty(c, "counts")
    if c.ndim != 1:
        raise ValueError(f"counts must be a vector (one count per category), got shape {c.shape}")
    if np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError("counts must be finite and >= 0")
    if c.sum() == 0:
        raise ValueError("all counts are 0: the maximum-likelihood estimate is undefined without data")
    return c / c.sum()


def one_hot(target: int, n_classes: int) -> np.ndarray:
    """The vector ``y`` with ``y[target] = 1`` and 0 elsewhere."""
    idx = _check_targets(target, (), n_classes)
    y = np.zeros(n_classes)
    y[int(idx)] = 1.0
    return y


def cross_entropy_grad_logits(logits: Any, target: int) -> np.ndarray:
    """Gradient of ``-log softmax(z)[target]`` w.r.t. the logits ``z``: ``softmax(z) - y``."""
    z = np.asarray(_np(_as_float_array(logits, "logits")))
    if z.ndim != 1:
        raise ValueError(f"logits must be a vector of shape (V,), got shape {z.shape}")
    return softmax(z) - one_hot(target, z.shape[0])


def mse_softmax_grad_logits(logits: Any, target: int) -> np.ndarray:
    """Gradient of ``mean_i (softmax(z)_i - y_i)^2`` w.r.t. the logits ``z``.

    Chain rule through the softmax Jacobian ``J = diag(p) - p p^T``: ``J^T (2/V)(p - y)``. When the
    model is confidently wrong, ``p`` is nearly one-hot and ``J`` nearly 0, so the gradient vanishes
    even though the error is as large as it can be - the softmax *saturates*.
    """
    z = np.asarray(_np(_as_float_array(logits, "logits")))
    if z.ndim != 1:
        raise ValueError(f"logits must be a vector of shape (V,), got shape {z.shape}")
    p = softmax(z)
    y = one_hot(target, z.shape[0])
    jacobian = np.diag(p) - np.outer(p, p)  # symmetric, so J^T = J
    return jacobian @ (2.0 / z.shape[0] * (p - y))


__all__ = [
    "categorical_mle", "check_distribution", "cross_entropy", "cross_entropy_dist", "cross_entropy_grad_logits",
    "entropy", "kl_divergence", "log_softmax", "logsumexp", "mse", "mse_softmax_grad_logits", "nll_from_log_probs",
    "one_hot", "perplexity_from_probs", "sequence_log_prob", "sequence_prob", "softmax", "token_log_probs",
]
