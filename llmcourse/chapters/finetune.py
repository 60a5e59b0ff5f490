"""Fine-tuning (微调) a BERT for classification, and looking inside the encoder.

Chapter 7 pretrains a small BERT by masked language modelling and fine-tunes it on a few labelled
reviews. This module keeps the pieces the chapter (and chapter 11) reuse:

* :func:`labelled_subset`: "the n labelled examples" of an experiment, a seeded random sample, so
  every model in a comparison sees exactly the same labels;
* :func:`finetune_classifier`: one fine-tuning run with the book's training loop, for a BERT or a
  GPT classifier (:class:`~llmcourse.models.gpt_classifier.GPTForSequenceClassification`);
* :func:`gpt_classifier_ids`: a review as the GPT classifier reads it, between two end-of-review tokens;
* :func:`classification_logits` and :func:`classifier_accuracy`: a sequence classifier's logits and
  test accuracy;
* :func:`bert_attention_maps` and :func:`attention_by_offset`: the attention weights of every layer and
  head, recomputed from the weights (the model itself calls ``F.scaled_dot_product_attention``,
  which does not return them), and how much weight a token puts on its neighbours at offsets
  ``-2, -1, 0, 1, 2``: the diagnostic that shows whether pretraining has taught the encoder to look
  at nearby characters, or still averages over the whole review.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from llmcourse.core.checks import eval_mode, model_device
from llmcourse.data.masking import ClassificationBatcher, check_id_lists, pad_with_mask
from llmcourse.evaluate import accuracy
from llmcourse.data.tokenizers import EOS_ID, Tokenizer
from llmcourse.models.bert import BertBase, BertForSequenceClassification, BertModel
from llmcourse.models.gpt_classifier import GPTForSequenceClassification
from llmcourse.train import TrainConfig, train


def labelled_subset(items: Sequence, n: int, seed: int) -> list:
    """The first ``n`` items of a random permutation seeded by ``seed`` (without replacement).

    Different seeds give different subsets; the same seed always gives the same one, so a
    pretrained and a from-scratch model compared at seed ``s`` are trained on the same labels.
    """
    items = list(items)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(items):
        raise ValueError(f"n must be an int in [1, {len(items)}] (the number of items), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:n]
    return [items[i] for i in order.tolist()]


CLASSIFIERS = (BertForSequenceClassification, GPTForSequenceClassification)


def finetune_classifier(model: nn.Module, sequences: Sequence[Sequence[int]], labels: Sequence[int],
                        config: TrainConfig, batch_size: int = 32, pad_id: int = 0, device=None) -> dict:
    """Train a sequence classifier (BERT's or GPT's, :data:`CLASSIFIERS`) on labelled id sequences
    with :func:`llmcourse.train.train` (random batches drawn with replacement, the data order seeded
    by ``config.seed``). Returns the training history; the model is trained in place."""
    if not isinstance(model, CLASSIFIERS):
        raise TypeError(f"model must be a BertForSequenceClassification or GPTForSequenceClassification, "
                        f"got {type(model).__name__}")
    batches = ClassificationBatcher(sequences, labels, batch_size, pad_id)
    return train(model, batches, config, device=device)


def gpt_classifier_ids(tokenizer: Tokenizer, text: str, max_len: int) -> list[int]:
    """``[<eos>] + text + [<eos>]`` as ids, the text cut to ``max_len - 2`` tokens: the framing the
    book's language models read reviews in (chapter 5's streams put ``<eos>`` between reviews), so the
    final ``<eos>``, where the GPT classifier reads its state, is a position the model knows as "a
    review has just ended"."""
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 3:
        raise ValueError(f"max_len must be an int >= 3 (two end tokens and at least one of the text), got {max_len!r}")
    return [EOS_ID, *tokenizer.encode(text)[:max_len - 2], EOS_ID]


def classification_logits(model: torch.nn.Module, sequences: Sequence[Sequence[int]], pad_id: int = 0,
                          batch_size: int = 128) -> torch.Tensor:
    """Logits (N, K) of a sequence classifier for every sequence, in ``eval`` mode.

    Sequences are batched in order of length, so little padding is computed, and returned in the
    order given. (Padding does not change a BERT's output: the padding mask hides it.)
    """
    seqs = check_id_lists(sequences)
    device = model_device(model)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [None] * len(seqs)
    with eval_mode(model):
        for start in range(0, len(seqs), batch_size):
            chosen = order[start : start + batch_size]
            input_ids, attention_mask = pad_with_mask([seqs[i] for i in chosen], pad_id)
            logits = model(input_ids.to(device), attention_mask.to(device))[0].float().cpu()  # (b, K)
            for j, i in enumerate(chosen):
                out[i] = logits[j]
    return torch.stack(out)


