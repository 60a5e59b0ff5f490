"""Chapter 8's shipped experiment ``ch8-raft``: filtered self-training with chapter 9's reward model as the verifier.

RAFT (reward-ranked fine-tuning, Dong et al. 2023) is section 8.7's loop with a learned verifier: each
round samples ``K`` continuations for each of ``PROMPTS`` training prompts from the current policy, keeps
the one the reward model scores highest, and fine-tunes the policy on the kept ones. It runs in chapter
9's conditional setting (:class:`llmcourse.book.experiment_ch9.Setting`: review beginnings as prompts,
the SFT model as the start and the reference, the proxy reward model as the verifier, the gold judge kept
apart), with PPO's sample budget there: ``ROUNDS x PROMPTS x K`` = 40 iterations x 64 = 2,560 samples.

For each of chapter 9's seeds the policy is measured after every round with the same evaluation as
``ch9-frontier`` (512 test prompts, the same sampling seed per seed), so its numbers pair with that
experiment's SFT, best-of-n and PPO arms. The hyper-parameters were set once, not tuned.
"""
from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from llmcourse.book import experiment_ch9 as ch9
from llmcourse.book import pretrained
from llmcourse.chapters import rlhf_conditional as rc
from llmcourse.chapters.rlhf import sample_responses
from llmcourse.train import TrainConfig

SEEDS = ch9.SEEDS
ROUNDS, PROMPTS, K, STEPS = 5, 64, 8, 6


def round_config(seed: int, round_: int) -> TrainConfig:
    """Each round's fine-tuning on the kept continuations: AdamW at a constant 5e-4, 6 updates of 32 (3 passes)."""
    return TrainConfig(max_steps=STEPS, lr=5e-4, min_lr=5e-4, warmup_steps=0, weight_decay=0.0, eval_interval=None,
                       seed=1000 * seed + round_)


def best_continuations(s: ch9.Setting, policy, prompts: torch.Tensor, generator: torch.Generator):
    """The reward model's favourite of ``K`` continuations per prompt: a response batch (seqs, mask) and its scores."""
    seqs, mask = sample_responses(policy, prompts.repeat_interleave(K, 0), len(prompts) * K, ch9.L, s.task.eos_id,
                                  generator)
    scores = rc.scores_of(s.rm, seqs, mask).view(len(prompts), K)  # (PROMPTS, K)
    rows = torch.arange(len(prompts)) * K + scores.argmax(dim=1)
    return seqs[rows], mask[rows], scores.max(dim=1).values


def raft(s: ch9.Setting, seed: int) -> dict:
    """``{metric: [value after round 1, ..., ROUNDS]}`` plus ``kept`` (mean proxy score of the kept continuations)."""
    policy = copy.deepcopy(s.sft)
    generator = torch.Generator().manual_seed(5000 + seed)
    curve: dict = {"kept": []}
    for round_ in range(1, ROUNDS + 1):
        rows = torch.randperm(len(s.task.train_prompts), generator=generator)[:PROMPTS]
        with torch.no_grad():
            seqs, mask, kept = best_continuations(s, policy.eval(), s.task.train_prompts[rows], generator)
        rc.supervised_finetune(policy, (seqs, mask), round_config(seed, round_))
        curve["kept"].append(kept.mean().item())
        for m, value in s.evaluate(policy, seed).items():
            curve.setdefault(m, []).append(value)
    return curve


def run(progress=print) -> dict:
    s = ch9.Setting()
    results = {m: [] for m in (*ch9.METRICS, "kept")}
    for seed in SEEDS:
        curve = raft(s, seed)
        for m in results:
            results[m].append(curve[m])
        progress(f"seed {seed}: proxy {curve['proxy'][-1]:.3f}, gold {curve['gold'][-1]:.3f}, KL {curve['kl'][-1]:.3f}")
    return results


def setup() -> dict:
    return {"seeds": list(SEEDS), "rounds": ROUNDS, "prompts": PROMPTS, "k": K, "round": asdict(round_config(0, 1)),
            "setting": {k: v for k, v in ch9.setup().items() if k in ("L", "prefix", "n_eval", "sft", "rm")},
            "weights_sha256": {"gpt-reviews": pretrained.read_manifest()["gpt-reviews.pt"]}}


def summary(results: dict) -> dict:
    """Mean proxy and gold reward (log-odds) after the last round."""
    return {m: sum(v[-1] for v in results[m]) / len(results[m]) for m in ("proxy", "gold", "kl")}


RECIPE = {"chapter": 8, "run": run, "setup": setup, "summary": summary, "tolerance": 0.5,
          "description": "chapter 8: RAFT, filtered self-training with chapter 9's proxy reward model, 3 seeds"}

__all__ = ["K", "PROMPTS", "RECIPE", "ROUNDS", "SEEDS", "STEPS", "best_continuations", "raft", "round_config", "run",
           "setup", "summary"]
