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

Fail-safe: an update is applied only if the loss of every micro-batch and the gradient norm are finite;
otherwise ``train`` raises ``FloatingPointError`` naming the step, and the weights and optimizer state
stay those of the last good update. The exception is float16 training (``amp`` on a GPU without
bfloat16): there an infinite gradient is what loss scaling expects now and then, so the update is
skipped as ``torch.amp.GradScaler`` does (the weights stay, the loss scale halves, the history records
the non-finite ``grad_norm``) and training goes on. ``resume=True`` refuses a checkpoint written with
another :class:`TrainConfig` unless the changed fields are named in ``allow_config_changes``, and one
written with loss scaling by a run without it (or the other way round).

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
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core import precision
from llmcourse.core.checkpoint import CheckpointError, atomic_torch_save, checked_torch_load
from llmcourse.core.checks import IGNORE_INDEX, check_finite, check_int, eval_mode, model_device
from llmcourse.core.precision import amp_dtype
from llmcourse.data.batching import EvalWindows

CHECKPOINT_FORMAT = "llmcourse.train/1"
HISTORY_KEYS = ("step", "train_loss", "lr", "grad_norm", "val_step", "val_loss")


@dataclass
class TrainConfig:
    """Everything that decides the numbers a run produces (the model and data aside).

    ``min_lr == lr`` gives a constant learning rate after warm-up. ``grad_clip=None`` disables clipping
    (the gradient norm is still recorded). ``batch_size``, when set, is checked against the batches
    ``get_batch`` returns (it is a micro-batch size: one optimizer step sees ``batch_size *
    grad_accum_steps`` examples). ``amp`` trains in mixed precision on CUDA GPUs and is ignored
    elsewhere: bfloat16 autocast where the GPU has bf16 (Ampere and newer), float16 autocast with a
    ``torch.amp.GradScaler`` on older ones such as Colab's T4 (see :func:`amp_dtype`). ``progress``:
    ``True`` shows a tqdm bar, ``False`` never; ``None`` (the default) shows one only in an interactive
    terminal, never in a Jupyter kernel or when output goes to a file or pipe (see
    :func:`progress_enabled`). ``compile`` runs the forward and backward passes through
    ``torch.compile`` (slower to start, faster per step on GPUs; the weights and checkpoints are the
    plain model's).
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
        for name, minimum in (("max_steps", 1), ("warmup_steps", 0), ("eval_steps", 1), ("grad_accum_steps", 1),
                              ("seed", 0)):
            setattr(self, name, check_int(f"TrainConfig.{name}", getattr(self, name), minimum))
        for name in ("eval_interval", "batch_size", "checkpoint_interval"):  # None: never / not checked
            if getattr(self, name) is not None:
                setattr(self, name, check_int(f"TrainConfig.{name}", getattr(self, name), 1))
        self.lr = check_finite("TrainConfig.lr", self.lr, 0.0, strict=True)
        self.min_lr = check_finite("TrainConfig.min_lr", self.min_lr, 0.0)
        self.weight_decay = check_finite("TrainConfig.weight_decay", self.weight_decay, 0.0)
        if self.min_lr > self.lr:
            raise ValueError(f"TrainConfig.min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"TrainConfig.warmup_steps ({self.warmup_steps}) must be <= max_steps ({self.max_steps})")
        if (not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.grad_clip is not None:  # None, not inf, turns clipping off
            self.grad_clip = check_finite("TrainConfig.grad_clip", self.grad_clip, 0.0, strict=True)
        if self.checkpoint_interval is not None and self.checkpoint_path is None:
            raise ValueError("TrainConfig.checkpoint_interval is set but checkpoint_path is None; say where to save")
        if self.checkpoint_path is not None:
            self.checkpoint_path = os.fspath(self.checkpoint_path)
        for name, allowed in (("amp", (bool,)), ("compile", (bool,)), ("progress", (bool, type(None)))):
            if not isinstance(getattr(self, name), allowed):
                raise TypeError(f"TrainConfig.{name} must be a bool{' or None' if len(allowed) > 1 else ''}, "
                                f"got {type(getattr(self, name)).__name__}")


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
    """The package's one weight-decay rule, as two AdamW groups: decay on matrices (>= 2-D: linear
    weights and embeddings), none on vectors (biases, LayerNorm gains and shifts), which set offsets and
    scales rather than store patterns, so shrinking them towards 0 only hurts. A tied matrix appears
    once (``model.parameters()`` lists each tensor once)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with ``cfg``'s lr and betas on :func:`param_groups`; fused on CUDA (one kernel for the whole
    update instead of several per tensor)."""
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
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


def _targets_of(batch) -> torch.Tensor | None:
    """The target ids of a batch, where they can be told: ``y`` of ``(x, y)``, or ``labels``/``targets``."""
    y = batch[1] if isinstance(batch, tuple) else batch.get("labels", batch.get("targets"))
    return y if isinstance(y, torch.Tensor) and not y.is_floating_point() else None


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


# ---- progress bars --------------------------------------------------------------------------------
def progress_enabled(setting: bool | None) -> bool:
    """Whether :func:`train` shows a progress bar: ``True`` or ``False`` decide; ``None`` (the default)
    means "only for a person watching a terminal" (:func:`_interactive_terminal`). The book's notebooks
    leave it ``None``, so an executed notebook's stored outputs never contain a bar."""
    if setting is not None:
        return bool(setting)
    return _interactive_terminal()


