"""Training at scale, measured (训练速度与泛化): the reusable pieces of chapter 10.

* :func:`measure_throughput` times training steps (forward, backward, AdamW update) and reports
  tokens per second, optionally under autocast (bf16, or fp16 with loss scaling, as ``llmcourse.train``
  chooses with :func:`~llmcourse.core.precision.amp_dtype`) or another thread count;
  :func:`compare_throughput` times several settings in interleaved rounds and calls a difference a
  speed-up only when it exceeds the baseline's variation against itself.
* :func:`explicit_attention` makes a :class:`~llmcourse.models.GPT` compute attention with the written-out
  formula instead of the fused ``scaled_dot_product_attention`` kernel, to measure what fusion buys.
* :class:`MicroBatches` splits every batch of a ``get_batch`` into ``k`` micro-batches, so that
  ``train(..., grad_accum_steps=k)`` sees exactly the data of one k-times-larger batch.
* :func:`run_torchrun` runs a script under ``torchrun`` (data-parallel processes) from Python or a notebook;
  :func:`gradients_at_first_update` and :func:`compare_gradients` check, parameter by parameter, that
  the processes' all-reduced gradients are the gradient of one process on the whole batch.
* Pruning (剪枝): :func:`global_magnitude_masks` (the rule, from scratch), :func:`prune_linears` (with
  ``torch.nn.utils.prune``), :func:`count_nonzero`, :func:`storage_bytes` (dense or CSR) and
  :func:`make_pruning_permanent`.
* :class:`NoisyLMBatcher`: language-model windows with random character deletion and replacement, a
  simple data augmentation (数据增强) for text.

Everything random takes a seeded ``torch.Generator`` (or a seed), so results are reproducible.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn.utils import prune

from llmcourse.core import precision
from llmcourse.core.checks import model_device
from llmcourse.data.batching import LMBatcher
from llmcourse.models.gpt import GPT


# ---- throughput -----------------------------------------------------------------------------------
class Throughput(NamedTuple):
    tokens_per_s: float
    seconds_per_step: float
    tokens_per_step: int
    peak_memory_bytes: int | None = None  # on CUDA: torch.cuda.max_memory_allocated during the timed steps


def _rows_tokens(batch) -> int:
    x = batch["input_ids"] if isinstance(batch, dict) else batch[0]
    return x.numel()


def measure_throughput(model: nn.Module, get_batch: Callable, steps: int = 10, warmup: int = 2, *,
                       repeats: int = 1, lr: float = 1e-3, autocast_dtype: torch.dtype | None = None,
                       threads: int | None = None, seed: int = 0,
                       clock: Callable[[], float] = time.perf_counter) -> Throughput:
    """Time ``steps`` training steps of ``model`` on its device, then put its weights back.

    One step is what training does: forward, loss, backward, an AdamW update. ``warmup`` steps run
    first and are not timed (the first steps allocate memory and pick kernels). ``get_batch(i,
    generator)`` returns ``(x, y)`` or a dict with ``input_ids``; tokens per step is the number of
    input ids. ``autocast_dtype`` (``torch.bfloat16`` or ``torch.float16``) runs forward and loss under
    ``torch.autocast``, and float16 scales the loss with a ``GradScaler`` as ``llmcourse.train`` does;
    pass ``amp_dtype(device)`` (:func:`llmcourse.core.precision.amp_dtype`) to time the type that
    ``TrainConfig(amp=True)`` trains in on that device. ``threads`` sets ``torch.set_num_threads`` for
    the measurement only. On CUDA the result carries the peak memory allocated while timing.
    With ``repeats > 1`` the ``steps`` steps are timed that many times and the fastest run is kept:
    other programs on the machine only ever slow a measurement down, so the best of several is the
    least disturbed (the convention of Python's ``timeit``). ``clock`` is the timer (a parameter so
    that tests can pass a fake one). The model's state dict and train/eval mode are restored
    afterwards (its ``.grad`` fields are left empty).
    """
    for name, value, minimum in (("steps", steps, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None or an int >= 1, got {threads!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    precision.check_amp_dtype(autocast_dtype)
    device = model_device(model)
    # A snapshot rather than copy.deepcopy: pruned modules hold a computed (non-leaf) weight that
    # cannot be deep-copied.
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    batches = [get_batch(i, generator) for i in range(warmup + steps)]  # drawn before timing starts
    batches = [{k: v.to(device) for k, v in b.items()} if isinstance(b, dict) else tuple(t.to(device) for t in b)
               for b in batches]
    amp = precision.autocast(autocast_dtype, device)
    scaler = precision.grad_scaler(autocast_dtype, device)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    model.train()

    def run(steps_batches):
        for batch in steps_batches:
            with amp:
                out = model(**batch) if isinstance(batch, dict) else model(*batch)
                loss = out[1] if isinstance(out, (tuple, list)) else out["loss"]
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # the work of a float16 training step: scale, unscale (train clips after it), step, update
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # GPU work is asynchronous: wait before reading the clock

    try:
        run(batches[:warmup])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(repeats):
            start = clock()
            run(batches[warmup:])
            times.append(clock() - start)
        elapsed = min(times)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    finally:
        torch.set_num_threads(before)
        model.load_state_dict(snapshot)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    if elapsed <= 0:
        raise RuntimeError(f"the clock did not advance over {steps} steps; use a finer clock or more steps")
    tokens = _rows_tokens(batches[-1])
    return Throughput(tokens * steps / elapsed, elapsed / steps, tokens, peak)


class ThroughputRow(NamedTuple):
    """One setting of :func:`compare_throughput`: tokens per second over the rounds (median, min, max),
    its ratio to the baseline of the same round (median, min, max) and the verdict."""

    name: str
    tokens_per_step: int
    median: float
    low: float
    high: float
    ratio: float
    ratio_low: float
    ratio_high: float
    verdict: str
    peak_memory_bytes: int | None = None


VERDICTS = ("baseline", "noise", "faster", "slower", "within noise")


def throughput_verdict(ratios: Sequence[float], noise: Sequence[float]) -> str:
    """``"faster"`` if every round's ratio to the baseline is above every ratio of the baseline against
    itself (``noise``), ``"slower"`` if every one is below them all, ``"within noise"`` otherwise: a
    setting is called different only where no round's variation could explain it."""
    if not ratios or not noise:
        raise ValueError("throughput_verdict needs at least one ratio and one noise ratio")
    if min(ratios) > max(noise):
        return "faster"
    if max(ratios) < min(noise):
        return "slower"
    return "within noise"


