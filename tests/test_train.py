"""Tests for llmcourse.train: schedule, optimizer groups, the loop against a torch.optim loop written out,
accumulation, clipping, no update on a non-finite loss, checkpoints, exact resume and its config check,
evaluation mode, progress bars."""
import io
import math
import os
import sys
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import llmcourse.train as train_module
from llmcourse.core.checks import IGNORE_INDEX
from llmcourse.data.batching import LMBatcher, eval_windows
from llmcourse.models.lstm_lm import LSTMLM
from llmcourse.models.mlp_lm import MLPLM
from llmcourse.train import (
    RESUME_IGNORES, CheckpointError, TrainConfig, estimate_loss, evaluate_lm, load_checkpoint, lr_at,
    make_optimizer, param_groups, progress_enabled, save_checkpoint, train,
)

V = 20
STREAM = torch.randint(4, V, (400,), generator=torch.Generator().manual_seed(0))


def small_lstm(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return LSTMLM(V, emb_dim=8, hidden_size=8, num_layers=2, dropout=dropout)


def cfg(**kw):
    base = dict(max_steps=10, lr=1e-2, min_lr=1e-3, warmup_steps=2, eval_interval=4, eval_steps=2, seed=0)
    base.update(kw)
    base["warmup_steps"] = min(base["warmup_steps"], base["max_steps"])
    return TrainConfig(**base)


# ---- learning-rate schedule -----------------------------------------------------------------------
def test_lr_schedule_hand_values():
    c = TrainConfig(max_steps=110, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, c) == pytest.approx(0.1)  # 1/10 of lr on the first warm-up step
    assert lr_at(4, c) == pytest.approx(0.5)
    assert lr_at(9, c) == pytest.approx(1.0)  # full lr on the last warm-up step
    assert lr_at(10, c) == pytest.approx(1.0)  # cosine starts at the top
    assert lr_at(60, c) == pytest.approx(0.55)  # half way: min + (max - min) / 2
    assert lr_at(35, c) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(110, c) == pytest.approx(0.1) and lr_at(500, c) == pytest.approx(0.1)
    const = TrainConfig(max_steps=5, lr=0.3, min_lr=0.3)
    assert [lr_at(s, const) for s in range(5)] == pytest.approx([0.3] * 5)
    with pytest.raises(ValueError):
        lr_at(-1, c)


def test_history_records_the_schedule():
    c = cfg(max_steps=6, warmup_steps=3, eval_interval=None)
    h = train(small_lstm(), LMBatcher(STREAM, 8, 4), c)
    assert h["lr"] == pytest.approx([lr_at(s, c) for s in range(6)])
    assert h["step"] == list(range(6)) and len(h["train_loss"]) == len(h["grad_norm"]) == 6
    assert h["val_step"] == [] and h["val_loss"] == []


def test_config_errors():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(max_steps=5, warmup_steps=6)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="checkpoint_path"):
        TrainConfig(checkpoint_interval=5)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ValueError, match="stop_at"):
        train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(), stop_at=11)
    with pytest.raises(ValueError, match="resume"):
        train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(), resume=True)
    with pytest.raises(TypeError, match="TrainConfig"):
        train(small_lstm(), LMBatcher(STREAM, 8, 4), {"max_steps": 3})
    with pytest.raises(TypeError, match="max_steps must be an int"):
        TrainConfig(max_steps=10.0)  # a float step count is refused, not truncated
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0.0)
    with pytest.raises(TypeError, match="progress must be a bool or None"):
        TrainConfig(progress="yes")


# ---- optimizer ------------------------------------------------------------------------------------
class WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, V)

    def forward(self, x, y=None):
        logits = self.head(self.norm(self.emb(x)))
        return logits, None if y is None else F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))


def test_weight_decay_only_on_matrices():
    model = WithNorm()
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert ids(decay) == {id(model.emb.weight), id(model.head.weight)}
    assert ids(no_decay) == {id(model.norm.weight), id(model.norm.bias), id(model.head.bias)}
    tied = LSTMLM(V, emb_dim=8, hidden_size=8, tie_weights=True)  # a shared matrix appears once
    groups = param_groups(tied, 0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(tied.parameters()))