def _interactive_terminal() -> bool:
    """True when stdout and stderr are both terminals and the code is not running in a Jupyter kernel
    (whose outputs are stored in the notebook; its streams are not terminals either, but a kernel may
    be started with a terminal attached)."""
    if "ipykernel" in sys.modules:
        return False
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a stream replaced by an object without isatty, or closed
        return False


# ---- evaluation -----------------------------------------------------------------------------------
def estimate_loss(model: nn.Module, get_batch: Callable, steps: int, seed: int = 1, device=None) -> float:
    """Mean loss over ``steps`` batches from ``get_batch(i, generator)`` with a generator seeded by
    ``seed``: the same batches at every call, so successive evaluations are comparable. Runs in eval
    mode without gradients and restores the model's mode afterwards (also when it raises)."""
    device = torch.device(device) if device is not None else model_device(model)
    generator = torch.Generator().manual_seed(seed)
    with eval_mode(model):
        total = torch.zeros((), device=device)
        for i in range(steps):
            total += _loss_of(_call_model(model, _to_device(get_batch(i, generator), device))).float()
        return float(total) / steps


def evaluate_lm(model: nn.Module, windows: EvalWindows, batch_size: int = 32, device=None) -> float:
    """Exact mean negative log-likelihood (nats per token) over the counted targets of ``windows``
    (from :func:`llmcourse.data.batching.eval_windows`); ``math.exp`` of it is the perplexity."""
    if not isinstance(windows, EvalWindows):
        raise TypeError(f"windows must come from llmcourse.data.batching.eval_windows, got {type(windows).__name__}")
    device = torch.device(device) if device is not None else model_device(model)
    with eval_mode(model):
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


