"""Chapter 9's shipped experiment ``ch9-frontier``: reward against KL for PPO, DPO and best-of-n, proxy and gold.

On the conditional task of :mod:`llmcourse.chapters.rlhf_conditional` (review beginnings as prompts, the
shipped chapter-6 GPT as the starting point), one SFT model, one proxy reward model and one gold judge
are trained (seed 0), and then, for each of three seeds:

* ``SFT`` and ``SFT on positive reviews only`` (the supervised baseline, trained with that seed);
* PPO against the proxy at β ∈ :data:`PPO_BETAS`, measured every :data:`CHECK_EVERY` iterations
  (the curves of Gao et al., 2023);
* DPO at β ∈ :data:`DPO_BETAS` on two kinds of pairs: ``on-policy`` (two SFT continuations of one
  training prompt, ranked by the proxy: the DPO paper's protocol) and ``human`` (a positive and a
  negative review beginning, as chapter 9's live DPO);
* best-of-n for n ∈ :data:`BON_NS`, choosing by the proxy among SFT continuations; its KL is the
  analytic value ``log n - (n - 1)/n`` (:func:`best_of_n_kl_bound`), not an estimate.

Every arm of seed ``s`` is evaluated on the same 512 test prompts with the same sampling seed; KL is
KL(π ‖ π_SFT) per continuation, estimated from the evaluation samples.
"""
from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from llmcourse.book import pretrained
from llmcourse.chapters import rlhf_conditional as rc
from llmcourse.chapters.ppo import PolicyWithValue, PPOConfig, ppo_train
from llmcourse.chapters.rlhf import DPOObjective, best_of_n_kl_bound, pair_batcher, sample_responses
from llmcourse.core.runtime import set_seed
from llmcourse.data import corpus
from llmcourse.data.tokenizers import EOS_ID
from llmcourse.train import TrainConfig, train

SEEDS = (0, 1, 2)
L = 24
N_EVAL = 512
SFT_STEPS = RM_STEPS = 150
PPO_BETAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
PPO_ITERATIONS, CHECK_EVERY = 40, 5
DPO_BETAS = (0.03, 0.1, 0.3, 1.0)
DPO_SOURCES = ("on-policy", "human")
DPO_PAIRS = 2048
BON_NS = (1, 2, 4, 8, 16)
METRICS = ("proxy", "gold", "proxy_pos", "gold_pos", "kl", "distinct2", "length", "cuo")


def ppo_config(beta: float, seed: int, iterations: int = PPO_ITERATIONS) -> PPOConfig:
    return PPOConfig(iterations=iterations, batch_size=64, minibatch_size=32, lr=3e-4, max_new_tokens=L, beta=beta,
                     seed=seed)


def dpo_config(seed: int) -> TrainConfig:
    return TrainConfig(max_steps=100, lr=3e-4, min_lr=3e-5, warmup_steps=10, weight_decay=0.0, eval_interval=None,
                       seed=seed)


def eval_seed(seed: int) -> int:
    """The sampling seed of seed ``seed``'s evaluations: the same for every arm (paired)."""
    return 1000 + seed


class Setting:
    """The task, the SFT model (the reference), the proxy reward model and the gold judge (all seed 0)."""

    def __init__(self) -> None:
        self.tokenizer = pretrained.review_tokenizer()
        reviews = {split: corpus.load_reviews(split) for split in ("train", "test")}
        self.task = rc.conditional_task(self.tokenizer, reviews, L, EOS_ID, n_eval=N_EVAL)
        self.base = pretrained.load("gpt-reviews").model
        self.sft = rc.supervised_finetune(copy.deepcopy(self.base), self.task.demos, rc.sft_config(SFT_STEPS))
        self.rm = rc.train_proxy_reward(self.sft, self.task, rc.rm_config(RM_STEPS))
        self.gold = rc.train_gold_judge(self.task)
        self.test_reviews = reviews["test"]

    @classmethod
    def of(cls, *, tokenizer, task, base, sft, rm, gold, test_reviews) -> "Setting":
        """The setting from parts built elsewhere (chapter 9 builds them step by step, with the same calls)."""
        setting = cls.__new__(cls)
        setting.tokenizer, setting.task, setting.base, setting.sft = tokenizer, task, base, sft
        setting.rm, setting.gold, setting.test_reviews = rm, gold, test_reviews
        return setting

    def evaluate(self, policy, seed: int) -> dict:
        return rc.evaluate_policy(self.task, policy, self.sft, self.rm, self.gold, eval_seed(seed))

    def reward(self, seqs, mask):
        return self.rm(seqs, mask)[0]


def _append(table: dict, row: dict) -> None:
    for m in METRICS:
        table.setdefault(m, []).append(row[m])


def run_ppo(s: Setting, beta: float, seed: int, iterations: int = PPO_ITERATIONS) -> dict:
    """PPO from the SFT model; ``{metric: [value at iteration 5, 10, ...]}`` plus ``history``."""
    curve: dict = {}

    def checkpoint(i: int) -> None:
        if i % CHECK_EVERY == 0:
            _append(curve, s.evaluate(policy.gpt, seed))

    set_seed(seed)  # the value head's initialisation
    policy = PolicyWithValue(copy.deepcopy(s.sft))
    curve["history"] = ppo_train(policy, s.sft, s.reward, s.task.train_prompts, EOS_ID, ppo_config(beta, seed, iterations),
                                 on_iteration=checkpoint)
    return curve


