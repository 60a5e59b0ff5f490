"""RLHF conditioned on a prompt, with a gold judge kept apart from the proxy reward (chapter 9).

This module sets up the task that research papers measure (Stiennon et al., 2020; the DPO paper's IMDb
task, Rafailov et al., 2023; Gao et al., 2023), at the size of the book's shipped GPT; chapter 9 builds
it step by step and its shipped experiment ``ch9-frontier`` sweeps it over seeds:

* a *prompt* is the beginning of a review: ``<eos>`` and its first :data:`PREFIX` characters; the policy
  writes the next (at most) ``L`` characters. Training prompts come from the training reviews,
  evaluation prompts from the test reviews;
* *SFT* fine-tunes a language model on those continuations (loss on the response only), and the
  baseline *SFT on positive reviews only* does the same on the positive reviews alone;
* the training reviews are split in two halves. The *proxy* reward model (:class:`RewardModel`, the
  Bradley–Terry loss on positive ≻ negative pairs) learns from half A; the *gold* judge, a bag-of-words
  logistic regression (:class:`BowLogisticRegression`, a stronger sentiment classifier on these texts),
  learns from half B. Both output log-odds of "positive" (the proxy after Platt scaling), so both
  rewards are in the same unit, and the gold judge never shapes a policy: a policy that rises on the
  proxy and falls on gold is exploiting the proxy's errors (Gao et al.'s over-optimisation);
* :func:`evaluate_policy` samples one continuation per evaluation prompt and reports proxy and gold
  reward, positive shares, KL(π ‖ π_SFT) per continuation, distinct-2 and length.

Texts enter every scorer in one format: ``<eos>``, prompt characters, response characters, and
``<eos>`` if the review ended; the bag-of-words judge reads the same characters decoded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from llmcourse.chapters.rlhf import (RewardModel, encode_responses, pair_batcher, platt_scale, response_logprobs,
                                     sample_responses, sequence_kl, sft_batcher)
from llmcourse.core.checks import check_int, eval_mode
from llmcourse.core.runtime import set_seed
from llmcourse.data.tokenizers import Tokenizer
from llmcourse.evaluate import distinct_n
from llmcourse.models.bow import BowLogisticRegression
from llmcourse.models.gpt import GPT
from llmcourse.train import TrainConfig, train

PREFIX = 4  # prompt characters after <eos>
CHUNK = 256  # rows per forward pass when scoring


@dataclass
class ConditionalTask:
    """Prompts and demonstrations built from the reviews with one tokenizer (see the module docstring)."""

    tokenizer: Tokenizer
    eos_id: int
    L: int  # response characters at most
    train_prompts: torch.Tensor  # (N_train, 1 + PREFIX): every training review's prompt
    eval_prompts: torch.Tensor  # (N_eval, 1 + PREFIX): test reviews' prompts
    demos: tuple[torch.Tensor, torch.Tensor]  # SFT demonstrations (seqs, mask), all training reviews
    positive_demos: tuple[torch.Tensor, torch.Tensor]  # the positive ones only
    half_a: list  # reviews the proxy reward model learns from
    half_b: list  # reviews the gold judge learns from

    @property
    def prompt_len(self) -> int:
        return 1 + PREFIX


def prompts_and_demos(tok: Tokenizer, reviews, L: int, eos_id: int):
    """(prompts (N, 1 + PREFIX), demos (seqs, mask)) of the reviews long enough to have a prefix and a response."""
    ids = [tok.encode(r.text) for r in reviews]
    prompts = torch.tensor([[eos_id] + x[:PREFIX] for x in ids], dtype=torch.long)
    responses = [x[PREFIX:] for x in ids]
    seqs, mask = encode_responses(responses, [eos_id] * (1 + PREFIX), L, eos_id)
    seqs[:, : 1 + PREFIX] = prompts
    return prompts, (seqs, mask)


def conditional_task(tokenizer: Tokenizer, reviews: dict, L: int, eos_id: int, n_eval: int = 512,
                     seed: int = 0) -> ConditionalTask:
    """The task from ``reviews`` (``{"train": [...], "test": [...]}``): reviews shorter than ``PREFIX + 1``
    characters are left out; the halves A and B and the ``n_eval`` evaluation prompts are drawn with
    ``seed``."""
    L = check_int("L", L, 1)
    usable = {split: [r for r in reviews[split] if len(r.text) > PREFIX] for split in ("train", "test")}
    train_prompts, demos = prompts_and_demos(tokenizer, usable["train"], L, eos_id)
    pos_rows = torch.tensor([r.label == 1 for r in usable["train"]])
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(usable["train"]), generator=g).tolist()
    half = len(order) // 2
    test_rows = torch.randperm(len(usable["test"]), generator=g)[:n_eval].tolist()
    eval_prompts, _ = prompts_and_demos(tokenizer, [usable["test"][i] for i in test_rows], L, eos_id)
    return ConditionalTask(tokenizer, eos_id, L, train_prompts, eval_prompts, demos,
                           (demos[0][pos_rows], demos[1][pos_rows]),
                           [usable["train"][i] for i in order[:half]], [usable["train"][i] for i in order[half:]])


# ---- SFT ------------------------------------------------------------------------------------------
def sft_config(steps: int = 300, seed: int = 0) -> TrainConfig:
    """Fine-tuning of a pretrained GPT on continuations: AdamW at 1e-3, constant after 20 warm-up updates."""
    return TrainConfig(max_steps=steps, lr=1e-3, min_lr=1e-3, warmup_steps=20, weight_decay=0.0,
                       eval_interval=None, seed=seed)


def supervised_finetune(model: GPT, demos: tuple[torch.Tensor, torch.Tensor], config: TrainConfig,
                        batch_size: int = 32) -> GPT:
    """Train ``model`` in place on the demonstrations' response tokens (the prompt is context only)."""
    set_seed(config.seed)
    train(model, sft_batcher(*demos, batch_size), config, device="cpu")
    return model.eval()


