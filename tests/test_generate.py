"""Generation: greedy against the argmax chain by hand, beam search against brute force, the top-k and
top-p filters on hand examples, sampling (seeds, temperature, frequencies), the cached decoders against
the uncached ones (GPT and LSTM, past block_size), the book's own LSTM and MLP models, and the refusals
(NaN or +inf logits, bad arguments)."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from llmcourse.generate import beam_search, greedy, sample, top_k_filter, top_p_filter
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.lstm_lm import LSTMLM
from llmcourse.models.mlp_lm import MLPLM


class BigramLM(nn.Module):
    """Next-token logits depend on the last token only: a table we can reason about by hand.
    Returns plain logits (not a tuple) and has no context limit (``block_size = None``)."""

    block_size = None

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float32))  # (V, V) logits

    def forward(self, idx, targets=None):
        return self.table[idx]  # (B, T, V)


class TinyLSTMLM(nn.Module):
    """The shape of the book's LSTM LM: forward -> (logits, loss), unbounded context."""

    block_size = None

    def __init__(self, vocab_size=12, hidden=16):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, idx, targets=None):
        h, _ = self.lstm(self.emb(idx))
        return self.out(h), None


def random_bigram(V=6, seed=0, scale=2.0):
    return BigramLM(torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * scale)


def tiny_gpt(block_size=16, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=20, block_size=block_size, n_layer=2, n_head=2, n_embd=32, dropout=dropout))
    with torch.no_grad():  # larger weights than the init, so the argmax is clear-cut
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


# ---------------------------------------------------------------- greedy


def test_greedy_is_the_argmax_chain():
    model = random_bigram()
    expected, last = [2], 2
    for _ in range(8):
        last = int(model.table[last].argmax())  # by hand: the best next token after `last`
        expected.append(last)
    assert greedy(model, [2], 8) == expected


