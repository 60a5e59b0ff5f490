"""Reinforcement learning with a verifiable reward (可验证奖励的强化学习): GRPO and RLOO, from scratch.

When a program can check an answer (a sum, a unit test), the reward needs no learnt model: it is 1 for
an accepted completion and 0 otherwise. Policy-gradient methods then need a *baseline* to tell a good
sample from a lucky one, and two recent recipes take it from the other samples of the same prompt
instead of a value network:

* **GRPO** (Shao et al., 2024, DeepSeekMath; the recipe of DeepSeek-R1): sample a group of ``n``
  completions per prompt and use ``A_i = (r_i - mean(r)) / (std(r) + eps)`` for every token of
  completion ``i``; a clipped surrogate as in PPO, plus ``β`` times the k3 estimate of the KL to a
  frozen reference, per token;
* **RLOO** (Kool et al., 2019; Ahmadian et al., 2024): REINFORCE with the leave-one-out baseline
  ``A_i = r_i - mean_{j≠i} r_j``, unbiased because the baseline does not depend on sample ``i``.

A group whose completions are all right or all wrong has zero advantages and teaches nothing: these
methods learn only where the model is sometimes right, like rejection-sampling fine-tuning (chapter 8).
The clipped surrogate and the masked means are :mod:`llmcourse.chapters.ppo`'s, the sampler and the
log-probabilities :mod:`llmcourse.chapters.rlhf`'s. :func:`pass_at_k` is the unbiased estimator of
Chen et al. (2021).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from llmcourse.chapters.ppo import masked_mean, ppo_policy_loss
from llmcourse.chapters.rlhf import check_gpt, response_logprobs, sample_responses, sequence_kl
from llmcourse.core.checks import check_finite, check_int, eval_mode

ADVANTAGES = ("grpo", "rloo")


def group_advantages(rewards: torch.Tensor, kind: str = "grpo", eps: float = 1e-6) -> torch.Tensor:
    """Advantages (G, n) of rewards (G, n): ``G`` prompts, ``n`` completions each, compared within their group.

    ``"grpo"``: ``(r - mean) / (std + eps)`` with the population standard deviation of the group;
    ``"rloo"``: ``r_i - mean_{j≠i} r_j = n / (n - 1) · (r_i - mean)``."""
    if kind not in ADVANTAGES:
        raise ValueError(f"unknown advantage {kind!r}; expected one of {ADVANTAGES}")
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2 or rewards.size(1) < 2:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a (groups, n) tensor with n >= 2 completions per prompt, got {shape}")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (G, n)
    if kind == "rloo":
        n = rewards.size(1)
        return centred * n / (n - 1)
    return centred / (rewards.std(dim=1, unbiased=False, keepdim=True) + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token ``exp(Δ) - Δ - 1`` with ``Δ = log π_ref - log π`` (Schulman's k3): never negative, and for
    tokens sampled from π its expectation is exactly KL(π ‖ π_ref). GRPO penalises it per token."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021):
    ``1 - C(n - c, k) / C(n, k)``, the chance that ``k`` of the ``n`` samples, drawn without replacement,
    contain a correct one."""
    n, c, k = check_int("n", n, 1), check_int("c", c, 0), check_int("k", k, 1)
    if c > n or k > n:
        raise ValueError(f"need c <= n and k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class VerifiableRLConfig:
    """Settings of :func:`verifiable_rl`: ``iterations`` updates, each on ``prompts_per_step`` prompts with
    ``group_size`` completions apiece (``prompts_per_step * group_size`` samples per update)."""

    iterations: int = 50
    prompts_per_step: int = 8
    group_size: int = 8
    advantage: str = "grpo"
    lr: float = 1e-4
    beta: float = 0.0  # weight of the k3 KL to the reference, per token
    clip_eps: float = 0.2
    epochs: int = 1  # passes over each batch; with 1 the ratio is 1 and the clip never acts
    max_new_tokens: int = 5
    temperature: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "prompts_per_step", "epochs", "max_new_tokens"):
            check_int(name, getattr(self, name), 1)
        check_int("group_size", self.group_size, 2)
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        check_finite("lr", self.lr, 0.0, strict=True)
        check_finite("beta", self.beta, 0.0)
        check_finite("temperature", self.temperature, 0.0, strict=True)
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps!r}")


