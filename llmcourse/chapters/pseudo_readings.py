"""Two more readings of article 003's pseudo-sample loss, both from the literature on exposure bias.

Chapter 8 computes three readings of ``L_pseudo`` (:mod:`llmcourse.chapters.selffeedback`): the
language-model loss of real text, the formula as printed (pseudo tokens after real prefixes) and the
model's loss on its own samples. Two published methods also mix the model's own output into
training, each in its own place:

* **scheduled sampling** (Bengio et al. 2015): the *inputs* are partly the model's own tokens, the
  *targets* stay real. :func:`scheduled_sampling_loss` is the one-pass version used with Transformers
  (Duckworth et al. 2019; Mihaylova & Martins 2019): a first pass, without gradient, predicts every
  position from the real prefix; each input token after the prompt is then replaced by that prediction
  with probability ``p``; the second pass scores the real next tokens after this mixed prefix.
* **minimum-risk training** (MRT, Shen et al. 2016; MIXER, Ranzato et al. 2016, is its REINFORCE
  cousin): whole sequences are sampled from the model and scored against the reference by a *risk*
  ``Δ(ŷ, y)``; the loss is the risk expected under the model's distribution renormalised over the
  samples, ``Σ_s Q(s) Δ(s, y)`` with ``Q(s) ∝ p_θ(s)^α`` (:func:`minimum_risk_loss`).

Both need the real continuation ``y``, which the articles' loop does not use: they are ways of
learning from real text with the model's own output in the loop, not self-feedback without labels.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn as nn

from llmcourse.chapters.selffeedback import sequence_logits, sequence_nll
from llmcourse.core.checks import IGNORE_INDEX


def _check_batch(x: torch.Tensor, prompt_len: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.long:
        raise ValueError("x must be a (B, T) tensor of token ids (torch.long)")
    if not isinstance(prompt_len, int) or isinstance(prompt_len, bool) or not 1 <= prompt_len < x.size(1):
        raise ValueError(f"prompt_len must be an int in [1, T - 1] = [1, {x.size(1) - 1}], got {prompt_len!r}")


def scheduled_sampling_loss(model: nn.Module, x: torch.Tensor, prompt_len: int, p: float,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean NLL of the real tokens after the prompt, with each input token after the prompt replaced,
    with probability ``p``, by the model's greedy prediction of it from the real prefix.

    ``x`` (B, T) are real sequences whose first ``prompt_len`` tokens are the prompt. At ``p = 0`` this
    is the language-model loss of the continuation; at ``p = 1`` every input after the prompt is the
    model's own (one-pass) prediction, and every target is still real.
    """
    _check_batch(x, prompt_len)
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    inputs = x[:, :-1].clone()  # (B, T-1)
    with torch.no_grad():
        predicted = sequence_logits(model, inputs).argmax(-1)  # (B, T-1): prediction of x[:, t + 1]
    own = torch.rand(inputs.shape, generator=generator, device=inputs.device) < p
    own[:, :prompt_len] = False  # the prompt stays real
    # input position t (t >= 1) may take the model's prediction of token t, made at position t - 1
    inputs[:, 1:] = torch.where(own[:, 1:], predicted[:, :-1], inputs[:, 1:])
    targets = x[:, 1:].clone()
    targets[:, : prompt_len - 1] = IGNORE_INDEX  # score the continuation only
    return sequence_nll(model, inputs, targets)


def char_f1_risk(sample: Sequence[int], reference: Sequence[int]) -> float:
    """``1 − F1`` of the bags of tokens (characters) of a sample and its reference: 0 when they use the
    same characters as often, 1 when they share none. An empty pair has risk 0, one empty side 1."""
    if not sample and not reference:
        return 0.0
    common = sum((Counter(sample) & Counter(reference)).values())
    if common == 0:
        return 1.0
    precision, recall = common / len(sample), common / len(reference)
    return 1.0 - 2 * precision * recall / (precision + recall)


def minimum_risk_loss(seq_logprobs: torch.Tensor, risks: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``mean over prompts of Σ_s Q(s) Δ(s)`` with ``Q = softmax(α · log p_θ(s))`` over each prompt's samples.

    ``seq_logprobs`` (B, k) are the log-probabilities of ``k`` sampled continuations per prompt (with
    gradient), ``risks`` (B, k) their risks (no gradient). The gradient moves probability from the
    samples of higher risk to those of lower risk than the ``Q``-weighted mean. ``α`` sharpens
    (``α > 1``) or flattens (``α < 1``) ``Q``; Shen et al. use small ``α`` for long sentences.
    """
    if not isinstance(seq_logprobs, torch.Tensor) or seq_logprobs.dim() != 2 or seq_logprobs.size(1) < 2:
        raise ValueError("seq_logprobs must be a (B, k) tensor with k >= 2 samples per prompt")
    if not isinstance(risks, torch.Tensor) or risks.shape != seq_logprobs.shape:
        raise ValueError(f"risks must have the shape of seq_logprobs {tuple(seq_logprobs.shape)}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    q = torch.softmax(alpha * seq_logprobs, dim=1)  # (B, k)
    return (q * risks.detach().to(q.dtype)).sum(1).mean()


def continuation_logprobs(model: nn.Module, seqs: torch.Tensor, prompt_len: int, lengths: Sequence[int]) -> torch.Tensor:
    """``log p_θ`` of each row's continuation: tokens ``prompt_len .. lengths[i] - 1`` of ``seqs`` (B, T)."""
    _check_batch(seqs, prompt_len)
    if len(lengths) != seqs.size(0) or any(not prompt_len < n <= seqs.size(1) for n in lengths):
        raise ValueError(f"lengths must give, per row, an end in ({prompt_len}, {seqs.size(1)}]")
    logp = torch.log_softmax(sequence_logits(model, seqs[:, :-1]).float(), -1)  # (B, T-1, V)
    token_logp = logp.gather(-1, seqs[:, 1:, None]).squeeze(-1)  # (B, T-1)
    positions = torch.arange(1, seqs.size(1), device=seqs.device)[None, :]  # target position of each column
    keep = (positions >= prompt_len) & (positions < torch.tensor(list(lengths), device=seqs.device)[:, None])
    return (token_logp * keep).sum(1)