def test_weight_decay_leaves_biases_alone():
    """With zero gradients, AdamW changes a parameter only through decay: biases must not move."""
    model = WithNorm()

    class Zero(nn.Module):  # loss 0 * output: gradients are exactly zero
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x, y):
            logits, loss = self.inner(x, y)
            return logits, loss * 0.0

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(Zero(), LMBatcher(STREAM, 4, 2), cfg(max_steps=3, weight_decay=0.5, lr=0.1, min_lr=0.1, warmup_steps=0,
                                               eval_interval=None))
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (p.dim() >= 2), name


def test_gradient_clipping_caps_the_update_and_the_norm_is_recorded_before_clipping():
    """Adam's first update is lr * g / (|g| + eps) per entry: about lr * sign(g) for ordinary gradients,
    but at most lr / 11 once the whole gradient is clipped to norm 1e-9 (each |g| <= 1e-9 < eps = 1e-8)."""
    x, y = LMBatcher(STREAM, 8, 4)(0, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = WithNorm()
    ref(x, y)[1].backward()
    ref_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ref.parameters()]))

    def largest_move(grad_clip):
        torch.manual_seed(0)
        model = WithNorm()
        start = [p.detach().clone() for p in model.parameters()]
        c = cfg(max_steps=1, lr=0.5, min_lr=0.5, warmup_steps=0, weight_decay=0.0, grad_clip=grad_clip,
                eval_interval=None)
        h = train(model, LMBatcher(STREAM, 8, 4), c)
        assert h["grad_norm"][0] == pytest.approx(float(ref_norm), rel=1e-5)  # recorded before clipping
        return max(float((p.detach() - s).abs().max()) for p, s in zip(model.parameters(), start))

    assert largest_move(None) > 0.4  # ~ lr
    assert largest_move(1e-9) < 0.5 / 10


def reference_loop(model, get_batch, c):
    """What train should do (one micro-batch per update, on the CPU), written with torch.optim alone."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": c.weight_decay},
                             {"params": vectors, "weight_decay": 0.0}], lr=c.lr, betas=c.betas)
    generator = torch.Generator().manual_seed(c.seed)
    losses, norms = [], []
    model.train()
    for step in range(c.max_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, c)
        batch = get_batch(step, generator)
        out = model(**batch) if isinstance(batch, dict) else model(*batch)
        loss = out["loss"] if isinstance(out, dict) else out[1]
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip or float("inf"))))
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, norms


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_train_is_the_torch_optim_loop_step_by_step(grad_clip):
    """Every loss, gradient norm and final weight equals a plain AdamW loop's, bit for bit: warm-up,
    cosine decay, decay only on matrices, clipping (active at 0.05: the norms are larger), data order."""
    c = cfg(max_steps=12, lr=3e-2, min_lr=3e-3, warmup_steps=3, weight_decay=0.1, grad_clip=grad_clip,
            eval_interval=None, seed=4)
    mine, ref = small_lstm(seed=1, dropout=0.0), small_lstm(seed=1, dropout=0.0)
    h = train(mine, LMBatcher(STREAM, 8, 4), c)
    losses, norms = reference_loop(ref, LMBatcher(STREAM, 8, 4), c)
    assert h["train_loss"] == losses and h["grad_norm"] == norms
    assert all(torch.equal(p, q) for p, q in zip(mine.parameters(), ref.parameters()))
    if grad_clip is not None:
        assert min(norms) > grad_clip  # clipping acted on every update


# ---- gradient accumulation ------------------------------------------------------------------------
def test_gradient_accumulation_equals_a_larger_batch():
    data_x = torch.randint(V, (96, 6), generator=torch.Generator().manual_seed(1))
    data_y = torch.randint(V, (96, 6), generator=torch.Generator().manual_seed(2))

    def rows(size):  # deterministic data: micro-batch i is rows i*size .. (i+1)*size
        return lambda i, g: (data_x[i * size:(i + 1) * size], data_y[i * size:(i + 1) * size])

    def run(k):
        model = small_lstm(seed=3, dropout=0.0)
        c = cfg(max_steps=3, grad_accum_steps=k, batch_size=32 // k, eval_interval=None, grad_clip=None)
        return model, train(model, rows(32 // k), c)

    big, h1 = run(1)
    small, h4 = run(4)
    assert h4["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
    assert h4["grad_norm"] == pytest.approx(h1["grad_norm"], rel=1e-4)
    for p, q in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        train(small_lstm(), rows(8), cfg(max_steps=1, batch_size=4, eval_interval=None))


# ---- no update on a non-finite loss ---------------------------------------------------------------
class BreaksAt(nn.Module):
    """A small LSTM whose forward pass number ``call`` (0-based, counting micro-batches) goes wrong:
    ``"inf"``/``"nan"`` make the loss so, ``"grad"`` keeps the loss but makes its gradient infinite."""

    def __init__(self, call, how):
        super().__init__()
        self.inner, self.call, self.how, self.calls = small_lstm(seed=0), call, how, 0

    def forward(self, x, y):
        logits, loss = self.inner(x, y)
        if self.calls == self.call:
            loss = InfiniteGradient.apply(loss) if self.how == "grad" else loss * float(self.how)
        self.calls += 1
        return logits, loss


class InfiniteGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def recorded_optimizers(monkeypatch):
    """Make train's optimizers visible to the test."""
    made = []

    def make(model, c, device):
        made.append(make_optimizer(model, c, device))
        return made[-1]

    monkeypatch.setattr(train_module, "make_optimizer", make)
    return made