def compare_throughput(settings: Mapping[str, Callable[[], Throughput]], rounds: int = 5,
                       baseline: str | None = None, warmup_rounds: int = 1) -> list[ThroughputRow]:
    """Time every setting ``rounds`` times, interleaved, and compare each with the baseline.

    ``settings`` maps a name to a function that makes one measurement (e.g. ``lambda:
    measure_throughput(model, get_batch, steps=4, warmup=1)``); ``baseline`` (default: the first name)
    is timed twice in every round, the second time as the row ``"<baseline> again"``. Each round runs
    the settings in a rotated order, so that drift (a machine warming up, another program starting) hits
    all of them alike and no setting is always first; ``warmup_rounds`` untimed rounds come first (the
    very first measurements of a process are slowed by allocation and caches). A setting's ratio in a
    round is its tokens per second over the baseline's in the same round; the baseline's ratio against
    itself in each round is the noise, and :func:`throughput_verdict` names a setting ``faster`` or
    ``slower`` only when all its ratios lie beyond all the noise ratios. Rows come in the order of
    ``settings``, the second baseline last.
    """
    if not isinstance(settings, Mapping) or not settings or not all(callable(f) for f in settings.values()):
        raise TypeError("settings must be a non-empty dict of name -> function returning a Throughput")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 2:
        raise ValueError(f"rounds must be an int >= 2 (one round gives no spread), got {rounds!r}")
    if isinstance(warmup_rounds, bool) or not isinstance(warmup_rounds, int) or warmup_rounds < 0:
        raise ValueError(f"warmup_rounds must be an int >= 0, got {warmup_rounds!r}")
    baseline = next(iter(settings)) if baseline is None else baseline
    if baseline not in settings:
        raise ValueError(f"baseline {baseline!r} is not one of the settings {list(settings)}")
    control = f"{baseline} again"
    if control in settings:
        raise ValueError(f"{control!r} is the name of the baseline's second timing; rename that setting")
    plan = {**settings, control: settings[baseline]}
    names = list(plan)
    for _ in range(warmup_rounds):
        for name in names:
            plan[name]()
    results: dict[str, list[Throughput]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(plan[name]())
    return [_throughput_row(name, results[name], results[baseline], results[control], baseline, control)
            for name in names]


def _throughput_row(name, runs, base_runs, control_runs, baseline, control) -> ThroughputRow:
    speeds = [t.tokens_per_s for t in runs]
    ratios = [t.tokens_per_s / b.tokens_per_s for t, b in zip(runs, base_runs)]
    noise = [c.tokens_per_s / b.tokens_per_s for c, b in zip(control_runs, base_runs)]
    verdict = "baseline" if name == baseline else "noise" if name == control else throughput_verdict(ratios, noise)
    peaks = [t.peak_memory_bytes for t in runs if t.peak_memory_bytes is not None]
    return ThroughputRow(name, runs[-1].tokens_per_step, statistics.median(speeds), min(speeds), max(speeds),
                         statistics.median(ratios), min(ratios), max(ratios), verdict, max(peaks) if peaks else None)


@contextlib.contextmanager
def explicit_attention(model: nn.Module):
    """Inside the ``with`` block, every :class:`~llmcourse.models.GPT` in ``model`` (the model itself, or
    the body of a reward or policy model) computes attention as ``softmax(QK^T/sqrt(d) + mask) V``
    written out (the path ``GPT.attention_maps`` uses), forming the (T, T) weight matrix of every head,
    instead of calling the fused SDPA kernel: the model's own switch, ``GPT.attention("explicit")``.
    Same function, different speed and memory; the previous setting comes back afterwards."""
    gpts = [m for m in model.modules() if isinstance(m, GPT)]
    if not gpts:
        raise ValueError(f"{type(model).__name__} holds no llmcourse GPT (no CausalSelfAttention layers) to switch")
    with contextlib.ExitStack() as stack:
        for gpt in gpts:
            stack.enter_context(gpt.attention("explicit"))
        yield model


# ---- gradient accumulation ------------------------------------------------------------------------
class MicroBatches:
    """``get_batch`` for ``train(..., grad_accum_steps=k)`` that cuts each batch of ``get_batch`` into
    ``k`` equal micro-batches.

    Micro-batch ``i`` belongs to update ``i // k``; at its first micro-batch the whole batch is drawn
    from the loop's generator (once, as a run with ``k = 1`` draws it), so the k micro-batches of an
    update together are exactly the batch a ``k = 1`` run trains on, and the generator advances
    identically: accumulation changes memory use, not the data.
    """

    def __init__(self, get_batch: Callable, k: int):
        if not callable(get_batch):
            raise TypeError("get_batch must be a function get_batch(i, generator) -> (x, y) or a dict of tensors")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (micro-batches per batch) must be an int >= 1, got {k!r}")
        self.get_batch, self.k = get_batch, k
        self._step, self._batch = None, None

    def __call__(self, i: int, generator: torch.Generator):
        step, micro = divmod(i, self.k)
        if micro == 0:
            self._step, self._batch = step, self.get_batch(step, generator)
        elif self._step != step:
            raise RuntimeError(f"micro-batch {i} requested before micro-batch {step * self.k} of its update; "
                               "MicroBatches must be called in order (as llmcourse.train does)")
        batch = self._batch
        tensors = batch.values() if isinstance(batch, dict) else batch
        rows = next(t for t in tensors if isinstance(t, torch.Tensor)).shape[0]
        if rows % self.k:
            raise ValueError(f"a batch of {rows} rows cannot be cut into {self.k} equal micro-batches; "
                             f"use a batch size divisible by k")
        lo, hi = micro * rows // self.k, (micro + 1) * rows // self.k
        if isinstance(batch, dict):
            return {key: v[lo:hi] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == rows else v
                    for key, v in batch.items()}
        return tuple(t[lo:hi] for t in batch)


# ---- data parallelism -----------------------------------------------------------------------------
def run_torchrun(script: str | os.PathLike, nproc: int, args: Sequence[str] = (), *, cwd=None,
                 timeout: float = 600, threads_per_process: int = 1) -> subprocess.CompletedProcess:
    """Run ``python -m torch.distributed.run --standalone --nproc_per_node=nproc script args...``.

    Each process gets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` = ``threads_per_process`` (N processes
    on N cores, not N x cores threads fighting for them; an inherited MKL_NUM_THREADS=2 let MKL pick its
    thread count per process at run time, and the ranks' weights stopped being bit-identical). Output
    is captured (torchrun prints set-up notices on stderr); a failed
    run raises ``RuntimeError`` with the end of its output.
    """
    script = os.fspath(script)
    if not os.path.isfile(script):
        raise FileNotFoundError(f"no script at {script!r}; write the training script to a file first")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be an int >= 1, got {nproc!r}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads_per_process)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               script, *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if result.returncode != 0:
        tail = (result.stdout[-2000:] + "\n" + result.stderr[-4000:]).strip()
        raise RuntimeError(f"torchrun exited with status {result.returncode}:\n{tail}")
    return result


