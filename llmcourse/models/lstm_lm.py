"""The source articles' recurrent language model, Embedding -> LSTM -> Dense, written correctly.

The articles (000 §5, 001 §5, 002 §5.2) build it in Keras or PyTorch but apply softmax and then a
cross-entropy that expects one-hot targets, swap the batch and time axes, or keep only the last LSTM
output. Here:

* ``nn.LSTM(batch_first=True)``: inputs are (batch, time), like every other model in the book;
* the head returns *logits*; ``F.cross_entropy`` applies log-softmax itself (stable, and integer targets);
* every position predicts the next token (``return_sequences=True`` in Keras terms);
* dropout between layers (Zaremba et al., 2014) and optional weight tying (Press & Wolf, 2017; Inan et al.,
  2017): the output layer reuses the embedding matrix.

``forward(idx, targets=None) -> (logits, loss)`` like the other models; ``block_size`` is ``None`` because
the recurrence has no maximal context. For token-by-token generation the (h, c) state is carried the way
a GPT carries its key/value cache: ``state = model.new_cache()``, then ``model(idx, cache=state)`` reads
the state, runs on from it and stores the new one (:class:`LSTMState`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import check_int, check_token_ids, eval_mode, model_device
from llmcourse.models.mlp_lm import lm_loss
from llmcourse.models.output_bias import init_unigram_bias


@dataclass
class LSTMState:
    """The (h, c) state of an :class:`LSTMLM` after the tokens it has read, each (num_layers, B, hidden);
    ``None`` before the first token (nn.LSTM then starts from zeros)."""

    h: torch.Tensor | None = None
    c: torch.Tensor | None = None

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the batch rows ``rows`` (in that order, repeats allowed): beam search follows its beams."""
        if self.h is not None:
            self.h, self.c = self.h[:, rows], self.c[:, rows]  # batch is axis 1 of an LSTM state


class LSTMLM(nn.Module):
    """Embedding -> (dropout) -> LSTM -> (dropout) -> Linear logits.

    Args:
        vocab_size: number of token ids ``V``.
        emb_dim: embedding size.
        hidden_size: LSTM state size.
        num_layers: stacked LSTM layers.
        dropout: dropout on the embeddings, between LSTM layers and before the head.
        tie_weights: share the embedding matrix with the output layer (needs ``hidden_size == emb_dim``).
    """

    block_size = None  # no fixed context length

    def __init__(self, vocab_size: int, emb_dim: int = 64, hidden_size: int = 128, num_layers: int = 1,
                 dropout: float = 0.0, tie_weights: bool = False):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("emb_dim", emb_dim), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if tie_weights and hidden_size != emb_dim:
            raise ValueError(
                f"tie_weights needs hidden_size == emb_dim (the head reuses the ({vocab_size}, {emb_dim}) "
                f"embedding matrix), got hidden_size={hidden_size}, emb_dim={emb_dim}"
            )
        self.vocab_size, self.tie_weights = vocab_size, tie_weights
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(emb_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)  # nn.LSTM warns for dropout with 1 layer
        self.head = nn.Linear(hidden_size, vocab_size)
        # Small uniform embeddings (as in PyTorch's word_language_model example) and a zero output bias:
        # LSTM states start small, so the logits are nearly equal and the loss starts near ln(V).
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if tie_weights:
            self.head.weight = self.embedding.weight  # one (V, d) matrix, two uses
        else:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    def init_output_bias(self, token_counts: torch.Tensor) -> None:
        """Start the output bias at the log unigram frequencies of ``token_counts`` (V,), smoothed by 1/2:
        the untrained model then predicts the unigram distribution (as :meth:`GPT.init_output_bias`)."""
        init_unigram_bias(self.head.bias, token_counts, self.vocab_size, "the output layer was built without one")

    def new_cache(self) -> LSTMState:
        """An empty state for decoding: pass it to every ``forward`` of one generation."""
        return LSTMState()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: LSTMState | None = None):
        """(B, T) ids -> ``((B, T, V) logits, loss or None)``. With ``cache`` the LSTM starts from its
        state (the tokens read before) and leaves the state after ``idx`` in it."""
        check_token_ids(idx, self.vocab_size)
        state = None
        if cache is not None:
            if not isinstance(cache, LSTMState):
                raise TypeError(f"cache must be an LSTMState from new_cache(), got {type(cache).__name__}")
            if cache.h is not None and cache.h.size(1) != idx.size(0):
                raise ValueError(f"the state holds {cache.h.size(1)} sequences but idx has {idx.size(0)} rows")
            state = None if cache.h is None else (cache.h, cache.c)
        x = self.drop(self.embedding(idx))  # (B, T, emb_dim)
        out, (h, c) = self.lstm(x, state)  # (B, T, hidden), h and c: (num_layers, B, hidden)
        if cache is not None:
            cache.h, cache.c = h, c
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, lm_loss(logits, targets, self.vocab_size, idx.shape)


