"""PPO with a KL penalty to a frozen reference model (近端策略优化), as in Ziegler et al. (2019),
Stiennon et al. (2020) and InstructGPT (Ouyang et al., 2022).

Generating a response is an episode: the state is the prompt and the tokens so far, the action the
next token, and the reward is given per token,

    r_k = -β (log π(y_k) - log π_ref(y_k))        plus the reward model's score at the last token,

so the return of a response is ``score - β · log π(y)/π_ref(y)``, whose expectation is the RLHF objective
``E[score] - β KL(π ‖ π_ref)``. Advantages come from generalised advantage estimation (:func:`gae`) with a
value head on the policy (:class:`PolicyWithValue`); the policy and value losses are clipped
(:func:`ppo_policy_loss`, :func:`ppo_value_loss`); β is fixed or adapted towards a target KL
(:class:`AdaptiveKLController`). :func:`ppo_train` runs the loop.

Shapes: ``B`` responses, ``L`` response positions; every per-token tensor is (B, L) with a bool ``mask``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from llmcourse.chapters.rlhf import (check_gpt, check_responses, gpt_hidden, prompt_rows, response_entropy,
                                     response_logprobs, sample_responses, sequence_kl)
from llmcourse.core.checks import check_finite, check_int, eval_mode


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is True."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked positions (0 elsewhere): advantages on one scale whatever
    the reward's scale, so the learning rate means the same thing throughout training."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


# ---- rewards and advantages -----------------------------------------------------------------------
def kl_penalized_rewards(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                         beta: float) -> torch.Tensor:
    """Per-token rewards (B, L): ``-β (log π - log π_ref)`` at every real token, plus ``scores`` (B,) at
    each response's last real token; 0 on padding."""
    if scores.dim() != 1 or scores.size(0) != logp.size(0):
        raise ValueError(f"scores must be (B,) = ({logp.size(0)},), got {tuple(scores.shape)}")
    if logp.shape != ref_logp.shape or logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)}, ref_logp {tuple(ref_logp.shape)} and mask {tuple(mask.shape)} must match")
    rewards = -beta * (logp - ref_logp) * mask  # (B, L)
    last = mask.sum(dim=1) - 1  # (B,)
    rewards[torch.arange(rewards.size(0), device=rewards.device), last] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016): advantages and returns (B, L).

    ``δ_t = r_t + γ V_{t+1} - V_t`` (``V`` = 0 after a response's last token, the end of the episode)
    and ``A_t = δ_t + γλ A_{t+1}``: λ = 0 is the one-step estimate, λ = 1 the Monte-Carlo return minus
    ``V_t``. The returns ``A_t + V_t`` are the value head's targets. A loop over positions, not rows.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask {tuple(mask.shape)} must match")
    for name, x in (("gamma", gamma), ("lam", lam)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {x!r}")
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m  # padding: no reward, no value (the episode is over)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])  # A_{t+1}, 0 past the end
    L = values.size(1)
    for t in reversed(range(L)):
        next_value = values[:, t + 1] if t + 1 < L else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


# ---- the clipped losses ---------------------------------------------------------------------------
def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip_eps: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate ``-min(ρ A, clip(ρ, 1 - ε, 1 + ε) A)`` with ``ρ = π / π_old``, averaged over
    real tokens; also the share of tokens where the clip is active. Where the clip is active (ρ beyond
    the trust region in the direction A favours) the loss is constant in θ: zero gradient."""
    if not 0 < clip_eps < 1:
        raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps!r}")
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)  # the pessimistic of the two
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> torch.Tensor:
    """``½ max((V - R)², (V_clip - R)²)`` with ``V_clip = V_old + clip(V - V_old, ±clip)``: the value head
    may not move further than ``clip`` from its rollout-time prediction in one batch."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask)


# ---- β ------------------------------------------------------------------------------------------
class FixedKLController:
    """A constant KL coefficient β."""

    def __init__(self, beta: float) -> None:
        self.beta = check_finite("beta", beta, 0.0)

    def update(self, kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): ``β ← β (1 + K e)`` with ``e = clip(KL / target - 1, -0.2, 0.2)`` and
    ``K = n_steps / horizon``: β grows while the measured KL is above ``target`` and shrinks below it."""

    def __init__(self, beta: float, target: float, horizon: int = 10000) -> None:
        super().__init__(beta)
        self.target = check_finite("target KL", target, 0.0, strict=True)
        self.horizon = check_int("horizon", horizon, 1)

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon


# ---- the policy and the loop ----------------------------------------------------------------------
class PolicyWithValue(nn.Module):
    """A GPT policy with a value head on the same hidden states: ``forward(idx) -> (logits, values)``
    (B, T, V) and (B, T). Sharing the body makes the value estimate nearly free."""

    def __init__(self, gpt) -> None:
        super().__init__()
        self.gpt = check_gpt(gpt, "gpt")
        self.value_head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: no made-up baseline
        nn.init.zeros_(self.value_head.bias)

    def forward(self, idx: torch.Tensor):
        h = gpt_hidden(self.gpt, idx)  # (B, T, C)
        return self.gpt.lm_head(h), self.value_head(h).squeeze(-1)

    def evaluate(self, seqs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities and values (B, L) at the response positions of a response batch."""
        P = check_responses(seqs, mask)
        logits, values = self(seqs[:, :-1])  # (B, P + L - 1, V), (B, P + L - 1)
        logp = logits[:, P - 1:].float().log_softmax(-1).gather(-1, seqs[:, P:].unsqueeze(-1)).squeeze(-1)
        return logp, values[:, P - 1:].float()


@dataclass
class PPOConfig:
    """Hyper-parameters of :func:`ppo_train` (defaults: small models on a CPU)."""

    iterations: int = 40  # rollout batches
    batch_size: int = 64  # responses per rollout
    max_new_tokens: int = 24
    ppo_epochs: int = 2  # passes over each rollout batch
    minibatch_size: int = 32
    lr: float = 3e-4
    beta: float = 0.1  # KL coefficient (initial value when target_kl is set)
    target_kl: float | None = None  # None: fixed β; else adaptive β towards this KL (nats per response)
    horizon: int = 1000
    clip_eps: float = 0.2
    vf_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "max_new_tokens", "ppo_epochs", "minibatch_size", "horizon"):
            setattr(self, name, check_int(f"PPOConfig.{name}", getattr(self, name), 1))
        if self.minibatch_size > self.batch_size:
            raise ValueError(f"PPOConfig.minibatch_size ({self.minibatch_size}) must be <= batch_size ({self.batch_size})")
        if not self.lr > 0 or self.beta < 0 or self.vf_coef < 0 or not self.grad_clip > 0:
            raise ValueError("PPOConfig: lr and grad_clip must be > 0, beta and vf_coef >= 0")


def ppo_train(policy: PolicyWithValue, reference, reward_fn: Callable, prompt: Sequence[int] | torch.Tensor, eos_id: int,
              config: PPOConfig, pad_id: int = 0, rollout_stats: Callable | None = None,
              on_iteration: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Optimise ``policy`` in place; return the history, one entry per rollout batch.

    ``prompt`` is one prompt (a list of ids) that every rollout answers, or a pool (N, P) of prompts of one
    length, from which each rollout draws ``batch_size`` at random (with replacement).

    ``reward_fn(seqs, mask) -> (B,)`` scores a response batch (the reward model). History keys: ``score``
    (mean reward-model score of the rollouts), ``kl`` (mean KL to ``reference`` per response, from the
    rollouts' own log-ratios), ``beta``, ``objective`` (score - β·KL), ``length`` (response tokens),
    ``entropy`` (the policy's mean per-token entropy on its rollouts, nats), ``pg_loss``, ``vf_loss``,
    ``clipfrac``; ``rollout_stats(seqs, mask) -> dict`` adds its own numbers
    (diversity, say) measured on each rollout batch. ``on_iteration(i)`` is called after iteration ``i``
    (1, 2, ...), with the policy in eval mode, to evaluate checkpoints; it must not draw from the training
    generator. All randomness comes from one generator seeded ``config.seed``.
    """
    if not isinstance(policy, PolicyWithValue):
        raise TypeError(f"policy must be a PolicyWithValue, got {type(policy).__name__}")
    check_gpt(reference, "reference")
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
    cfg = config
    pool = prompt if isinstance(prompt, torch.Tensor) else None
    if pool is not None:
        prompt_rows(pool, len(pool))  # checks its shape
    else:
        prompt = list(prompt_rows(prompt, 1)[0].tolist())
    P = pool.size(1) if pool is not None else len(prompt)
    reference.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    kl_ctl = (AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.horizon) if cfg.target_kl is not None
              else FixedKLController(cfg.beta))
    keys = ("score", "kl", "beta", "objective", "length", "entropy", "pg_loss", "vf_loss", "clipfrac")
    history: dict[str, list[float]] = {k: [] for k in keys}
    for iteration in range(1, cfg.iterations + 1):
        # 1. rollout: responses from the current policy, their scores and the quantities PPO holds fixed
        prompts = prompt if pool is None else pool[torch.randint(pool.size(0), (cfg.batch_size,), generator=generator)]
        seqs, mask = sample_responses(policy.gpt, prompts, cfg.batch_size, cfg.max_new_tokens, eos_id, generator,
                                      pad_id=pad_id)
        with eval_mode(policy):
            scores = reward_fn(seqs, mask).float()  # (B,)
            old_logp, old_values = policy.evaluate(seqs, mask)  # (B, L) each
            ref_logp = response_logprobs(reference, seqs, P)  # (B, L)
            beta = kl_ctl.beta
            rewards = kl_penalized_rewards(scores, old_logp, ref_logp, mask, beta)
            advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = masked_whiten(advantages, mask)
            kl = sequence_kl(old_logp, ref_logp, mask).mean().item()
            entropy = masked_mean(response_entropy(policy.gpt, seqs, P), mask).item()
        # 2. a few epochs of minibatch updates on this batch
        policy.train()
        stats = []
        for _ in range(cfg.ppo_epochs):
            for rows in torch.randperm(cfg.batch_size, generator=generator).split(cfg.minibatch_size):
                logp, values = policy.evaluate(seqs[rows], mask[rows])
                pg_loss, clipfrac = ppo_policy_loss(logp, old_logp[rows], advantages[rows], mask[rows], cfg.clip_eps)
                vf_loss = ppo_value_loss(values, old_values[rows], returns[rows], mask[rows], cfg.vf_clip)
                optimizer.zero_grad(set_to_none=True)
                (pg_loss + cfg.vf_coef * vf_loss).backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                stats.append((pg_loss.item(), vf_loss.item(), clipfrac.item()))
        kl_ctl.update(kl, cfg.batch_size)
        score = scores.mean().item()
        for key, value in zip(keys, (score, kl, beta, score - beta * kl, mask.sum(1).float().mean().item(), entropy,
                                     *(sum(s[i] for s in stats) / len(stats) for i in range(3)))):
            history[key].append(value)
        if rollout_stats is not None:
            for key, value in rollout_stats(seqs, mask).items():
                if key in keys:
                    raise ValueError(f"rollout_stats returned {key!r}, a name ppo_train already records; rename it")
                history.setdefault(key, []).append(float(value))
        if on_iteration is not None:
            with eval_mode(policy):
                on_iteration(iteration)
    policy.eval()
    return history


__all__ = [
    "AdaptiveKLController", "FixedKLController", "PPOConfig", "PolicyWithValue", "gae", "kl_penalized_rewards",
    "masked_mean", "masked_whiten", "ppo_policy_loss", "ppo_train", "ppo_value_loss",
]