@contextlib.contextmanager
def gradients_at_first_update(model: nn.Module):
    """Inside the ``with`` block, the first optimizer step over ``model``'s parameters records a copy of
    every parameter's ``.grad`` (by name) just before the update: under ``torchrun`` that is the
    all-reduced gradient, after any clipping — what the optimizer uses. Yields the dict it fills; a
    block that completes without such a step is an error (it would compare nothing)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    named = dict(model.named_parameters())
    ids = {id(p) for p in named.values()}
    grads: dict[str, torch.Tensor] = {}

    def record(optimizer, args, kwargs):
        if not grads and any(id(p) in ids for g in optimizer.param_groups for p in g["params"]):
            grads.update({n: p.grad.detach().clone() for n, p in named.items() if p.grad is not None})

    handle = register_optimizer_step_pre_hook(record)  # global: the optimizer is made inside train()
    try:
        yield grads
    finally:
        handle.remove()
    if not grads:
        raise RuntimeError("no optimizer step over the model's parameters ran inside the block")


class GradientDifference(NamedTuple):
    name: str
    max_abs: float  # the largest |a - b| over the parameter's entries
    reference_max: float  # the largest |b|: the scale of the reference gradient
    rel: float  # max_abs / reference_max (0 when both are zero)


def compare_gradients(grads: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
                      ) -> list[GradientDifference]:
    """Per parameter, how far ``grads`` are from ``reference`` (both ``{name: tensor}``, the same names
    and shapes), largest relative difference first. The relative difference divides by the largest
    entry of the reference gradient, not entry by entry: entries near zero would make any rounding look
    huge."""
    if set(grads) != set(reference):
        raise ValueError(f"the gradients name other parameters than the reference: only in one of them: "
                         f"{sorted(set(grads) ^ set(reference))}")
    rows = []
    for name, ref in reference.items():
        a, b = grads[name].detach().cpu().double(), ref.detach().cpu().double()
        if a.shape != b.shape:
            raise ValueError(f"gradient of {name!r} has shape {tuple(a.shape)}, the reference {tuple(b.shape)}")
        diff, scale = float((a - b).abs().max()), float(b.abs().max())
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        rows.append(GradientDifference(name, diff, scale, rel))
    return sorted(rows, key=lambda r: -r.rel)


# ---- pruning --------------------------------------------------------------------------------------
def global_magnitude_masks(weights: Sequence[torch.Tensor], amount: float) -> list[torch.Tensor]:
    """Masks (1 keep, 0 prune) that remove the ``round(amount * N)`` entries of smallest absolute value
    among all ``N`` entries of ``weights`` taken together (global magnitude pruning): one threshold for
    every layer, so layers with many small weights lose more of them."""
    weights = list(weights)
    if not weights or not all(isinstance(w, torch.Tensor) for w in weights):
        raise TypeError("weights must be a non-empty list of tensors")
    _check_amount(amount)
    scores = torch.cat([w.detach().abs().flatten() for w in weights])  # (N,)
    n_prune = round(amount * scores.numel())
    keep = torch.ones_like(scores)
    if n_prune:
        keep[torch.topk(scores, n_prune, largest=False).indices] = 0  # the n_prune smallest magnitudes
    return [m.view_as(w) for m, w in zip(keep.split([w.numel() for w in weights]), weights)]


def _check_amount(amount) -> None:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount <= 1:
        raise ValueError(f"amount must be the fraction of weights to prune, a number in [0, 1], got {amount!r}")


def prunable_linears(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every ``nn.Linear`` of ``model`` whose weight is not shared with an
    embedding. A GPT's output layer is tied to the token embedding (one matrix, two uses), so it is
    left out: pruning it would zero rows of the input lookup too."""
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    found = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weight = getattr(module, "weight_orig", module.weight)
            if id(weight) not in embedding_weights:
                found.append((module, "weight"))
    if not found:
        raise ValueError("the model has no nn.Linear layers (other than a tied output layer) to prune")
    return found