def test_greedy_gpt_with_cropped_context_matches_manual_loop():
    model = tiny_gpt(block_size=8)
    idx = torch.tensor([[1, 5, 7, 3]])
    for _ in range(12):  # runs past block_size: the context must be cropped to the last 8 tokens
        logits, _ = model(idx[:, -8:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    out = greedy(model, torch.tensor([[1, 5, 7, 3]]), 12)
    assert torch.equal(out, idx)


def test_greedy_lstm_like_model_and_train_mode_restored():
    torch.manual_seed(0)
    model = TinyLSTMLM()
    idx = torch.tensor([[3]])
    with torch.no_grad():
        for _ in range(6):
            idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert model.training
    assert greedy(model, [3], 6) == idx[0].tolist()
    assert model.training  # generation switched to eval and back


def test_greedy_eos_and_batches():
    table = torch.full((4, 4), -5.0)
    table[0, 1] = table[1, 2] = table[2, 3] = table[3, 3] = 5.0  # 0 -> 1 -> 2 -> 3 (eos) -> 3 ...
    model = BigramLM(table)
    assert greedy(model, [0], 10, eos_id=3) == [0, 1, 2, 3]  # stops after eos, eos kept
    assert greedy(model, [0], 10) == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    batch = greedy(model, torch.tensor([[0], [2]]), 10, eos_id=3)
    assert batch.tolist() == [[0, 1, 2, 3], [2, 3, 3, 3]]  # the finished row is padded with eos
    one_d = greedy(model, torch.tensor([0]), 2)
    assert isinstance(one_d, torch.Tensor) and one_d.tolist() == [0, 1, 2]


# ---------------------------------------------------------------- beam search


def brute_force_best(model, prompt, max_new, eos_id, length_penalty):
    """Score every possible continuation (stopping at eos) and return the best one."""
    V = model.table.shape[0]
    logp = torch.log_softmax(model.table.detach().double(), dim=-1)
    best, best_score = None, -math.inf
    for n in range(1, max_new + 1):
        for cont in itertools.product(range(V), repeat=n):
            if eos_id is not None and eos_id in cont[:-1]:
                continue  # a sequence ends at its first eos
            if n < max_new and (eos_id is None or cont[-1] != eos_id):
                continue  # only finished sequences may be shorter than max_new
            seq = list(prompt) + list(cont)
            total = sum(logp[a, b].item() for a, b in zip(seq[len(prompt) - 1 :], seq[len(prompt) :]))
            score = total / n**length_penalty
            if score > best_score:
                best, best_score = seq, score
    return best, best_score


@pytest.mark.parametrize("eos_id,length_penalty", [(None, 1.0), (3, 0.0), (3, 1.0), (0, 0.5)])
def test_wide_beam_finds_the_brute_force_optimum(eos_id, length_penalty):
    for seed in range(3):
        model = random_bigram(V=4, seed=seed, scale=1.5)
        expected, expected_score = brute_force_best(model, [1], 3, eos_id, length_penalty)
        # beam_width = V ** max_new_tokens: nothing is ever pruned, so the search is exact
        beams = beam_search(model, [1], 3, beam_width=64, length_penalty=length_penalty, eos_id=eos_id, return_beams=True)
        assert beams[0][0] == expected
        assert beams[0][1] == pytest.approx(expected_score, abs=1e-5)


def test_beam_beats_greedy_on_a_hand_example():
    # From 0: token 1 (p=0.55) or 2 (p=0.45). After 1 everything is flat; after 2, token 2 is very
    # likely. Greedy takes 1 (0.55 * 0.34); the best two-token path is 2, 2 (0.45 * 0.9).
    probs = torch.tensor([[1e-6, 0.55, 0.45], [0.34, 0.33, 0.33], [0.05, 0.05, 0.9]])
    model = BigramLM(probs.log())
    assert greedy(model, [0], 2) == [0, 1, 0]
    assert beam_search(model, [0], 2, beam_width=2) == [0, 2, 2]
    assert beam_search(model, [0], 2, beam_width=1) == [0, 1, 0]


def test_beam_width_one_is_greedy():
    gpt = tiny_gpt()
    prompt = torch.tensor([4, 9, 1])
    assert torch.equal(beam_search(gpt, prompt, 10, beam_width=1), greedy(gpt, prompt, 10))
    for seed in range(5):
        model = random_bigram(V=5, seed=seed, scale=1.0)
        for eos in (None, 0, 2):
            assert beam_search(model, [1], 6, beam_width=1, eos_id=eos) == greedy(model, [1], 6, eos_id=eos)


# ---------------------------------------------------------------- filters


def test_top_p_hand_example():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).tolist()  # noqa: E731
    assert kept(0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert kept(0.81) == [True, True, True, False]  # needs the third token
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.01) == [True, False, False, False]  # the most likely token is always kept
    assert kept(1.0) == [True, True, True, True]
    shuffled = top_p_filter(torch.tensor([0.15, 0.5, 0.05, 0.3]).log(), 0.8)  # order must not matter
    assert torch.isfinite(shuffled).tolist() == [False, True, False, True]
    torch.testing.assert_close(top_p_filter(logits, 0.8)[:2], logits[:2])  # kept logits unchanged


def test_top_p_matches_a_plain_python_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 9, generator=g) * 2
    for p in (0.3, 0.6, 0.9):
        out = top_p_filter(logits, p)
        for row, out_row in zip(logits, out):
            probs = row.double().softmax(-1).tolist()
            order = sorted(range(9), key=lambda i: -probs[i])
            keep, mass = set(), 0.0
            for i in order:  # add tokens until the mass reaches p
                keep.add(i)
                mass += probs[i]
                if mass >= p:
                    break
            assert {i for i in range(9) if math.isfinite(out_row[i])} == keep


def test_top_k_filter():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, -1.0, 5.0, 4.0]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, True, False], [False, False, True, True]]
    assert torch.equal(top_k_filter(logits, 10), logits)


# ---------------------------------------------------------------- sampling


def test_top_k_one_is_greedy():
    gpt = tiny_gpt()
    prompt = [4, 9, 1]
    assert sample(gpt, prompt, 10, top_k=1, seed=3) == greedy(gpt, prompt, 10)


def test_same_seed_repeats_and_other_seeds_differ():
    model = random_bigram(V=8, seed=1, scale=0.5)
    a = sample(model, [0], 30, seed=7)
    assert a == sample(model, [0], 30, seed=7)
    assert a != sample(model, [0], 30, seed=8)
    torch.manual_seed(0)  # without a seed: torch's global generator
    b = sample(model, [0], 30)
    torch.manual_seed(0)
    assert b == sample(model, [0], 30)


