"""Metrics the book reports: perplexity, accuracy, segmentation precision/recall/F1, distinct-n."""
from __future__ import annotations

import math
from collections.abc import Sequence


def perplexity(mean_nll: float) -> float:
    """Perplexity from the mean negative log-likelihood per token (natural log): ``exp(mean_nll)``."""
    value = float(mean_nll)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"mean negative log-likelihood must be finite and >= 0, got {mean_nll!r}")
    return math.exp(value)


def accuracy(predictions: Sequence, targets: Sequence) -> float:
    """Share of positions where ``predictions`` equals ``targets``."""
    predictions, targets = list(predictions), list(targets)
    if len(predictions) != len(targets):
        raise ValueError(f"predictions ({len(predictions)}) and targets ({len(targets)}) differ in length")
    if not targets:
        raise ValueError("accuracy of an empty set is undefined; pass at least one example")
    return sum(int(p == t) for p, t in zip(predictions, targets)) / len(targets)


def word_spans(words: Sequence[str]) -> set[tuple[int, int]]:
    """Character spans ``(start, end)`` of each word: two segmentations agree on a word iff spans match."""
    spans, start = set(), 0
    for word in words:
        if not word:
            raise ValueError("a segmentation contains an empty word")
        spans.add((start, start + len(word)))
        start += len(word)
    return spans


def segmentation_prf(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Word-level precision, recall and F1 of a segmentation against the gold one (micro-averaged).

    Both are lists of sentences, each a list of words, and sentence ``i`` of both must spell the same text.
    """
    if len(predicted) != len(gold):
        raise ValueError(f"predicted has {len(predicted)} sentences but gold has {len(gold)}")
    if not gold:
        raise ValueError("cannot score an empty set of sentences")
    correct = n_pred = n_gold = 0
    for i, (p, g) in enumerate(zip(predicted, gold)):
        if "".join(p) != "".join(g):
            raise ValueError(f"sentence {i}: predicted words spell {''.join(p)[:30]!r}, gold spells {''.join(g)[:30]!r}")
        ps, gs = word_spans(p), word_spans(g)
        correct += len(ps & gs)
        n_pred += len(ps)
        n_gold += len(gs)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def distinct_n(texts: Sequence[Sequence], n: int = 2) -> float:
    """Distinct-n: unique n-grams over all n-grams in a set of token sequences (diversity of samples)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(t[i:i + n]) for t in texts for i in range(len(t) - n + 1)]
    if not grams:
        raise ValueError(f"no {n}-grams: every sequence is shorter than {n}")
    return len(set(grams)) / len(grams)