# ---- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: dict, generator: torch.Generator, config: TrainConfig | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> None:
    """Write a checkpoint atomically: to a temporary file in the same folder, then ``os.replace``, so a
    crash mid-write leaves the previous checkpoint intact. Everything is tensors and plain Python
    values, so ``torch.load(path, weights_only=True)`` (no arbitrary code) can read it. ``train(...,
    resume=True)`` compares ``config`` with its own and refuses a checkpoint saved without one. A float16
    run's ``scaler`` (its loss scale and growth counter) is saved too: without it a resumed run would
    restart from the initial scale and skip or make other updates."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": {k: list(v) for k, v in history.items()},
        "config": asdict(config) if config is not None else {},
        "grad_scaler": scaler.state_dict() if scaler is not None else None,  # None: no loss scaling
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


# Fields a resumed run may change without naming them: they decide only where and how often checkpoints
# are written and whether a bar is drawn, never a number of the run (and a checkpoint copied or moved to
# another file must still resume). Every other field changes the updates or the recorded history —
# eval_interval too: an eval_fn may draw from the global generator that dropout also draws from.
RESUME_IGNORES = ("checkpoint_path", "checkpoint_interval", "progress")


def _config_changes(saved: dict, cfg: TrainConfig) -> dict[str, tuple]:
    """``{field: (saved value, new value)}`` for the fields of ``cfg`` that differ from the config saved
    in a checkpoint (``"(not recorded)"`` for a field the checkpoint lacks), :data:`RESUME_IGNORES` aside."""
    changes = {}
    for f in fields(TrainConfig):
        if f.name in RESUME_IGNORES:
            continue
        old, new = saved.get(f.name, "(not recorded)"), getattr(cfg, f.name)
        old = tuple(old) if isinstance(old, list) else old  # betas: a list in a hand-written checkpoint
        if old != new:
            changes[f.name] = (old, new)
    return changes


def _check_config(path: str, state: dict, cfg: TrainConfig, allowed: frozenset[str]) -> None:
    saved = state.get("config")
    if not isinstance(saved, dict) or not saved:
        raise CheckpointError(f"checkpoint {path!r} records no TrainConfig, so resuming cannot check that it "
                              "continues the same run; write it with save_checkpoint(..., config=cfg)")
    refused = {k: v for k, v in _config_changes(saved, cfg).items() if k not in allowed}
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise CheckpointError(
            f"checkpoint {path!r} was written by a run with another TrainConfig ({listed}). Resume with the "
            f"saved values, or name the fields you mean to change: "
            f"train(..., resume=True, allow_config_changes={tuple(refused)!r})")


def _check_rng(path: str, rng, generator: torch.Generator) -> None:
    """The random-number states must all be there and have the right size before anything is restored."""
    if not isinstance(rng, dict):
        raise CheckpointError(f"checkpoint {path!r}: 'rng' must be a dict of generator states, "
                              f"got {type(rng).__name__}")
    for key, reference in (("torch_cpu", torch.get_rng_state()), ("batch_generator", generator.get_state())):
        if key not in rng:
            raise CheckpointError(f"checkpoint {path!r} lacks the random-number state rng[{key!r}] (it was edited or "
                                  "is incomplete), so the run cannot resume exactly")
        value = rng[key]
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.shape != reference.shape:
            found = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"checkpoint {path!r}: rng[{key!r}] must be a torch.uint8 tensor of shape "
                                  f"{tuple(reference.shape)}, got {found}")


def _check_scaler(path: str, state: dict, scaler: torch.amp.GradScaler | None, device: torch.device) -> None:
    """A float16 run (with loss scaling) resumes only as one, and any other run only without it: the
    loss scale decides which updates are skipped, so neither can continue the other exactly."""
    saved = state.get("grad_scaler")  # absent in checkpoints written before float16 training existed
    complete = isinstance(saved, dict) and (scaler is None or set(scaler.state_dict()) <= set(saved))
    if saved is not None and not complete:
        raise CheckpointError(f"checkpoint {path!r}: 'grad_scaler' must be a GradScaler state dict, got {saved!r}")
    if saved is not None and scaler is None:
        raise CheckpointError(
            f"checkpoint {path!r} was written by a float16 run with loss scaling (amp=True on a CUDA GPU without "
            f"bfloat16, such as a T4), but this run on {device} computes without a GradScaler, so it cannot continue "
            "that run exactly; resume it on a GPU of the same kind")
    if saved is None and scaler is not None:
        raise CheckpointError(
            f"checkpoint {path!r} was written without loss scaling (float32 or bfloat16), but this run on {device} "
            "would train in float16 with a GradScaler (amp=True on a GPU without bfloat16), so it cannot continue "
            "that run exactly; resume it where it was written, or continue in float32 with TrainConfig(amp=False) "
            "and allow_config_changes=('amp',)")


def _restore(path, state, model, optimizer, generator, scaler=None) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path!r} does not match this model: {e}") from e
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path!r} does not match this optimizer: {e}") from e
    if scaler is not None:
        scaler.load_state_dict(state["grad_scaler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch_cpu"].cpu())
    generator.set_state(rng["batch_generator"].cpu())
    cuda_states = rng.get("torch_cuda") or []
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ---- data parallelism (torchrun) ------------------------------------------------------------------
def _distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` (``WORLD_SIZE`` > 1) also joins the process group
    (gloo on CPU; on CUDA, NCCL after ``torch.cuda.set_device`` of this process's GPU) if the caller has
    not. Without torchrun: ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        if device.type == "cuda":
            # Before NCCL starts: otherwise every process creates its communicator on GPU 0 (and can hang there).
            torch.cuda.set_device(device)
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


# ---- the loop, piece by piece ---------------------------------------------------------------------
@dataclass
class _Run:
    """What one call of :func:`train` works with, made by :func:`_set_up`."""

    cfg: TrainConfig
    model: nn.Module  # the plain model: it holds the weights that checkpoints save and callers keep
    net: nn.Module  # what forward and backward go through: the model, wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # draws every training batch; saved in checkpoints, so resume sees the same data
    device: torch.device
    rank: int
    world: int
    params: list  # the trainable parameters, whose gradient norm is clipped and recorded
    amp: contextlib.AbstractContextManager  # autocast in the type of amp_dtype(device), or nothing
    scaler: torch.amp.GradScaler | None  # float16 only: scales the loss so small gradients do not round to 0


def _check_arguments(model, get_batch, cfg, resume: bool, stop_at) -> int:
    """The update count this call stops at."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(get_batch):
        raise TypeError("get_batch must be a function get_batch(i, generator) -> (x, y) or a dict of tensors")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    end = cfg.max_steps if stop_at is None else stop_at
    if isinstance(end, bool) or not isinstance(end, int) or not 1 <= end <= cfg.max_steps:
        raise ValueError(f"stop_at must be an int in [1, max_steps={cfg.max_steps}], got {stop_at!r}")
    if resume and cfg.checkpoint_path is None:
        raise ValueError("resume=True needs TrainConfig.checkpoint_path")
    return end


