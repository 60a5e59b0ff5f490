"""Chapter 10's engineering pieces: throughput measurement (with a fake clock), explicit vs fused
attention, micro-batches = one large batch, global magnitude pruning against torch.nn.utils.prune,
sizes counted by hand and by torch's CSR tensors, the noisy batcher, and torchrun from Python."""
import copy
import textwrap
import warnings

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune

from llmcourse.data.batching import LMBatcher
from llmcourse.chapters.engineering import (
    MicroBatches, NoisyLMBatcher, Throughput, compare_gradients, compare_throughput, count_nonzero,
    effective_tensors, explicit_attention, global_magnitude_masks, gradients_at_first_update, make_pruning_permanent,
    measure_throughput, prunable_linears, prune_linears, run_torchrun, storage_bytes, throughput_verdict,
)
from llmcourse.models import GPT, GPTConfig
from llmcourse.train import TrainConfig, train

STREAM = torch.randint(0, 30, (600,), generator=torch.Generator().manual_seed(0))


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**dict(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16), **kw}))


# ---- throughput -----------------------------------------------------------------------------------
def test_throughput_counts_tokens_and_leaves_the_model_alone():
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    ticks = iter([10.0, 14.0])  # the fake clock: 4 s between the start and the end of the timed steps
    result = measure_throughput(model, LMBatcher(STREAM, 8, 4), steps=2, warmup=1, clock=lambda: next(ticks),
                                threads=2)
    assert result.tokens_per_step == 4 * 8
    assert result.seconds_per_step == pytest.approx(2.0)
    assert result.tokens_per_s == pytest.approx(2 * 32 / 4.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # weights put back
    assert torch.get_num_threads() == threads  # restored
    ticks = iter([0.0, 5.0, 5.0, 7.0, 7.0, 10.0])  # three repeats of 2 steps: 5 s, 2 s, 3 s -> the best, 2 s
    best = measure_throughput(model, LMBatcher(STREAM, 8, 4), steps=2, warmup=0, repeats=3, clock=lambda: next(ticks))
    assert best.seconds_per_step == pytest.approx(1.0) and best.tokens_per_s == pytest.approx(64 / 2.0)
    real = measure_throughput(model, LMBatcher(STREAM, 8, 4), steps=2, warmup=0, autocast_dtype=torch.bfloat16)
    assert real.tokens_per_s > 0
    pruned = prune_linears(tiny_gpt(), 0.5)  # pruned modules work too, and keep their masks
    masks = [m.weight_mask.clone() for m, _ in prunable_linears(pruned)]
    measure_throughput(pruned, LMBatcher(STREAM, 8, 4), steps=1, warmup=0)
    assert all(torch.equal(a, m.weight_mask) for a, (m, _) in zip(masks, prunable_linears(pruned)))
    with pytest.raises(ValueError, match="steps"):
        measure_throughput(model, LMBatcher(STREAM, 8, 4), steps=0)
    with pytest.raises(ValueError, match="threads"):
        measure_throughput(model, LMBatcher(STREAM, 8, 4), threads=0)
    with pytest.raises(ValueError, match="repeats"):
        measure_throughput(model, LMBatcher(STREAM, 8, 4), repeats=0)
    with pytest.raises(ValueError, match="bfloat16 or torch.float16"):
        measure_throughput(model, LMBatcher(STREAM, 8, 4), autocast_dtype=torch.float64)
    assert result.peak_memory_bytes is None  # measured on CUDA only


def test_throughput_in_float16_runs_the_loss_scaled_step_and_leaves_the_model_alone(monkeypatch):
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    real_step = torch.amp.GradScaler.step
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda self, opt: steps.append(1) or real_step(self, opt))
    result = measure_throughput(model, LMBatcher(STREAM, 8, 4), steps=2, warmup=1, autocast_dtype=torch.float16)
    assert result.tokens_per_s > 0 and len(steps) == 3  # warm-up and timed steps all went through the scaler
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_throughput_verdicts_need_every_round_beyond_the_noise():
    noise = [0.97, 1.02, 1.0]  # the baseline against itself in three rounds
    assert throughput_verdict([1.05, 1.03, 1.2], noise) == "faster"
    assert throughput_verdict([0.5, 0.9, 0.96], noise) == "slower"
    assert throughput_verdict([1.5, 1.5, 1.01], noise) == "within noise"  # one round inside the noise
    assert throughput_verdict([0.97, 1.0], noise) == "within noise"
    with pytest.raises(ValueError, match="at least one"):
        throughput_verdict([], noise)