class CarryState(nn.Module):
    """Truncated backpropagation through time for an :class:`LSTMLM`, as a module ``train`` can drive.

    In training mode every call starts the LSTM from the state the previous call ended in, detached, so the
    model reads the stream without a break while gradients stop at the window's start; the batches must
    continue each other row by row (:class:`~llmcourse.data.batching.ContiguousLMBatcher`). In eval mode
    (validation estimates) every call starts from zeros and the carried state is left alone.

    ``reset_every`` (windows) restarts the state from zeros every that many training calls. An unbroken chain
    of states carries every rounding difference forward: on two CPUs whose floating-point sums differ in the
    last bit, a chain of hundreds of windows grew them until the trained weights differed visibly (measured
    for chapter 5), while a chain of 8 windows keeps the two runs equal to many digits.
    """

    def __init__(self, lm: LSTMLM, reset_every: int | None = None):
        super().__init__()
        if not isinstance(lm, LSTMLM):
            raise TypeError(f"CarryState wraps an LSTMLM, got {type(lm).__name__}")
        self.lm = lm
        self.reset_every = None if reset_every is None else check_int("reset_every", reset_every, 1)
        self.state: LSTMState | None = None
        self.calls = 0  # training calls so far

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if not self.training:
            return self.lm(idx, targets)
        if self.reset_every is not None and self.calls % self.reset_every == 0:
            self.state = None  # the chain starts again from zeros
        self.calls += 1
        carried = self.state if self.state is not None and self.state.h.size(1) == idx.size(0) else LSTMState()
        cache = LSTMState(carried.h, carried.c)
        logits, loss = self.lm(idx, targets, cache=cache)
        self.state = LSTMState(cache.h.detach(), cache.c.detach())  # gradients stop here
        return logits, loss

    # The carried state is part of the module's state_dict, so a checkpoint saved by ``train`` resumes the
    # chain exactly where it stopped instead of silently restarting it from zeros.
    def get_extra_state(self) -> dict:
        empty = self.state is None
        return {"calls": self.calls, "h": None if empty else self.state.h, "c": None if empty else self.state.c}

    def set_extra_state(self, state: dict) -> None:
        self.calls = int(state["calls"])
        self.state = None if state["h"] is None else LSTMState(state["h"], state["c"])


@torch.no_grad()
def stream_nll(lm: LSTMLM, stream: torch.Tensor, chunk: int = 256) -> float:
    """Mean NLL (nats) of ``stream[1:]`` read once from the start with the state carried throughout, so
    every token is predicted from all the text before it: the LSTM's own, unlimited context."""
    stream = torch.as_tensor(stream).long().flatten()
    if stream.numel() < 2:
        raise ValueError("the stream needs at least 2 tokens (one input, one target)")
    check_int("chunk", chunk, 1)
    device = model_device(lm)
    with eval_mode(lm):
        cache, total = LSTMState(), 0.0
        for i in range(0, stream.numel() - 1, chunk):
            y = stream[i + 1:i + 1 + chunk].to(device)[None]  # (1, n): the next token of each input
            x = stream[i:i + y.size(1)].to(device)[None]  # (1, n)
            logits, _ = lm(x, cache=cache)  # the state goes on from the previous chunk
            total += float(F.cross_entropy(logits[0].float(), y[0], reduction="sum"))
        return total / (stream.numel() - 1)
