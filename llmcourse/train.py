"""One training loop (训练循环) for every chapter: AdamW, warm-up + cosine learning rate, gradient
clipping and accumulation, mixed precision on GPUs, periodic evaluation, atomic checkpoints and exact
resume, and a history of numbers to plot.

The contract with a model is small: ``model(x, y)`` (or ``model(**batch)`` for a dict batch) returns
``(logits, loss)`` with a scalar ``loss``. The contract with the data is ``get_batch(i, generator)``,
returning ``(x, y)`` or a dict of tensors, where ``i`` is the micro-batch index
(``step * grad_accum_steps + micro``) and ``generator`` is the loop's own seeded ``torch.Generator``: draw
all randomness from it, and a checkpoint (which saves its state) resumes the data order exactly.

    cfg = TrainConfig(max_steps=500, lr=3e-3, warmup_steps=50, eval_interval=100)
    history = train(model, LMBatcher(train_stream, 64, 32), cfg, val_batch=LMBatcher(val_stream, 64, 32))
    history["train_loss"], history["val_step"], history["val_loss"]

Data parallelism: run the same script under ``torchrun --nproc_per_node=N`` and ``train`` joins the
process group (gloo on CPU, NCCL on GPUs), wraps the model in DistributedDataParallel, gives each
process its slice of every batch (``batch_size`` is the global batch), records the global loss, and
writes checkpoints from rank 0 only — the calling code does not change, and N processes make the
same updates as one process on the whole batch.

Step convention: ``history["step"][s] == s`` is the number of updates made *before* the batch whose loss
is ``history["train_loss"][s]``; ``history["val_step"]`` counts updates the same way (0 = at
initialisation), so train and validation curves share one x-axis.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.data.batching import IGNORE_INDEX, EvalWindows
from llmcourse.core.checkpoint import CheckpointError, atomic_torch_save, checked_torch_load

CHECKPOINT_FORMAT = "llmcourse.train/1"
PROGRESS_ENV = "LLMCOURSE_PROGRESS"  # "1" forces progress bars on, "0" off
HISTORY_KEYS = ("step", "train_loss", "lr", "grad_norm", "val_step", "val_loss")


@dataclass
class TrainConfig:
    """Everything that decides the numbers a run produces (the model and data aside).

    ``min_lr == lr`` gives a constant learning rate after warm-up. ``grad_clip=None`` disables clipping
    (the gradient norm is still recorded). ``batch_size``, when set, is checked against the batches
    ``get_batch`` returns (it is a micro-batch size: one optimizer step sees ``batch_size *
    grad_accum_steps`` examples). ``amp`` uses bfloat16 autocast on CUDA GPUs that support it and is
    ignored elsewhere. ``progress=None`` shows a tqdm bar only in an interactive terminal (never in
    notebooks or tests, where it would pollute stored outputs) unless ``$LLMCOURSE_PROGRESS=1``.
    ``compile`` runs the forward and backward passes through ``torch.compile`` (slower to start,
    faster per step on GPUs; the weights and checkpoints are the plain model's).
    """

    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    eval_interval: int | None = 100
    eval_steps: int = 20
    batch_size: int | None = None
    grad_accum_steps: int = 1
    amp: bool = True
    checkpoint_path: str | None = None
    checkpoint_interval: int | None = None
    seed: int = 0
    progress: bool | None = None
    compile: bool = False

    def __post_init__(self):
        def positive_int(name, allow_none=False, minimum=1):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"TrainConfig.{name} must be an int >= {minimum}, got {value!r}")

        positive_int("max_steps")
        positive_int("warmup_steps", minimum=0)
        positive_int("eval_interval", allow_none=True)
        positive_int("eval_steps")
        positive_int("batch_size", allow_none=True)
        positive_int("grad_accum_steps")
        positive_int("checkpoint_interval", allow_none=True)
        positive_int("seed", minimum=0)
        for name in ("lr", "min_lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.min_lr > self.lr:
            raise ValueError(f"TrainConfig.min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"TrainConfig.warmup_steps ({self.warmup_steps}) must be <= max_steps ({self.max_steps})")
        if (not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.grad_clip is not None and (not isinstance(self.grad_clip, (int, float)) or self.grad_clip <= 0):
            raise ValueError(f"TrainConfig.grad_clip must be None or > 0, got {self.grad_clip!r}")
        if self.checkpoint_interval is not None and self.checkpoint_path is None:
            raise ValueError("TrainConfig.checkpoint_interval is set but checkpoint_path is None; say where to save")
        if self.checkpoint_path is not None:
            self.checkpoint_path = os.fspath(self.checkpoint_path)
        if not isinstance(self.compile, bool):
            raise TypeError(f"TrainConfig.compile must be a bool, got {type(self.compile).__name__}")


# ---- learning rate and optimizer ------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for update ``step`` (0-based): linear warm-up, then cosine decay to ``min_lr``.

    Warm-up: ``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (reaches ``lr`` on its last
    step). Then ``min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2`` with ``p = (step - warmup_steps) /
    (max_steps - warmup_steps)``, so it equals ``min_lr`` at ``step = max_steps`` (and after).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = cfg.max_steps - cfg.warmup_steps
    if decay_steps <= 0 or step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / decay_steps
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on matrices (>= 2-D: linear weights, embeddings), none on
    vectors (biases, LayerNorm gains and shifts), which set offsets and scales rather than store
    patterns, so shrinking them towards 0 only hurts."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The model's own ``configure_optimizers`` if it has one (called with whichever of ``weight_decay``,
    ``learning_rate``/``lr``, ``betas``, ``device_type``/``device`` it accepts), else AdamW on
    :func:`param_groups`, fused on CUDA."""
    configure = getattr(model, "configure_optimizers", None)
    if callable(configure):
        offered = {"weight_decay": cfg.weight_decay, "learning_rate": cfg.lr, "lr": cfg.lr, "betas": cfg.betas,
                   "device_type": device.type, "device": device}
        params = inspect.signature(configure).parameters
        optimizer = configure(**{k: v for k, v in offered.items() if k in params})
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"model.configure_optimizers returned {type(optimizer).__name__}, not a torch optimizer")
        return optimizer
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, **fused)


