"""A bag-of-words (词袋) logistic-regression (逻辑回归) classifier: the baseline every text classifier
should be compared with.

A text becomes the *set* of its n-grams (characters and character pairs by default, or jieba words:
pass ``tokenize``); the model scores a text by adding one learnt weight per n-gram it contains,

    P(y = 1 | x) = sigmoid(b + sum_{g in x} w_g),

and is fitted by minimising the mean logistic loss plus an L2 penalty ``l2 / 2 * ||w||^2`` with full-batch
L-BFGS in float64 (a convex problem, so the result does not depend on the seed). It is written in torch
(a sparse 0/1 feature matrix times the weight vector), so the book needs no scikit-learn. Word order is thrown away, which is what the Transformer chapters improve on.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from llmcourse.core.checks import check_texts


def ngrams(tokens: Sequence[str], n_values: Sequence[int] = (1, 2)) -> list[str]:
    """All n-grams of ``tokens`` for each ``n`` in ``n_values``, joined with a space between tokens
    when ``n > 1`` (``ngrams(list("很好"), (1, 2))`` -> ``['很', '好', '很 好']``)."""
    out = []
    for n in n_values:
        out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


class BowLogisticRegression:
    """Binary logistic regression on bag-of-n-gram features (presence, not counts).

    Args:
        n_values: which n-gram lengths to use (default characters and character pairs).
        min_freq: keep n-grams that occur in at least this many *training texts*.
        l2: strength of the L2 penalty on the weights (not on the bias).
        tokenize: ``str -> list[str]``; default one token per character (``list``).
        max_iter: L-BFGS iterations.

    ``fit(texts, labels)``, then ``decision_function`` (logits), ``predict_proba``, ``predict`` and
    ``top_features`` (the most positive and negative n-grams: what the model learnt).
    """

    def __init__(self, n_values: Sequence[int] = (1, 2), min_freq: int = 2, l2: float = 1e-3,
                 tokenize: Callable[[str], list[str]] | None = None, max_iter: int = 100):
        if not n_values or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in n_values):
            raise ValueError(f"n_values must be positive ints, got {n_values!r}")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or l2 < 0:
            raise ValueError(f"l2 must be a number >= 0, got {l2!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        self.n_values, self.min_freq, self.l2, self.max_iter = tuple(n_values), min_freq, float(l2), max_iter
        self.tokenize = tokenize if tokenize is not None else list
        self.vocab: dict[str, int] | None = None
        self.weight: torch.Tensor | None = None  # (F,) float64
        self.bias: torch.Tensor | None = None  # () float64

    # ---- features --------------------------------------------------------------------------------
    def _grams(self, text: str) -> set[str]:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        return set(ngrams(self.tokenize(text), self.n_values))

    def _ids(self, gram_sets) -> tuple[torch.Tensor, torch.Tensor]:
        indices, offsets = [], []
        for grams in gram_sets:
            offsets.append(len(indices))
            indices.extend(sorted(self.vocab[g] for g in grams if g in self.vocab))
        return torch.tensor(indices, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    def features(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, offsets)``: the known n-gram ids of every text, concatenated (sorted within a
        text), and where each text's ids start (the input format of ``F.embedding_bag``)."""
        if self.vocab is None:
            raise RuntimeError("call fit() before using the model")
        return self._ids(self._grams(t) for t in check_texts(texts))

    def _sparse(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The 0/1 feature matrix (N, F) as a sparse CSR float64 tensor (row i holds text i's n-grams)."""
        crow = torch.cat([offsets, torch.tensor([indices.numel()])])
        values = torch.ones(indices.numel(), dtype=torch.float64)
        with warnings.catch_warnings():  # torch warns once that sparse CSR support is "beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, indices, values, size=(offsets.numel(), len(self.vocab)),
                                           check_invariants=False)

    @staticmethod
    def _transpose(X: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return X.to_sparse_coo().t().to_sparse_csr()

    def feature_matrix(self, texts: Sequence[str]) -> torch.Tensor:
        """Dense 0/1 matrix (N, F) of the same features (for small sets and tests)."""
        return self._sparse(*self.features(texts)).to_dense()

    # ---- fitting ---------------------------------------------------------------------------------
    def objective(self, weight: torch.Tensor, bias: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean logistic loss + ``l2 / 2 * ||weight||^2`` for features ``X`` (N, F): what :meth:`fit` minimises."""
        z = X @ weight + bias  # (N,) logits
        return F.binary_cross_entropy_with_logits(z, y) + 0.5 * self.l2 * weight.pow(2).sum()

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> "BowLogisticRegression":
        """Build the n-gram vocabulary from ``texts`` and fit the weights to ``labels`` (0/1)."""
        texts = check_texts(texts)
        labels = list(labels)
        if len(labels) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels; they must match one to one")
        if any(isinstance(y, bool) or y not in (0, 1) for y in labels):
            raise ValueError("labels must be 0 or 1 (binary classification)")
        gram_sets = [self._grams(t) for t in texts]
        doc_freq = Counter(g for grams in gram_sets for g in grams)
        kept = sorted((g for g, c in doc_freq.items() if c >= self.min_freq), key=lambda g: (-doc_freq[g], g))
        self.vocab = {g: i for i, g in enumerate(kept)}
        X = self._sparse(*self._ids(gram_sets))  # (N, F) sparse
        Xt = self._transpose(X)  # (F, N), for the gradient
        y = torch.tensor(labels, dtype=torch.float64)
        n = len(texts)
        weight = torch.zeros(len(kept), dtype=torch.float64, requires_grad=True)
        bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=self.max_iter, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            # The gradient in closed form, (X^T (sigmoid(z) - y)) / N + l2 w: two sparse products,
            # much faster than autograd through a sparse matrix (the tests check it against autograd).
            with torch.no_grad():
                z = X @ weight + bias  # (N,)
                loss = F.binary_cross_entropy_with_logits(z, y) + 0.5 * self.l2 * weight.pow(2).sum()
                r = (torch.sigmoid(z) - y) / n  # (N,)
                weight.grad = Xt @ r + self.l2 * weight
                bias.grad = r.sum()
            return loss

        opt.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    # ---- prediction ------------------------------------------------------------------------------
    def decision_function(self, texts: Sequence[str]) -> torch.Tensor:
        """Logits ``b + sum_g w_g`` (N,), float64; positive means class 1 is more likely."""
        if self.weight is None:
            raise RuntimeError("call fit() before using the model")
        return self._sparse(*self.features(texts)) @ self.weight + self.bias

    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        """P(y = 1 | text), (N,)."""
        return torch.sigmoid(self.decision_function(texts))

    def predict(self, texts: Sequence[str]) -> list[int]:
        """Predicted labels (0/1)."""
        return (self.decision_function(texts) > 0).long().tolist()

    def top_features(self, k: int = 10) -> dict[str, list[tuple[str, float]]]:
        """The ``k`` n-grams with the largest positive and the largest negative weights."""
        if self.weight is None:
            raise RuntimeError("call fit() before using the model")
        names = list(self.vocab)
        order = torch.argsort(self.weight)
        pick = lambda idx: [(names[i], float(self.weight[i])) for i in idx.tolist()]  # noqa: E731
        return {"positive": pick(order.flip(0)[:k]), "negative": pick(order[:k])}


__all__ = ["BowLogisticRegression", "ngrams"]