# ---- the proxy reward model and the gold judge ------------------------------------------------------
def _review_batch(task: ConditionalTask, reviews):
    """``<eos>`` + the first ``PREFIX + L`` characters (+ ``<eos>`` if the review ends there) and labels."""
    seqs, mask = encode_responses([task.tokenizer.encode(r.text) for r in reviews], [task.eos_id], PREFIX + task.L,
                                  task.eos_id)
    return seqs, mask, torch.tensor([r.label for r in reviews])


def label_pairs(seqs, mask, labels, seed: int):
    """Random (positive, negative) pairs of rows, each row in at most one pair: (chosen, mask, rejected, mask)."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.nonzero(labels == 1).squeeze(1), torch.nonzero(labels == 0).squeeze(1)
    pos, neg = pos[torch.randperm(len(pos), generator=g)], neg[torch.randperm(len(neg), generator=g)]
    n = min(len(pos), len(neg))
    return seqs[pos[:n]], mask[pos[:n]], seqs[neg[:n]], mask[neg[:n]]


def rm_config(steps: int = 300, seed: int = 0) -> TrainConfig:
    return TrainConfig(max_steps=steps, lr=1e-3, min_lr=1e-4, warmup_steps=10, weight_decay=0.0,
                       eval_interval=None, seed=seed)


@torch.no_grad()
def scores_of(rm: RewardModel, seqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reward model's score of every row (N,), in chunks."""
    with eval_mode(rm):
        return torch.cat([rm(seqs[i:i + CHUNK], mask[i:i + CHUNK])[0] for i in range(0, len(seqs), CHUNK)])


def train_proxy_reward(sft: GPT, task: ConditionalTask, config: TrainConfig, batch_size: int = 32) -> RewardModel:
    """The proxy: a reward model from the SFT body, Bradley–Terry on half A's positive ≻ negative pairs,
    then Platt-scaled on half A so that it outputs log-odds of "positive". Frozen."""
    seqs, mask, labels = _review_batch(task, task.half_a)
    set_seed(config.seed)
    rm = RewardModel.from_gpt(sft)
    train(rm, pair_batcher(*label_pairs(seqs, mask, labels, config.seed), batch_size), config, device="cpu")
    a, b = platt_scale(scores_of(rm, seqs, mask), labels)
    with torch.no_grad():  # r <- a r + b
        rm.head.weight.mul_(a)
        rm.head.bias.mul_(a).add_(b)
    return rm.requires_grad_(False).eval()