def test_compare_throughput_interleaves_rounds_and_labels_rows():
    order = []
    # the baseline's one function serves both of its rows: 100 / 101 / 99 tokens/s, so its ratio to
    # itself ranges over about 0.99-1.01 (the noise), and "same" at a constant 100 stays inside it
    speeds = {"base": iter([100, 101, 101, 100, 99, 100, 100, 99]), "fast": iter([150, 160, 155, 149]),
              "same": iter([100] * 4), "slow": iter([50, 52, 49, 51])}

    def timing(name):
        def measure():
            order.append(name)
            return Throughput(float(next(speeds[name])), 1.0, 32)
        return measure

    rows = compare_throughput({name: timing(name) for name in ("base", "fast", "same", "slow")}, rounds=4,
                              warmup_rounds=0)
    assert [r.name for r in rows] == ["base", "fast", "same", "slow", "base again"]
    rounds = [order[i:i + 5] for i in range(0, 20, 5)]  # each round rotated by one more place
    assert rounds[0] == ["base", "fast", "same", "slow", "base"] and rounds[1] == ["fast", "same", "slow", "base", "base"]
    assert rounds[2] == ["same", "slow", "base", "base", "fast"]
    verdicts = {r.name: r.verdict for r in rows}
    assert verdicts == {"base": "baseline", "fast": "faster", "same": "within noise", "slow": "slower",
                        "base again": "noise"}
    fast = rows[1]
    assert fast.median == pytest.approx(152.5) and (fast.low, fast.high) == (149, 160)
    assert fast.tokens_per_step == 32 and fast.ratio_low > 1.4
    with pytest.raises(ValueError, match="rounds"):
        compare_throughput({"base": timing("base")}, rounds=1)
    with pytest.raises(ValueError, match="baseline 'x'"):
        compare_throughput({"base": timing("base")}, baseline="x")
    with pytest.raises(ValueError, match="rename"):
        compare_throughput({"base": timing("base"), "base again": timing("same")})
    with pytest.raises(TypeError, match="dict of name"):
        compare_throughput({})
    with pytest.raises(ValueError, match="warmup_rounds"):
        compare_throughput({"base": timing("base")}, warmup_rounds=-1)
    calls = []
    compare_throughput({"a": lambda: calls.append(1) or Throughput(1.0, 1.0, 1)}, rounds=2)  # 1 warm-up round
    assert len(calls) == 2 * 3  # the baseline twice per round, in 1 + 2 rounds


def test_compare_throughput_with_real_measurements():
    model, get = tiny_gpt(), LMBatcher(STREAM, 8, 4)
    rows = compare_throughput({"fp32": lambda: measure_throughput(model, get, steps=1, warmup=0),
                               "bf16": lambda: measure_throughput(model, get, steps=1, warmup=0,
                                                                  autocast_dtype=torch.bfloat16)}, rounds=2)
    assert [r.name for r in rows] == ["fp32", "bf16", "fp32 again"] and all(r.median > 0 for r in rows)
    assert rows[0].ratio == 1.0 and rows[1].verdict in ("faster", "slower", "within noise")


def test_explicit_attention_is_the_same_function():
    model = tiny_gpt(dropout=0.0)
    x = torch.randint(0, 30, (3, 12), generator=torch.Generator().manual_seed(1))
    logits, loss = model(x, x)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    layer = model.transformer.h[0].attn
    with explicit_attention(model):
        assert layer.impl == "explicit" and "forward" not in vars(layer)  # the model's switch, no patched method
        logits2, loss2 = model(x, x)
        loss2.backward()
        copied = copy.deepcopy(model)  # a copy keeps the setting and uses its own weights
    assert copied.transformer.h[0].attn.impl == "explicit"
    torch.testing.assert_close(copied(x)[0], logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits2, logits, atol=1e-5, rtol=1e-5)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)
    assert all(b.attn.impl == "sdpa" for b in model.transformer.h)  # back to the fused kernel
    with pytest.raises(ValueError, match="no llmcourse GPT"):
        with explicit_attention(nn.Linear(2, 2)):
            pass


