"""A GPT (decoder-only Transformer) language model in one readable file, in the style of nanoGPT.

The architecture is GPT-2's: learned token and position embeddings, ``n_layer`` pre-LayerNorm blocks
(``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``), a final LayerNorm, and an output layer that shares
its weight with the token embedding (weight tying). Attention is causal: position ``t`` only sees
positions ``<= t``. The parameter names match Hugging Face's ``GPT2LMHeadModel`` so that
:mod:`llmcourse.models.hf_convert` only has to transpose a few matrices.

Shapes: ``B`` batch, ``T`` sequence length, ``C`` = ``n_embd``, ``H`` = ``n_head``, ``D`` = ``C // H``,
``V`` = ``vocab_size``.

Targets equal to :data:`IGNORE_INDEX` (-100, the PyTorch and Hugging Face convention) are left out of
the loss: use it for padding positions.

Decoding token by token re-reads the whole context at every step unless the keys and values of the
positions already read are kept: ``cache = model.new_cache()``, then ``model(prompt, cache=cache)`` and
``model(next_token, cache=cache)`` feed only the new tokens (:class:`KVCache`). Attention runs in
the fused kernel (``"sdpa"``) or written out (``"explicit"``, which can keep its weights for heat
maps): one switch, :meth:`GPT.set_attention` or the context manager :meth:`GPT.attention`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import IGNORE_INDEX, check_targets, check_token_ids
from llmcourse.models.output_bias import init_unigram_bias

ATTENTION_IMPLS = ("sdpa", "explicit")  # the fused kernel, or the formula written out


@dataclass
class GPTConfig:
    """Hyper-parameters of :class:`GPT`. The defaults are a tiny model that trains on a CPU."""

    vocab_size: int = 256
    block_size: int = 64  # the longest sequence (context) the model accepts
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers (GPT-2 has them)
    head_bias: bool = False  # a bias on the output layer (GPT-2 has none); see GPT.init_output_bias

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head dimensions"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be a float in [0, 1), got {self.dropout!r}")
        for name in ("bias", "head_bias"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"GPTConfig.{name} must be a bool, got {type(getattr(self, name)).__name__}")


@dataclass
class KVCache:
    """The keys and values of every layer for the ``length`` positions a GPT has already read, so that a
    decoding step computes them for its new tokens only. Make one with :meth:`GPT.new_cache`;
    ``GPT.forward(idx, cache=cache)`` reads and extends it."""

    keys: list  # per layer: None before the first forward, then (B, H, length, D)
    values: list  # per layer: None, then (B, H, length, D)
    length: int = 0  # positions stored; the next token's position

    @property
    def batch_size(self) -> int | None:
        return None if self.keys[0] is None else self.keys[0].size(0)

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new keys and values (B, H, T, D) of ``layer``; return all of them, cached ones first."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)  # (B, H, length + T, D)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the batch rows ``rows`` (in that order, repeats allowed): beam search follows its beams."""
        self.keys = [None if k is None else k[rows] for k in self.keys]
        self.values = [None if v is None else v[rows] for v in self.values]


def causal_mask(T: int, S: int, device=None) -> torch.Tensor:
    """(T, S) bool, True where attention is allowed: the T queries are the last T of S positions, so
    query ``t`` sees the keys ``s <= S - T + t`` (with S == T, the usual lower triangle)."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``softmax(Q K^T / sqrt(D) + mask) V`` for every head at once.

    ``impl`` picks how: ``"sdpa"`` (the fused kernel) or ``"explicit"`` (the formula written out, which
    forms the (T, T) weights of every head and, with ``keep_weights``, keeps the last ones in
    ``weights`` for read-out). Set it for a whole model with :meth:`GPT.set_attention`.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # One Linear computes queries, keys and values of all heads: a single (C -> 3C) matmul.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # mixes the heads
        self.resid_dropout = nn.Dropout(config.dropout)
        self.impl, self.keep_weights = "sdpa", False
        self.weights: torch.Tensor | None = None  # (B, H, T, S): the last weights, with keep_weights

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """``x`` (B, T, C) -> (B, T, C). With ``cache``, the T tokens follow the cached positions of ``layer``."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        # Split the channels into heads and move the head axis before time.
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        if cache is not None:  # decoding: the keys and values of the positions read before come first
            k, v = cache.extend(layer, k, v)  # (B, H, S, D), S = cached + T
        S = k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        if self.impl == "explicit":
            y = self.explicit(q, k, v, dropout_p)  # (B, H, T, D)
        elif S == T:  # nothing cached (training, or a prompt): the plain causal mask
            # Fused kernel (flash / memory-efficient attention where the device has one).
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)  # (B, H, T, D)
        else:  # is_causal would align the mask top-left; one new token may see every position
            mask = None if T == 1 else causal_mask(T, S, x.device)  # (T, S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)

    def explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
        """The formula written out: it stores the (T, S) weights of every head, which the fused kernel
        never materialises (what fusion saves in memory and time)."""
        T, S = q.size(2), k.size(2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, H, T, S)
        att = att.masked_fill(~causal_mask(T, S, q.device), float("-inf")).softmax(dim=-1)  # (B, H, T, S)
        if self.keep_weights:
            self.weights = att.detach()
        return F.dropout(att, p=dropout_p, training=self.training) @ v  # (B, H, T, D)


class MLP(nn.Module):
    """Position-wise feed-forward network: ``C -> 4C -> GELU -> C``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 uses the tanh approximation ("gelu_new")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """One Transformer block, pre-LayerNorm: normalise, transform, add back to the residual stream."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)  # (B, T, C): tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): each token is transformed on its own
        return x