def _completions(seqs: torch.Tensor, mask: torch.Tensor, P: int) -> list[list[int]]:
    return [seqs[i, P:][mask[i]].tolist() for i in range(seqs.size(0))]


def verifiable_rl(model, reference, prompts: Sequence[Sequence[int]], verifier: Callable[[list[int], list[int]], bool],
                  config: VerifiableRLConfig, eos_id: int, pad_id: int = 0, eval_fn: Callable | None = None,
                  eval_every: int = 10) -> dict[str, list]:
    """Optimise the GPT ``model`` in place with GRPO or RLOO against ``verifier(prompt, completion) -> bool``.

    History, one entry per update: ``reward`` (share of the update's samples accepted), ``kl`` (mean
    KL(π ‖ π_ref) per completion, from the samples' log-ratios), ``learning`` (share of prompts whose group
    was neither all right nor all wrong), ``samples`` (cumulative samples drawn); and ``eval_step`` plus
    the keys of ``eval_fn(model) -> dict`` every ``eval_every`` updates (and after the last)."""
    check_gpt(model)
    check_gpt(reference, "reference")
    if not isinstance(config, VerifiableRLConfig):
        raise TypeError(f"config must be a VerifiableRLConfig, got {type(config).__name__}")
    prompts = [list(p) for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token-id lists")
    cfg = config
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    reference.eval()
    history: dict[str, list] = {"reward": [], "kl": [], "learning": [], "samples": [], "eval_step": []}

    def evaluate(step: int) -> None:
        if eval_fn is not None:
            history["eval_step"].append(step)
            for key, value in eval_fn(model).items():
                history.setdefault(key, []).append(float(value))

    evaluate(0)
    for step in range(1, cfg.iterations + 1):
        rows = torch.randint(len(prompts), (cfg.prompts_per_step,), generator=generator).tolist()
        groups = []  # (seqs, mask, prompt length, advantages (n,), old and reference log-probs)
        rewards_all, kls = [], []
        with eval_mode(model):
            for r in rows:
                prompt = prompts[r]
                seqs, mask = sample_responses(model, prompt, cfg.group_size, cfg.max_new_tokens, eos_id, generator,
                                              cfg.temperature, pad_id)
                P = len(prompt)
                rewards = torch.tensor([float(verifier(prompt, c)) for c in _completions(seqs, mask, P)])
                old_logp, ref_logp = response_logprobs(model, seqs, P), response_logprobs(reference, seqs, P)
                groups.append((seqs, mask, P, rewards, old_logp, ref_logp))
                rewards_all.append(rewards)
                kls.append(sequence_kl(old_logp, ref_logp, mask).mean().item())
        advantages = group_advantages(torch.stack(rewards_all), cfg.advantage)  # (G, n)
        model.train()
        for _ in range(cfg.epochs):
            optimizer.zero_grad(set_to_none=True)
            for (seqs, mask, P, _, old_logp, ref_logp), adv in zip(groups, advantages):
                logp = response_logprobs(model, seqs, P)  # (n, L)
                pg_loss, _ = ppo_policy_loss(logp, old_logp, adv[:, None].expand_as(logp), mask, cfg.clip_eps)
                loss = pg_loss + cfg.beta * masked_mean(k3_kl(logp, ref_logp), mask)
                (loss / len(groups)).backward()  # the mean over the update's prompts
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
        model.eval()
        stacked = torch.stack(rewards_all)
        history["reward"].append(stacked.mean().item())
        history["kl"].append(sum(kls) / len(kls))
        history["learning"].append(((stacked > 0).any(1) & ~(stacked > 0).all(1)).float().mean().item())
        history["samples"].append(step * cfg.prompts_per_step * cfg.group_size)
        if step % eval_every == 0 or step == cfg.iterations:
            evaluate(step)
    return history


__all__ = ["ADVANTAGES", "VerifiableRLConfig", "group_advantages", "k3_kl", "pass_at_k", "verifiable_rl"]
