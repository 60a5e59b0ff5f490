"""Mixed precision: which type amp=True chooses on which device (capabilities faked: no GPU here), and
the float16 + GradScaler path of llmcourse.train run on the CPU (CPU autocast has float16 and
torch.amp.GradScaler("cpu") exists): the same updates as float32, a skipped update on an inf gradient,
exact resume with the scaler's state, and refusal to resume across the two kinds of run."""
import contextlib
import math

import pytest
import torch

import llmcourse.train as train_module
from llmcourse.core import precision
from llmcourse.core.precision import amp_dtype, autocast, check_amp_dtype, grad_scaler
from llmcourse.data.batching import LMBatcher
from llmcourse.models import GPT, GPTConfig
from llmcourse.train import CheckpointError, TrainConfig, load_checkpoint, train

STREAM = torch.randint(0, 30, (600,), generator=torch.Generator().manual_seed(0))


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16))


def config(**kw):
    return TrainConfig(**{**dict(max_steps=8, lr=3e-3, warmup_steps=1, eval_interval=None, seed=0), **kw})


# ---- the choice of type ---------------------------------------------------------------------------
@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                   ((6, 1), torch.float16), ((8, 0), torch.bfloat16),
                                                   ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)],
                         ids=["T4", "V100", "P4", "A100", "L4", "H100"])
def test_amp_dtype_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # is_bf16_supported() says True on a T4 too (bf16 can be emulated there): it must not decide
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_dtype("cuda") is expected
    assert amp_dtype(torch.device("cuda", 0)) is expected
    assert train_module.amp_dtype is amp_dtype  # train chooses with the same function


def test_amp_dtype_is_none_off_cuda_and_bf16_on_rocm(monkeypatch):
    assert amp_dtype("cpu") is None and amp_dtype(torch.device("mps")) is None and amp_dtype("meta") is None
    monkeypatch.setattr(torch.version, "hip", "6.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert amp_dtype("cuda") is torch.bfloat16


def test_autocast_scaler_and_bad_types():
    assert isinstance(autocast(None, "cpu"), contextlib.nullcontext)
    with autocast(torch.bfloat16, "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert grad_scaler(None, "cpu") is None and grad_scaler(torch.bfloat16, "cpu") is None
    assert isinstance(grad_scaler(torch.float16, "cpu"), torch.amp.GradScaler)
    with pytest.raises(ValueError, match="bfloat16 or torch.float16"):
        check_amp_dtype(torch.float64)
    with pytest.raises(TypeError, match="got str"):
        check_amp_dtype("bf16")


# ---- the float16 path of train, run on the CPU ----------------------------------------------------
@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """train() as on a T4: float16 autocast and a GradScaler (here on the CPU)."""
    monkeypatch.setattr(train_module, "amp_dtype", lambda device: torch.float16)


def test_on_the_cpu_amp_changes_nothing():
    a, b = tiny_gpt(), tiny_gpt()
    ha, hb = train(a, LMBatcher(STREAM, 8, 4), config(amp=True)), train(b, LMBatcher(STREAM, 8, 4), config(amp=False))
    assert ha == hb and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_loss_scaling_alone_changes_no_update(fp16_on_cpu, monkeypatch):
    # The scaler without float16 arithmetic: scaling by a power of two and back is exact in float32,
    # so scale -> unscale -> clip -> step must give float32's updates bit for bit.
    monkeypatch.setattr(precision, "autocast", lambda dtype, device: contextlib.nullcontext())
    reference, scaled = tiny_gpt(), tiny_gpt()
    h_ref = train(reference, LMBatcher(STREAM, 8, 4), config(amp=False, grad_clip=0.5))
    h = train(scaled, LMBatcher(STREAM, 8, 4), config(amp=True, grad_clip=0.5))
    assert h == h_ref
    assert all(torch.equal(p, q) for p, q in zip(reference.parameters(), scaled.parameters()))


def test_float16_training_follows_float32(fp16_on_cpu):
    reference, half = tiny_gpt(), tiny_gpt()
    h_ref = train(reference, LMBatcher(STREAM, 8, 4), config(amp=False))
    h = train(half, LMBatcher(STREAM, 8, 4), config(amp=True))
    assert all(map(torch.isfinite, map(torch.tensor, h["grad_norm"])))  # no update skipped
    assert h["train_loss"] == pytest.approx(h_ref["train_loss"], abs=2e-3)
    assert h["train_loss"] != h_ref["train_loss"]  # it did compute in float16
    moved = max((p - q).abs().max().item() for p, q in zip(reference.parameters(), tiny_gpt().parameters()))
    apart = max((p - q).abs().max().item() for p, q in zip(reference.parameters(), half.parameters()))
    assert apart < 0.5 * moved


def inf_gradient_at(model, step, k=1):
    """Make the gradient of one weight inf during update ``step`` (as a float16 overflow would)."""
    calls = []

    def hook(grad):
        calls.append(None)
        return grad * float("inf") if len(calls) - 1 in range(step * k, (step + 1) * k) else grad

    model.transformer.h[0].mlp.c_fc.weight.register_hook(hook)


def test_an_inf_gradient_skips_the_update_and_halves_the_scale(fp16_on_cpu, tmp_path):
    model = tiny_gpt()
    inf_gradient_at(model, 2)
    snapshots = {}
    get = LMBatcher(STREAM, 8, 4)

    def get_batch(i, generator):  # weights before update i
        snapshots[i] = [p.detach().clone() for p in model.parameters()]
        return get(i, generator)

    path = tmp_path / "run.pt"
    h = train(model, get_batch, config(max_steps=5, checkpoint_path=str(path)))
    assert h["grad_norm"][2] == float("inf") and all(h["grad_norm"][i] < float("inf") for i in (0, 1, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3]))  # update 2 was not applied
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[3], snapshots[4]))  # update 3 was
    assert load_checkpoint(str(path))["grad_scaler"]["scale"] == 2.0 ** 15  # 65536 halved once