def test_explicit_attention_reaches_a_wrapped_gpt_and_is_restored_after_an_error():
    from llmcourse.chapters.ppo import PolicyWithValue

    policy = PolicyWithValue(tiny_gpt())
    with pytest.raises(RuntimeError, match="boom"):
        with explicit_attention(policy):
            assert all(b.attn.impl == "explicit" for b in policy.gpt.transformer.h)
            raise RuntimeError("boom")
    assert all(b.attn.impl == "sdpa" for b in policy.gpt.transformer.h)


# ---- gradient accumulation ------------------------------------------------------------------------
def test_micro_batches_are_the_large_batch():
    get = LMBatcher(STREAM, 8, 12)
    big = get(0, torch.Generator().manual_seed(5))
    split = MicroBatches(get, 3)
    g = torch.Generator().manual_seed(5)
    parts = [split(i, g) for i in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), big[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), big[1])
    dict_split = MicroBatches(lambda i, g: {"input_ids": torch.arange(8).view(4, 2), "n": 1}, 2)
    dict_split(0, g)
    d = dict_split(1, g)
    assert torch.equal(d["input_ids"], torch.tensor([[4, 5], [6, 7]])) and d["n"] == 1
    with pytest.raises(ValueError, match="divisible"):
        MicroBatches(get, 5)(0, g)
    with pytest.raises(RuntimeError, match="in order"):
        MicroBatches(get, 3)(4, g)
    with pytest.raises(ValueError, match="k"):
        MicroBatches(get, 0)


def test_accumulation_with_micro_batches_equals_one_large_batch():
    def run(k):
        model = tiny_gpt(seed=2)
        cfg = TrainConfig(max_steps=4, lr=3e-3, warmup_steps=1, eval_interval=None, grad_accum_steps=k, grad_clip=None)
        return model, train(model, MicroBatches(LMBatcher(STREAM, 8, 16), k), cfg)

    (m1, h1), (m4, h4) = run(1), run(4)
    assert h4["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
    for p, q in zip(m1.parameters(), m4.parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-4)
    moved = (m1.transformer.h[0].mlp.c_fc.weight - tiny_gpt(seed=2).transformer.h[0].mlp.c_fc.weight).abs().max()
    assert moved > 1e-3  # it trained


def test_gradients_at_first_update_are_what_the_optimizer_sees():
    model = tiny_gpt(seed=3)
    x, y = LMBatcher(STREAM, 8, 4)(0, torch.Generator().manual_seed(0))
    model(x, y)[1].backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with gradients_at_first_update(model) as grads:
        other.step()  # another model's optimizer is not recorded
        assert grads == {}
        opt.step()
        model.zero_grad()
        model(x, y)[1].backward()
        opt.step()  # only the first step counts
    assert set(grads) == set(expected) and all(torch.equal(grads[n], g) for n, g in expected.items())
    rows = compare_gradients(grads, expected)
    assert all(r.max_abs == 0 and r.rel == 0 for r in rows)
    with pytest.raises(RuntimeError, match="no optimizer step"):
        with gradients_at_first_update(model):
            pass
    with pytest.raises(TypeError, match="nn.Module"):
        with gradients_at_first_update("model"):
            pass


def test_compare_gradients_by_hand():
    ref = {"w": torch.tensor([[1.0, -4.0], [0.0, 2.0]]), "b": torch.tensor([0.0, 0.0])}
    got = {"w": torch.tensor([[1.0, -4.0], [0.1, 2.0]]), "b": torch.tensor([0.0, 0.0])}
    rows = compare_gradients(got, ref)
    assert [r.name for r in rows] == ["w", "b"]  # the largest relative difference first
    assert rows[0].max_abs == pytest.approx(0.1) and rows[0].reference_max == 4.0 and rows[0].rel == pytest.approx(0.025)
    assert rows[1].rel == 0.0
    assert compare_gradients({"w": ref["w"], "b": torch.tensor([0.0, 1.0])}, ref)[0].rel == float("inf")
    with pytest.raises(ValueError, match="only in one of them: \\['b'\\]"):
        compare_gradients({"w": ref["w"]}, ref)
    with pytest.raises(ValueError, match="shape"):
        compare_gradients({"w": ref["w"], "b": torch.zeros(3)}, ref)


# ---- pruning --------------------------------------------------------------------------------------
def test_global_magnitude_masks_by_hand_and_against_torch():
    a = torch.tensor([[1.0, -5.0], [0.5, 3.0]])
    b = torch.tensor([-2.0, 0.1])
    ma, mb = global_magnitude_masks([a, b], 0.5)  # the 3 smallest of 6: 0.1, 0.5, 1.0
    assert torch.equal(ma, torch.tensor([[0.0, 1.0], [0.0, 1.0]])) and torch.equal(mb, torch.tensor([1.0, 0.0]))
    assert all(m.all() for m in global_magnitude_masks([a, b], 0.0))
    assert not any(m.any() for m in global_magnitude_masks([a, b], 1.0))

    g = torch.Generator().manual_seed(0)
    layers = [nn.Linear(7, 5), nn.Linear(5, 9), nn.Linear(9, 3)]
    with torch.no_grad():
        for layer, scale in zip(layers, (1.0, 0.1, 3.0)):  # different scales: global differs from per-layer
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * scale)
    ours = global_magnitude_masks([layer.weight for layer in layers], 0.6)
    prune.global_unstructured([(layer, "weight") for layer in layers], prune.L1Unstructured, amount=0.6)
    for mine, layer in zip(ours, layers):
        assert torch.equal(mine, layer.weight_mask)
    with pytest.raises(ValueError, match="amount"):
        global_magnitude_masks([a], 1.5)
    with pytest.raises(TypeError, match="tensors"):
        global_magnitude_masks([], 0.5)