def _allowed_changes(allow_config_changes, resume: bool) -> frozenset[str]:
    """The TrainConfig fields a resumed run may change: ``"max_steps"`` or ``("lr", "max_steps")``."""
    names = (allow_config_changes,) if isinstance(allow_config_changes, str) else allow_config_changes
    names = tuple(names) if isinstance(names, Iterable) else (names,)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"allow_config_changes must be field names of TrainConfig, e.g. ('max_steps',); "
                        f"got {allow_config_changes!r}")
    allowed = frozenset(names)
    unknown = sorted(allowed - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"allow_config_changes names {unknown}, which are not TrainConfig fields")
    if allowed and not resume:
        raise ValueError("allow_config_changes only applies when resuming: pass resume=True as well")
    return allowed


def _set_up(model: nn.Module, cfg: TrainConfig, device) -> _Run:
    """Place the model, join the process group under torchrun, wrap the model for DDP and compile, and
    make the optimizer and the batch generator (none of it draws from a random generator)."""
    device = torch.device(device) if device is not None else model_device(model)
    device = _local_device(device, int(os.environ.get("WORLD_SIZE", "1")))  # this process's GPU, then NCCL
    rank, world = _distributed(device)
    model.to(device)
    # Under torchrun, forward/backward go through DistributedDataParallel, which averages the
    # gradients of all processes during backward (and copies rank 0's initial weights to all).
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    dtype = amp_dtype(device) if cfg.amp else None
    return _Run(cfg=cfg, model=model, net=net, optimizer=make_optimizer(model, cfg, device),
                generator=torch.Generator().manual_seed(cfg.seed), device=device, rank=rank, world=world,
                params=[p for p in model.parameters() if p.requires_grad], amp=precision.autocast(dtype, device),
                scaler=precision.grad_scaler(dtype, device))


def _resume(run: _Run, allowed: frozenset[str], end: int) -> tuple[int, dict[str, list]]:
    """Load ``cfg.checkpoint_path`` into the run (model, optimizer, RNGs) after checking, before anything
    is changed, that it continues this run; returns the step to continue from and the history so far."""
    path = run.cfg.checkpoint_path
    state = load_checkpoint(path)
    _check_config(path, state, run.cfg, allowed)
    _check_rng(path, state["rng"], run.generator)
    _check_scaler(path, state, run.scaler, run.device)
    start = int(state["step"])
    if start > end:
        raise ValueError(f"checkpoint {path!r} is at update {start}, past the {end} this call should stop at")
    _restore(path, state, run.model, run.optimizer, run.generator, run.scaler)
    return start, {k: list(v) for k, v in state["history"].items()}