PRUNE_METHODS = ("global", "layer", "random")


def prune_linears(model: nn.Module, amount: float, method: str = "global", seed: int = 0) -> nn.Module:
    """Prune the weights of :func:`prunable_linears` in place with ``torch.nn.utils.prune`` and return
    the model. ``method``: ``"global"`` (smallest magnitudes over all layers together,
    ``global_unstructured``), ``"layer"`` (``amount`` of each layer, ``l1_unstructured``) or
    ``"random"`` (a random ``amount`` of each layer, a baseline; seeded by ``seed``).

    The module keeps ``weight_orig`` (trainable) and a ``weight_mask`` buffer, and computes ``weight =
    weight_orig * weight_mask`` before each forward, so fine-tuning keeps pruned weights at zero.
    """
    _check_amount(amount)
    if method not in PRUNE_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; expected one of {PRUNE_METHODS}")
    targets = prunable_linears(model)
    if method == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    elif method == "layer":
        for module, name in targets:
            prune.l1_unstructured(module, name, amount=amount)
    else:
        with torch.random.fork_rng(devices=[]):  # random_unstructured draws from torch's global RNG
            torch.manual_seed(seed)
            for module, name in targets:
                prune.random_unstructured(module, name, amount=amount)
    return model


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (``prune.remove``): plain parameters with zeros, no
    ``weight_orig``/``weight_mask`` pair in the state dict (which stores both: twice the size)."""
    for module in model.modules():
        for name in [n[:-5] for n, _ in module.named_parameters(recurse=False) if n.endswith("_orig")]:
            prune.remove(module, name)
    return model


def effective_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The tensors the model computes with: every parameter once (tied ones counted once), with a pruned
    ``weight_orig`` replaced by the masked ``weight`` it stands for."""
    seen, out = set(), []
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if name.endswith("_orig") and hasattr(module, name[:-5] + "_mask"):
                name = name[:-5]
                p = p * getattr(module, name + "_mask")  # what the forward pre-hook computes
            out.append((f"{module_name}.{name}" if module_name else name, p.detach()))
    return out


