"""Batching (批处理): from token ids to the tensors a model trains and is evaluated on.

Language modelling (the book's shared convention, used by every chapter that reports perplexity):

* :func:`lm_stream` concatenates the reviews of a split into one long 1-D stream of ids, each review
  followed by one end-of-review token ``<eos>``. The stream also *starts* with one ``<eos>``, so the first
  character of the first review is predicted from the same context as the first character of any other
  review (the end of the previous one). The tokens to predict are then exactly ``stream[1:]``: every
  character of every review plus one ``<eos>`` per review.
* :func:`random_batches` / :class:`LMBatcher` cut random training windows ``x = stream[s : s+T]``,
  ``y = stream[s+1 : s+T+1]`` (``y`` is ``x`` shifted left by one: position ``t`` predicts token ``t+1``).
* :func:`eval_windows` covers a stream so that every token of ``stream[1:]`` is predicted exactly once,
  which makes the perplexity over a split exact rather than estimated from random batches.

Classification: :func:`classification_batches` pads reviews of different lengths into one rectangle and
returns an attention mask (注意力掩码) saying which positions are real tokens.

Everything is torch indexing (no Python loop per token); randomness comes only from the
``torch.Generator`` a caller passes in, so batches are reproducible and checkpointable.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from llmcourse.core.checks import IGNORE_INDEX, check_generator, check_int, id_tensor


# ---- checks -------------------------------------------------------------------------------------
def _check_stream(stream) -> torch.Tensor:
    if not isinstance(stream, torch.Tensor):
        raise TypeError(f"stream must be a 1-D torch tensor of token ids (see lm_stream), got {type(stream).__name__}")
    if stream.dim() != 1:
        raise ValueError(f"stream must be 1-D (one long sequence of ids), got shape {tuple(stream.shape)}")
    if stream.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"stream must hold integer token ids, got dtype {stream.dtype}")
    if stream.numel() == 0:
        raise ValueError("stream is empty; build it from a non-empty corpus with lm_stream")
    return stream


def _check_length(stream: torch.Tensor, block_size: int) -> None:
    if stream.numel() < block_size + 1:
        raise ValueError(
            f"stream has {stream.numel()} tokens but a window of block_size={block_size} needs at least "
            f"block_size + 1 = {block_size + 1} (inputs plus the shifted targets); use a smaller block_size"
        )


def _as_id_list(ids, i: int) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"sequence {i} must be 1-D, got shape {tuple(ids.shape)}")
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"sequence {i} must be a list of int ids, got {type(ids).__name__}")
    return list(ids)


# ---- language modelling: the stream -------------------------------------------------------------
def encode_texts(texts: Iterable[str], tokenizer) -> list[list[int]]:
    """``tokenizer.encode(text)`` for every text: any object with an ``encode(str) -> list[int]`` method."""
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(f"tokenizer must have an encode(text) -> list[int] method, got {type(tokenizer).__name__}")
    if isinstance(texts, str):
        raise TypeError("encode_texts expects a list of texts, got a single str; wrap it in a list")
    return [tokenizer.encode(text) for text in texts]


def lm_stream(id_lists: Iterable[Sequence[int]], eos_id: int, leading_eos: bool = True) -> torch.Tensor:
    """One long stream of ids: ``[eos] r1 [eos] r2 [eos] ... rN [eos]``, as a 1-D ``torch.long`` tensor.

    ``id_lists`` holds one list of ids per review (e.g. from :func:`encode_texts`). With ``leading_eos``
    (default) the stream starts with ``<eos>`` so that ``stream[1:]`` (the tokens to predict) is exactly
    the shared convention: all characters of all reviews plus one ``<eos>`` each, every one with a context.
    """
    check_int("eos_id", eos_id, 0)
    if isinstance(id_lists, (str, torch.Tensor)):
        raise TypeError("id_lists must be a list of id lists (one per review), e.g. [[5, 6], [7]]")
    flat: list[int] = [eos_id] if leading_eos else []
    n_seqs = 0
    for i, ids in enumerate(id_lists):
        flat.extend(_as_id_list(ids, i))  # extend/append run in C: one Python step per review, not per token
        flat.append(eos_id)
        n_seqs += 1
    if n_seqs == 0:
        raise ValueError("empty corpus: lm_stream needs at least one sequence of ids")
    return id_tensor(flat, "the sequences of lm_stream")


# ---- language modelling: random training windows -------------------------------------------------
def random_batches(
    stream: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of the stream: ``x = stream[s : s+T]`` and ``y = stream[s+1 : s+T+1]``,
    both (B, T): the targets are the inputs shifted left by one, so position ``t`` predicts token ``t+1``."""
    stream = _check_stream(stream)
    check_int("block_size", block_size, 1)
    check_int("batch_size", batch_size, 1)
    check_generator(generator)
    _check_length(stream, block_size)
    # a window starting at s uses stream[s : s + T + 1], so s ranges over 0 .. len - T - 1
    starts = torch.randint(stream.numel() - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    index = starts[:, None] + offsets[None, :]  # (B, T)
    stream = stream.long()
    return stream[index], stream[index + 1]


class LMBatcher:
    """``get_batch(step, generator) -> (x, y)`` for :func:`llmcourse.train.train`: random LM windows.

    ``step`` is ignored (every batch is a fresh random draw from ``generator``), which keeps the data
    order entirely in the generator's state, so a checkpoint that saves the generator resumes exactly.
    """

    def __init__(self, stream: torch.Tensor, block_size: int, batch_size: int):
        self.stream = _check_stream(stream).long()
        self.block_size = check_int("block_size", block_size, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        _check_length(self.stream, block_size)

    def __call__(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return random_batches(self.stream, self.block_size, self.batch_size, generator)

    def __repr__(self) -> str:
        return f"LMBatcher(tokens={self.stream.numel()}, block_size={self.block_size}, batch_size={self.batch_size})"


class ContiguousLMBatcher:
    """``get_batch(step, generator) -> (x, y)`` for truncated backpropagation through time.

    The stream is cut into ``batch_size`` equal rows, one contiguous stretch of text each, and batch ``step``
    is window ``step`` of every row: row ``r`` of batch ``step + 1`` continues row ``r`` of batch ``step``, so
    a recurrent model can carry its state from one batch to the next (:class:`~llmcourse.models.lstm_lm.CarryState`).
    After the last window a row starts again from its beginning. ``generator`` is not used (the order is
    fixed by ``step``), so a resumed run continues exactly.
    """

    def __init__(self, stream: torch.Tensor, block_size: int, batch_size: int):
        stream = _check_stream(stream).long()
        self.block_size = check_int("block_size", block_size, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        row = (stream.numel() - 1) // batch_size  # predicted tokens per row
        if row < block_size:
            raise ValueError(f"a stream of {stream.numel()} tokens gives {batch_size} rows of {row} targets, fewer "
                             f"than block_size {block_size}: use a smaller batch_size or block_size")
        self.windows_per_row = row // block_size
        starts = torch.arange(batch_size) * row  # (B,): where each row begins in the stream
        self.x_rows = torch.stack([stream[s:s + row] for s in starts.tolist()])  # (B, row)
        self.y_rows = torch.stack([stream[s + 1:s + 1 + row] for s in starts.tolist()])  # (B, row), one ahead

    def __call__(self, step: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        step = check_int("step", step, 0)
        j = (step % self.windows_per_row) * self.block_size
        return self.x_rows[:, j:j + self.block_size], self.y_rows[:, j:j + self.block_size]  # (B, T) each

    def __repr__(self) -> str:
        return (f"ContiguousLMBatcher(rows={self.batch_size}, windows_per_row={self.windows_per_row}, "
                f"block_size={self.block_size})")


# ---- language modelling: exact evaluation --------------------------------------------------------
@dataclass
class EvalWindows:
    """Windows that predict every token of ``stream[1:]`` exactly once.

    ``x`` and ``y`` are (N, T); ``y`` holds :data:`IGNORE_INDEX` where a target is *not* counted (it was
    already counted by the previous window and is there only as context). Sum the per-token negative
    log-likelihood over positions with ``y != IGNORE_INDEX`` and divide by :attr:`num_targets`.
    """

    x: torch.Tensor
    y: torch.Tensor
    stride: int

    @property
    def num_targets(self) -> int:
        return int((self.y != IGNORE_INDEX).sum())

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive (x, y) chunks of at most ``batch_size`` windows."""
        check_int("batch_size", batch_size, 1)
        for i in range(0, len(self), batch_size):
            yield self.x[i : i + batch_size], self.y[i : i + batch_size]


def eval_windows(stream: torch.Tensor, block_size: int, stride: int | None = None) -> EvalWindows:
    """Overlapping windows of length ``block_size`` that score every token of ``stream[1:]`` exactly once.

    Windows start every ``stride`` tokens (default ``block_size // 2``). Each window after the first
    counts only its last ``stride`` targets; the first ``block_size - stride`` positions are there to give
    those targets context. So every counted token sees at least ``block_size - stride`` earlier tokens
    (the first window's tokens see the stream's start, which begins with ``<eos>``). ``stride=block_size``
    gives non-overlapping windows (cheapest; the first token of each window then has only one token of
    context). The last window is shifted left to end exactly at the stream's end, so all windows have
    the same length and no padding is needed.
    """
    stream = _check_stream(stream).long()
    check_int("block_size", block_size, 1)
    if stride is None:
        stride = max(1, block_size // 2)
    check_int("stride", stride, 1)
    if stride > block_size:
        raise ValueError(f"stride ({stride}) must be <= block_size ({block_size}), or some tokens would be skipped")
    _check_length(stream, block_size)
    last = stream.numel() - 1 - block_size  # start of the window whose last target is the stream's last token
    starts = torch.arange(0, last + 1, stride)
    if starts[-1] != last:
        starts = torch.cat([starts, torch.tensor([last])])
    offsets = torch.arange(block_size)
    index = starts[:, None] + offsets[None, :]  # (N, T)
    x, y = stream[index], stream[index + 1]
    # target positions (in the stream) of each window are start+1 .. start+T; count those past the
    # previous window's last target (start_prev + T); the first window counts all of its targets.
    prev_end = torch.cat([torch.zeros(1, dtype=torch.long), starts[:-1] + block_size])  # (N,)
    counted = (index + 1) > prev_end[:, None]  # (N, T)
    y = y.masked_fill(~counted, IGNORE_INDEX)
    return EvalWindows(x=x, y=y, stride=stride)


# ---- classification ------------------------------------------------------------------------------
def classification_batches(
    id_lists: Sequence[Sequence[int]],
    labels: Sequence[int],
    batch_size: int,
    pad_id: int = 0,
    max_len: int | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches for sequence classification: dicts with ``input_ids`` (B, L) long,
    ``attention_mask`` (B, L) long (1 = real token, 0 = padding) and ``labels`` (B,) long.

    Sequences longer than ``max_len`` keep their first ``max_len`` ids; each batch is padded on the
    right to its longest sequence. ``shuffle=True`` needs a seeded ``generator`` (no hidden randomness).
    """
    if isinstance(id_lists, (str, torch.Tensor)) or not isinstance(id_lists, Sequence):
        raise TypeError("id_lists must be a list of id lists (one per example)")
    if len(id_lists) == 0:
        raise ValueError("empty corpus: classification_batches needs at least one sequence")
    labels = list(labels)
    if len(labels) != len(id_lists):
        raise ValueError(f"{len(id_lists)} sequences but {len(labels)} labels; they must match one to one")
    check_int("batch_size", batch_size, 1)
    check_int("pad_id", pad_id, 0)
    if max_len is not None:
        check_int("max_len", max_len, 1)
    seqs = []
    for i, ids in enumerate(id_lists):
        ids = _as_id_list(ids, i)
        if not ids:
            raise ValueError(f"sequence {i} is empty; every example needs at least one token")
        seqs.append(id_tensor(ids[:max_len] if max_len is not None else ids, f"sequence {i}"))
    label_tensor = torch.tensor(labels, dtype=torch.long)
    if shuffle:
        order = torch.randperm(len(seqs), generator=check_generator(generator))
    else:
        order = torch.arange(len(seqs))
    for start in range(0, len(seqs), batch_size):
        chosen = order[start : start + batch_size].tolist()
        batch = [seqs[j] for j in chosen]
        lengths = torch.tensor([len(s) for s in batch])  # (B,)
        input_ids = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True, padding_value=pad_id)  # (B, L)
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()  # (B, L)
        yield {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_tensor[chosen]}


def num_batches(n: int, batch_size: int) -> int:
    """How many batches ``n`` examples make (the last one may be smaller)."""
    return math.ceil(check_int("n", n, 0) / check_int("batch_size", batch_size, 1))


__all__ = [
    "IGNORE_INDEX", "EvalWindows", "LMBatcher", "classification_batches", "encode_texts", "eval_windows",
    "lm_stream", "num_batches", "random_batches",
]
