"""Text generation from any autoregressive language model: greedy, beam search, and sampling with
temperature, top-k and top-p (nucleus).

A model is anything whose ``forward(idx)`` takes token ids ``idx`` (B, T) and returns next-token
logits (B, T, V), or a tuple ``(logits, loss)`` as the book's models do. If the model has a
``block_size`` attribute that is not ``None``, the context is cropped to its last ``block_size``
tokens before each step (models with learned positions cannot see further back).

Input and output have the same form:

* a list (or tuple) of ints -> a list of ints;
* a 1-D tensor (T,) -> a 1-D tensor;
* a 2-D tensor (B, T) -> a 2-D tensor (B, T + n) (greedy and sampling only).

The result is the prompt followed by the generated tokens. With ``eos_id``, a sequence stops after
emitting ``eos_id`` (which is kept); in a batch, rows that have stopped are padded with ``eos_id``
until every row has stopped or ``max_new_tokens`` is reached.

Generation runs under ``torch.no_grad()`` with the model temporarily in ``eval()`` mode (no
dropout), restoring its mode afterwards.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from contextlib import contextmanager

import torch

__all__ = ["greedy", "beam_search", "sample", "top_k_filter", "top_p_filter"]


# ---------------------------------------------------------------- helpers


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")  # a model without parameters (e.g. a lookup-table stub)


@contextmanager
def _eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _prepare(prompt_ids, device: torch.device) -> tuple[torch.Tensor, str]:
    """Turn the prompt into a (B, T) long tensor on ``device``; also return its original form."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dtype.is_floating_point or prompt_ids.dtype.is_complex or prompt_ids.dtype == torch.bool:
            raise TypeError(f"prompt_ids must hold integer token ids, got dtype {prompt_ids.dtype}")
        if prompt_ids.dim() not in (1, 2):
            raise ValueError(f"prompt_ids must be 1-D (T,) or 2-D (B, T), got shape {tuple(prompt_ids.shape)}")
        kind = "1d" if prompt_ids.dim() == 1 else "2d"
        idx = prompt_ids.long().to(device)
        idx = idx.unsqueeze(0) if kind == "1d" else idx
    elif isinstance(prompt_ids, Sequence) and not isinstance(prompt_ids, (str, bytes)):
        if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in prompt_ids):
            raise TypeError("prompt_ids must be a list of int token ids (or a tensor)")
        kind = "list"
        idx = torch.tensor([[int(t) for t in prompt_ids]], dtype=torch.long, device=device)
    else:
        raise TypeError(f"prompt_ids must be a list of ints or an integer tensor, got {type(prompt_ids).__name__}")
    if idx.size(1) == 0 or idx.size(0) == 0:
        raise ValueError("prompt_ids is empty: give at least one token (e.g. a start or end-of-text token)")
    return idx, kind


def _finish(idx: torch.Tensor, kind: str, like):
    """Return ``idx`` (B, T) in the same form as the prompt was given."""
    if kind == "list":
        return idx[0].tolist()
    out = idx[0] if kind == "1d" else idx
    return out.to(like.device)


def _check_common(max_new_tokens: int, eos_id: int | None) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int) or eos_id < 0):
        raise ValueError(f"eos_id must be None or a token id (int >= 0), got {eos_id!r}")


def _next_logits(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """Logits (B, V) of the token after ``idx`` (B, T), in float32."""
    block_size = getattr(model, "block_size", None)
    idx_cond = idx if block_size is None else idx[:, -block_size:]  # (B, <=block_size)
    out = model(idx_cond)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (B, T, V) (or a tuple starting with them), got {shape}")
    return logits[:, -1, :].float()  # (B, V); float32 also under bf16 weights or autocast


# ---------------------------------------------------------------- filters


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (last axis) and set the others to ``-inf``.

    Logits tied with the k-th largest are kept too. ``k`` larger than the vocabulary keeps all.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {k!r}")
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1): the k-th largest per row
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most-likely tokens whose probability mass reaches ``p``.

    Tokens are sorted by probability; a token is kept if the mass of the tokens before it is still
    below ``p`` (so the most likely token is always kept). Masses within 1e-6 of ``p`` count as
    reaching it, so rounding cannot add a token. The others are set to ``-inf``.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be a float in (0, 1], got {p!r}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    # float64 makes the boundary test exact enough; MPS has no float64, so it stays in float32 there.
    dtype = torch.float32 if sorted_logits.device.type == "mps" else torch.float64
    probs = sorted_logits.to(dtype).softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (..., V): mass of the strictly more likely tokens
    remove_sorted = mass_before >= p - 1e-6
    remove_sorted[..., 0] = False  # always keep the most likely token
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


# ---------------------------------------------------------------- decoders


def greedy(model: torch.nn.Module, prompt_ids, max_new_tokens: int, eos_id: int | None = None):
    """Append the most likely next token (argmax), ``max_new_tokens`` times or until ``eos_id``."""
    _check_common(max_new_tokens, eos_id)
    idx, kind = _prepare(prompt_ids, _model_device(model))
    with _eval_mode(model):
        idx = _decode(model, idx, max_new_tokens, eos_id, lambda logits: logits.argmax(dim=-1))
    return _finish(idx, kind, prompt_ids)


