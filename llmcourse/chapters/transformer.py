"""Where the layer norm goes in a Transformer block (层归一化的位置), for chapter 6's comparison.

``llmcourse.models.GPT`` uses GPT-2's *pre-LN* block. Two other arrangements, on the same weights:

* ``"post-LN"``, the original Transformer's (and BERT's): add the sub-layer's output, then normalise,
  ``x = LN_1(x + Attn(x))``, ``x = LN_2(x + MLP(x))``;
* ``"as drawn"``, the block that articles 003 and 004 draw in §3.1 (errata): attention, then the
  feed-forward layer, then a single "add & norm", ``x = LN_2(x + MLP(Attn(x)))``; ``ln_1`` is unused,
  and attention reaches the residual stream only through the feed-forward layer.

:func:`set_block_order` switches every block of a GPT to one of them (the weights are untouched).
"""
from __future__ import annotations

import types

import torch

from llmcourse.models.gpt import GPT, Block

BLOCK_ORDERS = ("pre-LN", "post-LN", "as drawn")


def post_ln_forward(block: Block, x: torch.Tensor, cache=None, layer: int = 0) -> torch.Tensor:
    x = block.ln_1(x + block.attn(x, cache, layer))  # (B, T, C): normalise after the addition
    return block.ln_2(x + block.mlp(x))  # (B, T, C)


def as_drawn_forward(block: Block, x: torch.Tensor, cache=None, layer: int = 0) -> torch.Tensor:
    return block.ln_2(x + block.mlp(block.attn(x, cache, layer)))  # (B, T, C): one residual, one norm


def set_block_order(model: GPT, order: str) -> GPT:
    """Make every block of ``model`` compute ``order`` (one of :data:`BLOCK_ORDERS`); returns ``model``."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a llmcourse GPT, got {type(model).__name__}")
    if order not in BLOCK_ORDERS:
        raise ValueError(f"unknown block order {order!r}; expected one of {BLOCK_ORDERS}")
    forward = {"post-LN": post_ln_forward, "as drawn": as_drawn_forward}.get(order)
    for block in model.transformer.h:
        if forward is None:
            block.__dict__.pop("forward", None)  # back to the class's pre-LN forward
        else:
            block.forward = types.MethodType(forward, block)
    return model


__all__ = ["BLOCK_ORDERS", "as_drawn_forward", "post_ln_forward", "set_block_order"]