def count_nonzero(model: nn.Module) -> tuple[int, int]:
    """``(nonzero, total)`` entries over the model's effective parameters."""
    tensors = [t for _, t in effective_tensors(model)]
    return int(sum(int((t != 0).sum()) for t in tensors)), int(sum(t.numel() for t in tensors))


def storage_bytes(model: nn.Module, sparse: bool = False, index_dtype: torch.dtype = torch.int64) -> int:
    """Bytes to store the effective parameters. Dense: ``numel * element size`` each. ``sparse=True``:
    every matrix whose compressed sparse row form (CSR, 压缩稀疏行) is smaller is stored that way (its
    nonzero values, one column index per value and ``rows + 1`` row pointers); the others, and all
    vectors, stay dense. ``torch.int64`` indices are torch's default; ``torch.int32`` halves them."""
    if index_dtype not in (torch.int64, torch.int32, torch.int16):
        raise ValueError(f"index_dtype must be torch.int64, int32 or int16, got {index_dtype}")
    index_size = torch.empty((), dtype=index_dtype).element_size()
    total = 0
    for _, t in effective_tensors(model):
        dense = t.numel() * t.element_size()
        if sparse and t.dim() == 2:
            nnz = int((t != 0).sum())
            csr = nnz * t.element_size() + nnz * index_size + (t.shape[0] + 1) * index_size
            dense = min(dense, csr)
        total += dense
    return total


