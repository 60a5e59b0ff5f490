"""Evaluation: the metrics the book reports and its shared language-model evaluation (评测约定).

Metrics: perplexity from a mean NLL, accuracy of labels, a confusion matrix and precision/recall/F1,
segmentation precision/recall/F1, distinct-n.

The evaluation convention: every chapter that adds a row to the perplexity table (chapter 1)
measures its model the same way:

* character level: :class:`~llmcourse.data.tokenizers.CharTokenizer` with ``min_freq=2`` trained on the
  *training* reviews (characters seen once become ``<unk>``);
* each split is one stream ``[eos] r1 [eos] r2 ... rN [eos]`` (:func:`~llmcourse.data.batching.lm_stream`),
  so every character and one ``<eos>`` per review are predicted;
* perplexity ``= exp(mean negative log-likelihood per predicted token)`` over the whole split, computed
  exactly with :func:`~llmcourse.data.batching.eval_windows` and :func:`~llmcourse.train.evaluate_lm`.

    data = review_lm_data()
    ppl = lm_perplexity(model, data.test, block_size=64)

:func:`seq_repetition` measures how much a generated sequence repeats itself (Welleck et al., 2020).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse.core.checks import IGNORE_INDEX, check_finite, check_int, eval_mode, model_device
from llmcourse.data import corpus
from llmcourse.data.batching import encode_texts, eval_windows, lm_stream
from llmcourse.data.tokenizers import EOS_ID, CharTokenizer, Tokenizer
from llmcourse.train import evaluate_lm


def perplexity_from_nll(mean_nll: float) -> float:
    """Perplexity from the mean negative log-likelihood per token (natural log): ``exp(mean_nll)``."""
    value = float(mean_nll)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"mean negative log-likelihood must be finite and >= 0, got {mean_nll!r}")
    try:
        return math.exp(value)
    except OverflowError:  # a mean NLL above 709.78 nats: the perplexity is beyond any float
        return math.inf


def _labels(name: str, values) -> list:
    """Class labels as a list; floats are refused, since they are probabilities or scores, not labels."""
    if isinstance(values, torch.Tensor):
        if values.is_floating_point():
            raise TypeError(f"{name} holds floats (dtype {values.dtype}): pass class labels (ints), e.g. "
                            "probs.argmax(-1) or (p > 0.5).long(), not probabilities or scores")
        values = values.tolist()
    values = list(values)
    for v in values:
        if isinstance(v, (float, np.floating)):
            raise TypeError(f"{name} holds the float {v!r}: pass class labels (ints or strings), e.g. "
                            "the argmax of the probabilities or p > 0.5, not probabilities or scores")
    return values


def accuracy(predictions: Sequence, targets: Sequence) -> float:
    """Share of positions where the predicted label equals the target label (labels, not probabilities)."""
    predictions, targets = _labels("predictions", predictions), _labels("targets", targets)
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


# ---- classification ------------------------------------------------------------------------------
def confusion_matrix(predictions: Sequence[int], targets: Sequence[int], n_classes: int = 2) -> torch.Tensor:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    check_int("n_classes", n_classes, 2)
    p, t = torch.as_tensor(list(predictions)), torch.as_tensor(list(targets))
    if p.shape != t.shape or p.dim() != 1 or p.numel() == 0:
        raise ValueError(f"predictions ({p.numel()}) and targets ({t.numel()}) must be non-empty and of equal length")
    for name, x in (("predictions", p), ("targets", t)):
        if x.is_floating_point() or bool((x < 0).any()) or bool((x >= n_classes).any()):
            raise ValueError(f"{name} must be class ids in 0..{n_classes - 1}")
    return torch.bincount(t.long() * n_classes + p.long(), minlength=n_classes * n_classes).view(n_classes, n_classes)


def precision_recall_f1(cm: torch.Tensor, positive: int = 1) -> dict[str, float]:
    """Precision, recall and F1 of class ``positive`` from a confusion matrix (rows true, columns
    predicted); 0 where a ratio is 0/0."""
    if not isinstance(cm, torch.Tensor) or cm.dim() != 2 or cm.size(0) != cm.size(1):
        raise ValueError("cm must be a square (K, K) tensor of counts (rows true, columns predicted)")
    if not 0 <= positive < cm.size(0):
        raise ValueError(f"positive must be a class id in 0..{cm.size(0) - 1}, got {positive!r}")
    tp = cm[positive, positive].item()
    predicted, actual = cm[:, positive].sum().item(), cm[positive].sum().item()
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# ---- the book's language-model evaluation on the reviews ----------------------------------------
class ReviewLMData(NamedTuple):
    """The tokenizer and the three 1-D id streams of the reviews (train, val, test)."""

    tokenizer: Tokenizer
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def review_lm_data(tokenizer: Tokenizer | None = None) -> ReviewLMData:
    """The reviews as language-modelling streams under the book's convention.

    Without ``tokenizer``, a ``CharTokenizer(min_freq=2)`` is trained on the training reviews (the
    convention). Pass another trained tokenizer to build streams with it (a BPE model, say); its
    numbers are then not comparable with the character-level table.
    """
    if tokenizer is None:
        tokenizer = CharTokenizer(min_freq=2).train(corpus.review_texts("train"))
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a trained llmcourse tokenizer, got {type(tokenizer).__name__}")
    streams = [lm_stream(encode_texts(corpus.review_texts(split), tokenizer), EOS_ID) for split in corpus.SPLITS]
    return ReviewLMData(tokenizer, *streams)


def lm_perplexity(model: torch.nn.Module, stream: torch.Tensor, block_size: int, stride: int | None = None,
                  batch_size: int = 32, device=None) -> float:
    """Perplexity of ``model`` over a whole stream: ``exp`` of the exact mean NLL of ``stream[1:]``.

    The stream is cut into windows of ``block_size`` tokens starting every ``stride`` tokens (default
    ``block_size // 2``); every token is scored once, with at least ``block_size - stride`` tokens of
    context inside its window. A model that sees only its last ``c`` tokens (n-gram, MLP) is scored
    exactly as on the unbroken stream with ``stride = block_size - c + 1``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module returning (B, T, V) logits, got {type(model).__name__}")
    windows = eval_windows(stream, block_size, stride)  # checks the stream, block_size and stride
    return math.exp(evaluate_lm(model, windows, batch_size, device))


def lm_token_nll(model: torch.nn.Module, stream: torch.Tensor, block_size: int, stride: int | None = None,
                 batch_size: int = 32, device=None) -> torch.Tensor:
    """The negative log-likelihood (nats, float64) of every token of ``stream[1:]``, in stream order, each
    scored once in the windows of :func:`lm_perplexity` (whose perplexity is ``exp`` of their mean, up to
    the order of summation). Per-token values are what interpolating two models needs."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module returning (B, T, V) logits, got {type(model).__name__}")
    windows = eval_windows(stream, block_size, stride)
    device = torch.device(device) if device is not None else model_device(model)
    parts = []
    with eval_mode(model), torch.no_grad():
        for x, y in windows.batches(batch_size):
            out = model(x.to(device))
            logits = out[0] if isinstance(out, (tuple, list)) else out  # (B, T, V)
            if logits.shape[:2] != x.shape:
                raise ValueError(f"model returned logits of shape {tuple(logits.shape)}; expected (B, T, V)")
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.to(device).reshape(-1),
                                  ignore_index=IGNORE_INDEX, reduction="none")  # (B * T,), 0 where not counted
            parts.append(nll[y.reshape(-1).to(device) != IGNORE_INDEX].double().cpu())  # row-major = stream order
    return torch.cat(parts)


def interpolated_nll(nll_a, nll_b, weight: float) -> torch.Tensor:
    """Per-token NLL of the mixture ``weight * p_a + (1 - weight) * p_b`` of two models scored on the same
    tokens (Bengio et al. 2003 mixed their network with an n-gram model this way)."""
    a, b = torch.as_tensor(nll_a, dtype=torch.float64), torch.as_tensor(nll_b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"nll_a and nll_b must be 1-D and score the same tokens, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    weight = check_finite("weight", weight, 0.0)
    if weight > 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    # log(w e^-a + (1-w) e^-b), computed stably; a weight of 0 or 1 gives exactly the other model
    if weight in (0.0, 1.0):
        return (b if weight == 0.0 else a).clone()
    return -torch.logaddexp(math.log(weight) - a, math.log1p(-weight) - b)


def bits_per_char(total_nll_nats: float, n_chars: int, spelled_bits: float = 0.0) -> float:
    """Bits per character: a summed NLL in nats over a text, in bits (``/ ln 2``), plus ``spelled_bits`` for
    spelling out the characters the tokenizer mapped to ``<unk>`` (chapter 2: 8 bits per UTF-8 byte),
    divided by the text's number of characters (the book counts each review's end as one). Unlike
    perplexity per token it does not depend on the tokenizer, so models with other vocabularies
    (characters, BPE, bytes) can be compared on the same text."""
    n_chars = check_int("n_chars", n_chars, 1)
    total = check_finite("total_nll_nats", total_nll_nats, 0.0)
    spelled = check_finite("spelled_bits", spelled_bits, 0.0)
    return (total / math.log(2) + spelled) / n_chars


def seq_repetition(ids: Sequence[int], n: int = 4) -> float:
    """Share of the ``n``-grams of one sequence that repeat an ``n``-gram seen earlier in it:
    ``1 - unique / total`` (Welleck et al.'s *seq-rep-n*). 0 = no repeat; near 1 = a loop."""
    n = check_int("n", n, 1)
    if isinstance(ids, torch.Tensor) and ids.dim() != 1:
        raise ValueError(f"ids must be one 1-D sequence, got shape {tuple(ids.shape)}")
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    if isinstance(ids, (bytes, bytearray)) or not isinstance(ids, Sequence):
        raise TypeError(f"ids must be a sequence of tokens (list of ids or a str), got {type(ids).__name__}")
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        raise ValueError(f"the sequence has {len(ids)} tokens, fewer than n={n}: no {n}-grams to count")
    return 1.0 - len(set(grams)) / len(grams)