def review_beginning(task: ConditionalTask, review) -> str:
    return review.text[: PREFIX + task.L]


def train_gold_judge(task: ConditionalTask) -> BowLogisticRegression:
    """The gold judge: bag-of-words (characters and character pairs) on half B's review beginnings."""
    return BowLogisticRegression().fit([review_beginning(task, r) for r in task.half_b], [r.label for r in task.half_b])


def texts_of(task: ConditionalTask, seqs: torch.Tensor, mask: torch.Tensor, start: int = 1) -> list[str]:
    """The characters of every row from position ``start`` to its last real token, decoded, ``<eos>``
    dropped: by default prompt and response (what the judges read)."""
    P = seqs.size(1) - mask.size(1)
    out = []
    for row, m in zip(seqs.tolist(), mask.sum(dim=1).tolist()):
        ids = [t for t in row[start: P + m] if t != task.eos_id]
        out.append(task.tokenizer.decode(ids))
    return out


def judge_accuracies(task: ConditionalTask, rm: RewardModel, gold: BowLogisticRegression, reviews) -> dict:
    """Accuracy of the sign of each scorer on labelled reviews (their beginnings)."""
    seqs, mask, labels = _review_batch(task, reviews)
    proxy = scores_of(rm, seqs, mask)
    g = gold.decision_function([review_beginning(task, r) for r in reviews])
    return {"proxy": ((proxy > 0).long() == labels).float().mean().item(),
            "gold": ((g > 0).long() == labels).float().mean().item()}


# ---- measuring a policy ---------------------------------------------------------------------------
@torch.no_grad()
def kl_per_response(policy: GPT, reference: GPT, seqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ_k log π(y_k) - log π_ref(y_k)`` of every row (N,); its mean over samples of π estimates KL(π ‖ π_ref)."""
    P = seqs.size(1) - mask.size(1)
    with eval_mode(policy), eval_mode(reference):
        return torch.cat([sequence_kl(response_logprobs(policy, seqs[i:i + CHUNK], P),
                                      response_logprobs(reference, seqs[i:i + CHUNK], P), mask[i:i + CHUNK])
                          for i in range(0, len(seqs), CHUNK)])


def measure(task: ConditionalTask, seqs, mask, rm, gold, kl: float) -> dict:
    """Proxy and gold reward (mean log-odds), their positive shares, distinct-2 and length of a batch."""
    proxy = scores_of(rm, seqs, mask)
    texts = texts_of(task, seqs, mask)
    g = gold.decision_function(texts)
    responses = texts_of(task, seqs, mask, start=seqs.size(1) - mask.size(1))
    long_enough = [list(r) for r in responses if len(r) >= 2]
    return {"proxy": proxy.mean().item(), "gold": g.mean().item(), "proxy_pos": (proxy > 0).float().mean().item(),
            "gold_pos": (g > 0).float().mean().item(), "kl": kl,
            "distinct2": distinct_n(long_enough, 2) if long_enough else 0.0,
            "length": mask.sum(dim=1).float().mean().item(),
            "cuo": sum(len(re.findall("(?<!不)错", r)) for r in responses) / len(responses)}  # 错 outside 不错


def evaluate_policy(task: ConditionalTask, policy: GPT, reference: GPT, rm, gold, seed: int) -> dict:
    """One continuation per evaluation prompt (temperature 1, draws seeded ``seed``), measured."""
    seqs, mask = sample_responses(policy, task.eval_prompts, len(task.eval_prompts), task.L, task.eos_id,
                                  torch.Generator().manual_seed(seed))
    return measure(task, seqs, mask, rm, gold, kl_per_response(policy, reference, seqs, mask).mean().item())


__all__ = [
    "CHUNK", "ConditionalTask", "PREFIX", "conditional_task", "evaluate_policy", "judge_accuracies", "kl_per_response",
    "label_pairs", "measure", "prompts_and_demos", "review_beginning", "rm_config", "scores_of", "sft_config", "supervised_finetune", "texts_of",
    "train_gold_judge", "train_proxy_reward",
]
