"""Learning from human preferences (基于人类反馈的强化学习, RLHF): the pieces chapter 9 derives.

The pipeline of Ziegler et al. (2019), Stiennon et al. (2020) and InstructGPT (Ouyang et al., 2022):

1. *supervised fine-tuning (监督微调, SFT)*: a language model trained on demonstrations;
2. a *reward model (奖励模型)* :class:`RewardModel` trained on preference pairs (chosen ≻ rejected) with the
   Bradley–Terry loss :func:`bradley_terry_loss`, ``-log σ(r(chosen) - r(rejected))``;
3. PPO against the reward with a KL penalty to the frozen SFT model (:mod:`llmcourse.chapters.ppo`);

and two alternatives: DPO (Rafailov et al., 2023; :func:`dpo_loss`, :class:`DPOObjective`), which
learns from the pairs directly without a reward model, and best-of-n sampling
(:func:`best_of_n_kl_bound`).

A batch of *responses* is two tensors: ``seqs`` (B, P + L), a shared prompt of P tokens followed by
at most L response tokens, padded with ``pad_id`` after the response's first ``<eos>``; and ``mask``
(B, L), True at the real response tokens (those up to and including the first ``<eos>``). Position
``P - 1 + k`` of the model's output predicts response token ``k``. :func:`encode_responses` builds this
from texts, :func:`sample_responses` from a model.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import IGNORE_INDEX, check_finite, check_generator, check_int, eval_mode, model_device
from llmcourse.generate import draw_inverse_cdf
from llmcourse.models.gpt import GPT, GPTConfig


# ---- checks -------------------------------------------------------------------------------------
def check_gpt(model, name: str = "model") -> GPT:
    """``model`` if it is an llmcourse GPT (the pieces here read its hidden states and its cache)."""
    if not isinstance(model, GPT):
        raise TypeError(f"{name} must be an llmcourse.models.GPT, got {type(model).__name__}")
    return model


def _check_pair(a, b, names: str) -> None:
    for x in (a, b):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{names} must be float tensors, got {type(x).__name__}"
                            + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_responses(seqs, mask) -> int:
    """Check a ``(seqs, mask)`` response batch (see the module docstring); return the prompt length P."""
    if not isinstance(seqs, torch.Tensor) or seqs.dim() != 2 or seqs.dtype != torch.long:
        raise TypeError("seqs must be a (B, P + L) torch.long tensor of token ids, got "
                        + (f"{seqs.dim()}-D {seqs.dtype}" if isinstance(seqs, torch.Tensor) else type(seqs).__name__))
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        raise TypeError("mask must be a (B, L) bool tensor marking the real response tokens")
    if mask.size(0) != seqs.size(0) or not 1 <= mask.size(1) < seqs.size(1):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit seqs {tuple(seqs.shape)}: expected (B, L) with "
                         "1 <= L < seqs.size(1) (the prompt takes at least one position)")
    if not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("each row of mask must be a non-empty prefix (True... then False...): a response is its "
                         "tokens up to and including the first <eos>")
    return seqs.size(1) - mask.size(1)


# ---- building response batches -------------------------------------------------------------------
def encode_responses(id_lists: Sequence[Sequence[int]], prompt: Sequence[int], max_len: int, eos_id: int,
                     pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Response batch of given token lists (e.g. human reviews): each cut to ``max_len`` tokens, with
    ``<eos>`` appended when it fits (a complete text), exactly as :func:`sample_responses` shapes samples."""
    max_len = check_int("max_len", max_len, 1)
    if isinstance(id_lists, (str, torch.Tensor)) or len(id_lists) == 0:
        raise ValueError("id_lists must be a non-empty list of token-id lists")
    prompt = list(prompt)
    if not prompt:
        raise ValueError("prompt must hold at least one token (e.g. [eos])")
    rows = [(list(ids) + [eos_id])[:max_len] for ids in id_lists]
    seqs = torch.full((len(rows), len(prompt) + max_len), pad_id, dtype=torch.long)
    seqs[:, : len(prompt)] = torch.tensor(prompt)
    lengths = torch.tensor([len(r) for r in rows])  # (B,)
    for i, r in enumerate(rows):  # one Python step per text, not per token
        seqs[i, len(prompt): len(prompt) + len(r)] = torch.tensor(r, dtype=torch.long)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]  # (B, L)
    return seqs, mask