@pytest.mark.parametrize("how,accum,micro", [("inf", 1, 0), ("nan", 1, 0), ("nan", 3, 1), ("grad", 2, 1)])
def test_a_non_finite_step_is_not_applied(monkeypatch, how, accum, micro):
    """Loss (or gradient) blows up at step 3: the error names step 3 (and the micro-batch) and the value,
    and the weights and the optimizer's moments are exactly those after step 2."""
    k = 3
    c = cfg(max_steps=6, grad_accum_steps=accum, eval_interval=None)
    optimizers = recorded_optimizers(monkeypatch)
    good = BreaksAt(call=-1, how=how)
    train(good, LMBatcher(STREAM, 8, 4), c, stop_at=k)  # steps 0 .. k-1, then stop

    broken = BreaksAt(call=k * accum + micro, how=how)
    with pytest.raises(FloatingPointError) as info:
        train(broken, LMBatcher(STREAM, 8, 4), c)
    for (name, p), q in zip(broken.named_parameters(), good.parameters()):
        assert torch.equal(p, q), name
        assert p.grad is None  # the bad gradients were dropped
    kept, reference = optimizers[1].state_dict()["state"], optimizers[0].state_dict()["state"]
    assert kept.keys() == reference.keys()
    for i in reference:
        assert all(torch.equal(kept[i][key], reference[i][key]) for key in reference[i])
    message = str(info.value)
    assert f"at step {k}" in message and f"after step {k - 1}" in message
    if how == "grad":  # inf * 0 entries make the norm NaN, inf * the others inf
        assert "gradient norm became nan" in message or "gradient norm became inf" in message
    else:
        assert f"loss became {how}" in message
    if accum > 1 and how != "grad":
        assert f"micro-batch {micro} of {accum}" in message


