"""Text generation from any autoregressive language model: greedy, beam search, and sampling with
temperature, top-k and top-p (nucleus).

A model is anything whose ``forward(idx)`` takes token ids ``idx`` (B, T) and returns next-token
logits (B, T, V), or a tuple ``(logits, loss)`` as the book's models do. If the model has a
``block_size`` attribute that is not ``None``, the context is cropped to its last ``block_size``
tokens before each step (models with learned positions cannot see further back).

If the model also has ``new_cache()`` (the book's GPT and LSTM), each step feeds only the new token
and the model keeps what it has read in the cache (a GPT's keys and values, an LSTM's state), as
``model(idx, cache=cache)``; beam search reorders the cache with ``cache.reorder(rows)`` when the
beams change. The result is the same as re-reading the context (``use_cache=False``), only faster:
once a GPT's context passes ``block_size``, the positions of the cropped window shift at every step,
so each step starts a new cache from the window, as the uncached path re-reads it.

Input and output have the same form:

* a list (or tuple) of ints -> a list of ints;
* a 1-D tensor (T,) -> a 1-D tensor;
* a 2-D tensor (B, T) -> a 2-D tensor (B, T + n) (greedy and sampling only).

The result is the prompt followed by the generated tokens. With ``eos_id``, a sequence stops after
emitting ``eos_id`` (which is kept); in a batch, rows that have stopped are padded with ``eos_id``
until every row has stopped or ``max_new_tokens`` is reached.

Generation runs under ``torch.no_grad()`` with the model temporarily in ``eval()`` mode (no
dropout), restoring its mode afterwards. Logits that are NaN or ``+inf`` are refused with an error
(a broken model), rather than decoded into arbitrary tokens.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from llmcourse.core.checks import check_finite, check_int, check_logits, eval_mode, model_device, reads_values

__all__ = ["greedy", "beam_search", "sample", "top_k_filter", "top_p_filter", "inverse_cdf", "draw_inverse_cdf"]


# ---------------------------------------------------------------- helpers


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


def _check_common(max_new_tokens, eos_id) -> tuple[int, int | None]:
    """``max_new_tokens`` and ``eos_id`` as Python ints (NumPy integers are accepted)."""
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
    return max_new_tokens, None if eos_id is None else check_int("eos_id", eos_id, 0)


def _last_logits(out) -> torch.Tensor:
    """The model's output -> logits (B, V) of the token after the last position, in float32."""
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (B, T, V) (or a tuple starting with them), got {shape}")
    logits = logits[:, -1, :].float()  # (B, V); float32 also under bf16 weights or autocast
    check_logits(logits)
    if reads_values(logits) and bool((logits == -math.inf).all(dim=-1).any()):
        raise ValueError("the model gave every token the logit -inf: no next token can be chosen (all banned?)")
    return logits


class _Reader:
    """Next-token logits for a batch of growing sequences ``idx`` (B, T), one call per step.

    With the model's cache, only the tokens the cache has not seen are fed; the cache holds the tokens
    ``idx[:, start:start + seen]``. Without one, the whole (cropped) context is re-read every step.
    """

    def __init__(self, model: torch.nn.Module, use_cache: bool):
        self.model = model
        self.block_size = getattr(model, "block_size", None)
        self.cache = model.new_cache() if use_cache and callable(getattr(model, "new_cache", None)) else None
        self.start, self.seen = 0, 0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, V)
        T = idx.size(1)
        if self.cache is None:
            window = idx if self.block_size is None else idx[:, -self.block_size:]  # (B, <= block_size)
            return _last_logits(self.model(window))
        if self.block_size is not None and T - self.start > self.block_size:
            # The window slid: its tokens now sit at other positions, so a new cache reads it afresh.
            self.cache, self.start, self.seen = self.model.new_cache(), T - self.block_size, 0
        new = idx[:, self.start + self.seen:]  # (B, T_new): what the cache has not seen
        self.seen = T - self.start
        return _last_logits(self.model(new, cache=self.cache))

    def reorder(self, rows: torch.Tensor) -> None:
        """The sequences are now ``idx[rows]``: make the cache follow them (beam search)."""
        if self.cache is not None:
            self.cache.reorder(rows)


