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
the recurrence has no maximal context. :meth:`LSTMLM.forward_with_state` carries the hidden state for
fast token-by-token generation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from llmcourse.core.checks import check_token_ids
from llmcourse.models.mlp_lm import lm_loss


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

    def forward_with_state(self, idx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(B, T) ids and an optional (h, c) state -> ((B, T, V) logits, new (h, c) state)."""
        check_token_ids(idx, self.vocab_size)
        x = self.drop(self.embedding(idx))  # (B, T, emb_dim)
        out, state = self.lstm(x, state)  # (B, T, hidden), h and c: (num_layers, B, hidden)
        return self.head(self.drop(out)), state  # (B, T, V)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits, _ = self.forward_with_state(idx)
        return logits, lm_loss(logits, targets, self.vocab_size, idx.shape)