# ---- data augmentation ----------------------------------------------------------------------------
class NoisyLMBatcher(LMBatcher):
    """Random language-model windows with character noise, a data augmentation for text.

    For each window, every token is first *deleted* with probability ``p_delete`` (the window is read
    from a longer stretch of the stream so that ``block_size + 1`` tokens survive); the targets ``y``
    are the surviving sequence shifted by one, as always. Then each *input* token is *replaced* with
    probability ``p_replace`` by a token drawn from ``replace_weights`` (e.g. unigram counts; uniform
    over the vocabulary if ``None``); targets stay clean, so the model learns to predict the true
    next character from a corrupted context (Xie et al., 2017, call it data noising). With both
    probabilities 0 the batches are exactly :class:`~llmcourse.data.batching.LMBatcher`'s.
    """

    def __init__(self, stream: torch.Tensor, block_size: int, batch_size: int, p_replace: float = 0.0,
                 p_delete: float = 0.0, replace_weights: torch.Tensor | None = None, vocab_size: int | None = None):
        super().__init__(stream, block_size, batch_size)
        for name, p in (("p_replace", p_replace), ("p_delete", p_delete)):
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}")
        self.p_replace, self.p_delete = float(p_replace), float(p_delete)
        self.span = block_size + 1 if p_delete == 0 else 2 * (block_size + 1)  # tokens read per window
        if self.stream.numel() < self.span + 1:
            raise ValueError(f"stream has {self.stream.numel()} tokens; deletion needs windows of {self.span}")
        if replace_weights is None:
            size = vocab_size if vocab_size is not None else int(self.stream.max()) + 1
            replace_weights = torch.ones(size)
        replace_weights = torch.as_tensor(replace_weights, dtype=torch.float)
        if replace_weights.dim() != 1 or (replace_weights < 0).any() or replace_weights.sum() <= 0:
            raise ValueError("replace_weights must be a 1-D tensor of non-negative weights, one per token id, "
                             "with a positive sum")
        self.replace_probs = replace_weights / replace_weights.sum()  # (V,)

    def __call__(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, W = self.batch_size, self.block_size, self.span
        starts = torch.randint(self.stream.numel() - W + 1, (B,), generator=generator)  # (B,)
        chunk = self.stream[starts[:, None] + torch.arange(W)[None, :]]  # (B, W)
        if self.p_delete > 0:
            keep = torch.rand(B, W, generator=generator) >= self.p_delete  # (B, W)
            keep[keep.sum(1) < T + 1] = True  # (vanishingly rare) too few survivors: keep that row whole
            # survivors first, in their original order: a stable sort on "deleted" (False < True)
            order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices  # (B, W)
            chunk = chunk.gather(1, order[:, :T + 1])  # (B, T + 1)
        x, y = chunk[:, :T], chunk[:, 1:T + 1]
        if self.p_replace > 0:
            hit = torch.rand(B, T, generator=generator) < self.p_replace  # (B, T)
            new = torch.multinomial(self.replace_probs, B * T, replacement=True, generator=generator).view(B, T)
            x = torch.where(hit, new, x)
        return x, y

    def __repr__(self) -> str:
        return (f"NoisyLMBatcher(tokens={self.stream.numel()}, block_size={self.block_size}, "
                f"batch_size={self.batch_size}, p_replace={self.p_replace}, p_delete={self.p_delete})")


__all__ = [
    "GradientDifference", "MicroBatches", "NoisyLMBatcher", "PRUNE_METHODS", "Throughput", "ThroughputRow", "VERDICTS",
    "compare_gradients", "compare_throughput", "count_nonzero", "effective_tensors", "explicit_attention",
    "global_magnitude_masks", "gradients_at_first_update", "make_pruning_permanent", "measure_throughput",
    "prunable_linears", "prune_linears", "run_torchrun", "storage_bytes", "throughput_verdict",
]