def _check_no_nan(logits: torch.Tensor) -> None:
    if reads_values(logits) and bool(torch.isnan(logits).any()):
        raise ValueError("logits contain NaN: no token can be ranked by them; check the model (torch.isfinite)")


# ---------------------------------------------------------------- filters


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (last axis) and set the others to ``-inf``.

    Logits tied with the k-th largest are kept too. ``k`` larger than the vocabulary keeps all.
    """
    k = min(check_int("top_k", k, 1), logits.size(-1))
    _check_no_nan(logits)
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1): the k-th largest per row
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most-likely tokens whose probability mass reaches ``p``.

    Tokens are sorted by probability; a token is kept if the mass of the tokens before it is still
    below ``p`` (so the most likely token is always kept). Masses within 1e-6 of ``p`` count as
    reaching it, so rounding cannot add a token. The others are set to ``-inf``.
    """
    p = _check_top_p(p)
    _check_no_nan(logits)
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


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token of each row of ``probs`` (B, V) whose cumulative-probability interval holds ``u`` (B,),
    with ``u`` in [0, 1): the first index ``i`` with ``p_0 + … + p_i > u · total``. Sums run in float64, and a
    zero-probability token is never chosen, at either end of [0, 1)."""
    if probs.dim() != 2 or u.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (B, V) and u (B,); got {tuple(probs.shape)} and {tuple(u.shape)}")
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1)
    target = torch.minimum(u.double().unsqueeze(1) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(1)  # (B,)


def draw_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``probs`` (B, V), drawn from that row's distribution with one uniform number
    per row (:func:`inverse_cdf`). ``torch.multinomial(probs, 1)`` draws one exponential number per *entry*
    (the argmax of ``p / E``), V times as many: with thousands of rows and a vocabulary of thousands that is
    most of a sampler's time on a CPU. The distribution is the same; the draws for a seed are not."""
    u = torch.rand(probs.size(0), generator=generator, dtype=torch.float64, device=probs.device)  # (B,)
    return inverse_cdf(probs, u)


def _check_top_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < p <= 1.0:  # NaN fails 0 < p
        raise ValueError(f"top_p must be a float in (0, 1], got {p!r}")
    return float(p)


def _check_temperature(temperature) -> float:
    temperature = check_finite("temperature", temperature)
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature!r}; temperature -> 0 is greedy decoding: use greedy()"
        )
    return temperature


def _check_probs(probs: torch.Tensor, temperature: float) -> None:
    """Refuse NaN probabilities: at a tiny temperature, logits / temperature overflow to +-inf."""
    if reads_values(probs) and not bool(torch.isfinite(probs).all()):
        raise ValueError(f"softmax(logits / temperature) is not a probability distribution at temperature "
                         f"{temperature!r}: the scaled logits overflow float32 (beyond 3.4e38). Use a larger "
                         "temperature, or greedy() for the limit temperature -> 0")


# ---------------------------------------------------------------- decoders