class GPT(nn.Module):
    """GPT-2-style decoder-only language model.

    ``forward(idx, targets=None, cache=None)`` returns ``(logits, loss)``: logits (B, T, V) for the next
    token at every position, and the mean cross-entropy over targets that are not :data:`IGNORE_INDEX`
    (``None`` without targets). With a :class:`KVCache` from :meth:`new_cache`, ``idx`` continues the
    positions the cache holds and is added to it.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
                wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embedding
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.head_bias)
        # Weight tying: the output layer scores token v by the dot product with v's embedding, so
        # one (V, C) matrix serves both ends (fewer parameters, and it helps small models).
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: every block adds two projections to the residual stream; scaling their init by
        # 1/sqrt(2 * n_layer) keeps the variance of the stream from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @torch.no_grad()
    def init_output_bias(self, token_counts: torch.Tensor) -> None:
        """Start the output bias at the log unigram frequencies of ``token_counts`` (V,), smoothed by
        1/2, so that the untrained model already predicts the unigram distribution.

        Without it a model with a tied output layer must encode how frequent each token is in the
        geometry of its embeddings, which takes many updates on a large vocabulary; with it, training
        starts at the unigram perplexity and spends its updates on context. Needs ``head_bias=True``.
        """
        init_unigram_bias(self.lm_head.bias, token_counts, self.config.vocab_size,
                          "build it with GPTConfig(head_bias=True)")

    @property
    def block_size(self) -> int:
        """Longest context the model accepts (generation crops the context to it)."""
        return self.config.block_size

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (the tied embedding counted once); ``non_embedding`` leaves out
        both embedding tables, the usual count in scaling-law papers."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def new_cache(self) -> KVCache:
        """An empty key/value cache for decoding: pass it to every ``forward`` of one generation."""
        n = self.config.n_layer
        return KVCache(keys=[None] * n, values=[None] * n)

    def _check_input(self, idx: torch.Tensor, cache: KVCache | None) -> int:
        """Check ``idx`` (and the cache it continues); return the position of its first token."""
        if cache is None:
            check_token_ids(idx, self.config.vocab_size, "idx", self.config.block_size,
                            "crop the context to the last block_size tokens")
            return 0
        if not isinstance(cache, KVCache) or len(cache.keys) != self.config.n_layer:
            raise TypeError(f"cache must be a KVCache from this model's new_cache(), got {type(cache).__name__}")
        check_token_ids(idx, self.config.vocab_size, "idx")
        if cache.length + idx.size(1) > self.config.block_size:
            raise ValueError(f"the cache holds {cache.length} positions and idx adds {idx.size(1)}: "
                             f"{cache.length + idx.size(1)} would exceed block_size {self.config.block_size}; "
                             "to go on, start a new cache from the last block_size tokens (llmcourse.generate does)")
        if cache.batch_size not in (None, idx.size(0)):
            raise ValueError(f"the cache holds {cache.batch_size} sequences but idx has {idx.size(0)} rows")
        return cache.length

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``idx`` (B, T) -> the final hidden states (B, T, C) after ``ln_f``: the output layer's input,
        which reward and value heads read too. With ``cache``, ``idx`` continues the cached positions."""
        start = self._check_input(idx, cache)
        T = idx.size(1)
        pos = torch.arange(start, start + T, device=idx.device)  # (T,): positions go on after the cache
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C); positions broadcast over B
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)  # (B, T, C)
        if cache is not None:
            cache.length += T
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """``idx`` (B, T) token ids -> ``(logits (B, T, V), loss or None)``; ``cache`` (from
        :meth:`new_cache`) is read and extended, for decoding one step at a time."""
        logits = self.lm_head(self.hidden_states(idx, cache))  # (B, T, V); hidden_states checks idx
        loss = None
        if targets is not None:
            check_targets(targets, self.config.vocab_size, idx.shape)
            # cross_entropy runs in float32 under autocast; IGNORE_INDEX marks padding.
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=IGNORE_INDEX
            )
        return logits, loss

    # ---- the attention switch
    def set_attention(self, impl: str, keep_weights: bool = False) -> None:
        """Every layer computes attention with ``impl``: ``"sdpa"`` (the fused kernel, the default) or
        ``"explicit"`` (the formula written out); ``keep_weights`` (explicit only) keeps each layer's
        last weights in ``block.attn.weights``."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention implementation {impl!r}; expected one of {ATTENTION_IMPLS}")
        if keep_weights and impl != "explicit":
            raise ValueError("keep_weights needs impl='explicit': the fused kernel never forms the weights")
        for block in self.transformer.h:
            block.attn.impl, block.attn.keep_weights, block.attn.weights = impl, bool(keep_weights), None

    @contextmanager
    def attention(self, impl: str, keep_weights: bool = False):
        """``set_attention(impl, keep_weights)`` inside the ``with`` block; every layer's previous
        setting comes back afterwards, also when the body raises (and kept weights are dropped)."""
        layers = [block.attn for block in self.transformer.h]
        before = [(a.impl, a.keep_weights) for a in layers]
        self.set_attention(impl, keep_weights)
        try:
            yield self
        finally:
            for a, (old_impl, old_keep) in zip(layers, before):
                a.impl, a.keep_weights, a.weights = old_impl, old_keep, None

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Attention weights of every layer and head for heat maps: (n_layer, B, H, T, T).

        Row ``t`` of a map is the distribution over the positions ``<= t`` that token ``t`` attends
        to. Computed with the explicit formula (the fused kernel never forms these matrices); call it
        in ``eval()`` mode for maps without dropout.
        """
        with self.attention("explicit", keep_weights=True):
            self(idx)
            return torch.stack([block.attn.weights for block in self.transformer.h])  # (n_layer, B, H, T, T)
