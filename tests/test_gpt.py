"""GPT: attention against the formula and torch's SDPA, causality, shapes, init, loss, errors, and
conversion to and from Hugging Face GPT-2 (built from a tiny random config: nothing is downloaded)."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.generate import greedy
from llmcourse.models.gpt import GPT, IGNORE_INDEX, GPTConfig


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
        explicit, weights = attn(x, return_attention=True)  # the written-out path used for heat maps
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
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.95), device_type="cpu")
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_configure_optimizers_decays_matrices_only():
    model = tiny_gpt()
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95), device_type="cpu")
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()
    assert not opt.defaults.get("fused")


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
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device_type="cuda")
    assert opt.defaults.get("fused") is True
    opt.step()


@pytest.mark.skipif(not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()), reason="needs MPS")
def test_mps_matches_cpu():
    model = randomize_(tiny_gpt(), std=0.05)
    idx = torch.randint(0, 50, (2, 16))
    ref, _ = model(idx)
    logits, _ = model.to("mps")(idx.to("mps"))
    torch.testing.assert_close(logits.cpu(), ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- Hugging Face


def tiny_hf_gpt2():
    transformers = pytest.importorskip("transformers")
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

    pytest.importorskip("transformers")
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

    transformers = pytest.importorskip("transformers")
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
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="no output-layer bias"):
        gpt_to_hf(model)