class NoTargetCheck(nn.Module):
    """A model that does not check its targets itself (as models on a GPU do not): all-ignored targets
    give the mean over zero targets, 0/0 = NaN."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, V)

    def forward(self, x, y):
        logits = self.emb(x)
        return logits, F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=IGNORE_INDEX)


def test_a_batch_without_targets_is_reported_as_such_not_as_a_learning_rate_problem():
    get = LMBatcher(STREAM, 8, 4)

    def padding_at_step_2(i, g):
        x, y = get(i, g)
        return (x, torch.full_like(y, IGNORE_INDEX)) if i == 2 else (x, y)

    with pytest.raises(ValueError, match="no target in this batch") as info:
        train(NoTargetCheck(), padding_at_step_2, cfg(max_steps=4, eval_interval=None))
    assert "step 2" in str(info.value) and "lr" not in str(info.value)
    # a model that checks raises its own error, which train passes on unchanged
    with pytest.raises(ValueError, match="no target in this batch") as info:
        train(small_lstm(), padding_at_step_2, cfg(max_steps=4, eval_interval=None))
    assert "lr" not in str(info.value)


# ---- evaluation -----------------------------------------------------------------------------------
def test_evaluation_schedule_and_eval_fn_dicts():
    c = cfg(max_steps=10, eval_interval=4)
    h = train(small_lstm(), LMBatcher(STREAM, 8, 4), c, val_batch=LMBatcher(STREAM[:100], 8, 4),
              eval_fn=lambda m: {"val_ppl": 1.0})
    assert h["val_step"] == [0, 4, 8, 10]  # at initialisation, every 4 updates, and at the end
    assert len(h["val_loss"]) == len(h["val_ppl"]) == 4
    assert h["val_loss"][0] == pytest.approx(math.log(V), abs=0.1)
    with pytest.raises(TypeError, match="dict"):
        train(small_lstm(), LMBatcher(STREAM, 8, 4), c, val_batch=LMBatcher(STREAM, 8, 4), eval_fn=lambda m: 1.0)
    h2 = train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(max_steps=2, eval_interval=None), eval_fn=lambda m: 2.5)
    assert h2["val_step"] == [2] and h2["val_loss"] == [2.5]


def test_estimate_loss_is_repeatable_and_restores_mode():
    model = small_lstm()
    model.train()
    a = estimate_loss(model, LMBatcher(STREAM, 8, 4), steps=3, seed=5)
    b = estimate_loss(model, LMBatcher(STREAM, 8, 4), steps=3, seed=5)
    assert a == b and model.training


def test_eval_fn_that_raises_leaves_the_model_in_training_mode():
    model = small_lstm()
    calls = []

    def eval_fn(m):
        calls.append(m.training)
        if len(calls) == 2:
            raise RuntimeError("evaluation failed")
        return 0.0

    with pytest.raises(RuntimeError, match="evaluation failed"):
        train(model, LMBatcher(STREAM, 8, 4), cfg(max_steps=10, eval_interval=4), eval_fn=eval_fn)
    assert calls == [False, False]  # eval_fn runs in eval mode ...
    assert model.training  # ... and the model is back in training mode although it raised

    def failing_batches(i, g):
        raise RuntimeError("no data")

    with pytest.raises(RuntimeError, match="no data"):
        estimate_loss(model, failing_batches, steps=2)
    assert model.training


def test_evaluate_lm_is_exact():
    """Windows with enough overlap give an MLP its full context everywhere: the result must equal one
    pass over the whole stream (the reference), i.e. every token counted once with full context."""
    torch.manual_seed(0)
    model = MLPLM(V, context=3, emb_dim=4, hidden=16)
    stream = STREAM[:101]
    windows = eval_windows(stream, block_size=10, stride=8)  # >= 2 tokens of context per counted target
    logits, _ = model(stream[None, :-1])
    reference = F.cross_entropy(logits[0], stream[1:]).item()
    assert evaluate_lm(model, windows, batch_size=3) == pytest.approx(reference, rel=1e-6)
    with pytest.raises(TypeError, match="eval_windows"):
        evaluate_lm(model, (stream, stream))


# ---- checkpoints and exact resume -----------------------------------------------------------------
def assert_same_run(model_a, h_a, model_b, h_b):
    assert h_a == h_b  # every loss, lr, grad norm and validation value, bit for bit
    for (na, pa), (nb, pb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na


def test_resume_is_bit_exact(tmp_path):
    path = str(tmp_path / "run.pt")
    get, val = LMBatcher(STREAM, 8, 4), LMBatcher(STREAM[:120], 8, 4)
    model_a = small_lstm(seed=0)  # dropout on: the torch RNG state must be restored too
    h_a = train(model_a, get, cfg(max_steps=10), val_batch=val)

    model_b = small_lstm(seed=0)
    h_first = train(model_b, get, cfg(max_steps=10, checkpoint_path=path), val_batch=val, stop_at=5)
    assert len(h_first["train_loss"]) == 5 and load_checkpoint(path)["step"] == 5
    torch.manual_seed(123)  # disturb the global RNG: resume must restore it
    model_c = small_lstm(seed=99)  # a fresh model with different weights, and a fresh optimizer
    h_c = train(model_c, get, cfg(max_steps=10, checkpoint_path=path), val_batch=val, resume=True)
    assert_same_run(model_a, h_a, model_c, h_c)
    assert [f for f in os.listdir(tmp_path)] == ["run.pt"]  # no temporary files left behind


def test_resume_after_a_crash(tmp_path):
    path = str(tmp_path / "crash.pt")
    get = LMBatcher(STREAM, 8, 4)
    model_a = small_lstm()
    h_a = train(model_a, get, cfg(max_steps=8, grad_accum_steps=2))

    def crashing(i, g):
        if i == 6 * 2:  # the first micro-batch of step 6
            raise KeyboardInterrupt("power cut")
        return get(i, g)

    c = cfg(max_steps=8, grad_accum_steps=2, checkpoint_path=path, checkpoint_interval=3)
    with pytest.raises(KeyboardInterrupt):
        train(small_lstm(), crashing, c)
    assert load_checkpoint(path)["step"] == 6
    model_b = small_lstm(seed=7)
    h_b = train(model_b, get, c, resume=True)
    assert_same_run(model_a, h_a, model_b, h_b)


def test_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "sub" / "c.pt"  # the folder is created
    model = small_lstm()
    opt = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    save_checkpoint(str(path), model, opt, 3, {"step": [0, 1, 2]}, torch.Generator().manual_seed(1), TrainConfig())
    state = torch.load(path, weights_only=True)
    assert state["step"] == 3 and state["history"] == {"step": [0, 1, 2]}
    assert state["rng"]["torch_cpu"].dtype == torch.uint8


def test_corrupt_or_mismatching_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(checkpoint_path=str(path)), resume=True)

    good = tmp_path / "good.pt"
    train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(max_steps=2, eval_interval=None, checkpoint_path=str(good)))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(str(truncated))

    other = LSTMLM(V, emb_dim=8, hidden_size=16)  # a different model, the same config
    with pytest.raises(CheckpointError, match="does not match this model"):
        train(other, LMBatcher(STREAM, 8, 4), cfg(max_steps=2, eval_interval=None, checkpoint_path=str(good)),
              resume=True)

    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"))


# ---- resume checks the saved TrainConfig ----------------------------------------------------------
def test_resume_refuses_a_changed_config_unless_the_change_is_named(tmp_path):
    path = str(tmp_path / "run.pt")
    train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(max_steps=10, batch_size=4, checkpoint_path=path), stop_at=5)
    changed = cfg(max_steps=10, batch_size=8, lr=2e-2, checkpoint_path=path)
    with pytest.raises(CheckpointError) as info:
        train(small_lstm(), LMBatcher(STREAM, 8, 8), changed, resume=True)
    message = str(info.value)
    assert "lr: 0.01 -> 0.02" in message and "batch_size: 4 -> 8" in message and "run.pt" in message
    assert "max_steps" not in message and "allow_config_changes=('lr', 'batch_size')" in message
    with pytest.raises(CheckpointError, match="batch_size"):  # naming one of two changes is not enough
        train(small_lstm(), LMBatcher(STREAM, 8, 8), changed, resume=True, allow_config_changes=("lr",))

    model = small_lstm()
    h = train(model, LMBatcher(STREAM, 8, 8), changed, resume=True, allow_config_changes=("lr", "batch_size"))
    assert h["step"] == list(range(10)) and h["lr"][5:] == [lr_at(s, changed) for s in range(5, 10)]
    assert load_checkpoint(path)["config"]["lr"] == 2e-2  # the checkpoint now records the new config


def test_resume_extends_a_finished_run_when_max_steps_is_named(tmp_path):
    path = str(tmp_path / "run.pt")
    get, val = LMBatcher(STREAM, 8, 4), LMBatcher(STREAM[:100], 8, 4)
    first = train(small_lstm(), get, cfg(max_steps=6, checkpoint_path=path), val_batch=val)
    longer = cfg(max_steps=10, checkpoint_path=path)
    with pytest.raises(CheckpointError, match="max_steps: 6 -> 10"):
        train(small_lstm(), get, longer, val_batch=val, resume=True)
    h = train(small_lstm(), get, longer, val_batch=val, resume=True, allow_config_changes="max_steps")
    assert h["train_loss"][:6] == first["train_loss"] and len(h["train_loss"]) == 10
    assert h["val_step"] == [0, 4, 6, 8, 10]  # the old run's evaluations, then the new schedule's


def test_resume_may_move_the_checkpoint_and_change_how_often_it_saves(tmp_path):
    """RESUME_IGNORES: where and how often checkpoints are written and progress bars change no number."""
    assert set(RESUME_IGNORES) == {"checkpoint_path", "checkpoint_interval", "progress"}
    get = LMBatcher(STREAM, 8, 4)
    model_a = small_lstm()
    h_a = train(model_a, get, cfg(max_steps=8))
    old, new = tmp_path / "old.pt", tmp_path / "moved.pt"
    train(small_lstm(), get, cfg(max_steps=8, checkpoint_path=str(old), checkpoint_interval=2), stop_at=4)
    os.replace(old, new)
    model_b = small_lstm(seed=5)
    h_b = train(model_b, get, cfg(max_steps=8, checkpoint_path=str(new), progress=False), resume=True)
    assert_same_run(model_a, h_a, model_b, h_b)


def test_allow_config_changes_errors(tmp_path):
    get, path = LMBatcher(STREAM, 8, 4), str(tmp_path / "run.pt")
    with pytest.raises(ValueError, match="resume=True"):
        train(small_lstm(), get, cfg(max_steps=2), allow_config_changes=("max_steps",))
    with pytest.raises(ValueError, match="max_step"):  # a misspelt field is not silently ignored
        train(small_lstm(), get, cfg(max_steps=2, checkpoint_path=path), resume=True,
              allow_config_changes=("max_step",))
    with pytest.raises(TypeError, match="field names"):
        train(small_lstm(), get, cfg(max_steps=2, checkpoint_path=path), resume=True, allow_config_changes=(1,))


def test_hand_edited_checkpoints_are_refused_with_the_reason(tmp_path):
    path = tmp_path / "run.pt"
    c = cfg(max_steps=4, eval_interval=None, checkpoint_path=str(path))
    train(small_lstm(), LMBatcher(STREAM, 8, 4), c, stop_at=2)
    state = torch.load(path, weights_only=True)

    def resume_from(**edits):
        torch.save({**state, **edits}, path)
        model = small_lstm(seed=3)
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(CheckpointError) as info:
            train(model, LMBatcher(STREAM, 8, 4), c, resume=True)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing was loaded
        return str(info.value)

    assert "rng['torch_cpu']" in resume_from(rng={})
    assert "rng['batch_generator']" in resume_from(rng={"torch_cpu": state["rng"]["torch_cpu"]})
    assert "uint8" in resume_from(rng={**state["rng"], "batch_generator": torch.zeros(3)})
    assert "records no TrainConfig" in resume_from(config={})


# ---- batches, outputs, progress -------------------------------------------------------------------
class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.EmbeddingBag(V, 2)  # mean of the tokens' vectors -> two class scores

    def forward(self, input_ids, attention_mask, labels):
        logits = self.emb(input_ids * attention_mask)  # (B, 2)
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


def test_dict_batches_and_bad_outputs():
    x = torch.randint(V, (16, 5), generator=torch.Generator().manual_seed(0))
    labels = (x[:, 0] > V // 2).long()

    def get(i, g):
        return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": labels}

    c = cfg(max_steps=30, lr=0.1, min_lr=0.1, warmup_steps=0, eval_interval=None)
    torch.manual_seed(0)
    model = DictModel()
    torch.manual_seed(0)
    ref = DictModel()
    h = train(model, get, c)
    losses, _ = reference_loop(ref, get, c)
    assert h["train_loss"] == losses  # the dict batch reached the model as keyword arguments, every step
    assert torch.equal(model.emb.weight, ref.emb.weight)
    assert h["train_loss"][-1] < 0.5 * math.log(2)  # well below chance: it learned the rule

    class NoLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x, y):
            return x.float() * self.w, None

    with pytest.raises(TypeError, match="scalar loss"):
        train(NoLoss(), LMBatcher(STREAM, 4, 2), cfg(max_steps=1))
    with pytest.raises(TypeError, match="get_batch must return"):
        train(small_lstm(), lambda i, g: STREAM, cfg(max_steps=1))


class Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.fixture
def terminal(monkeypatch):
    """``terminal(tty, jupyter)``: replace stdout and stderr by streams that are terminals or not, with
    or without a Jupyter kernel loaded; returns the fake stderr, where tqdm writes."""
    def setup(tty, jupyter=False):
        monkeypatch.setattr(sys, "stdout", Stream(tty))
        monkeypatch.setattr(sys, "stderr", Stream(tty))
        if jupyter:
            monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
        else:
            monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
        return sys.stderr
    return setup


@pytest.mark.parametrize("tty,jupyter,shown", [(True, False, True), (False, False, False), (True, True, False)],
                         ids=["terminal", "pipe-or-file", "jupyter-kernel"])
def test_progress_by_default_only_in_an_interactive_terminal(terminal, tty, jupyter, shown):
    err = terminal(tty, jupyter)
    assert progress_enabled(None) is shown
    assert progress_enabled(True) is True and progress_enabled(False) is False  # explicit settings decide
    train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(max_steps=3, eval_interval=None))  # progress=None
    assert ("3/3" in err.getvalue()) is shown


def test_forced_progress_bar_runs(capsys):
    h = train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(max_steps=3, eval_interval=None, progress=True))
    assert len(h["train_loss"]) == 3
    assert "3/3" in capsys.readouterr().err


def test_compile_option_gives_the_same_training_as_eager(tmp_path, monkeypatch):
    """TrainConfig(compile=True) runs forward/backward through torch.compile; same losses to float
    tolerance, and the model (not a compiled wrapper) keeps the weights."""
    from llmcourse.models import GPT, GPTConfig

    # A fresh inductor cache: torch 2.13 reuses kernels compiled for the CPU's native ISA (AVX-512) when
    # ATEN_CPU_CAPABILITY=avx2 is set (as `make test` sets it for the notebooks), and their gradients
    # come out NaN; measured 2026-12-01, reproduced by compiling once without and once with the variable.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()

    def get_batch(i, generator):
        x = torch.randint(0, 40, (8, 12), generator=generator)
        return x, x.roll(-1, dims=1)

    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=1, n_head=2, n_embd=32))
        history = train(model, get_batch, TrainConfig(max_steps=4, lr=3e-3, eval_interval=None, compile=compiled))
        runs[compiled] = (history["train_loss"], model.state_dict())
    torch.testing.assert_close(torch.tensor(runs[True][0]), torch.tensor(runs[False][0]), atol=1e-5, rtol=1e-5)
    for name, value in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], value, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="compile must be a bool"):
        TrainConfig(compile="yes")
