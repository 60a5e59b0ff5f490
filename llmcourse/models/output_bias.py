"""Starting a language model's output layer at the unigram model, shared by the book's neural LMs.

With a zero output bias an untrained model predicts (almost) the uniform distribution, loss ``ln V``,
and must first learn how frequent each token is. Setting the bias to the log unigram frequencies of the
training stream makes step 0 the unigram model, so every update goes into using the context.
"""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def init_unigram_bias(bias: nn.Parameter | None, token_counts, vocab_size: int, how_to_add: str) -> None:
    """Set ``bias`` (V,) to ``log((counts + 1/2) / sum)``: the unigram model of ``token_counts`` (V,),
    smoothed by 1/2 so that tokens never seen get a small probability rather than log 0."""
    if bias is None:
        raise ValueError(f"this model has no output bias: {how_to_add}")
    counts = torch.as_tensor(token_counts)
    if counts.shape != (vocab_size,) or counts.is_complex() or counts.dtype == torch.bool:
        raise ValueError(f"token_counts must be a real (vocab_size,) = ({vocab_size},) tensor "
                         f"of counts, got shape {tuple(counts.shape)} and dtype {counts.dtype}")
    counts = counts.double()
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("token_counts must be finite and >= 0")
    counts = counts + 0.5
    bias.copy_((counts / counts.sum()).log())