def prompt_rows(prompt, n: int) -> torch.Tensor:
    """``n`` prompt rows (n, P): one prompt (a list of ids) repeated, or a (n, P) tensor of ``n`` prompts of
    one length P (review prefixes, say), returned as it is."""
    if isinstance(prompt, torch.Tensor):
        if prompt.dim() != 2 or prompt.dtype != torch.long or prompt.size(0) != n or prompt.size(1) == 0:
            raise ValueError(f"a tensor of prompts must be (n={n}, P) torch.long with P >= 1 (one prompt per response), "
                             f"got {tuple(prompt.shape)} {prompt.dtype}")
        return prompt
    prompt = list(prompt)
    if not prompt:
        raise ValueError("prompt must hold at least one token (e.g. [eos])")
    return torch.tensor(prompt, dtype=torch.long).repeat(n, 1)


DRAWS = {  # how sample_responses draws a token per row from probs (n, V)
    "multinomial": lambda probs, generator: torch.multinomial(probs, 1, generator=generator).squeeze(1),
    "inverse_cdf": draw_inverse_cdf,
}


def sample_responses(model: GPT, prompt: Sequence[int] | torch.Tensor, n: int, max_new_tokens: int, eos_id: int,
                     generator: torch.Generator, temperature: float = 1.0, pad_id: int = 0,
                     draw: str = "multinomial"):
    """Sample ``n`` responses at once: a response batch ``(seqs, mask)``. ``prompt`` is one prompt (a list
    of ids, shared by every response) or a (n, P) tensor with one prompt of the same length per response.

    Each step feeds only the newest token and keeps the attention keys and values of the earlier ones
    (the GPT's KV cache), and the output layer runs at the last position only: about ``L / 2`` times less
    work than re-running the whole sequence per token. A row stops at its first ``eos_id``; the rest is
    ``pad_id``. Draws come from ``generator`` (on the CPU), so a seed gives the same samples anywhere:
    ``draw="multinomial"`` with ``torch.multinomial``, ``draw="inverse_cdf"`` with
    :func:`llmcourse.generate.draw_inverse_cdf` (the same distribution, other draws, and several times
    faster for thousands of rows over a large vocabulary).
    """
    check_gpt(model)
    n = check_int("n", n, 1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    check_generator(generator, "samples")
    temperature = check_finite("temperature", temperature, 0.0, strict=True)
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {sorted(DRAWS)}, got {draw!r}")
    rows = prompt_rows(prompt, n)  # (n, P)
    P = rows.size(1)
    if P + max_new_tokens - 1 > model.block_size:
        raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) - 1 exceeds block_size {model.block_size}")
    device = model_device(model)
    with eval_mode(model):
        idx = rows.to(device)  # (n, P)
        cache = model.new_cache()
        h = model.hidden_states(idx, cache)[:, -1]  # (n, C): only the last position is decoded
        out = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        for t in range(max_new_tokens):
            probs = (model.lm_head(h).float() / temperature).softmax(dim=-1).cpu()  # (n, V)
            nxt = DRAWS[draw](probs, generator).to(device)  # (n,)
            out[:, t] = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            done = done | (nxt == eos_id)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            h = model.hidden_states(nxt.unsqueeze(1), cache)[:, -1]  # (n, C)
    # real tokens: up to and including the first eos (a row without eos is real to the end)
    is_eos = out == eos_id
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()  # eos tokens strictly before position t
    mask = before == 0  # (n, L)
    return torch.cat([idx, out], dim=1), mask