def preference_pairs(s: Setting, source: str, seed: int):
    """(chosen, chosen mask, rejected, rejected mask) for DPO: see the module docstring."""
    if source == "human":
        prompts, demos = rc.prompts_and_demos(s.tokenizer, s.task.half_a, L, EOS_ID)
        labels = torch.tensor([r.label for r in s.task.half_a])
        return rc.label_pairs(*demos, labels, seed)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(s.task.train_prompts), generator=g)[:DPO_PAIRS]
    prompts = s.task.train_prompts[rows]
    a, a_mask = sample_responses(s.sft, prompts, len(prompts), L, EOS_ID, g)
    b, b_mask = sample_responses(s.sft, prompts, len(prompts), L, EOS_ID, g)
    a_wins = (rc.scores_of(s.rm, a, a_mask) >= rc.scores_of(s.rm, b, b_mask))[:, None]
    return (torch.where(a_wins, a, b), torch.where(a_wins, a_mask, b_mask),
            torch.where(a_wins, b, a), torch.where(a_wins, b_mask, a_mask))


def run_dpo(s: Setting, pairs, beta: float, seed: int):
    objective = DPOObjective(copy.deepcopy(s.sft), copy.deepcopy(s.sft), beta)
    set_seed(seed)
    train(objective, pair_batcher(*pairs, 16), dpo_config(seed), device="cpu")
    return objective.policy.eval()


def best_of_n(s: Setting, seed: int) -> dict:
    """``{n: metrics}``: the proxy's favourite among the first n of 16 SFT continuations per evaluation prompt."""
    n_max, prompts = max(BON_NS), s.task.eval_prompts
    seqs, mask = sample_responses(s.sft, prompts.repeat_interleave(n_max, 0), len(prompts) * n_max, L, EOS_ID,
                                  torch.Generator().manual_seed(2000 + seed))
    scores = rc.scores_of(s.rm, seqs, mask).view(len(prompts), n_max)  # (N, n_max)
    out = {}
    for n in BON_NS:
        rows = torch.arange(len(prompts)) * n_max + scores[:, :n].argmax(dim=1)
        out[str(n)] = rc.measure(s.task, seqs[rows], mask[rows], s.rm, s.gold, best_of_n_kl_bound(n))
    return out


def run(progress=print) -> dict:
    s = Setting()
    results = {"judges": rc.judge_accuracies(s.task, s.rm, s.gold, s.test_reviews), "sft": {}, "sft_positive": {},
               "ppo": {str(b): {} for b in PPO_BETAS}, "dpo": {src: {str(b): {} for b in DPO_BETAS} for src in DPO_SOURCES},
               "bon": {str(n): {} for n in BON_NS}}
    for seed in SEEDS:
        _append(results["sft"], s.evaluate(s.sft, seed))
        positive = rc.supervised_finetune(copy.deepcopy(s.base), s.task.positive_demos, rc.sft_config(SFT_STEPS, seed))
        _append(results["sft_positive"], s.evaluate(positive, seed))
        for n, row in best_of_n(s, seed).items():
            _append(results["bon"][n], row)
        for beta in PPO_BETAS:
            curve = run_ppo(s, beta, seed)
            for m in METRICS:
                results["ppo"][str(beta)].setdefault(m, []).append(curve[m])
            progress(f"seed {seed}, PPO β={beta}: proxy {curve['proxy'][-1]:.3f}, gold {curve['gold'][-1]:.3f}, "
                     f"KL {curve['kl'][-1]:.3f}")
        for source in DPO_SOURCES:
            pairs = preference_pairs(s, source, seed)
            for beta in DPO_BETAS:
                row = s.evaluate(run_dpo(s, pairs, beta, seed), seed)
                _append(results["dpo"][source][str(beta)], row)
                progress(f"seed {seed}, DPO {source} β={beta}: proxy {row['proxy']:.3f}, gold {row['gold']:.3f}, "
                         f"KL {row['kl']:.3f}")
    return results


def setup() -> dict:
    return {"seeds": list(SEEDS), "L": L, "prefix": rc.PREFIX, "n_eval": N_EVAL, "metrics": list(METRICS),
            "sft": asdict(rc.sft_config(SFT_STEPS)), "rm": asdict(rc.rm_config(RM_STEPS)),
            "ppo": asdict(ppo_config(0.1, 0)), "ppo_betas": list(PPO_BETAS), "check_every": CHECK_EVERY,
            "dpo": asdict(dpo_config(0)), "dpo_betas": list(DPO_BETAS), "dpo_sources": list(DPO_SOURCES),
            "dpo_pairs": DPO_PAIRS, "bon_ns": list(BON_NS),
            "weights_sha256": {"gpt-reviews": pretrained.read_manifest()["gpt-reviews.pt"]}}


def summary(results: dict) -> dict:
    """Mean proxy and gold reward (log-odds) of every arm at its end."""
    def mean(v):
        return sum(x[-1] if isinstance(x, list) else x for x in v) / len(v)
    out = {}
    arms = {"sft": results["sft"], "sft_positive": results["sft_positive"],
            **{f"ppo {b}": t for b, t in results["ppo"].items()},
            **{f"dpo {src} {b}": t for src, table in results["dpo"].items() for b, t in table.items()},
            **{f"bon {n}": t for n, t in results["bon"].items()}}
    for name, table in arms.items():
        for m in ("proxy", "gold"):
            out[f"{name} / {m}"] = mean(table[m])
    return out


RECIPE = {"chapter": 9, "run": run, "setup": setup, "summary": summary, "tolerance": 0.5,
          "description": "chapter 9: proxy and gold reward against KL for PPO (6 β), DPO (4 β, 2 pair kinds), "
                         "best-of-n and SFT baselines, 3 seeds"}

__all__ = ["RECIPE", "SEEDS", "Setting", "best_of_n", "dpo_config", "eval_seed", "ppo_config", "preference_pairs",
           "run", "run_dpo", "run_ppo", "setup", "summary"]