def greedy(model: torch.nn.Module, prompt_ids, max_new_tokens: int, eos_id: int | None = None,
           use_cache: bool = True):
    """Append the most likely next token (argmax), ``max_new_tokens`` times or until ``eos_id``.
    ``use_cache=False`` re-reads the whole context at every step (the same tokens, slower)."""
    max_new_tokens, eos_id = _check_common(max_new_tokens, eos_id)
    idx, kind = _prepare(prompt_ids, model_device(model))
    with eval_mode(model):
        idx = _decode(_Reader(model, use_cache), idx, max_new_tokens, eos_id, lambda logits: logits.argmax(dim=-1))
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
    use_cache: bool = True,
):
    """Sample each next token from ``softmax(logits / temperature)``, optionally restricted to the
    ``top_k`` most likely tokens and then to the top-``p`` nucleus.

    With ``seed``, sampling uses its own ``torch.Generator`` (on the CPU, so the same seed gives the
    same draws on every device) and repeats exactly; without it, torch's global CPU generator is
    used (seed it with ``llmcourse.set_seed``). ``use_cache=False`` re-reads the whole context at
    every step (the same draws, slower).
    """
    max_new_tokens, eos_id = _check_common(max_new_tokens, eos_id)
    temperature = _check_temperature(temperature)
    top_k = None if top_k is None else check_int("top_k", top_k, 1)
    top_p = None if top_p is None else _check_top_p(top_p)
    generator = None if seed is None else torch.Generator().manual_seed(check_int("seed", seed, 0))

    def choose(logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B,)
        logits = logits / temperature
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        if top_p is not None:
            logits = top_p_filter(logits, top_p)
        probs = logits.softmax(dim=-1).cpu()  # (B, V); drawn on the CPU generator
        _check_probs(probs, temperature)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)

    idx, kind = _prepare(prompt_ids, model_device(model))
    with eval_mode(model):
        idx = _decode(_Reader(model, use_cache), idx, max_new_tokens, eos_id, choose)
    return _finish(idx, kind, prompt_ids)


def _decode(read: _Reader, idx: torch.Tensor, max_new_tokens: int, eos_id: int | None, choose) -> torch.Tensor:
    """The loop shared by greedy and sampling: ``choose`` maps logits (B, V) to next tokens (B,)."""
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,) rows that emitted eos
    for _ in range(max_new_tokens):
        nxt = choose(read(idx))  # (B,)
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
    use_cache: bool = True,
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
    ``(sequence, score)`` pairs, best first. ``use_cache=False`` re-reads every beam at every step.
    """
    max_new_tokens, eos_id = _check_common(max_new_tokens, eos_id)
    beam_width = check_int("beam_width", beam_width, 1)
    length_penalty = check_finite("length_penalty", length_penalty)
    idx, kind = _prepare(prompt_ids, model_device(model))
    if idx.size(0) != 1:
        raise ValueError(f"beam_search decodes one prompt at a time, got a batch of {idx.size(0)}")

    def final_score(logp: float, n: int) -> float:
        return logp / (n**length_penalty) if n > 0 else logp

    with eval_mode(model):
        candidates = _beam_candidates(_Reader(model, use_cache), idx, max_new_tokens, beam_width, eos_id)
    ranked = sorted(candidates, key=lambda c: final_score(c[1], c[2]), reverse=True)
    if return_beams:
        return [(_finish(s.unsqueeze(0), kind, prompt_ids), final_score(lp, k)) for s, lp, k in ranked]
    return _finish(ranked[0][0].unsqueeze(0), kind, prompt_ids)


def _beam_candidates(read: _Reader, idx: torch.Tensor, max_new_tokens: int, beam_width: int,
                     eos_id: int | None) -> list[tuple[torch.Tensor, float, int]]:
    """The search itself: every finished and live beam as (sequence, log-prob, n generated)."""
    beams = idx  # (K, T): live beams, K <= beam_width
    scores = torch.zeros(1, device=idx.device)  # (K,): total log-probability of each live beam's new tokens
    finished: list[tuple[torch.Tensor, float, int]] = []
    n = 0
    for n in range(1, max_new_tokens + 1):
        logprobs = read(beams).log_softmax(dim=-1)  # (K, V)
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
        read.reorder(parent[live])  # the cache follows the surviving beams' parents
        if beams.size(0) == 0:
            break
    n_live = n if max_new_tokens > 0 else 0
    return finished + [(s, lp, n_live) for s, lp in zip(beams, scores.tolist())]