# ---- log-probabilities under a GPT ----------------------------------------------------------------
def gpt_hidden(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Final hidden states (B, T, C) of a GPT (after ``ln_f``), i.e. the input of its output layer.
    Reward and value heads read these instead of the next-token logits."""
    return check_gpt(model).hidden_states(idx)  # (B, T, C)


def response_logprobs(model: GPT, seqs: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """``log π(y_k | prompt, y_<k)`` for every response position (B, L); padding positions hold
    whatever the pad id scores (multiply by ``mask``). Differentiable."""
    logits, _ = model(seqs[:, :-1])  # (B, P + L - 1, V)
    logp = logits[:, prompt_len - 1:].float().log_softmax(dim=-1)  # (B, L, V)
    return logp.gather(-1, seqs[:, prompt_len:].unsqueeze(-1)).squeeze(-1)  # (B, L)


@torch.no_grad()
def response_entropy(model: GPT, seqs: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """The entropy (nats) of the model's next-token distribution at every response position (B, L): how
    undecided the policy is where it wrote each token (multiply by ``mask``)."""
    logits, _ = model(seqs[:, :-1])  # (B, P + L - 1, V)
    logp = logits[:, prompt_len - 1:].float().log_softmax(dim=-1)  # (B, L, V)
    return -(logp.exp() * logp).sum(dim=-1)  # (B, L)


def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ_k log π(y_k) - log π_ref(y_k)`` over each response's real tokens (B,). For responses sampled
    from π, its mean estimates KL(π ‖ π_ref) over whole responses (nats per response)."""
    _check_pair(logp, ref_logp, "logp and ref_logp")
    return ((logp - ref_logp) * mask).sum(dim=1)


def sft_batcher(seqs: torch.Tensor, mask: torch.Tensor, batch_size: int):
    """``get_batch(i, generator) -> (x, y)`` for :func:`llmcourse.train.train`: random rows of a
    response batch; targets are the response tokens, :data:`IGNORE_INDEX` on the prompt and padding."""
    P = check_responses(seqs, mask)
    y_all = seqs[:, 1:].clone()  # (N, P + L - 1)
    y_all[:, : P - 1] = IGNORE_INDEX
    y_all[:, P - 1:][~mask] = IGNORE_INDEX

    def get_batch(i: int, generator: torch.Generator):
        rows = torch.randint(seqs.size(0), (batch_size,), generator=generator)
        return seqs[rows, :-1], y_all[rows]

    return get_batch


# ---- the reward model and the Bradley–Terry loss --------------------------------------------------
def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean ``-log σ(r_chosen - r_rejected)``: the negative log-likelihood of the preferences under the
    Bradley–Terry model ``P(chosen ≻ rejected) = σ(r_chosen - r_rejected)``. Equal rewards give ln 2."""
    _check_pair(r_chosen, r_rejected, "r_chosen and r_rejected")
    return F.softplus(r_rejected - r_chosen).mean()  # softplus(-d) = -log σ(d), without overflow


class RewardModel(nn.Module):
    """A GPT body with a scalar head on the hidden state of each response's last real token (which has
    read the whole text: attention is causal). ``forward(seqs, mask)`` returns ``(rewards (B,), None)``;
    with ``rejected`` and ``rejected_mask`` it returns ``(r_chosen - r_rejected, Bradley–Terry loss)``,
    the ``(output, loss)`` contract of :func:`llmcourse.train.train` for a batch of pairs."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.body = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_gpt(cls, model: GPT) -> "RewardModel":
        """A reward model whose body starts as a copy of ``model`` (usually the SFT model, which already
        reads the texts it will judge)."""
        rm = cls(check_gpt(model).config)
        rm.body.load_state_dict(model.state_dict())
        return rm.to(model_device(model))

    def score(self, seqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        P = check_responses(seqs, mask)
        last = P + mask.sum(dim=1) - 1  # (B,) position of each response's last real token
        h = gpt_hidden(self.body, seqs)  # (B, T, C)
        return self.head(h[torch.arange(seqs.size(0), device=seqs.device), last]).squeeze(-1).float()  # (B,)

    def forward(self, seqs, mask, rejected=None, rejected_mask=None):
        if rejected is None:
            return self.score(seqs, mask), None
        B = seqs.size(0)
        r = self.score(torch.cat([seqs, rejected]), torch.cat([mask, rejected_mask]))  # one pass for both
        return r[:B] - r[B:], bradley_terry_loss(r[:B], r[B:])


def pair_batcher(chosen, chosen_mask, rejected, rejected_mask, batch_size: int):
    """``get_batch(i, generator) -> dict`` of random preference pairs, for :class:`RewardModel` and
    :class:`DPOObjective` under :func:`llmcourse.train.train`."""
    check_responses(chosen, chosen_mask)
    check_responses(rejected, rejected_mask)
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must have the same shape")

    def get_batch(i: int, generator: torch.Generator) -> dict:
        rows = torch.randint(chosen.size(0), (batch_size,), generator=generator)
        return dict(seqs=chosen[rows], mask=chosen_mask[rows], rejected=rejected[rows], rejected_mask=rejected_mask[rows])

    return get_batch


def platt_scale(scores: torch.Tensor, labels: torch.Tensor, l2: float = 1e-6, max_iter: int = 50):
    """Fit ``P(label = 1 | score) = σ(a · score + b)`` (Platt scaling) by Newton's method; return (a, b).

    The Bradley–Terry loss fixes rewards only up to an added constant, so a reward alone does not say
    "positive"; this logistic fit on labelled texts does. ``l2`` (a tiny ridge) keeps it finite on
    separable data.
    """
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor) or scores.shape != labels.shape \
            or scores.dim() != 1 or scores.numel() < 2:
        raise ValueError("scores and labels must be 1-D tensors of the same length (at least 2)")
    y = labels.double()
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("labels must be 0 or 1")
    X = torch.stack([scores.double(), torch.ones_like(y)], dim=1)  # (N, 2)
    w = torch.zeros(2, dtype=torch.float64)
    for _ in range(max_iter):
        p = torch.sigmoid(X @ w)
        grad = X.T @ (p - y) + l2 * w
        hess = X.T @ (X * (p * (1 - p))[:, None]) + l2 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if float(step.abs().max()) < 1e-12:
            break
    return float(w[0]), float(w[1])


