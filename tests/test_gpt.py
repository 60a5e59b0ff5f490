"""GPT: attention against the formula and torch's SDPA, the explicit/SDPA switch, the key/value cache
against the full forward pass, causality, shapes, init, loss, errors, and conversion to and from
Hugging Face GPT-2 (built from a tiny random config: nothing is downloaded)."""
import math

import pytest
import torch
import torch.nn.functional as F

import transformers  # a test requirement: its absence must fail the suite, not skip these tests

from llmcourse.core.checks import IGNORE_INDEX
from llmcourse.generate import greedy
from llmcourse.models.gpt import GPT, GPTConfig, KVCache, causal_mask
from llmcourse.train import param_groups


TINY = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)


def tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


def randomize_(model, std=0.2, seed=1):
    """Random values in every parameter (biases and LayerNorms too), so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


# ---------------------------------------------------------------- attention


def attention_by_formula(attn, x):
    """softmax(Q K^T / sqrt(d) + causal mask) V per head, written out from the weights of ``attn``."""
    B, T, C = x.shape
    H, D = attn.n_head, C // attn.n_head
    qkv = x @ attn.c_attn.weight.T + attn.c_attn.bias  # (B, T, 3C)
    q, k, v = (t.reshape(B, T, H, D).permute(0, 2, 1, 3) for t in qkv.split(C, dim=-1))  # (B, H, T, D)
    mask = torch.full((T, T), float("-inf")).triu(1)  # 0 on and below the diagonal, -inf above
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, dim=-1)  # (B, H, T, T)
    y = (weights @ v).permute(0, 2, 1, 3).reshape(B, T, C)
    return y @ attn.c_proj.weight.T + attn.c_proj.bias, weights


def test_attention_equals_formula_and_torch_sdpa():
    model = randomize_(tiny_gpt())
    attn = model.transformer.h[0].attn
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(2))
    expected, expected_weights = attention_by_formula(attn, x)
    with torch.no_grad():
        fused = attn(x)  # the SDPA path
        with model.attention("explicit", keep_weights=True):  # the written-out path used for heat maps
            explicit, weights = attn(x), attn.weights
        # torch's own SDPA with an explicit boolean mask instead of is_causal
        C, H = 32, 2
        q, k, v = (t.view(3, 7, H, C // H).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
        keep = torch.ones(7, 7, dtype=torch.bool).tril()
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(3, 7, C)
        ref = attn.c_proj(ref)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)


def test_attention_maps_are_causal_distributions():
    model = randomize_(tiny_gpt())
    idx = torch.randint(0, 50, (2, 9))
    maps = model.attention_maps(idx)
    assert maps.shape == (2, 2, 2, 9, 9)  # (n_layer, B, H, T, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 2, 9))
    assert torch.all(maps.triu(1) == 0)  # nothing attends to the future
    assert torch.all(maps[..., 0, 0] == 1)  # the first token can only attend to itself


def test_explicit_attention_equals_sdpa_for_the_whole_model_with_gradients():
    model = randomize_(tiny_gpt(), std=0.1)
    idx = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(4))
    logits, loss = model(idx, idx)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with model.attention("explicit"):
        assert all(b.attn.impl == "explicit" for b in model.transformer.h)
        logits2, loss2 = model(idx, idx)
        grads2 = torch.autograd.grad(loss2, list(model.parameters()))
        assert all(b.attn.weights is None for b in model.transformer.h)  # kept only when asked
    torch.testing.assert_close(logits2, logits, atol=1e-5, rtol=1e-5)
    for g2, g in zip(grads2, grads):
        torch.testing.assert_close(g2, g, atol=1e-5, rtol=1e-4)


def test_attention_switch_is_restored_even_when_the_body_raises():
    model = tiny_gpt()
    with pytest.raises(RuntimeError, match="boom"):
        with model.attention("explicit", keep_weights=True):
            model(torch.zeros(1, 3, dtype=torch.long))
            raise RuntimeError("boom")
    for block in model.transformer.h:
        assert (block.attn.impl, block.attn.keep_weights, block.attn.weights) == ("sdpa", False, None)
    model.set_attention("explicit")  # set_attention switches for good; a context restores that setting
    with model.attention("sdpa"):
        assert model.transformer.h[1].attn.impl == "sdpa"
    assert model.transformer.h[1].attn.impl == "explicit"
    model.set_attention("sdpa")
    model.attention_maps(torch.zeros(1, 3, dtype=torch.long))  # uses the switch and puts it back
    assert all(b.attn.impl == "sdpa" and b.attn.weights is None for b in model.transformer.h)


def test_attention_switch_errors():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        model.set_attention("flash")
    with pytest.raises(ValueError, match="keep_weights needs impl='explicit'"):
        model.set_attention("sdpa", keep_weights=True)


def test_uncached_forward_uses_the_fused_causal_kernel(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append(kwargs)
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    tiny_gpt()(torch.zeros(2, 5, dtype=torch.long))
    assert calls == [dict(dropout_p=0.0, is_causal=True)] * 2  # one per layer, no mask tensor built


def test_causal_mask_with_an_offset():
    assert causal_mask(3, 3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # 2 new queries after 3 cached positions: query 0 is position 3, query 1 is position 4
    assert causal_mask(2, 5).tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


# ---------------------------------------------------------------- key/value cache


@pytest.mark.parametrize("chunks", [[1] * 12, [3, 1, 1, 4, 1, 2], [7, 5], [12]])
def test_cache_in_chunks_equals_the_full_forward(chunks):
    model = randomize_(tiny_gpt(), std=0.1)
    idx = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(5))
    full, _ = model(idx)
    cache, parts, t = model.new_cache(), [], 0
    for n in chunks:  # a prompt of chunks[0] tokens, then the rest a few at a time
        logits, loss = model(idx[:, t:t + n], cache=cache)
        assert loss is None and cache.length == t + n
        parts.append(logits)
        t += n
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert isinstance(cache, KVCache) and cache.keys[0].shape == (3, 2, 12, 16)  # (B, H, length, D)


def test_cache_with_explicit_attention_and_the_weights_it_keeps():
    model = randomize_(tiny_gpt(), std=0.1)
    idx = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(6))
    maps = model.attention_maps(idx)  # (L, B, H, 9, 9)
    cache = model.new_cache()
    with model.attention("explicit", keep_weights=True):
        model(idx[:, :6], cache=cache)
        logits, _ = model(idx[:, 6:], cache=cache)
        last = model.transformer.h[1].attn.weights  # (B, H, 3, 9): rows 6..8 of the full maps
    torch.testing.assert_close(logits, model(idx)[0][:, 6:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, maps[1, :, :, 6:], atol=1e-6, rtol=1e-5)


def test_cache_reorder_follows_the_rows():
    model = randomize_(tiny_gpt(), std=0.1)
    idx = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(7))
    rows = torch.tensor([2, 0, 0])
    cache = model.new_cache()
    model(idx[:, :5], cache=cache)
    cache.reorder(rows)
    logits, _ = model(idx[rows, 5:], cache=cache)
    torch.testing.assert_close(logits, model(idx[rows])[0][:, 5:], atol=1e-5, rtol=1e-5)


def test_cache_errors():
    model = tiny_gpt()
    cache = model.new_cache()
    model(torch.zeros(2, 10, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="the cache holds 10 positions and idx adds 7: 17 would exceed block_size 16"):
        model(torch.zeros(2, 7, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="the cache holds 2 sequences but idx has 3 rows"):
        model(torch.zeros(3, 1, dtype=torch.long), cache=cache)
    with pytest.raises(TypeError, match="KVCache"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=[None, None])
    with pytest.raises(TypeError, match="KVCache"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=tiny_gpt(n_layer=3).new_cache())
    with pytest.raises(ValueError, match="vocabulary has 50 ids"):
        model(torch.tensor([[50]]), cache=model.new_cache())


def test_hidden_states_feed_the_output_layer():
    model = randomize_(tiny_gpt(), std=0.1)
    idx = torch.randint(0, 50, (2, 6))
    h = model.hidden_states(idx)
    assert h.shape == (2, 6, 32)
    torch.testing.assert_close(model.lm_head(h), model(idx)[0])


def test_forward_shapes_and_causality():
    model = randomize_(tiny_gpt())
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))
    logits, loss = model(idx)
    assert logits.shape == (2, 12, 50) and loss is None
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50  # change the future from position 8 on
    logits2, _ = model(changed)
    torch.testing.assert_close(logits2[:, :8], logits[:, :8])  # the past does not see it
    assert not torch.allclose(logits2[:, 8:], logits[:, 8:])  # the present does


# ---------------------------------------------------------------- parameters, init, loss


def test_num_params_matches_hand_count_and_weights_are_tied():
    model = tiny_gpt()
    V, P, L, C = 50, 16, 2, 32
    per_block = 12 * C * C + 13 * C  # qkv 3C^2+3C, proj C^2+C, fc 4C^2+4C, proj 4C^2+C, 2 LayerNorms 4C
    assert model.num_params() == V * C + P * C + L * per_block + 2 * C
    assert model.num_params(non_embedding=True) == L * per_block + 2 * C
    assert model.lm_head.weight is model.transformer.wte.weight
    no_bias = tiny_gpt(bias=False)
    assert no_bias.num_params() == V * C + P * C + L * 12 * C * C + L * 2 * C + C


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=8, n_head=4, n_embd=128))
    block = model.transformer.h[3]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for w in (block.attn.c_proj.weight, block.mlp.c_proj.weight):
        assert w.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert torch.all(block.attn.c_attn.bias == 0)


def test_loss_at_init_is_log_vocab_and_ignores_padding():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    idx = torch.randint(0, 100, (4, 32))
    targets = torch.randint(0, 100, (4, 32))
    logits, loss = model(idx, targets)
    assert abs(loss.item() - math.log(100)) < 0.15  # near-uniform predictions at init
    padded = targets.clone()
    padded[:, 20:] = IGNORE_INDEX
    _, loss_padded = model(idx, padded)
    expected = F.cross_entropy(logits[:, :20].reshape(-1, 100), targets[:, :20].reshape(-1))
    torch.testing.assert_close(loss_padded, expected)


def test_tiny_model_overfits_one_sequence():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32))
    seq = torch.randint(0, 20, (1, 17))
    x, y = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_dropout_only_in_training_mode():
    model = tiny_gpt(dropout=0.5)
    idx = torch.randint(0, 50, (1, 8))
    torch.testing.assert_close(model(idx)[0], model(idx)[0])  # eval: deterministic
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


# ---------------------------------------------------------------- errors


def test_bad_input_errors():
    model = GPT(GPTConfig(vocab_size=50, block_size=64, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="sequence length 80 exceeds block_size 64"):
        model(torch.zeros(1, 80, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"idx holds ids in \[1, 50\] but the vocabulary has 50 ids"):
        model(torch.tensor([[1, 2, 50]]))
    with pytest.raises(ValueError, match=r"holds ids in \[-1, 1\]"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_autocast_matches_float32():
    model = randomize_(tiny_gpt(), std=0.05).cuda()
    idx = torch.randint(0, 50, (2, 16), device="cuda")
    ref, _ = model(idx)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    torch.testing.assert_close(logits.float(), ref, atol=0.05, rtol=0.05)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.skipif(not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()), reason="needs MPS")
def test_mps_matches_cpu():
    model = randomize_(tiny_gpt(), std=0.05)
    idx = torch.randint(0, 50, (2, 16))
    ref, _ = model(idx)
    logits, _ = model.to("mps")(idx.to("mps"))
    torch.testing.assert_close(logits.cpu(), ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- Hugging Face


def tiny_hf_gpt2():
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=None, eos_token_id=None
    )
    torch.manual_seed(0)
    return randomize_(transformers.GPT2LMHeadModel(config).eval(), std=0.2, seed=5)


def hf_greedy(hf, prompt, n):
    return hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False, pad_token_id=0
    )


def test_from_hf_same_logits_and_greedy_tokens():
    from llmcourse.models.hf_convert import gpt_from_hf

    hf = tiny_hf_gpt2()
    ours = gpt_from_hf(hf)
    assert isinstance(ours, GPT) and not ours.training and ours.config.block_size == 16
    idx = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)
        prompt = idx[:1, :4]
        assert torch.equal(greedy(ours, prompt, 10), hf_greedy(hf, prompt, 10))


@pytest.mark.parametrize("bias", [True, False])
def test_to_hf_same_logits_and_greedy_tokens(bias):
    from llmcourse.models.hf_convert import gpt_from_hf, gpt_to_hf

    ours = randomize_(tiny_gpt(bias=bias), std=0.2, seed=7)
    hf = gpt_to_hf(ours)
    assert not hf.training and hf.config.n_positions == 16 and hf.config.activation_function == "gelu_new"
    idx = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx)[0], atol=1e-5, rtol=1e-5)
        prompt = idx[:1, :5]
        assert torch.equal(hf_greedy(hf, prompt, 10), greedy(ours, prompt, 10))
        back = gpt_from_hf(hf)  # the round trip gives the same weights
        back_sd = back.state_dict()  # has zero biases where ours (bias=False) has none
        for name, a in ours.state_dict().items():
            torch.testing.assert_close(a, back_sd[name])


def test_hf_conversion_errors():
    from llmcourse.models.hf_convert import gpt_from_hf, gpt_to_hf

    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        gpt_from_hf(tiny_gpt())
    with pytest.raises(TypeError, match="llmcourse GPT"):
        gpt_to_hf(torch.nn.Linear(2, 2))
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2, activation_function="relu",
        bos_token_id=None, eos_token_id=None,
    )
    with pytest.raises(ValueError, match="activation_function"):
        gpt_from_hf(transformers.GPT2LMHeadModel(config))


def test_output_bias_starts_at_the_unigram_model():
    torch.manual_seed(0)
    V = 50
    model = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=32, head_bias=True))
    stream = torch.randint(0, 10, (400,))  # only ids 0..9 occur, unevenly
    counts = torch.bincount(stream, minlength=V)
    model.init_output_bias(counts)
    smoothed = (counts.double() + 0.5) / (counts.sum() + 0.5 * V)
    unigram_ce = -(counts.double() * smoothed.log()).sum() / counts.sum()  # cross-entropy of the unigram model
    x, y = stream[:-1].view(-1, 1)[:256].view(16, 16), stream[1:].view(-1, 1)[:256].view(16, 16)
    with torch.no_grad():
        _, loss = model(x, y)
    # The tied-embedding logits of an untrained model are tiny, so the loss is the unigram model's.
    assert abs(loss.item() - unigram_ce.item()) < 0.05
    assert loss.item() < math.log(V) - 1.0


def test_output_bias_errors():
    from llmcourse.models.hf_convert import gpt_to_hf

    with pytest.raises(ValueError, match="head_bias=True"):
        tiny_gpt().init_output_bias(torch.ones(tiny_gpt().config.vocab_size))
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, head_bias=True))
    with pytest.raises(ValueError, match=r"\(vocab_size,\) = \(20,\)"):
        model.init_output_bias(torch.ones(19))
    with pytest.raises(ValueError, match=">= 0"):
        model.init_output_bias(-torch.ones(20))
    with pytest.raises(TypeError, match="head_bias must be a bool"):
        GPTConfig(head_bias=1)
    with pytest.raises(ValueError, match="no output-layer bias"):
        gpt_to_hf(model)
