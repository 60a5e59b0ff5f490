"""The book's shared language-model evaluation on the reviews (评测约定), in three functions.

Every chapter that adds a row to the perplexity table (chapter 1) must measure its model the same way:

* character level: :class:`~llmcourse.tokenizers.CharTokenizer` with ``min_freq=2`` trained on the
  *training* reviews (characters seen once become ``<unk>``);
* each split is one stream ``[eos] r1 [eos] r2 ... rN [eos]`` (:func:`~llmcourse.batching.lm_stream`),
  so every character and one ``<eos>`` per review are predicted;
* perplexity ``= exp(mean negative log-likelihood per predicted token)`` over the whole split, computed
  exactly with :func:`~llmcourse.batching.eval_windows` and :func:`~llmcourse.train.evaluate_lm`.

    data = review_lm_data()
    ppl = lm_perplexity(model, data.test, block_size=64)

:func:`seq_repetition` measures how much a generated sequence repeats itself (Welleck et al., 2020).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from . import data
from .batching import encode_texts, eval_windows, lm_stream
from .tokenizers import EOS_ID, CharTokenizer, Tokenizer
from .train import evaluate_lm


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
        tokenizer = CharTokenizer(min_freq=2).train(data.review_texts("train"))
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a trained llmcourse tokenizer, got {type(tokenizer).__name__}")
    streams = [lm_stream(encode_texts(data.review_texts(split), tokenizer), EOS_ID) for split in data.SPLITS]
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


def seq_repetition(ids: Sequence[int], n: int = 4) -> float:
    """Share of the ``n``-grams of one sequence that repeat an ``n``-gram seen earlier in it:
    ``1 - unique / total`` (Welleck et al.'s *seq-rep-n*). 0 = no repeat; near 1 = a loop."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"ids must be one 1-D sequence, got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    if isinstance(ids, (bytes, bytearray)) or not isinstance(ids, Sequence):
        raise TypeError(f"ids must be a sequence of tokens (list of ids or a str), got {type(ids).__name__}")
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        raise ValueError(f"the sequence has {len(ids)} tokens, fewer than n={n}: no {n}-grams to count")
    return 1.0 - len(set(grams)) / len(grams)


__all__ = ["ReviewLMData", "lm_perplexity", "review_lm_data", "seq_repetition"]
