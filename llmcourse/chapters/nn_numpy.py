"""A fully connected network with forward and backward passes written by hand in NumPy.

Chapter 4 derives backpropagation on the source articles' 3-4-2 network; this module keeps the
result. Conventions (the same as ``torch.nn.Linear``, so gradients can be compared with torch):

* a batch is a matrix ``X`` of shape ``(m, n_in)``, one example per row;
* layer ``l`` has ``W_l`` of shape ``(n_l, n_{l-1})`` and ``b_l`` of shape ``(n_l,)``;
  ``Z_l = A_{l-1} W_l^T + b_l`` and ``A_l = act(Z_l)``;
* losses are means over the batch, so the ``1/m`` of the gradient comes from the loss.

Backward, with ``Delta_l = dC/dZ_l`` (one row ``delta_l`` per example):

    Delta_L = dC/dA_L * act'(Z_L)                  (elementwise)
    Delta_l = (Delta_{l+1} W_{l+1}) * act'(Z_l)    (elementwise)
    dC/dW_l = Delta_l^T A_{l-1}   (= sum over the batch of delta_l a_{l-1}^T)
    dC/db_l = sum of the rows of Delta_l
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Params = list[tuple[np.ndarray, np.ndarray]]  # [(W_1, b_1), (W_2, b_2), ...]


def _act(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "linear":
        return z
    raise ValueError(f"unknown activation {name!r}; expected 'relu', 'sigmoid', 'tanh' or 'linear'")


def _act_grad(name: str, z: np.ndarray) -> np.ndarray:
    """d act(z) / dz, elementwise (relu'(0) = 0, as in torch)."""
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "linear":
        return np.ones_like(z)
    raise ValueError(f"unknown activation {name!r}; expected 'relu', 'sigmoid', 'tanh' or 'linear'")


def init_params(sizes: Sequence[int], seed: int = 0, std: float = 0.5, decimals: int | None = None) -> Params:
    """Gaussian weights (standard deviation ``std``) and zero-mean biases for layer sizes, e.g. [3, 4, 2].

    ``decimals`` rounds them, so that a small example can be printed and followed by hand.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be at least two positive ints (inputs, ..., outputs), got {sizes!r}")
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = rng.normal(0.0, std, size=(n_out, n_in))
        b = rng.normal(0.0, std, size=n_out)
        if decimals is not None:
            W, b = np.round(W, decimals) + 0.0, np.round(b, decimals) + 0.0  # + 0.0: no "-0."
        params.append((W, b))
    return params


def forward(params: Params, X: np.ndarray, hidden: str = "relu", output: str = "linear"):
    """Outputs ``A_L`` of shape (m, n_L) and the cache ``[(A_{l-1}, Z_l), ...]`` that backward needs."""
    A = np.atleast_2d(np.asarray(X, dtype=float))  # (m, n_in); one example becomes a batch of 1
    if A.shape[1] != params[0][0].shape[1]:
        raise ValueError(f"input has {A.shape[1]} features but the first layer expects {params[0][0].shape[1]}")
    cache = []
    for i, (W, b) in enumerate(params):
        Z = A @ W.T + b  # (m, n_l)
        cache.append((A, Z))
        A = _act(output if i == len(params) - 1 else hidden, Z)
    return A, cache


def backward(params: Params, cache, dA: np.ndarray, hidden: str = "relu", output: str = "linear") -> Params:
    """Gradients ``[(dW_1, db_1), ...]`` of the loss, given ``dA = dC/dA_L`` of shape (m, n_L)."""
    grads: Params = []
    dA = np.atleast_2d(dA)
    for i in reversed(range(len(params))):
        W, _ = params[i]
        A_prev, Z = cache[i]
        delta = dA * _act_grad(output if i == len(params) - 1 else hidden, Z)  # (m, n_l) = dC/dZ_l
        grads.append((delta.T @ A_prev, delta.sum(axis=0)))  # (n_l, n_{l-1}), (n_l,)
        dA = delta @ W  # (m, n_{l-1}) = dC/dA_{l-1}: the error sent back through W_l^T
    return grads[::-1]


def mse_loss(Y_hat: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over all entries (as ``torch.nn.functional.mse_loss``) and its gradient."""
    Y_hat, Y = np.atleast_2d(Y_hat), np.atleast_2d(np.asarray(Y, dtype=float))
    if Y_hat.shape != Y.shape:
        raise ValueError(f"prediction shape {Y_hat.shape} and target shape {Y.shape} differ")
    diff = Y_hat - Y
    return float(np.mean(diff**2)), 2.0 * diff / diff.size


def cross_entropy_loss(logits: np.ndarray, labels) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy averaged over the batch (as ``torch.nn.functional.cross_entropy``) and its gradient."""
    logits = np.atleast_2d(logits)
    labels = np.atleast_1d(np.asarray(labels))
    m, k = logits.shape
    if labels.shape != (m,) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be {m} class ids in [0, {k}), got {labels!r}")
    shifted = logits - logits.max(axis=1, keepdims=True)  # same softmax, no overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(m), labels].mean()
    d = np.exp(log_probs)
    d[np.arange(m), labels] -= 1.0  # softmax - one_hot
    return float(loss), d / m


def sgd_step(params: Params, grads: Params, lr: float) -> Params:
    """One gradient-descent step ``w <- w - lr * dC/dw`` (the gradient already holds the 1/m)."""
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr!r}")
    return [(W - lr * dW, b - lr * db) for (W, b), (dW, db) in zip(params, grads)]


__all__ = ["init_params", "forward", "backward", "mse_loss", "cross_entropy_loss", "sgd_step"]
