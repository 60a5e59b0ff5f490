"""Self-feedback iterative optimization (基于自我反馈进行迭代优化): the loop of article 003 §3.2–3.3 as
written, and the version that works, self-training filtered by a verifier.

The articles' loop (:func:`self_feedback`), repeated for a number of iterations:

1. pseudo-samples (伪样本) ``x̂`` from the current model on unlabeled data: prompts are prefixes of
   unlabeled texts, continued by greedy decoding, beam search or random sampling (:func:`pseudo_samples`);
2. the pseudo-sample loss ``L_pseudo`` (:func:`pseudo_loss`: the model's negative log-likelihood of its
   own sample, ``-Σ_t log p_θ(x̂_t | x̂_<t)``, the correct form; :func:`articles_pseudo_loss` is the
   formula as the articles print it);
3. the joint loss ``L = λ·L_LM + (1 − λ)·L_pseudo`` (:func:`joint_loss`);
4. the update ``θ ← θ − η ∇_θ L`` (plain SGD, as written, or AdamW).

Filtered self-training (:func:`rejection_sample`, :func:`filtered_self_training`): sample ``k``
completions per prompt, keep only those a verifier accepts, fine-tune on them, repeat (STaR, Zelikman
et al. 2022; ReST, Gulcehre et al. 2023; RAFT, Dong et al. 2023).

Every loss here is a *mean* over the counted tokens, not the articles' sum over ``t``: with sums the
balance set by λ would change with the lengths of the real and the pseudo texts.
"""
from __future__ import annotations

import copy

import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import generate
from llmcourse.core.checks import IGNORE_INDEX, check_finite, check_int, eval_mode, model_device
from llmcourse.data.batching import random_batches
from llmcourse.train import param_groups

MODES = ("greedy", "beam", "sample")


# ---- checks (the generic ones are llmcourse.core.checks') -------------------------------------------
def check_lambda(lam) -> float:
    """λ must be a number in [0, 1] (the articles write (0, 1); the ends are the two losses alone)."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"λ (lam) must be a number in [0, 1] weighting L_LM against L_pseudo, got {lam!r}")
    return float(lam)


def _check_update_fields(cfg) -> None:
    """The fields both loops' configs share: learning rate, sampling temperature, clipping, eos id."""
    name = type(cfg).__name__
    check_finite(f"{name}.lr", cfg.lr, 0.0, strict=True)
    check_finite(f"{name}.temperature", cfg.temperature, 0.0, strict=True)
    if cfg.grad_clip is not None:
        check_finite(f"{name}.grad_clip", cfg.grad_clip, 0.0, strict=True)
    if cfg.eos_id is not None:
        check_int(f"{name}.eos_id", cfg.eos_id, 0)


def _check_model_and_config(model, config, config_class: type) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, config_class):
        raise TypeError(f"config must be a {config_class.__name__}, got {type(config).__name__}")


def _check_prompts(prompts) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"a tensor of prompts must be 2-D (B, T), got shape {tuple(prompts.shape)}")
        prompts = prompts.tolist()
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of prompts, each a list of int token ids; got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("no prompts: give at least one prompt (a non-empty list of token ids)")
    checked = []
    for i, p in enumerate(prompts):
        if isinstance(p, torch.Tensor):
            p = p.tolist()
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence):
            raise TypeError(f"prompt {i} must be a list of int token ids, got {type(p).__name__}")
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; start it with at least one token (e.g. <eos>)")
        if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) and t >= 0 for t in p):
            raise TypeError(f"prompt {i} must hold int token ids >= 0, got {list(p)[:8]!r}")
        checked.append([int(t) for t in p])
    return checked


# ---- 1. pseudo-samples ---------------------------------------------------------------------------
class _BanTokens(nn.Module):
    """The wrapped model's logits with the banned ids set to ``-inf``: decoding never picks them."""

    def __init__(self, model: nn.Module, ban_ids: list[int]):
        super().__init__()
        self.model = model
        self.ban_ids = ban_ids

    @property
    def block_size(self):  # generation crops the context to it, as for the model itself
        return getattr(self.model, "block_size", None)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = sequence_logits(self.model, idx).clone()  # (B, T, V)
        logits[..., self.ban_ids] = float("-inf")
        return logits