def test_small_temperature_approaches_greedy():
    gpt = tiny_gpt()
    prompt = torch.tensor([[4, 9, 1]])
    assert torch.equal(sample(gpt, prompt, 12, temperature=1e-3, seed=0), greedy(gpt, prompt, 12))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.5, None, None), (2.0, 2, None), (1.0, None, 0.7)])
def test_sample_frequencies_follow_the_filtered_distribution(temperature, top_k, top_p):
    row = torch.tensor([1.0, 0.5, 0.0, -0.5])
    model = BigramLM(row.expand(4, 4).clone())
    draws = sample(model, torch.zeros(20000, 1, dtype=torch.long), 1, temperature, top_k, top_p, seed=0)[:, 1]
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    expected = (row.double() / temperature).softmax(-1)
    if top_k is not None:
        expected[top_k:] = 0  # row is sorted: the top-k are the first k
    if top_p is not None:
        expected[(expected.cumsum(0) - expected) >= top_p] = 0
    expected /= expected.sum()
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


# ---------------------------------------------------------------- errors


def test_bad_input_errors():
    model = random_bigram()
    with pytest.raises(ValueError, match="use greedy"):
        sample(model, [0], 5, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, [0], 5, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample(model, [0], 5, top_k=0)
    for p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            sample(model, [0], 5, top_p=p)
    with pytest.raises(ValueError, match="empty"):
        greedy(model, [], 5)
    with pytest.raises(ValueError, match="empty"):
        sample(model, torch.zeros(1, 0, dtype=torch.long), 5)
    with pytest.raises(TypeError, match="integer"):
        greedy(model, torch.tensor([0.5]), 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy(model, [0], -1)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, [0], 5, beam_width=0)
    with pytest.raises(ValueError, match="one prompt at a time"):
        beam_search(model, torch.zeros(2, 1, dtype=torch.long), 5, beam_width=2)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        greedy(lambda_model(), [0], 2)


def lambda_model():
    class Flat(nn.Module):
        block_size = None

        def forward(self, idx, targets=None):
            return torch.zeros(idx.size(0), 5)  # (B, V): the wrong shape

    return Flat()


# ---------------------------------------------------------------- cached == uncached


def book_lstm(seed=0, vocab_size=20):
    torch.manual_seed(seed)
    model = LSTMLM(vocab_size, emb_dim=16, hidden_size=16, num_layers=2)
    with torch.no_grad():  # larger weights than the init: peaked, varied distributions
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


MODELS = {"gpt": lambda: tiny_gpt(block_size=8), "lstm": book_lstm}
DECODERS = {
    "greedy": lambda m, p, n, **kw: greedy(m, p, n, **kw),
    "sample": lambda m, p, n, **kw: sample(m, p, n, temperature=1.5, seed=4, **kw),
    "sample-top-k-top-p": lambda m, p, n, **kw: sample(m, p, n, top_k=6, top_p=0.9, seed=5, **kw),
    "beam": lambda m, p, n, **kw: beam_search(m, p[:1], n, beam_width=3, eos_id=2, return_beams=True, **kw),
}


def decode_recording_logits(decode, model, prompt, n, use_cache):
    """The decoder's output, the last-position logits of every forward call and each call's input length."""
    logits, lengths = [], []
    hooks = [model.register_forward_hook(lambda m, args, out: logits.append(out[0][:, -1])),
             model.register_forward_pre_hook(lambda m, args: lengths.append(args[0].size(1)))]
    try:
        out = decode(model, prompt, n, use_cache=use_cache)
    finally:
        for h in hooks:
            h.remove()
    return out, logits, lengths


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("prompt_len", [1, 3, 8, 11])  # GPT block_size 8: the last prompt is cropped at once
def test_cached_decoding_equals_uncached(model_name, decoder, prompt_len):
    model = MODELS[model_name]()
    prompt = torch.randint(0, 20, (3, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    n = 14  # runs past the GPT's block_size
    cached, cached_logits, cached_lengths = decode_recording_logits(DECODERS[decoder], model, prompt, n, True)
    plain, plain_logits, _ = decode_recording_logits(DECODERS[decoder], model, prompt, n, False)
    if decoder == "beam":
        assert [s.tolist() for s, _ in cached] == [s.tolist() for s, _ in plain]
        torch.testing.assert_close(torch.tensor([x for _, x in cached]), torch.tensor([x for _, x in plain]))
    else:
        assert torch.equal(cached, plain)
    assert len(cached_logits) == len(plain_logits)
    for a, b in zip(cached_logits, plain_logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert cached_lengths[0] == (min(prompt_len, 8) if model_name == "gpt" else prompt_len)  # the prompt once
    # ... then one new token per step (for the GPT, the cropped window once it is past block_size)
    assert set(cached_lengths[1:]) == ({1} if model_name == "lstm" else {1, 8} if prompt_len < 8 else {8})


def test_gpt_cache_is_restarted_from_the_window_past_block_size():
    model = tiny_gpt(block_size=8)
    _, _, lengths = decode_recording_logits(DECODERS["greedy"], model, torch.tensor([[1, 2, 3]]), 9, True)
    # the prompt (3), one token a step until the cache holds 8, then the cropped window at every step
    assert lengths == [3, 1, 1, 1, 1, 1, 8, 8, 8]
    _, _, plain = decode_recording_logits(DECODERS["greedy"], model, torch.tensor([[1, 2, 3]]), 9, False)
    assert plain == [3, 4, 5, 6, 7, 8, 8, 8, 8]


def test_cached_beam_search_with_eos_matches_uncached():
    """Beams that finish leave the batch: the cache must drop and reorder its rows with them."""
    for seed in range(4):
        model = tiny_gpt(block_size=12, seed=seed)
        for eos in (0, 5, 11):
            kw = dict(beam_width=4, eos_id=eos, length_penalty=0.7, return_beams=True)
            cached = beam_search(model, [3, 1], 14, **kw)
            plain = beam_search(model, [3, 1], 14, use_cache=False, **kw)
            assert [s for s, _ in cached] == [s for s, _ in plain]
            assert [x for _, x in cached] == pytest.approx([x for _, x in plain], abs=1e-5)


def test_models_without_a_cache_are_recomputed():
    model = MLPLM(20, context=3, emb_dim=8, hidden=16)
    assert not hasattr(model, "new_cache")
    _, _, lengths = decode_recording_logits(DECODERS["greedy"], model, torch.tensor([[4, 5]]), 4, True)
    assert lengths == [2, 3, 3, 3]  # the whole context, cropped to block_size = context


def test_book_mlp_generation_matches_a_manual_loop():
    torch.manual_seed(0)
    model = MLPLM(20, context=3, emb_dim=8, hidden=32)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    idx = torch.tensor([[4, 9]])
    with torch.no_grad():
        for _ in range(7):
            logits, _ = model(idx[:, -3:])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert greedy(model, [4, 9], 7) == idx[0].tolist()
    assert len(set(idx[0].tolist())) > 2  # not a trivial repetition
    assert sample(model, [4, 9], 7, seed=1) == sample(model, [4, 9], 7, seed=1)


def test_book_lstm_generation_matches_a_manual_loop_and_restores_train_mode():
    model = book_lstm(seed=3).train()
    idx = torch.tensor([[5, 1]])
    with torch.no_grad():
        model.eval()
        for _ in range(10):
            logits, _ = model(idx)  # the whole history, no state carried
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        model.train()
    assert greedy(model, [5, 1], 10) == idx[0].tolist()
    assert model.training


# ---------------------------------------------------------------- refusals


class ConstantLM(nn.Module):
    """Returns the same logits row at every position."""

    block_size = None

    def __init__(self, row):
        super().__init__()
        self.row = torch.as_tensor(row, dtype=torch.float32)

    def forward(self, idx, targets=None):
        return self.row.expand(idx.size(0), idx.size(1), -1).clone(), None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("decode", [
    lambda m: greedy(m, [0], 3),
    lambda m: sample(m, [0], 3, seed=0),
    lambda m: sample(m, [0], 3, top_k=2, seed=0),
    lambda m: beam_search(m, [0], 3, beam_width=2),
])
def test_nan_and_plus_inf_logits_are_refused(bad, decode):
    with pytest.raises(ValueError, match=r"NaN or \+inf logits"):
        decode(ConstantLM([0.0, bad, 1.0]))


def test_minus_inf_logits_are_banned_tokens_not_errors():
    model = ConstantLM([-math.inf, 0.5, 1.0, -math.inf])
    assert greedy(model, [0], 3) == [0, 2, 2, 2]
    assert set(sample(model, [0], 30, seed=0)[1:]) <= {1, 2}
    with pytest.raises(ValueError, match="every token the logit -inf"):
        greedy(ConstantLM([-math.inf, -math.inf]), [0], 1)


def test_filters_refuse_nan_logits():
    logits = torch.tensor([[0.0, math.nan, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        top_k_filter(logits, 2)
    with pytest.raises(ValueError, match="NaN"):
        top_p_filter(logits, 0.9)
    with pytest.raises(ValueError, match="NaN"):
        top_p_filter(logits, 1.0)


def test_nan_length_penalty_and_temperature_are_refused():
    model = random_bigram()
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="length_penalty"):
            beam_search(model, [0], 3, beam_width=2, length_penalty=bad)
        with pytest.raises(ValueError, match="temperature"):
            sample(model, [0], 3, temperature=bad)


def test_temperature_so_small_that_the_logits_overflow_is_a_clear_error():
    model = random_bigram()
    with pytest.raises(ValueError, match="temperature 1e-45: the scaled logits overflow float32"):
        sample(model, [0], 3, temperature=1e-45)
    assert sample(model, [0], 5, temperature=1e-30, seed=0) == greedy(model, [0], 5)  # small but finite is fine


def test_numpy_integers_are_accepted():
    model = random_bigram()
    two, five = np.int64(2), np.int32(5)
    assert greedy(model, [0], five, eos_id=np.int64(4)) == greedy(model, [0], 5, eos_id=4)
    assert sample(model, [0], five, top_k=two, seed=np.int64(3)) == sample(model, [0], 5, top_k=2, seed=3)
    assert beam_search(model, [0], five, beam_width=two) == beam_search(model, [0], 5, beam_width=2)
    torch.testing.assert_close(top_k_filter(torch.tensor([1.0, 3.0, 2.0]), two),
                               torch.tensor([-math.inf, 3.0, 2.0]))
    assert sample(model, [0], 5, top_p=np.float64(0.9), seed=1) == sample(model, [0], 5, top_p=0.9, seed=1)


def test_non_integer_counts_are_refused():
    model = random_bigram()
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        greedy(model, [0], 2.0)
    with pytest.raises(TypeError, match="top_k must be an int"):
        sample(model, [0], 2, top_k=1.5)
    with pytest.raises(TypeError, match="beam_width must be an int"):
        beam_search(model, [0], 2, beam_width=True)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        sample(model, [0], 2, seed=-1)


# ---- inverse-CDF draws (generate.inverse_cdf, generate.draw_inverse_cdf) ------------------------------
from llmcourse.generate import draw_inverse_cdf, inverse_cdf  # noqa: E402


def test_inverse_cdf_picks_the_interval_that_holds_u_and_never_a_zero_probability_token():
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0]] * 6)  # zero-probability tokens at both ends and between
    u = torch.tensor([0.0, 0.2499, 0.25, 0.6, 1 - 2**-53, 0.9999999], dtype=torch.float64)
    assert inverse_cdf(probs, u).tolist() == [1, 1, 3, 3, 3, 3]
    unnormalised = torch.tensor([[2.0, 0.0, 6.0]])  # u is a share of the row's total
    assert inverse_cdf(unnormalised, torch.tensor([0.24], dtype=torch.float64)).tolist() == [0]
    assert inverse_cdf(unnormalised, torch.tensor([0.26], dtype=torch.float64)).tolist() == [2]
    with pytest.raises(ValueError, match=r"probs must be \(B, V\) and u \(B,\)"):
        inverse_cdf(probs, torch.zeros(3))


def test_draw_inverse_cdf_has_the_distribution_of_multinomial():
    p = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05, 0.0])
    n = 200_000
    probs = p.expand(n, -1)
    ours = torch.bincount(draw_inverse_cdf(probs, torch.Generator().manual_seed(0)), minlength=6) / n
    torch_ = torch.bincount(torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0)).squeeze(1),
                            minlength=6) / n
    se = (p * (1 - p) / n).sqrt()
    assert (ours - p).abs().le(5 * se + 1e-12).all(), ours  # within 5 binomial standard errors
    assert (ours - torch_).abs().le(5 * math.sqrt(2) * se + 1e-12).all()
    assert ours[1] == 0 and ours[5] == 0  # zero-probability tokens are never drawn
    again = draw_inverse_cdf(probs[:100], torch.Generator().manual_seed(0))
    assert torch.equal(again, draw_inverse_cdf(probs[:100], torch.Generator().manual_seed(0)))  # seeded