def test_prune_linears_methods():
    model = tiny_gpt()
    targets = prunable_linears(model)
    assert len(targets) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block; not the tied lm_head
    assert all(module is not model.lm_head for module, _ in targets)
    prune_linears(model, 0.7, "global")
    weights = [m.weight for m, _ in targets]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.7 * sum(w.numel() for w in weights))
    assert not (model.transformer.wte.weight == 0).any()  # the embedding (and tied output) untouched

    # fine-tuning keeps pruned weights at zero: the mask multiplies weight_orig in every forward
    train(model, LMBatcher(STREAM, 8, 4), TrainConfig(max_steps=3, lr=1e-2, warmup_steps=0, eval_interval=None))
    assert sum(int((m.weight == 0).sum()) for m, _ in targets) >= zeros

    layerwise = prune_linears(tiny_gpt(), 0.5, "layer")
    for module, _ in prunable_linears(layerwise):
        assert int((module.weight == 0).sum()) == round(0.5 * module.weight.numel())
    r1, r2 = prune_linears(tiny_gpt(), 0.5, "random", seed=3), prune_linears(tiny_gpt(), 0.5, "random", seed=3)
    masks = [m.weight_mask for m, _ in prunable_linears(r1)]
    assert all(torch.equal(a, m.weight_mask) for a, (m, _) in zip(masks, prunable_linears(r2)))
    glob = prune_linears(tiny_gpt(), 0.5, "global")
    assert not all(torch.equal(a, m.weight_mask) for a, (m, _) in zip(masks, prunable_linears(glob)))
    with pytest.raises(ValueError, match="method"):
        prune_linears(tiny_gpt(), 0.5, "magic")
    with pytest.raises(ValueError, match="no nn.Linear"):
        prune_linears(nn.Embedding(3, 2), 0.5)