def _check_ban_ids(ban_ids) -> list[int]:
    if isinstance(ban_ids, (str, bytes)) or not isinstance(ban_ids, (Sequence, set, frozenset)):
        raise TypeError(f"ban_ids must be a list of token ids, got {type(ban_ids).__name__}")
    return sorted({check_int("each id in ban_ids", t, 0) for t in ban_ids})


def _cut_after_eos(seq: list[int], prompt_len: int, eos_id: int | None) -> list[int]:
    """Drop what follows the first ``eos_id`` of the continuation (batched decoding pads with it)."""
    if eos_id is None:
        return seq
    cont = seq[prompt_len:]
    return seq[: prompt_len + cont.index(eos_id) + 1] if eos_id in cont else seq


def pseudo_samples(model: nn.Module, prompts, max_new_tokens: int, mode: str = "greedy", *,
                   eos_id: int | None = None, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, beam_width: int = 4, seed: int | None = 0,
                   ban_ids=()) -> list[list[int]]:
    """Continue every prompt with the current model: ``"greedy"``, ``"beam"`` (width ``beam_width``)
    or ``"sample"`` (temperature, top-k, top-p). Returns one list of ids per prompt, the prompt
    followed by its continuation, which ends after the first ``eos_id`` (kept) or after
    ``max_new_tokens`` new tokens. Tokens in ``ban_ids`` (``<unk>``, say) are never generated: their
    logits are set to ``-inf`` before each choice.

    Prompts of equal length are decoded as one batch (:mod:`llmcourse.generate`); with ``"sample"``,
    the ``g``-th batch (lengths in increasing order) uses ``seed + g``, so a call repeats exactly
    (``seed=None`` draws from torch's global generator instead).
    """
    if mode not in MODES:
        raise ValueError(f"unknown pseudo-sample mode {mode!r}; expected one of {MODES}")
    prompts = _check_prompts(prompts)
    ban_ids = _check_ban_ids(ban_ids)
    if ban_ids:
        model = _BanTokens(model, ban_ids)
    out: list[list[int] | None] = [None] * len(prompts)
    if mode == "beam":
        for i, p in enumerate(prompts):  # beam search decodes one prompt at a time
            out[i] = generate.beam_search(model, p, max_new_tokens, beam_width, eos_id=eos_id)
    else:
        groups: dict[int, list[int]] = {}  # prompt length -> indices of the prompts with that length
        for i, p in enumerate(prompts):
            groups.setdefault(len(p), []).append(i)
        for g, (_, idxs) in enumerate(sorted(groups.items())):
            batch = torch.tensor([prompts[i] for i in idxs])  # (B, T)
            if mode == "greedy":
                rows = generate.greedy(model, batch, max_new_tokens, eos_id=eos_id)
            else:
                rows = generate.sample(model, batch, max_new_tokens, temperature=temperature, top_k=top_k,
                                       top_p=top_p, seed=None if seed is None else seed + g, eos_id=eos_id)
            for i, row in zip(idxs, rows.tolist()):
                out[i] = row
    return [_cut_after_eos(seq, len(p), eos_id) for seq, p in zip(out, prompts)]