def classifier_accuracy(model: nn.Module, sequences: Sequence[Sequence[int]], labels: Sequence[int],
                        pad_id: int = 0) -> float:
    """Share of ``sequences`` whose arg-max class (in ``eval`` mode) equals the label."""
    labels = list(labels)
    if len(labels) != len(sequences):
        raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels; they must match one to one")
    predictions = classification_logits(model, sequences, pad_id).argmax(1).tolist()
    return accuracy(predictions, labels)


@torch.no_grad()
def bert_attention_maps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Attention probabilities of every layer: a list of ``n_layer`` tensors (B, H, T, T), where
    ``[b, h, i, j]`` is how much query position ``i`` attends to key position ``j`` (rows sum to 1,
    padding keys get 0). Computed in ``eval`` mode (no dropout), exactly as the model's forward pass:
    ``softmax(Q K^T / sqrt(D))`` with padding keys masked out.
    """
    bert = model.bert if isinstance(model, BertBase) else model
    if not isinstance(bert, BertModel):
        raise TypeError(f"model must be a BERT model or BertModel, got {type(model).__name__}")
    bert.check_inputs(input_ids, attention_mask)
    with eval_mode(bert):
        T = input_ids.size(1)
        pos = torch.arange(T, device=input_ids.device)
        x = bert.emb_ln(bert.tok_emb(input_ids) + bert.pos_emb(pos) + bert.seg_emb(torch.zeros_like(input_ids)))
        keep = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        maps = []
        for layer in bert.layers:
            attn = layer.attn
            B, _, C = x.shape
            D = C // attn.n_head
            q, k, _ = attn.qkv(x).split(C, dim=2)  # (B, T, C) each
            q = q.view(B, T, attn.n_head, D).transpose(1, 2)  # (B, H, T, D)
            k = k.view(B, T, attn.n_head, D).transpose(1, 2)  # (B, H, T, D)
            scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T)
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            maps.append(torch.softmax(scores, dim=-1))
            x = layer(x, keep)  # the next layer's input, from the model's own forward
    return maps


def attention_by_offset(maps: Sequence[torch.Tensor], attention_mask: torch.Tensor,
                        offsets: Sequence[int] = (-2, -1, 0, 1, 2)) -> torch.Tensor:
    """Mean attention weight from a real token at position ``i`` to the real token at ``i + d``, for
    each layer (rows) and offset ``d`` (columns), averaged over heads and over all query positions
    that have a real token at ``i + d``. A layer that ignores word order (attention spread evenly over
    a review of ``n`` tokens) puts about ``1/n`` on every offset; a layer that reads neighbours puts
    much more on ``-1`` and ``+1``."""
    if not maps:
        raise ValueError("maps is empty; pass the list returned by bert_attention_maps")
    real = attention_mask.bool()  # (B, T)
    T = real.shape[1]
    out = torch.zeros(len(maps), len(offsets))
    for li, probs in enumerate(maps):
        if probs.dim() != 4 or probs.shape[-1] != T or probs.shape[0] != real.shape[0]:
            raise ValueError(f"map {li} has shape {tuple(probs.shape)}; expected (B, H, T, T) with B, T of attention_mask {tuple(real.shape)}")
        mean_heads = probs.float().mean(1)  # (B, T, T)
        for oi, d in enumerate(offsets):
            if isinstance(d, bool) or not isinstance(d, int):
                raise TypeError(f"offsets must be ints, got {d!r}")
            if abs(d) >= T:
                continue
            i = torch.arange(max(0, -d), min(T, T - d))  # query positions whose i + d is inside
            pair = real[:, i] & real[:, i + d]  # (B, n): both positions are real tokens
            w = mean_heads[:, i, i + d]  # (B, n)
            out[li, oi] = w[pair].mean() if pair.any() else float("nan")
    return out


__all__ = ["CLASSIFIERS", "attention_by_offset", "bert_attention_maps", "classification_logits", "classifier_accuracy",
           "finetune_classifier", "gpt_classifier_ids", "labelled_subset"]
