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
    MicroBatches, NoisyLMBatcher, count_nonzero, effective_tensors, explicit_attention, global_magnitude_masks,
    make_pruning_permanent, measure_throughput, prunable_linears, prune_linears, run_torchrun, storage_bytes,
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