def test_an_inf_gradient_at_a_scale_of_one_is_an_error(fp16_on_cpu, monkeypatch):
    monkeypatch.setattr(precision, "grad_scaler", lambda dtype, device: torch.amp.GradScaler("cpu", init_scale=1.0))
    model = tiny_gpt()
    inf_gradient_at(model, 1)
    with pytest.raises(FloatingPointError, match="loss scale is already 1.0"):
        train(model, LMBatcher(STREAM, 8, 4), config(max_steps=4))


def test_resume_with_a_grad_scaler_is_exact(fp16_on_cpu, tmp_path):
    def run(path, stop_at=None, resume=False, seed=0):
        model = tiny_gpt(seed)
        if not resume:  # a skipped update before the checkpoint: the saved scale is not the initial one
            inf_gradient_at(model, 1, k=2)
        cfg = config(max_steps=8, grad_accum_steps=2, checkpoint_path=str(path))
        return model, train(model, LMBatcher(STREAM, 8, 4), cfg, stop_at=stop_at, resume=resume)

    straight, h_straight = run(tmp_path / "straight.pt")
    run(tmp_path / "split.pt", stop_at=4)
    assert load_checkpoint(str(tmp_path / "split.pt"))["grad_scaler"]["scale"] == 2.0 ** 15
    resumed, h_resumed = run(tmp_path / "split.pt", resume=True, seed=9)
    assert repr(h_resumed) == repr(h_straight)  # repr: the skipped update's grad_norm is nan, and nan != nan
    assert math.isnan(h_straight["grad_norm"][1])
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), resumed.parameters()))
    final = [load_checkpoint(str(tmp_path / name))["grad_scaler"] for name in ("straight.pt", "split.pt")]
    assert final[0] == final[1]


def test_resume_refuses_to_cross_between_scaled_and_unscaled_runs(tmp_path, monkeypatch):
    scaled, plain = tmp_path / "fp16.pt", tmp_path / "fp32.pt"
    train(tiny_gpt(), LMBatcher(STREAM, 8, 4), config(checkpoint_path=str(plain)), stop_at=3)
    with monkeypatch.context() as m:
        m.setattr(train_module, "amp_dtype", lambda device: torch.float16)
        train(tiny_gpt(), LMBatcher(STREAM, 8, 4), config(checkpoint_path=str(scaled)), stop_at=3)
        with pytest.raises(CheckpointError, match="written without loss scaling.*amp=False"):
            train(tiny_gpt(), LMBatcher(STREAM, 8, 4), config(checkpoint_path=str(plain)), resume=True)
        state = torch.load(scaled, weights_only=True)
        torch.save({**state, "grad_scaler": {"scale": 2.0}}, tmp_path / "edited.pt")  # incomplete state
        with pytest.raises(CheckpointError, match="GradScaler state dict"):
            train(tiny_gpt(), LMBatcher(STREAM, 8, 4), config(checkpoint_path=str(tmp_path / "edited.pt")), resume=True)
    model = tiny_gpt(seed=4)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(CheckpointError, match="float16 run with loss scaling"):
        train(model, LMBatcher(STREAM, 8, 4), config(checkpoint_path=str(scaled)), resume=True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # refused before loading anything
    # the way out the message names: float32 on the GPU, the change of amp named
    with monkeypatch.context() as m:
        m.setattr(train_module, "amp_dtype", lambda device: torch.float16)
        h = train(tiny_gpt(), LMBatcher(STREAM, 8, 4), config(amp=False, checkpoint_path=str(plain)), resume=True,
                  allow_config_changes=("amp",))
    assert len(h["train_loss"]) == 8