def _save(run: _Run, step: int, history: dict) -> None:
    """Rank 0 writes (all ranks hold the same state); the others wait until the file is complete."""
    if run.rank == 0:
        save_checkpoint(run.cfg.checkpoint_path, run.model, run.optimizer, step, history, run.generator, run.cfg,
                        run.scaler)
    if run.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _evaluate(run: _Run, step: int, history: dict, eval_fn: Callable | None, val_batch: Callable | None) -> None:
    """Record the validation numbers at update count ``step``, once (a resumed run may arrive at a step
    that was already evaluated)."""
    if history["val_step"] and history["val_step"][-1] == step:
        return
    results: dict[str, float] = {}
    if val_batch is not None:
        results["val_loss"] = estimate_loss(run.model, val_batch, run.cfg.eval_steps, seed=run.cfg.seed + 1,
                                            device=run.device)
    if eval_fn is not None:
        with eval_mode(run.model):  # back in training mode afterwards, also if eval_fn raises
            out = eval_fn(run.model)
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


def _next_batch(run: _Run, get_batch: Callable, i: int):
    """Micro-batch ``i``: drawn from the run's generator, checked, this process's share, on the device."""
    batch = get_batch(i, run.generator)
    if run.cfg.batch_size is not None and _batch_rows(batch) != run.cfg.batch_size:
        raise ValueError(f"get_batch returned {_batch_rows(batch)} rows but config.batch_size is {run.cfg.batch_size}")
    return _to_device(_shard(batch, run.rank, run.world) if run.world > 1 else batch, run.device)


def _forward_backward(run: _Run, batch, micro: int) -> torch.Tensor:
    """The loss of one micro-batch (detached); its gradient, divided by ``grad_accum_steps``, is added to
    ``.grad``: the mean of k equal-sized micro-batch means is the mean over one k-times-larger batch."""
    k = run.cfg.grad_accum_steps
    # Processes synchronise gradients only on the last micro-batch of an update.
    sync = contextlib.nullcontext() if run.world == 1 or micro == k - 1 else run.net.no_sync()
    with sync, run.amp:
        loss = _loss_of(_call_model(run.net, batch))
        (loss / k if run.scaler is None else run.scaler.scale(loss / k)).backward()
    return loss.detach()


def _train_step(run: _Run, get_batch: Callable, step: int) -> tuple[float, float, float]:
    """Update number ``step``: ``(lr, train_loss, grad_norm)``. The update is applied only if every
    micro-batch's loss and the gradient norm are finite; otherwise the gradients are dropped and
    ``FloatingPointError`` (or "no target in this batch") is raised with the weights and optimizer state
    untouched (under torchrun on every process: all see the same all-reduced loss)."""
    lr = lr_at(step, run.cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    k = run.cfg.grad_accum_steps
    total, losses, batches = torch.zeros((), device=run.device), [], []
    for micro in range(k):
        batch = _next_batch(run, get_batch, step * k + micro)
        losses.append(_forward_backward(run, batch, micro))
        batches.append(batch)
        total += losses[-1].float()
    if run.world > 1:  # the history records the loss of the whole (global) batch, the same on every rank
        import torch.distributed as dist

        dist.all_reduce(total)
        total /= run.world
    # Checked after backward, not before: reading the loss is a host synchronisation on a GPU, so once per
    # update; and under torchrun a process that stopped before backward would leave the others waiting in
    # its all-reduce. Nothing is lost: the weights and moments change only in optimizer.step() below.
    train_loss = float(total) / k
    if not math.isfinite(train_loss):
        run.optimizer.zero_grad(set_to_none=True)
        raise _non_finite_loss(step, train_loss, losses, batches)
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)  # clip and record the true gradient, not the scaled one
    max_norm = run.cfg.grad_clip if run.cfg.grad_clip is not None else float("inf")  # inf: measure only
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.params, max_norm))
    if not math.isfinite(grad_norm) and not _overflow_to_skip(run):
        run.optimizer.zero_grad(set_to_none=True)
        raise FloatingPointError(f"the gradient norm became {grad_norm} at step {step} although the loss, "
                                 f"{train_loss}, is finite{_scale_note(run)}; {_state_kept(step)}. Look in the model "
                                 "for an operation with an infinite derivative (log or sqrt at 0, division by ~0)")
    if run.scaler is None:
        run.optimizer.step()
    else:  # skips the update if unscale_ met an inf or nan (the scaled gradient overflowed), then halves the scale
        run.scaler.step(run.optimizer)
        run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    return lr, train_loss, grad_norm


def _overflow_to_skip(run: _Run) -> bool:
    """Whether a non-finite gradient is float16 overflow that the scaler handles by skipping the update
    and halving the scale. At a scale of 1 or less the loss is not scaled up, so scaling is not the cause."""
    return run.scaler is not None and run.scaler.get_scale() > 1.0