def completion_batch(sequences, prompt_lens, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing tensors for sequences ``prompt + completion``: ``x`` (B, L-1) the inputs and
    ``y`` (B, L-1) the next tokens, padded to the longest sequence. Targets that lie inside the prompt
    (real text, not the model's output) and padding are :data:`IGNORE_INDEX`, so a loss on ``(x, y)``
    counts the completion tokens only.

    ``prompt_lens`` is one int for all sequences or one per sequence.
    """
    if isinstance(sequences, torch.Tensor):
        sequences = sequences.tolist()
    if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Sequence):
        raise TypeError(f"sequences must be a list of id lists, got {type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("empty sample set: completion_batch needs at least one sequence to train on")
    if isinstance(prompt_lens, numbers.Integral) and not isinstance(prompt_lens, bool):
        prompt_lens = [int(prompt_lens)] * len(sequences)
    prompt_lens = list(prompt_lens)
    if len(prompt_lens) != len(sequences):
        raise ValueError(f"{len(sequences)} sequences but {len(prompt_lens)} prompt lengths; give one per sequence")
    check_int("pad_id", pad_id, 0)
    L = max(len(s) for s in sequences)
    if L < 2:
        raise ValueError("every sequence has fewer than 2 tokens: there is no next token to predict")
    x = torch.full((len(sequences), L - 1), pad_id, dtype=torch.long)
    y = torch.full((len(sequences), L - 1), IGNORE_INDEX, dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(zip(sequences, prompt_lens)):
        seq = list(seq)
        check_int(f"prompt length {i}", n_prompt, 1)
        if n_prompt > len(seq):
            raise ValueError(f"sequence {i} has {len(seq)} tokens but its prompt length is {n_prompt}")
        ids = torch.tensor(seq, dtype=torch.long)
        x[i, : len(seq) - 1] = ids[:-1]
        targets = ids[1:].clone()  # target j is token j + 1
        targets[: n_prompt - 1] = IGNORE_INDEX  # tokens 1 .. n_prompt-1 belong to the prompt
        y[i, : len(seq) - 1] = targets
    if not bool((y != IGNORE_INDEX).any()):
        raise ValueError("empty sample set: no sequence has a completion token after its prompt")
    return x, y


# ---- 2. losses -----------------------------------------------------------------------------------
def sequence_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits (B, T, V) for ids ``x`` (B, T), whether it returns them alone or first in a tuple."""
    out = model(x)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape:
        raise ValueError(f"the model must return logits (B, T, V) for input {tuple(x.shape)}")
    return logits


def sequence_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood ``-log p_θ(y_t | x_≤t)`` over the targets that are not
    :data:`IGNORE_INDEX` (a scalar with gradient). With ``y`` the real next tokens it is ``L_LM``."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.shape != y.shape or x.dim() != 2:
        raise ValueError("x and y must be (B, T) tensors of the same shape (inputs and next-token targets)")
    if not bool((y != IGNORE_INDEX).any()):
        raise ValueError("no target to score: every target is IGNORE_INDEX")
    logits = sequence_logits(model, x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=IGNORE_INDEX)


def pseudo_loss(model: nn.Module, x_hat: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """The pseudo-sample loss as it should be: the model's mean negative log-likelihood of its own
    sample, ``-(1/n) Σ_t log p_θ(x̂_t | x̂_<t)``, over the generated tokens (``x_hat``, ``y_hat`` from
    :func:`completion_batch`). Minimising it makes the model more likely to produce what it produced."""
    return sequence_nll(model, x_hat, y_hat)


def articles_pseudo_loss(model: nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """The articles' formula as printed, ``-Σ_t x̂_t log p(x_t | x_<t)``, as a mean over positions.

    A token times a log-probability is only defined if ``x̂_t`` is read as a one-hot vector over the
    vocabulary and ``log p(· | x_<t)`` as the vector of log-probabilities; their dot product is
    ``log p_θ(x̂_t | x_<t)``. So the formula scores the *pseudo* token after the *real* prefix:
    ``-(1/T) Σ_t log p_θ(x̂_t | x_<t)``. ``x`` (B, T) are real ids and ``x_hat`` (B, T) the pseudo
    ids aligned with them (position ``t`` with position ``t``); positions where ``x_hat`` is
    :data:`IGNORE_INDEX` do not count. The first position has no prefix and is not scored.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_hat, torch.Tensor) or x.shape != x_hat.shape or x.dim() != 2:
        raise ValueError("x and x_hat must be (B, T) tensors of the same shape, position t aligned with position t")
    if x.size(1) < 2:
        raise ValueError("sequences need at least 2 positions: the first token has no prefix to predict it from")
    return sequence_nll(model, x[:, :-1], x_hat[:, 1:])


def joint_loss(lm_loss: torch.Tensor | None, pseudo: torch.Tensor | None, lam: float) -> torch.Tensor:
    """``λ·L_LM + (1 − λ)·L_pseudo``. At λ = 1 it is ``lm_loss`` itself and at λ = 0 ``pseudo``
    itself (the unused loss may then be ``None``, so it need not be computed)."""
    lam = check_lambda(lam)
    if lam > 0 and lm_loss is None:
        raise ValueError(f"λ = {lam} > 0 needs the LM loss, got None")
    if lam < 1 and pseudo is None:
        raise ValueError(f"λ = {lam} < 1 needs the pseudo-sample loss, got None")
    if lam == 1.0:
        return lm_loss
    if lam == 0.0:
        return pseudo
    return lam * lm_loss + (1.0 - lam) * pseudo


# ---- 3. the articles' loop -----------------------------------------------------------------------
@dataclass
class SelfFeedbackConfig:
    """Settings of :func:`self_feedback`. Each step uses ``batch_size`` real windows of
    ``block_size`` tokens and ``batch_size`` pseudo-samples; ``optimizer="sgd"`` is the articles'
    update ``θ ← θ − η∇L`` literally, ``"adamw"`` (no weight decay) what one would use in practice.
    ``regenerate_every_step``: article 003 §3.2 regenerates the pseudo-samples at *every* training step;
    by default they are generated once per iteration (``n_samples`` of them) and reused for its
    ``steps_per_iteration`` steps, which costs one generation per iteration instead of one per step. With
    it, every step generates a fresh batch of ``batch_size`` pseudo-samples from the current parameters."""

    lam: float = 0.5
    iterations: int = 3
    steps_per_iteration: int = 20
    mode: str = "greedy"
    n_samples: int = 64
    max_new_tokens: int = 24
    batch_size: int = 16
    block_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    grad_clip: float | None = 1.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    beam_width: int = 4
    eos_id: int | None = None
    ban_ids: tuple[int, ...] = ()
    seed: int = 0
    regenerate_every_step: bool = False

    def __post_init__(self):
        if not isinstance(self.regenerate_every_step, bool):
            raise TypeError("SelfFeedbackConfig.regenerate_every_step must be a bool, got "
                            f"{type(self.regenerate_every_step).__name__}")
        self.lam = check_lambda(self.lam)
        self.ban_ids = tuple(_check_ban_ids(self.ban_ids))
        for name, minimum in (("iterations", 1), ("steps_per_iteration", 1), ("n_samples", 1),
                              ("max_new_tokens", 1), ("batch_size", 1), ("block_size", 1),
                              ("beam_width", 1), ("seed", 0)):
            check_int(f"SelfFeedbackConfig.{name}", getattr(self, name), minimum)
        if self.mode not in MODES:
            raise ValueError(f"SelfFeedbackConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"SelfFeedbackConfig.optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        _check_update_fields(self)


def _optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    return torch.optim.AdamW(param_groups(model, 0.0), lr=lr, betas=(0.9, 0.95))


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()  # θ ← θ − η ∇θ L (SGD), or Adam's rescaled step


def _run_eval(model: nn.Module, eval_fn, history: dict) -> None:
    if eval_fn is None:
        return
    with eval_mode(model):  # the model's mode comes back, also when eval_fn raises
        results = eval_fn(model)
    if not isinstance(results, dict):
        raise TypeError(f"eval_fn must return a dict of named numbers, got {type(results).__name__}")
    for key, value in results.items():
        history.setdefault(str(key), []).append(float(value))


def self_feedback(model: nn.Module, real_stream: torch.Tensor, prompt_pool, config: SelfFeedbackConfig,
                  eval_fn: Callable[[nn.Module], dict] | None = None) -> dict[str, list]:
    """The articles' loop, in place on ``model``; returns its history.

    Each iteration draws ``n_samples`` prompts from ``prompt_pool`` (prefixes of unlabeled texts,
    lists of ids) without replacement where the pool is large enough, generates pseudo-samples from
    them with the current parameters, and takes ``steps_per_iteration`` gradient steps on
    ``λ·L_LM + (1 − λ)·L_pseudo``: ``L_LM`` on random windows of ``real_stream`` (the real data),
    ``L_pseudo`` (:func:`pseudo_loss`) on random pseudo-samples of this iteration.

    ``eval_fn(model) -> dict`` runs before the first iteration and after each one. History keys:
    ``iteration`` (0 = before), ``lm_loss`` and ``pseudo_loss`` (means over the iteration's steps,
    NaN where the loss is not used or at iteration 0), ``samples`` (each iteration's pseudo-samples,
    ``None`` at λ = 1, where none are needed, and with ``regenerate_every_step``), ``prompt_lens``, and
    the ``eval_fn`` keys.
    """
    _check_model_and_config(model, config, SelfFeedbackConfig)
    cfg = config
    pool = _check_prompts(prompt_pool)
    generator = torch.Generator().manual_seed(cfg.seed)  # prompts and batches: one seeded source
    optimizer = _optimizer(model, cfg.optimizer, cfg.lr)
    nan = float("nan")
    history: dict[str, list] = {"iteration": [0], "lm_loss": [nan], "pseudo_loss": [nan], "samples": [None],
                                "prompt_lens": [None]}
    _run_eval(model, eval_fn, history)
    for it in range(1, cfg.iterations + 1):
        samples = prompt_lens = pseudo = None
        if cfg.lam < 1 and not cfg.regenerate_every_step:  # 1. pseudo-samples from the current parameters θ
            samples, prompt_lens = _iteration_samples(model, pool, cfg, generator, it)
            pseudo = completion_batch(samples, prompt_lens)
        if cfg.lam < 1 and cfg.regenerate_every_step:  # 1. at every step, from that step's θ (§3.2)
            def pseudo(step, it=it):
                fresh, lens = _iteration_samples(model, pool, cfg, generator, it * 100_003 + step, cfg.batch_size)
                return completion_batch(fresh, lens)
        lm_mean, ps_mean = _joint_steps(model, optimizer, real_stream, pseudo, cfg, generator)
        history["iteration"].append(it)
        history["lm_loss"].append(lm_mean if cfg.lam > 0 else nan)
        history["pseudo_loss"].append(ps_mean if cfg.lam < 1 else nan)
        history["samples"].append(samples)
        history["prompt_lens"].append(prompt_lens)
        _run_eval(model, eval_fn, history)
    return history


def _iteration_samples(model: nn.Module, pool: list[list[int]], cfg: SelfFeedbackConfig,
                       generator: torch.Generator, it: int, n: int | None = None) -> tuple[list[list[int]], list[int]]:
    """Iteration ``it``'s pseudo-samples and their prompt lengths: ``n`` (default ``n_samples``) prompts
    drawn from the pool (without replacement where it is large enough), continued by the current model."""
    n = cfg.n_samples if n is None else n
    if n <= len(pool):
        pick = torch.randperm(len(pool), generator=generator)[:n]
    else:
        pick = torch.randint(len(pool), (n,), generator=generator)
    prompts = [pool[i] for i in pick.tolist()]
    samples = pseudo_samples(model, prompts, cfg.max_new_tokens, cfg.mode, eos_id=cfg.eos_id,
                             temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                             beam_width=cfg.beam_width, seed=cfg.seed * 100_003 + it, ban_ids=cfg.ban_ids)
    return samples, [len(p) for p in prompts]


def _joint_steps(model: nn.Module, optimizer: torch.optim.Optimizer, real_stream: torch.Tensor,
                 pseudo: tuple[torch.Tensor, torch.Tensor] | None, cfg: SelfFeedbackConfig,
                 generator: torch.Generator) -> tuple[float, float]:
    """``steps_per_iteration`` updates on ``λ·L_LM + (1 − λ)·L_pseudo``; returns the mean of each loss
    over the steps (0.0 for a loss λ leaves out). ``pseudo`` is ``(x_hat, y_hat)``, or a function of the
    step that generates them afresh (``regenerate_every_step``), ``None`` at λ = 1."""
    device = model_device(model)
    lm_sum = ps_sum = 0.0
    for step in range(cfg.steps_per_iteration):
        batch = pseudo(step) if callable(pseudo) else pseudo  # generation puts the model in eval mode
        if callable(pseudo) and not bool((batch[1] != IGNORE_INDEX).any()):
            continue  # every fresh sample ended at once: nothing to learn from this step (it counts as 0)
        model.train()
        lm = ps = None
        if cfg.lam > 0:
            xb, yb = random_batches(real_stream, cfg.block_size, cfg.batch_size, generator)  # (B, T) each
            lm = sequence_nll(model, xb.to(device), yb.to(device))
            lm_sum += float(lm.detach())
        if cfg.lam < 1:
            x_hat, y_hat = batch
            if callable(pseudo):  # a fresh batch: every sample once
                xs, ys = x_hat, y_hat
            else:
                rows = torch.randint(x_hat.size(0), (cfg.batch_size,), generator=generator)
                xs, ys = x_hat[rows], y_hat[rows]
            if not bool((ys != IGNORE_INDEX).any()):  # every drawn sample ended at once: redraw all
                xs, ys = x_hat, y_hat
            ps = pseudo_loss(model, xs.to(device), ys.to(device))  # 2. the pseudo-sample loss
            ps_sum += float(ps.detach())
        _update(model, optimizer, joint_loss(lm, ps, cfg.lam), cfg.grad_clip)  # 3.-4.
    return lm_sum / cfg.steps_per_iteration, ps_sum / cfg.steps_per_iteration


# ---- 4. self-feedback that works: filtered by a verifier ----------------------------------------
_ADDITION = re.compile(r"(\d+)\+(\d+)=(\d+)")


def check_addition(text: str) -> bool:
    """A verifier (验证器) for sums: ``True`` iff ``text`` is exactly ``"a+b=c"`` with decimal
    ``a``, ``b`` and ``c == a + b`` written without leading zeros (``"23+58=81"``; not ``"23+58=081"``,
    not ``"23+58=81+1"``)."""
    if not isinstance(text, str):
        raise TypeError(f"check_addition expects a str such as '23+58=81', got {type(text).__name__}")
    match = _ADDITION.fullmatch(text)
    if match is None:
        return False
    a, b, c = match.groups()
    return c == str(int(a) + int(b))


def _completion(seq: list[int], prompt_len: int) -> list[int]:
    return seq[prompt_len:]


def rejection_sample(model: nn.Module, prompts, verifier: Callable[[list[int], list[int]], bool], k: int,
                     max_new_tokens: int, *, eos_id: int | None = None, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None,
                     seed: int | None = 0) -> tuple[list[tuple[list[int], list[int]]], dict[str, float]]:
    """Sample ``k`` completions per prompt and keep, for each prompt, the first one that
    ``verifier(prompt_ids, completion_ids)`` accepts (at most one per prompt, so that prompts the
    model already masters do not crowd out the others). A reward model fits too: pass
    ``lambda p, c: reward(p, c) >= threshold``.

    Returns the accepted ``(prompt, completion)`` pairs (completion with its ``eos_id`` if emitted)
    and statistics: ``pass_at_k``, the share of prompts with at least one accepted sample, and
    ``accept_rate``, the share of all samples accepted.
    """
    if not callable(verifier):
        raise TypeError(f"verifier must be a function (prompt_ids, completion_ids) -> bool, got {type(verifier).__name__}")
    k = check_int("k", k, 1)
    prompts = _check_prompts(prompts)
    repeated = [p for p in prompts for _ in range(k)]  # prompt i occupies rows i*k .. i*k+k-1
    seqs = pseudo_samples(model, repeated, max_new_tokens, "sample", eos_id=eos_id, temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=seed)
    accepted, n_ok = [], 0
    for i, p in enumerate(prompts):
        chosen = None
        for seq in seqs[i * k:(i + 1) * k]:
            completion = _completion(seq, len(p))
            if verifier(list(p), completion):
                n_ok += 1
                if chosen is None:
                    chosen = completion
        if chosen is not None:
            accepted.append((list(p), chosen))
    stats = {"pass_at_k": len(accepted) / len(prompts), "accept_rate": n_ok / len(seqs)}
    return accepted, stats


def verified_accuracy(model: nn.Module, prompts, verifier: Callable[[list[int], list[int]], bool],
                      max_new_tokens: int, eos_id: int | None = None) -> float:
    """Share of prompts whose greedy completion the verifier accepts (held-out accuracy)."""
    if not callable(verifier):
        raise TypeError(f"verifier must be a function (prompt_ids, completion_ids) -> bool, got {type(verifier).__name__}")
    prompts = _check_prompts(prompts)
    seqs = pseudo_samples(model, prompts, max_new_tokens, "greedy", eos_id=eos_id)
    return sum(bool(verifier(p, _completion(s, len(p)))) for p, s in zip(prompts, seqs)) / len(prompts)


@dataclass
class FilteredConfig:
    """Settings of :func:`filtered_self_training` (AdamW without weight decay, constant ``lr``).

    ``restart``: each round fine-tunes the *starting* model afresh (new optimizer) on the supervised data
    plus that round's accepted answers, sampled from the latest model, as STaR and ReST-EM (Singh et al.,
    2023) do; without it (the default) one model and optimizer continue across rounds on every prompt's
    latest accepted answer (ReST's growing dataset)."""

    rounds: int = 3
    k: int = 4
    steps_per_round: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    max_new_tokens: int = 8
    temperature: float = 1.0
    eos_id: int | None = None
    grad_clip: float | None = 1.0
    seed: int = 0
    restart: bool = False

    def __post_init__(self):
        if not isinstance(self.restart, bool):
            raise TypeError(f"FilteredConfig.restart must be a bool, got {type(self.restart).__name__}")
        for name, minimum in (("rounds", 1), ("k", 1), ("steps_per_round", 1), ("batch_size", 1),
                              ("max_new_tokens", 1), ("seed", 0)):
            check_int(f"FilteredConfig.{name}", getattr(self, name), minimum)
        _check_update_fields(self)


def filtered_self_training(model: nn.Module, prompts, verifier: Callable[[list[int], list[int]], bool],
                           config: FilteredConfig, seed_data=(), eval_fn: Callable[[nn.Module], dict] | None = None
                           ) -> dict[str, list]:
    """Rejection-sampling fine-tuning (拒绝采样微调), in place on ``model``; returns its history.

    Each round: (1) sample ``k`` completions of every prompt from the current model and keep the
    verified ones (:func:`rejection_sample`; ReST's *grow* step); (2) fine-tune on ``seed_data`` (the
    supervised ``(prompt, completion)`` pairs) plus every prompt's most recent accepted completion so
    far, for ``steps_per_round`` steps on the completion tokens only (*improve*). The verifier only
    accepts or rejects; it never supplies an answer. A round in which there is nothing to train on
    (no seed data, nothing accepted) makes no update.

    History keys: ``round`` (0 = before), ``n_accepted`` (this round), ``n_train`` (pairs trained
    on), ``pass_at_k``, ``accept_rate``, ``train_loss`` (NaN at round 0 or without an update), and
    the ``eval_fn`` keys (evaluated before the first round and after each).
    """
    _check_model_and_config(model, config, FilteredConfig)
    cfg = config
    prompts = _check_prompts(prompts)
    seed_data = [(list(p), list(c)) for p, c in seed_data]
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = _optimizer(model, "adamw", cfg.lr)
    nan = float("nan")
    history: dict[str, list] = {"round": [0], "n_accepted": [0], "n_train": [0], "pass_at_k": [nan],
                                "accept_rate": [nan], "train_loss": [nan]}
    _run_eval(model, eval_fn, history)
    kept: dict[tuple[int, ...], list[int]] = {}  # prompt -> its latest verified completion
    start = copy.deepcopy(model.state_dict()) if cfg.restart else None
    for r in range(1, cfg.rounds + 1):
        accepted, stats = rejection_sample(model, prompts, verifier, cfg.k, cfg.max_new_tokens, eos_id=cfg.eos_id,
                                           temperature=cfg.temperature, seed=cfg.seed * 100_003 + r)
        if cfg.restart:  # back to the starting model: this round's answers only, a fresh optimizer
            kept = {}
            model.load_state_dict(start)
            optimizer = _optimizer(model, "adamw", cfg.lr)
        for p, c in accepted:
            kept[tuple(p)] = c
        pairs = seed_data + [(list(p), c) for p, c in kept.items()]
        loss = _fine_tune(model, optimizer, pairs, cfg, generator) if pairs else nan
        history["round"].append(r)
        history["n_accepted"].append(len(accepted))
        history["n_train"].append(len(pairs))
        history["pass_at_k"].append(stats["pass_at_k"])
        history["accept_rate"].append(stats["accept_rate"])
        history["train_loss"].append(loss)
        _run_eval(model, eval_fn, history)
    return history


def _fine_tune(model: nn.Module, optimizer: torch.optim.Optimizer, pairs: list[tuple[list[int], list[int]]],
               cfg: FilteredConfig, generator: torch.Generator) -> float:
    """One round's *improve* step: ``steps_per_round`` updates on random ``(prompt, completion)`` pairs,
    the loss on the completion tokens only; returns the loss summed over the steps, divided by their number."""
    device = model_device(model)
    x, y = completion_batch([p + c for p, c in pairs], [len(p) for p, _ in pairs])
    model.train()
    loss_sum = 0.0
    for _ in range(cfg.steps_per_round):
        rows = torch.randint(len(pairs), (cfg.batch_size,), generator=generator)
        xs, ys = x[rows], y[rows]
        if not bool((ys != IGNORE_INDEX).any()):
            continue  # only empty completions drawn: nothing to learn from this batch (it counts as 0)
        loss = sequence_nll(model, xs.to(device), ys.to(device))
        _update(model, optimizer, loss, cfg.grad_clip)
        loss_sum += float(loss.detach())
    return loss_sum / cfg.steps_per_round


__all__ = [
    "MODES", "FilteredConfig", "SelfFeedbackConfig", "articles_pseudo_loss", "check_addition", "check_lambda",
    "completion_batch", "filtered_self_training", "joint_loss", "pseudo_loss", "pseudo_samples",
    "rejection_sample", "self_feedback", "sequence_logits", "sequence_nll", "verified_accuracy",
]