def test_sizes_by_hand_and_against_torch_csr():
    layer = nn.Linear(5, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.0, 1.0]))
    assert count_nonzero(layer) == (3, 12)
    assert storage_bytes(layer) == 12 * 4
    # CSR, int32 indices: 2 values * 4 B + 2 column indices * 4 B + (2 rows + 1) pointers * 4 B = 28 B
    # < 40 B dense; the bias stays dense (8 B)
    assert storage_bytes(layer, sparse=True, index_dtype=torch.int32) == 2 * 4 + 2 * 4 + 3 * 4 + 2 * 4
    # with int64 indices CSR would take 2 * 4 + 2 * 8 + 3 * 8 = 48 B > 40 B, so the matrix stays dense
    assert storage_bytes(layer, sparse=True) == 12 * 4
    with torch.no_grad():
        layer.weight[1, 4] = 0.0  # one nonzero left: CSR (4 + 8 + 24 = 36 B) now beats dense (40 B)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore")
        csr = layer.weight.detach().to_sparse_csr()
    torch_bytes = sum(t.numel() * t.element_size() for t in (csr.values(), csr.col_indices(), csr.crow_indices()))
    assert torch_bytes == 36 and storage_bytes(layer, sparse=True) == torch_bytes + 2 * 4
    with pytest.raises(ValueError, match="index_dtype"):
        storage_bytes(layer, sparse=True, index_dtype=torch.float32)

    model = tiny_gpt()
    nonzero_before, total = count_nonzero(model)  # biases start at 0: not every parameter is nonzero
    assert total == model.num_params()  # the tied matrix counted once
    prune_linears(model, 0.5)
    nonzero, total = count_nonzero(model)
    assert total == model.num_params()
    pruned = sum(round(0.5 * m.weight.numel()) for m, _ in prunable_linears(model))
    assert nonzero == nonzero_before - pruned
    names = [n for n, _ in effective_tensors(model)]
    assert "transformer.h.0.mlp.c_fc.weight" in names and not any(n.endswith("_orig") for n in names)
    assert any(k.endswith("weight_mask") for k in model.state_dict())
    make_pruning_permanent(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert count_nonzero(model) == (nonzero, total)


# ---- data augmentation ----------------------------------------------------------------------------
def test_noisy_batcher_without_noise_is_lm_batcher():
    a = NoisyLMBatcher(STREAM, 10, 6)(0, torch.Generator().manual_seed(4))
    b = LMBatcher(STREAM, 10, 6)(0, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_noisy_batcher_deletion_and_replacement():
    stream = torch.arange(5000)  # each id is its own position: a row shows what was deleted
    x, y = NoisyLMBatcher(stream, 20, 200, p_delete=0.25)(0, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (200, 20)
    assert torch.equal(y[:, :-1], x[:, 1:])  # targets: the surviving sequence, shifted by one
    full = torch.cat([x, y[:, -1:]], dim=1)  # (B, 21)
    gaps = full.diff(dim=1)
    assert (gaps >= 1).all()  # increasing: a subsequence of the stream, order kept
    skipped = (gaps - 1).sum() / (gaps.sum())  # deleted / read
    assert 0.2 < float(skipped) < 0.3

    clean = LMBatcher(STREAM, 16, 300)(0, torch.Generator().manual_seed(1))
    weights = torch.zeros(30)
    weights[7] = 1.0  # every replacement becomes token 7
    noisy = NoisyLMBatcher(STREAM, 16, 300, p_replace=0.2, replace_weights=weights)
    xr, yr = noisy(0, torch.Generator().manual_seed(1))
    assert torch.equal(yr, clean[1])  # targets stay clean
    changed = xr != clean[0]
    assert (xr[changed] == 7).all()
    rate = float(changed.float().mean() / (clean[0] != 7).float().mean())
    assert 0.17 < rate < 0.23
    for bad in (dict(p_replace=1.0), dict(p_delete=-0.1), dict(replace_weights=-torch.ones(30), p_replace=0.1)):
        with pytest.raises(ValueError):
            NoisyLMBatcher(STREAM, 16, 4, **bad)


# ---- torchrun -------------------------------------------------------------------------------------
def test_run_torchrun(tmp_path, monkeypatch):
    script = tmp_path / "allreduce.py"
    script.write_text(textwrap.dedent('''
        import os, sys, torch, torch.distributed as dist
        dist.init_process_group("gloo")
        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)  # 1 + 2 on both processes
        with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.txt"), "w") as f:
            f.write(f"{t.item()} {os.environ['OMP_NUM_THREADS']} {os.environ['MKL_NUM_THREADS']}")
        dist.destroy_process_group()
    '''))
    monkeypatch.setenv("MKL_NUM_THREADS", "2")  # the caller's thread settings do not leak into the ranks
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run_torchrun(script, 2, [str(tmp_path)], cwd=tmp_path, timeout=300)
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["3.0 1 1", "3.0 1 1"]
    bad = tmp_path / "bad.py"
    bad.write_text("raise SystemExit('deliberate failure')\n")
    with pytest.raises(RuntimeError, match="deliberate failure"):
        run_torchrun(bad, 1, cwd=tmp_path, timeout=300)
    with pytest.raises(FileNotFoundError, match="missing.py"):
        run_torchrun(tmp_path / "missing.py", 2)
