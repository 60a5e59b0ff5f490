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
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import IGNORE_INDEX, check_targets, check_token_ids



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


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``softmax(Q K^T / sqrt(D) + mask) V`` for every head at once."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # One Linear computes queries, keys and values of all heads: a single (C -> 3C) matmul.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # mixes the heads
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """Return ``y`` (B, T, C); with ``return_attention`` also the weights (B, H, T, T)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        # Split the channels into heads and move the head axis before time.
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        dropout_p = self.dropout if self.training else 0.0
        att = None
        if return_attention:
            # The formula written out, only when the weights are wanted (heat maps): it stores the
            # (T, T) matrix per head, which the fused kernel below never materialises.
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, H, T, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)  # (B, H, T, T)
            y = F.dropout(att, p=dropout_p, training=self.training) @ v  # (B, H, T, D)
        else:
            # Fused kernel (flash / memory-efficient attention where the device has one).
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        y = self.resid_dropout(self.c_proj(y))  # (B, T, C)
        return (y, att) if return_attention else y


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

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            a, att = self.attn(self.ln_1(x), return_attention=True)
            x = x + a  # (B, T, C)
            return x + self.mlp(self.ln_2(x)), att
        x = x + self.attn(self.ln_1(x))  # (B, T, C): tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): each token is transformed on its own
        return x


class GPT(nn.Module):
    """GPT-2-style decoder-only language model.

    ``forward(idx, targets=None)`` returns ``(logits, loss)``: logits (B, T, V) for the next token at
    every position, and the mean cross-entropy over targets that are not :data:`IGNORE_INDEX`
    (``None`` without targets).
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
        if self.lm_head.bias is None:
            raise ValueError("this GPT has no output bias: build it with GPTConfig(head_bias=True)")
        counts = torch.as_tensor(token_counts)
        if counts.shape != (self.config.vocab_size,) or counts.is_complex() or counts.dtype == torch.bool:
            raise ValueError(f"token_counts must be a real (vocab_size,) = ({self.config.vocab_size},) tensor "
                             f"of counts, got shape {tuple(counts.shape)} and dtype {counts.dtype}")
        counts = counts.double()
        if not torch.isfinite(counts).all() or (counts < 0).any():
            raise ValueError("token_counts must be finite and >= 0")
        counts = counts + 0.5  # tokens never seen get a small probability, not log 0
        self.lm_head.bias.copy_((counts / counts.sum()).log())

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

    def _check_input(self, idx: torch.Tensor, targets: torch.Tensor | None) -> None:
        check_token_ids(idx, self.config.vocab_size, "idx", self.config.block_size,
                        "crop the context to the last block_size tokens")
        if targets is not None:
            check_targets(targets, self.config.vocab_size, idx.shape)

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C); positions broadcast over B
        return self.transformer.drop(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """``idx`` (B, T) token ids -> ``(logits (B, T, V), loss or None)``."""
        self._check_input(idx, targets)
        x = self._embed(idx)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            # cross_entropy runs in float32 under autocast; IGNORE_INDEX marks padding.
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=IGNORE_INDEX
            )
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Attention weights of every layer and head for heat maps: (n_layer, B, H, T, T).

        Row ``t`` of a map is the distribution over the positions ``<= t`` that token ``t`` attends
        to. Computed with the explicit formula (the fused kernel never forms these matrices); call it
        in ``eval()`` mode for maps without dropout.
        """
        self._check_input(idx, None)
        x = self._embed(idx)
        maps = []
        for block in self.transformer.h:
            x, att = block(x, return_attention=True)
            maps.append(att)
        return torch.stack(maps)  # (n_layer, B, H, T, T)

    def configure_optimizers(
        self,
        weight_decay: float,
        learning_rate: float,
        betas: tuple[float, float] = (0.9, 0.95),
        device_type: str = "cpu",
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices and embeddings (>= 2-D) only, not on biases and
        LayerNorm gains, whose shrinking towards zero is not a useful prior. Fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        extra = {}
        if device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
            extra["fused"] = True  # one kernel for the whole update instead of one per tensor
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)
