"""A neural probabilistic language model (神经概率语言模型) in the style of Bengio et al. (2003).

The next token is predicted from the previous ``context`` tokens only (like an n-gram model with
``n = context + 1``), but through learnt embeddings instead of counts, so similar contexts share
statistics::

    x = [C(w_{t-n+1}); ...; C(w_t)]          concatenated embeddings, (context * emb_dim,)
    h = tanh(H x + d)                          hidden layer, (hidden,)
    y = U h + b  (+ W x with direct=True)      logits over the vocabulary, (vocab_size,)

Over a (B, T) batch the model produces logits for *every* position at once: the sequence is padded on
the left with ``context - 1`` copies of ``pad_id`` (``<bos>`` by default) and ``unfold`` cuts the
sliding windows, so there is no Python loop over tokens.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import IGNORE_INDEX, check_targets, check_token_ids
from llmcourse.models.output_bias import init_unigram_bias

BOS_ID = 2  # the tokenizers' <bos>: what the model "sees" before the start of a sequence


def lm_loss(logits: torch.Tensor, targets: torch.Tensor | None, vocab_size: int, idx_shape) -> torch.Tensor | None:
    """Mean cross-entropy over all (B, T) positions, skipping targets equal to IGNORE_INDEX."""
    if targets is None:
        return None
    check_targets(targets, vocab_size, idx_shape)
    # cross_entropy wants (N, V) scores and (N,) classes: flatten batch and time together
    return F.cross_entropy(logits.reshape(-1, vocab_size).float(), targets.reshape(-1).long(), ignore_index=IGNORE_INDEX)


class MLPLM(nn.Module):
    """Bengio-style MLP language model. ``forward(idx, targets=None) -> (logits, loss)``.

    Args:
        vocab_size: number of token ids ``V``.
        context: how many previous tokens the model sees (its ``block_size``).
        emb_dim: size of each token's embedding ``C(w)``.
        hidden: width of the tanh hidden layer.
        direct: add Bengio's direct connections ``W x`` from the embeddings to the output.
        dropout: dropout on the hidden layer (0 = none).
        pad_id: id standing for "before the start" in the first ``context - 1`` positions.
    """

    def __init__(self, vocab_size: int, context: int = 3, emb_dim: int = 32, hidden: int = 128,
                 direct: bool = False, dropout: float = 0.0, pad_id: int = BOS_ID):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("context", context), ("emb_dim", emb_dim), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id {pad_id} must be a valid id in [0, {vocab_size})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.context, self.pad_id = vocab_size, context, pad_id
        self.block_size = context  # the longest context the model uses; generation may crop to it
        self.embedding = nn.Embedding(vocab_size, emb_dim)  # C
        self.hidden = nn.Linear(context * emb_dim, hidden)  # H, d
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)  # U, b
        self.direct = nn.Linear(context * emb_dim, vocab_size, bias=False) if direct else None  # W
        # Small output weights and zero biases: at initialisation every token gets (almost) the same
        # score, so the loss starts at ln(V), the loss of a uniform guess, not at some random higher value.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        if self.direct is not None:
            nn.init.zeros_(self.direct.weight)  # Bengio et al. allow W = 0: start as a pure MLP

    def init_output_bias(self, token_counts: torch.Tensor) -> None:
        """Start the output bias at the log unigram frequencies of ``token_counts`` (V,), smoothed by 1/2:
        the untrained model then predicts the unigram distribution (as :meth:`GPT.init_output_bias`)."""
        init_unigram_bias(self.head.bias, token_counts, self.vocab_size, "the output layer was built without one")

    def windows(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, context): for position t, the ids at t-context+1 .. t (left-padded)."""
        B, T = idx.shape
        pad = idx.new_full((B, self.context - 1), self.pad_id)
        padded = torch.cat([pad, idx], dim=1)  # (B, T + context - 1)
        return padded.unfold(1, self.context, 1)  # (B, T, context), a view: no copy, no loop

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        check_token_ids(idx, self.vocab_size)
        B, T = idx.shape
        x = self.embedding(self.windows(idx)).reshape(B, T, -1)  # (B, T, context * emb_dim)
        h = self.drop(torch.tanh(self.hidden(x)))  # (B, T, hidden)
        logits = self.head(h)  # (B, T, V)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits, lm_loss(logits, targets, self.vocab_size, idx.shape)