# ---- batches and model outputs ---------------------------------------------------------------------
def _to_device(batch, device: torch.device):
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
        return tuple(t.to(device, non_blocking=True) for t in batch)
    raise TypeError(f"get_batch must return (x, y) tensors or a dict of tensors, got {type(batch).__name__}")


def _batch_rows(batch) -> int:
    first = next(v for v in (batch.values() if isinstance(batch, dict) else batch) if isinstance(v, torch.Tensor))
    return first.shape[0]


def _call_model(model: nn.Module, batch):
    return model(**batch) if isinstance(batch, dict) else model(*batch)


def _loss_of(output) -> torch.Tensor:
    """The scalar loss from ``(logits, loss)``, a dict or an object with ``.loss``."""
    if isinstance(output, (tuple, list)) and len(output) >= 2:
        loss = output[1]
    elif isinstance(output, dict):
        loss = output.get("loss")
    else:
        loss = getattr(output, "loss", None)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError(
            "the model must return (logits, loss) with a scalar loss tensor when given targets; got "
            f"{type(loss).__name__ if not isinstance(loss, torch.Tensor) else tuple(loss.shape)}"
        )
    return loss


def _logits_of(output) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        return output[0]
    if isinstance(output, dict):
        return output["logits"]
    return output.logits


def _autocast(cfg: TrainConfig, device: torch.device):
    """bfloat16 autocast on CUDA GPUs with native bf16 (Ampere or newer); full precision elsewhere.
    bf16 keeps float32's exponent range, so unlike float16 it needs no loss scaling."""
    if cfg.amp and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _want_progress(setting: bool | None) -> bool:
    """Progress bars only where a person watches: forced by ``setting`` or ``$LLMCOURSE_PROGRESS``,
    else only when both stdout and stderr are terminals (false in Jupyter kernels and under pytest)."""
    if setting is not None:
        return bool(setting)
    env = os.environ.get(PROGRESS_ENV)
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes", "on")
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ---- evaluation -----------------------------------------------------------------------------------
@torch.no_grad()
def estimate_loss(model: nn.Module, get_batch: Callable, steps: int, seed: int = 1, device=None) -> float:
    """Mean loss over ``steps`` batches from ``get_batch(i, generator)`` with a generator seeded by
    ``seed``: the same batches at every call, so successive evaluations are comparable."""
    device = torch.device(device) if device is not None else _model_device(model)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), device=device)
        for i in range(steps):
            total += _loss_of(_call_model(model, _to_device(get_batch(i, generator), device))).float()
        return float(total) / steps
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_lm(model: nn.Module, windows: EvalWindows, batch_size: int = 32, device=None) -> float:
    """Exact mean negative log-likelihood (nats per token) over the counted targets of ``windows``
    (from :func:`llmcourse.data.batching.eval_windows`); ``math.exp`` of it is the perplexity."""
    if not isinstance(windows, EvalWindows):
        raise TypeError(f"windows must come from llmcourse.data.batching.eval_windows, got {type(windows).__name__}")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    try:
        total = 0.0  # a Python float (double precision) on the host: MPS has no float64
        for x, y in windows.batches(batch_size):
            x, y = x.to(device), y.to(device)
            # Pass (clamped) targets: some models (nanoGPT) return only the last position's logits
            # when targets is None. The model's own loss is not used; we sum the counted positions.
            logits = _logits_of(model(x, y.clamp(min=0)))
            if logits.shape[:2] != x.shape:
                raise ValueError(f"model returned logits of shape {tuple(logits.shape)}; expected (B, T, V) for x {tuple(x.shape)}")
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                  ignore_index=IGNORE_INDEX, reduction="sum")
            total += float(nll)
        return total / windows.num_targets
    finally:
        model.train(was_training)