def sample(
    model: torch.nn.Module,
    prompt_ids,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = None,
):
    """Sample each next token from ``softmax(logits / temperature)``, optionally restricted to the
    ``top_k`` most likely tokens and then to the top-``p`` nucleus.

    With ``seed``, sampling uses its own ``torch.Generator`` (on the CPU, so the same seed gives the
    same draws on every device) and repeats exactly; without it, torch's global CPU generator is
    used (seed it with ``llmcourse.set_seed``).
    """
    _check_common(max_new_tokens, eos_id)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature!r}; temperature -> 0 is greedy decoding: use greedy()"
        )
    if top_k is not None:
        top_k_filter(torch.zeros(1), top_k)  # validates top_k with the filter's own message
    if top_p is not None:
        top_p_filter(torch.zeros(1), top_p)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def choose(logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B,)
        logits = logits / temperature
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        if top_p is not None:
            logits = top_p_filter(logits, top_p)
        probs = logits.softmax(dim=-1).cpu()  # (B, V); drawn on the CPU generator
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)

    idx, kind = _prepare(prompt_ids, _model_device(model))
    with _eval_mode(model):
        idx = _decode(model, idx, max_new_tokens, eos_id, choose)
    return _finish(idx, kind, prompt_ids)


def _decode(model, idx: torch.Tensor, max_new_tokens: int, eos_id: int | None, choose) -> torch.Tensor:
    """The loop shared by greedy and sampling: ``choose`` maps logits (B, V) to next tokens (B,)."""
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,) rows that emitted eos
    for _ in range(max_new_tokens):
        nxt = choose(_next_logits(model, idx))  # (B,)
        if eos_id is not None:
            nxt = nxt.masked_fill(done, eos_id)  # finished rows are padded with eos
            done = done | (nxt == eos_id)
        idx = torch.cat([idx, nxt.unsqueeze(1)], dim=1)  # (B, T + 1)
        if eos_id is not None and bool(done.all()):
            break
    return idx


def beam_search(
    model: torch.nn.Module,
    prompt_ids,
    max_new_tokens: int,
    beam_width: int,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    return_beams: bool = False,
):
    """Keep the ``beam_width`` most likely continuations at each step; return the best one.

    Beams are ranked during the search by their total log-probability. A beam that emits ``eos_id``
    is finished and set aside; the search stops when no live beam is left or after
    ``max_new_tokens`` steps. The final choice among finished and live beams maximises
    ``log p(generated tokens) / n ** length_penalty`` with ``n`` the number of generated tokens
    (eos included): ``length_penalty=0`` is the plain log-probability, which favours short
    sequences; larger values favour longer ones. (Without ``eos_id`` all beams have the same
    length and the penalty changes nothing.)

    ``beam_width=1`` is greedy decoding. With ``return_beams=True`` the result is every candidate as
    ``(sequence, score)`` pairs, best first.
    """
    _check_common(max_new_tokens, eos_id)
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be an int >= 1, got {beam_width!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
        raise ValueError(f"length_penalty must be a number, got {length_penalty!r}")
    idx, kind = _prepare(prompt_ids, _model_device(model))
    if idx.size(0) != 1:
        raise ValueError(f"beam_search decodes one prompt at a time, got a batch of {idx.size(0)}")

    def final_score(logp: float, n: int) -> float:
        return logp / (n**length_penalty) if n > 0 else logp

    beams = idx  # (K, T): live beams, K <= beam_width
    scores = torch.zeros(1, device=idx.device)  # (K,): total log-probability of each live beam's new tokens
    finished: list[tuple[torch.Tensor, float, int]] = []  # (sequence, log-prob, n generated)
    n = 0
    with _eval_mode(model):
        for n in range(1, max_new_tokens + 1):
            logprobs = _next_logits(model, beams).log_softmax(dim=-1)  # (K, V)
            V = logprobs.size(-1)
            cand = (scores.unsqueeze(1) + logprobs).view(-1)  # (K * V,): every one-token extension
            top, flat = torch.topk(cand, min(beam_width, cand.numel()))  # best first
            parent, token = flat // V, flat % V
            seqs = torch.cat([beams[parent], token.unsqueeze(1)], dim=1)  # (beam_width, T + 1)
            live = torch.ones_like(token, dtype=torch.bool)
            if eos_id is not None:
                live = token != eos_id
                for s, lp in zip(seqs[~live], top[~live].tolist()):
                    finished.append((s, lp, n))
            beams, scores = seqs[live], top[live]
            if beams.size(0) == 0:
                break
    n_live = n if max_new_tokens > 0 else 0
    candidates = finished + [(s, lp, n_live) for s, lp in zip(beams, scores.tolist())]
    ranked = sorted(candidates, key=lambda c: final_score(c[1], c[2]), reverse=True)
    if return_beams:
        return [(_finish(s.unsqueeze(0), kind, prompt_ids), final_score(lp, k)) for s, lp, k in ranked]
    return _finish(ranked[0][0].unsqueeze(0), kind, prompt_ids)