def _scale_note(run: _Run) -> str:
    return "" if run.scaler is None else f" and the loss scale is already {run.scaler.get_scale()}"


def _state_kept(step: int) -> str:
    return ("the weights and optimizer state are left as they were " +
            (f"after step {step - 1}" if step > 0 else "before the first update"))


def _non_finite_loss(step: int, train_loss: float, losses: list, batches: list) -> Exception:
    """The error for a step whose loss is not finite: which micro-batch, and whether it had no target at
    all (a mean over zero targets is 0/0; models check that only on the CPU), which lr cannot fix."""
    k = len(losses)
    bad = next((i for i, loss in enumerate(losses) if not math.isfinite(float(loss))), None)
    where = f"step {step}" + (f", micro-batch {bad} of {k}" if k > 1 and bad is not None else "")
    if bad is None:  # finite here: under torchrun another process had the bad batch
        where += " (on another process)"
    else:
        y = _targets_of(batches[bad])
        if y is not None and y.numel() and not bool((y != IGNORE_INDEX).any()):
            return ValueError(f"no target in this batch: every target of {where} is IGNORE_INDEX ({IGNORE_INDEX}), "
                              "so its mean loss is 0/0; drop such batches or check the masking")
        train_loss = float(losses[bad])
    return FloatingPointError(f"training loss became {train_loss} at {where}; {_state_kept(step)}. "
                              "Try a lower lr or grad_clip")


def _progress_bar(run: _Run, start: int, end: int):
    if run.rank != 0 or not progress_enabled(run.cfg.progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=end, initial=start, desc="train", dynamic_ncols=True)


def _record(history: dict, step: int, lr: float, train_loss: float, grad_norm: float) -> None:
    history["step"].append(step)
    history["train_loss"].append(train_loss)
    history["lr"].append(lr)
    history["grad_norm"].append(grad_norm)


# ---- the loop -------------------------------------------------------------------------------------
def train(model: nn.Module, get_batch: Callable, config: TrainConfig, eval_fn: Callable | None = None,
          device=None, *, val_batch: Callable | None = None, resume: bool = False,
          stop_at: int | None = None, allow_config_changes: Iterable[str] = ()) -> dict[str, list]:
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
            The checkpoint's TrainConfig must equal ``config`` (:data:`RESUME_IGNORES` aside).
        stop_at: stop after this many updates as if interrupted (the schedule still follows ``max_steps``).
        allow_config_changes: with ``resume``, the TrainConfig fields that may differ from the checkpoint's,
            e.g. ``("max_steps",)`` to extend a finished run (the cosine schedule then follows the new
            ``max_steps`` from the saved step on).

    History keys: ``step``, ``train_loss``, ``lr``, ``grad_norm`` (one entry per update) and
    ``val_step``, ``val_loss`` (plus any ``eval_fn`` dict keys), one entry per evaluation.
    """
    cfg = config
    end = _check_arguments(model, get_batch, cfg, resume, stop_at)
    allowed = _allowed_changes(allow_config_changes, resume)
    run = _set_up(model, cfg, device)
    start, history = _resume(run, allowed, end) if resume else (0, {k: [] for k in HISTORY_KEYS})
    evaluates = eval_fn is not None or val_batch is not None
    bar = _progress_bar(run, start, end)
    model.train()
    try:
        for step in range(start, end):
            if evaluates and cfg.eval_interval is not None and step % cfg.eval_interval == 0:
                _evaluate(run, step, history, eval_fn, val_batch)
            lr, train_loss, grad_norm = _train_step(run, get_batch, step)
            _record(history, step, lr, train_loss, grad_norm)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}")
            done = step + 1
            if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and done < end:
                _save(run, done, history)
        if evaluates and end == cfg.max_steps:
            _evaluate(run, end, history, eval_fn, val_batch)
        if cfg.checkpoint_path is not None and start < end:
            _save(run, end, history)
    finally:
        if bar is not None:
            bar.close()
    return history


__all__ = [
    "RESUME_IGNORES", "CheckpointError", "TrainConfig", "amp_dtype", "estimate_loss", "evaluate_lm", "load_checkpoint",
    "lr_at", "make_optimizer", "param_groups", "progress_enabled", "save_checkpoint", "train",
]