# ---- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: dict, generator: torch.Generator, config: TrainConfig | None = None) -> None:
    """Write a checkpoint atomically: to a temporary file in the same folder, then ``os.replace``, so a
    crash mid-write leaves the previous checkpoint intact. Everything is tensors and plain Python
    values, so ``torch.load(path, weights_only=True)`` (no arbitrary code) can read it."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": {k: list(v) for k, v in history.items()},
        "config": asdict(config) if config is not None else {},
        "rng": {
            "torch_cpu": torch.get_rng_state(),
            "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batch_generator": generator.get_state(),
        },
    }
    atomic_torch_save(state, path)


def load_checkpoint(path: str) -> dict:
    """Read and check a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    return checked_torch_load(path, CHECKPOINT_FORMAT, ("step", "model", "optimizer", "history", "rng"), "checkpoint",
                              "train without resume=True to start one", "Delete it to start afresh.")


def _restore(path, state, model, optimizer, generator) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path!r} does not match this model: {e}") from e
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path!r} does not match this optimizer: {e}") from e
    rng = state["rng"]
    torch.set_rng_state(rng["torch_cpu"].cpu())
    generator.set_state(rng["batch_generator"].cpu())
    cuda_states = rng.get("torch_cuda") or []
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ---- data parallelism (torchrun) ------------------------------------------------------------------
def _distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` (``WORLD_SIZE`` > 1) also joins the process group
    (gloo on CPU, NCCL on CUDA) if the caller has not. Without torchrun: ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _shard(batch, rank: int, world: int):
    """This rank's rows of the global batch: every rank draws the same batch from the shared seeded
    generator and keeps a contiguous slice, so N processes together see exactly one process's batch."""
    rows = _batch_rows(batch)
    if rows % world:
        raise ValueError(f"the batch has {rows} rows, which {world} processes cannot share equally; "
                         f"use a batch size divisible by the number of processes")
    lo, hi = rank * rows // world, (rank + 1) * rows // world
    if isinstance(batch, dict):
        return {k: v[lo:hi] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == rows else v
                for k, v in batch.items()}
    return tuple(t[lo:hi] for t in batch)


def _local_device(device: torch.device, world: int) -> torch.device:
    """Under torchrun on GPUs each process takes the GPU of its LOCAL_RANK."""
    if world > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# ---- the loop -------------------------------------------------------------------------------------
def _empty_history() -> dict[str, list]:
    return {k: [] for k in HISTORY_KEYS}


def _save(rank, world, cfg, model, optimizer, step, history, generator) -> None:
    """Rank 0 writes (all ranks hold the same state); the others wait until the file is complete."""
    if rank == 0:
        save_checkpoint(cfg.checkpoint_path, model, optimizer, step, history, generator, cfg)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def train(model: nn.Module, get_batch: Callable, config: TrainConfig, eval_fn: Callable | None = None,
          device=None, *, val_batch: Callable | None = None, resume: bool = False,
          stop_at: int | None = None) -> dict[str, list]:
    """Train ``model`` in place and return its history (a dict of lists, for plots).

    Args:
        model: any ``nn.Module`` whose ``forward(x, y)`` (or ``forward(**batch)``) returns ``(logits, loss)``.
        get_batch: ``get_batch(i, generator) -> (x, y)`` or a dict, ``i`` the micro-batch index.
        config: a :class:`TrainConfig`.
        eval_fn: ``eval_fn(model) -> float`` (recorded as ``val_loss``) or ``-> dict[str, float]`` (each
            key recorded), run in ``eval`` mode without gradients every ``eval_interval`` updates (at 0,
            ``eval_interval``, ...) and at the end.
        device: where to train; ``None`` keeps the model where it is.
        val_batch: a ``get_batch`` for validation data: ``val_loss`` is the mean over ``eval_steps``
            batches from a generator seeded ``seed + 1`` (the same batches every time).
        resume: continue from ``config.checkpoint_path`` exactly (model, optimizer, step, history, RNGs).
        stop_at: stop after this many updates as if interrupted (the schedule still follows ``max_steps``).

    History keys: ``step``, ``train_loss``, ``lr``, ``grad_norm`` (one entry per update) and
    ``val_step``, ``val_loss`` (plus any ``eval_fn`` dict keys), one entry per evaluation.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(get_batch):
        raise TypeError("get_batch must be a function get_batch(i, generator) -> (x, y) or a dict of tensors")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    cfg = config
    end = cfg.max_steps if stop_at is None else stop_at
    if isinstance(end, bool) or not isinstance(end, int) or not 1 <= end <= cfg.max_steps:
        raise ValueError(f"stop_at must be an int in [1, max_steps={cfg.max_steps}], got {stop_at!r}")
    if resume and cfg.checkpoint_path is None:
        raise ValueError("resume=True needs TrainConfig.checkpoint_path")
    device = torch.device(device) if device is not None else _model_device(model)
    rank, world = _distributed(device)
    device = _local_device(device, world)
    model.to(device)
    # Under torchrun, forward/backward go through DistributedDataParallel, which averages the
    # gradients of all processes during backward (and copies rank 0's initial weights to all).
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    optimizer = make_optimizer(model, cfg, device)
    generator = torch.Generator().manual_seed(cfg.seed)  # the data order: saved in checkpoints
    history = _empty_history()
    start = 0
    if resume:
        state = load_checkpoint(cfg.checkpoint_path)
        _restore(cfg.checkpoint_path, state, model, optimizer, generator)
        start, history = int(state["step"]), {k: list(v) for k, v in state["history"].items()}
    can_eval = eval_fn is not None or val_batch is not None
    amp = _autocast(cfg, device)
    k = cfg.grad_accum_steps
    params = [p for p in model.parameters() if p.requires_grad]

    def evaluate(step: int) -> None:
        if not can_eval or (history["val_step"] and history["val_step"][-1] == step):
            return
        results: dict[str, float] = {}
        if val_batch is not None:
            results["val_loss"] = estimate_loss(model, val_batch, cfg.eval_steps, seed=cfg.seed + 1, device=device)
        if eval_fn is not None:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                out = eval_fn(model)
            model.train(was_training)
            if isinstance(out, dict):
                extra = {str(key): float(v) for key, v in out.items()}
            elif val_batch is None:
                extra = {"val_loss": float(out)}
            else:
                raise TypeError("with both val_batch and eval_fn, eval_fn must return a dict of named values")
            if set(extra) & set(results) or "val_step" in extra:
                raise ValueError(f"eval_fn returned keys {sorted(extra)} that clash with {sorted(results)} or 'val_step'")
            results.update(extra)
        history["val_step"].append(step)
        for key, value in results.items():
            history.setdefault(key, []).append(value)

    bar = None
    if rank == 0 and _want_progress(cfg.progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=start, desc="train", dynamic_ncols=True)
    model.train()
    try:
        for step in range(start, end):
            if cfg.eval_interval is not None and step % cfg.eval_interval == 0:
                evaluate(step)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total = torch.zeros((), device=device)
            for micro in range(k):
                batch = get_batch(step * k + micro, generator)
                if cfg.batch_size is not None and _batch_rows(batch) != cfg.batch_size:
                    raise ValueError(f"get_batch returned {_batch_rows(batch)} rows but config.batch_size is {cfg.batch_size}")
                batch = _to_device(_shard(batch, rank, world) if world > 1 else batch, device)
                # Processes synchronise gradients only on the last micro-batch of an update.
                sync = contextlib.nullcontext() if world == 1 or micro == k - 1 else net.no_sync()
                with sync, amp:
                    loss = _loss_of(_call_model(net, batch))
                    # mean of the k micro-batch means = the mean over one k-times-larger batch (equal sizes)
                    (loss / k).backward()
                total += loss.detach().float()
            if world > 1:  # the history records the loss of the whole (global) batch, the same on every rank
                import torch.distributed as dist

                dist.all_reduce(total)
                total /= world
            max_norm = cfg.grad_clip if cfg.grad_clip is not None else float("inf")  # inf: measure only
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            train_loss = float(total) / k
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} at step {step}; try a lower lr or grad_clip")
            history["step"].append(step)
            history["train_loss"].append(train_loss)
            history["lr"].append(lr)
            history["grad_norm"].append(float(grad_norm))
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}")
            if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and done < end:
                _save(rank, world, cfg, model, optimizer, done, history, generator)
        if end == cfg.max_steps:
            evaluate(end)
        if cfg.checkpoint_path is not None and start < end:
            _save(rank, world, cfg, model, optimizer, end, history, generator)
    finally:
        if bar is not None:
            bar.close()
    return history


__all__ = [
    "CheckpointError", "TrainConfig", "estimate_loss", "evaluate_lm", "load_checkpoint", "lr_at",
    "make_optimizer", "param_groups", "save_checkpoint", "train",
]