# ---- DPO and best-of-n ----------------------------------------------------------------------------
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO: mean ``-log σ(β [(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))])`` from the
    sequence log-probabilities (B,) of the chosen (w) and rejected (l) responses. ``β log π/π_ref`` is
    the implicit reward; the loss is the Bradley–Terry loss on it, so policy = reference gives ln 2."""
    _check_pair(policy_chosen, policy_rejected, "policy_chosen and policy_rejected")
    _check_pair(ref_chosen, ref_rejected, "ref_chosen and ref_rejected")
    _check_pair(policy_chosen, ref_chosen, "policy and reference log-probabilities")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    return bradley_terry_loss(beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected))


class DPOObjective(nn.Module):
    """The DPO loss of a trainable ``policy`` against a frozen copy ``reference`` on a batch of pairs:
    ``forward(seqs, mask, rejected, rejected_mask) -> (implicit reward margins (B,), loss)``, trainable
    with :func:`llmcourse.train.train` and :func:`pair_batcher` (only the policy has gradients)."""

    def __init__(self, policy: GPT, reference: GPT, beta: float = 0.1) -> None:
        super().__init__()
        self.policy, self.reference, self.beta = check_gpt(policy, "policy"), check_gpt(reference, "reference"), beta
        self.reference.requires_grad_(False)

    def forward(self, seqs, mask, rejected, rejected_mask):
        P = check_responses(seqs, mask)
        both, both_mask = torch.cat([seqs, rejected]), torch.cat([mask, rejected_mask])  # (2B, ...)
        logp = (response_logprobs(self.policy, both, P) * both_mask).sum(dim=1)  # (2B,)
        with torch.no_grad():
            ref = (response_logprobs(self.reference, both, P) * both_mask).sum(dim=1)
        B = seqs.size(0)
        margins = self.beta * ((logp[:B] - ref[:B]) - (logp[B:] - ref[B:]))
        return margins.detach(), dpo_loss(logp[:B], logp[B:], ref[:B], ref[B:], self.beta)


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-n ‖ base) = ``log n - (n - 1) / n`` nats for a continuous reward without ties
    (Stiennon et al., 2020; an upper bound in general, Beirami et al., 2024)."""
    n = check_int("n", n, 1)
    return math.log(n) - (n - 1) / n


__all__ = [
    "DPOObjective", "RewardModel", "best_of_n_kl_bound", "bradley_terry_loss", "check_gpt", "check_responses",
    "dpo_loss", "encode_responses", "gpt_hidden", "pair_batcher", "platt_scale", "prompt_rows", "response_entropy",
    "response_logprobs", "sample_responses", "sequence_kl", "sft_batcher",
]
