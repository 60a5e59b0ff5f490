"""The chapter-3 optimisers against torch.optim, step by step, and the schedule against train.lr_at."""
import math

import pytest
import torch

from llmcourse import train
from llmcourse.chapters import optim as O


def _problem(seed=0):
    # a small non-quadratic loss on two tensors (a matrix and a vector), float64
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = (torch.rand(32, generator=g, dtype=torch.float64) > 0.5).double()
    W0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    b0 = torch.randn(3, generator=g, dtype=torch.float64)
    u = torch.randn(3, generator=g, dtype=torch.float64)

    def loss(W, b):
        return torch.nn.functional.binary_cross_entropy_with_logits(torch.tanh(X @ W + b) @ u, y)

    return loss, W0, b0


def _run_both(ours_cls, torch_cls, kwargs, steps=25):
    loss, W0, b0 = _problem()
    pa = [W0.clone().requires_grad_(), b0.clone().requires_grad_()]
    pb = [W0.clone().requires_grad_(), b0.clone().requires_grad_()]
    ours, ref = ours_cls(pa, **kwargs), torch_cls(pb, **kwargs)
    for _ in range(steps):
        for params, opt in ((pa, ours), (pb, ref)):
            opt.zero_grad()
            loss(*params).backward()
            opt.step()
        for a, b in zip(pa, pb):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    return pa, W0


@pytest.mark.parametrize("kwargs", [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.5, weight_decay=0.1)])
def test_sgd_matches_torch(kwargs):
    _run_both(O.SGD, torch.optim.SGD, kwargs)


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)])
def test_adam_matches_torch(kwargs):
    _run_both(O.Adam, torch.optim.Adam, kwargs)


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.5)])
def test_adamw_matches_torch(kwargs):
    _run_both(O.AdamW, torch.optim.AdamW, kwargs)


def test_adam_and_adamw_differ_only_with_weight_decay():
    loss, W0, b0 = _problem()
    out = []
    for cls, wd in ((O.Adam, 0.5), (O.AdamW, 0.5), (O.Adam, 0.0), (O.AdamW, 0.0)):
        params = [W0.clone().requires_grad_(), b0.clone().requires_grad_()]
        opt = cls(params, lr=0.05, weight_decay=wd)
        for _ in range(10):
            opt.zero_grad()
            loss(*params).backward()
            opt.step()
        out.append(params[0].detach())
    assert not torch.allclose(out[0], out[1])
    torch.testing.assert_close(out[2], out[3])


def test_adam_first_step_is_lr_times_sign():
    # bias correction: m_hat_1 = g_1, v_hat_1 = g_1^2, so the first step is lr * g / (|g| + eps)
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = O.Adam([w], lr=0.1, eps=0.0)
    (w * torch.tensor([5.0, -0.01, 200.0], dtype=torch.float64)).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.9, 2.9], dtype=torch.float64))


def test_params_without_grad_are_skipped():
    a = torch.zeros(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    for opt in (O.SGD([a, b], lr=0.1, momentum=0.9), O.Adam([a, b]), O.AdamW([a, b])):
        a.grad = None
        b.grad = torch.ones(2)
        opt.step()
    torch.testing.assert_close(a.detach(), torch.zeros(2))


def test_schedule_matches_lr_at_and_torch_scheduler():
    cfg = train.TrainConfig(max_steps=60, lr=3e-3, min_lr=1e-4, warmup_steps=10)
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / cfg.warmup_steps, end_factor=1.0,
                                          total_iters=cfg.warmup_steps - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.max_steps - cfg.warmup_steps, eta_min=cfg.min_lr),
    ], milestones=[cfg.warmup_steps])
    for step in range(cfg.max_steps + 5):
        ours = O.warmup_cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr)
        assert ours == pytest.approx(train.lr_at(step, cfg), rel=1e-12, abs=1e-15)
        if step <= cfg.max_steps:
            assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()


def test_bad_input():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="list of tensors"):
        O.SGD(w)
    with pytest.raises(ValueError, match="empty"):
        O.Adam([])
    with pytest.raises(ValueError, match="lr"):
        O.Adam([w], lr=-1.0)
    with pytest.raises(ValueError, match="beta2"):
        O.AdamW([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="momentum"):
        O.SGD([w], momentum=1.5)
    with pytest.raises(TypeError, match="floating"):
        O.SGD([torch.zeros(2, dtype=torch.long)])
    with pytest.raises(ValueError, match="min_lr"):
        O.warmup_cosine_lr(0, 1e-3, 10, 100, min_lr=1.0)
    with pytest.raises(ValueError, match="step"):
        O.warmup_cosine_lr(-1, 1e-3, 10, 100)
