"""Tests for llmcourse.train: schedule, optimizer groups, accumulation, clipping, checkpoints, exact resume."""
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.data.batching import LMBatcher, eval_windows
from llmcourse.models.lstm_lm import LSTMLM
from llmcourse.models.mlp_lm import MLPLM
from llmcourse.train import (
    CheckpointError, TrainConfig, _want_progress, estimate_loss, evaluate_lm, load_checkpoint, lr_at,
    make_optimizer, param_groups, save_checkpoint, train,
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


class Recording(WithNorm):
    """A model with its own configure_optimizers (nanoGPT signature) returning plain SGD."""

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        self.got = dict(weight_decay=weight_decay, learning_rate=learning_rate, betas=betas, device_type=device_type)
        return torch.optim.SGD(self.parameters(), lr=learning_rate)


def test_model_configure_optimizers_and_gradient_clipping():
    torch.manual_seed(0)
    model = Recording()
    start = [p.detach().clone() for p in model.parameters()]
    # reference gradient norm of the first batch, computed by hand on a copy of the model
    x, y = LMBatcher(STREAM, 8, 4)(0, torch.Generator().manual_seed(0))
    ref = Recording()
    ref.load_state_dict(model.state_dict())
    ref(x, y)[1].backward()
    ref_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ref.parameters()]))

    c = cfg(max_steps=1, lr=0.5, min_lr=0.5, warmup_steps=0, grad_clip=0.01, eval_interval=None, weight_decay=0.2)
    h = train(model, LMBatcher(STREAM, 8, 4), c)
    assert model.got == dict(weight_decay=0.2, learning_rate=0.5, betas=(0.9, 0.95), device_type="cpu")
    assert h["grad_norm"][0] == pytest.approx(float(ref_norm), rel=1e-5)  # recorded before clipping
    step = torch.linalg.vector_norm(torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start)]))
    assert float(step) == pytest.approx(0.5 * 0.01, rel=1e-3)  # SGD step = lr * clipped norm


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

    other = LSTMLM(V, emb_dim=8, hidden_size=16)  # a different model
    with pytest.raises(CheckpointError, match="does not match this model"):
        train(other, LMBatcher(STREAM, 8, 4), cfg(max_steps=4, checkpoint_path=str(good)), resume=True)

    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"))


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

    h = train(DictModel(), get, cfg(max_steps=30, lr=0.1, min_lr=0.1, warmup_steps=0, eval_interval=None))
    assert h["train_loss"][-1] < h["train_loss"][0]

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


def test_progress_is_off_under_tests_and_can_be_forced():
    assert _want_progress(None) is False  # pytest, notebooks: no bars in stored outputs
    assert _want_progress(True) is True and _want_progress(False) is False


def test_forced_progress_bar_runs(capsys):
    h = train(small_lstm(), LMBatcher(STREAM, 8, 4), cfg(max_steps=3, eval_interval=None, progress=True))
    assert len(h["train_loss"]) == 3
    assert "3/3" in capsys.readouterr().err


def test_compile_option_gives_the_same_training_as_eager():
    """TrainConfig(compile=True) runs forward/backward through torch.compile; same losses to float
    tolerance, and the model (not a compiled wrapper) keeps the weights."""
    from llmcourse.models import GPT, GPTConfig

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
