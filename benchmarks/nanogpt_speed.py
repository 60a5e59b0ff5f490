"""Training speed of llmcourse's GPT against nanoGPT's ``model.py``, interleaved in one process.

nanoGPT's code is not part of this repository (licence and provenance): clone it and pass its
``model.py``::

    git clone https://github.com/karpathy/nanoGPT /tmp/nanogpt
    python benchmarks/nanogpt_speed.py --nanogpt /tmp/nanogpt/model.py            # 3 runs, 2 threads
    python benchmarks/nanogpt_speed.py --nanogpt /tmp/nanogpt/model.py --phases   # + forward / backward / AdamW split
    python benchmarks/nanogpt_speed.py --nanogpt /tmp/nanogpt/model.py --profile  # + torch.profiler op table
    python benchmarks/nanogpt_speed.py --nanogpt /tmp/nanogpt/model.py --control  # A/A: nanoGPT vs nanoGPT
    python benchmarks/nanogpt_speed.py --nanogpt /tmp/nanogpt/model.py --gelu exact  # nanoGPT's erf GELU kept

The configuration is nanoGPT's CPU "baby" model (``train_shakespeare_char`` shrunk for a CPU): 4 layers,
4 heads, 128 wide, context 64, batch 12, dropout 0, no biases (``GPTConfig(bias=False)`` on both
sides), a 65-token vocabulary (``--vocab``); both models then have 804,096 parameters.

What is made equal before anything is timed:

* the weights: nanoGPT's ``state_dict`` is loaded into ours (the names are the same; nanoGPT's
  ``attn.bias`` mask buffer, present only without flash attention, is skipped), and the two losses on
  the same batch must agree to 1e-5, else the script stops;
* the activation: nanoGPT uses the exact (erf) GELU, ours GPT-2's tanh approximation. With
  ``--gelu tanh`` (the default) nanoGPT's ``MLP.gelu`` modules are replaced by
  ``nn.GELU(approximate="tanh")`` so the two compute the same function; ``--gelu exact`` keeps
  nanoGPT exactly as shipped (the initial losses then differ by about 5e-7);
* the batches (random ids from one seeded ``torch.Generator``; step ``i`` of both models sees batch ``i``),
  the optimiser (``torch.optim.AdamW``, lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on >= 2-D tensors,
  0 on the others, ``foreach=False, fused=False`` for both) and the thread count (``--threads``).

Our model keeps its validation layer on (the input checks in ``forward``), as a user gets it.

Method: one process, ``--warmup`` steps of each model, then ``--rounds`` rounds of ``--steps`` steps
of each model, alternating which model goes first (odd runs start with nanoGPT, also in allocation
and warm-up); every training step (forward, loss, backward, AdamW step) is timed on its own. A run
reports the median ms per step of each model, tokens per second (batch x context / median step time)
and the ratio ours / nanoGPT of tokens per second (> 1: ours is faster). The whole run (fresh models,
fresh optimisers) is repeated ``--runs`` times. ``--control`` puts a second copy of nanoGPT in our
model's place (an A/A test): its ratios show how far from 1.0 the method alone lands on this machine.
Timings are measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from llmcourse.models import GPT, GPTConfig

BABY = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
BATCH = 12
CLONE_HINT = "clone https://github.com/karpathy/nanoGPT and pass --nanogpt nanoGPT/model.py"


# ---- the two models -----------------------------------------------------------------------------
def load_nanogpt(path: str | None):
    """Import nanoGPT's ``model.py`` from ``path`` as a module (it stays outside the repository)."""
    if not path:
        sys.exit(f"nanoGPT's model.py is needed: {CLONE_HINT}")
    file = Path(path)
    if file.is_dir():
        file = file / "model.py"
    if not file.is_file():
        sys.exit(f"no nanoGPT model.py at {path!r}: {CLONE_HINT}")
    spec = importlib.util.spec_from_file_location("nanogpt_model", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("GPT", "GPTConfig"):
        if not hasattr(module, name):
            sys.exit(f"{file} defines no {name}: is it nanoGPT's model.py? {CLONE_HINT}")
    return module


def new_nanogpt(nanogpt, vocab: int, gelu: str) -> nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):  # nanoGPT prints its parameter count
        model = nanogpt.GPT(nanogpt.GPTConfig(vocab_size=vocab, **BABY))
    if gelu == "tanh":
        for block in model.transformer.h:
            block.mlp.gelu = nn.GELU(approximate="tanh")  # the activation ours (and GPT-2) uses
    return model


def build_models(nanogpt, vocab: int, gelu: str, seed: int, ours_first: bool = False, control: bool = False):
    """nanoGPT's GPT and ours at the baby config, ours holding a copy of nanoGPT's initial weights.
    ``ours_first`` allocates our model before nanoGPT's (the runs alternate it); ``control`` makes
    "ours" a second nanoGPT (A/A test)."""
    def make_ours():
        return new_nanogpt(nanogpt, vocab, gelu) if control else GPT(GPTConfig(vocab_size=vocab, **BABY))

    ours = make_ours() if ours_first else None  # its initial weights are overwritten below
    torch.manual_seed(seed)
    theirs = new_nanogpt(nanogpt, vocab, gelu)
    if ours is None:
        ours = make_ours()
    state = {k: v for k, v in theirs.state_dict().items() if not k.endswith(".attn.bias")}
    ours.load_state_dict(state, strict=True)  # raises on any mismatch of names or shapes
    if ours.lm_head.weight is not ours.transformer.wte.weight:
        raise RuntimeError("loading the state_dict untied our output layer from the token embedding")
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    if n_ours != n_theirs:
        raise RuntimeError(f"parameter counts differ: ours {n_ours:,}, nanoGPT {n_theirs:,}")
    return ours.train(), theirs.train(), n_ours


def make_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """nanoGPT's ``configure_optimizers`` groups (decay on >= 2-D tensors), the same for both models."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), foreach=False, fused=False)


def make_batches(n: int, vocab: int, block_size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, vocab, (n, BATCH, block_size + 1), generator=g)
    return [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]


def train_step(model, opt, x, y) -> None:
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ---- checks and timing --------------------------------------------------------------------------
def check_same_loss(ours, theirs, x, y, tol: float = 1e-5) -> float:
    with torch.no_grad():
        a = ours(x, y)[1].item()
        b = theirs(x, y)[1].item()
    if not math.isclose(a, b, rel_tol=0.0, abs_tol=tol):
        raise RuntimeError(f"the two models disagree before timing: loss ours {a:.7f}, nanoGPT {b:.7f}")
    return abs(a - b)


def one_run(nanogpt, args, run: int) -> dict:
    seed = args.seed + run
    # Odd runs swap every "who comes first" (allocation, warm-up, first round): with the same model
    # on both sides (an A/A test) this protocol still shows about 1-3 % between the two sides.
    first, second = ("ours", "nanoGPT") if run % 2 == 0 else ("nanoGPT", "ours")
    ours, theirs, n_params = build_models(nanogpt, args.vocab, args.gelu, seed, ours_first=first == "ours",
                                          control=args.control)
    n_batches = args.warmup + args.rounds * args.steps
    batches = make_batches(n_batches, args.vocab, BABY["block_size"], seed)
    diff = check_same_loss(ours, theirs, *batches[0])
    pairs = {"ours": (ours, make_optimizer(ours)), "nanoGPT": (theirs, make_optimizer(theirs))}
    models = {name: pairs[name] for name in (first, second)}
    times: dict[str, list[float]] = {name: [] for name in models}

    for name, (model, opt) in models.items():
        for x, y in batches[: args.warmup]:
            train_step(model, opt, x, y)
    for r in range(args.rounds):
        order = [first, second] if r % 2 == 0 else [second, first]
        chunk = batches[args.warmup + r * args.steps: args.warmup + (r + 1) * args.steps]
        for name in order:
            model, opt = models[name]
            gc.collect()
            for x, y in chunk:
                t0 = time.perf_counter()
                train_step(model, opt, x, y)
                times[name].append(time.perf_counter() - t0)

    # After identical updates on identical batches the two should still agree (to float rounding).
    x, y = batches[0]
    with torch.no_grad():
        drift = abs(ours(x, y)[1].item() - theirs(x, y)[1].item())
    tokens = BATCH * BABY["block_size"]
    out = {"run": run + 1, "first": first, "params": n_params, "loss_diff": diff, "drift": drift}
    for name, ts in times.items():
        ms = 1000 * statistics.median(ts)
        out[name] = {"ms": ms, "tok_s": tokens / (ms / 1000)}
    out["ratio"] = out["ours"]["tok_s"] / out["nanoGPT"]["tok_s"]
    return out


def phase_times(model, opt, batches, steps: int) -> dict[str, float]:
    """Median ms per step of forward+loss, zero_grad+backward and the AdamW step, timed separately."""
    fwd, bwd, upd = [], [], []
    for x, y in batches[:steps]:
        t0 = time.perf_counter()
        _, loss = model(x, y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        upd.append(t3 - t2)
    return {k: 1000 * statistics.median(v) for k, v in (("forward", fwd), ("backward", bwd), ("adamw", upd))}


def report_phases(nanogpt, args) -> None:
    ours, theirs, _ = build_models(nanogpt, args.vocab, args.gelu, args.seed)
    batches = make_batches(args.warmup + 100, args.vocab, BABY["block_size"], args.seed)
    models = {"ours": (ours, make_optimizer(ours)), "nanoGPT": (theirs, make_optimizer(theirs))}
    for model, opt in models.values():
        for x, y in batches[: args.warmup]:
            train_step(model, opt, x, y)
    acc = {name: {"forward": [], "backward": [], "adamw": []} for name in models}
    for r in range(10):  # interleaved, 10 rounds of 10 steps
        chunk = batches[args.warmup + 10 * r: args.warmup + 10 * (r + 1)]
        for name in (["ours", "nanoGPT"] if r % 2 == 0 else ["nanoGPT", "ours"]):
            for k, v in phase_times(*models[name], chunk, 10).items():
                acc[name][k].append(v)
    print("\nPhases (median over 10 interleaved blocks of 10 steps, ms per step):")
    print("| phase | ours | nanoGPT | ours - nanoGPT |")
    print("|---|---|---|---|")
    for k in ("forward", "backward", "adamw"):
        a, b = statistics.median(acc["ours"][k]), statistics.median(acc["nanoGPT"][k])
        print(f"| {k} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")


def report_profile(nanogpt, args, blocks: int = 10, steps: int = 5, rows: int = 30) -> None:
    """torch.profiler in interleaved blocks: per op, calls and median self-CPU ms per training step."""
    from torch.profiler import ProfilerActivity, profile

    ours, theirs, _ = build_models(nanogpt, args.vocab, args.gelu, args.seed)
    batches = make_batches(args.warmup + blocks * steps, args.vocab, BABY["block_size"], args.seed)
    models = {"ours": (ours, make_optimizer(ours)), "nanoGPT": (theirs, make_optimizer(theirs))}
    for model, opt in models.values():
        for x, y in batches[: args.warmup]:
            train_step(model, opt, x, y)
    self_ms = {name: {} for name in models}  # op -> [self-CPU ms per step, one per block]
    calls = {name: {} for name in models}  # op -> calls per step
    for b in range(blocks):
        chunk = batches[args.warmup + b * steps: args.warmup + (b + 1) * steps]
        for name in (["ours", "nanoGPT"] if b % 2 == 0 else ["nanoGPT", "ours"]):
            model, opt = models[name]
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for x, y in chunk:
                    train_step(model, opt, x, y)
            for ev in prof.key_averages():
                self_ms[name].setdefault(ev.key, []).append(ev.self_cpu_time_total / 1000 / steps)
                calls[name][ev.key] = ev.count / steps
    def med(name, op):
        v = self_ms[name].get(op, [])
        return statistics.median(v + [0.0] * (blocks - len(v))) if v else 0.0
    ops = sorted(set(self_ms["ours"]) | set(self_ms["nanoGPT"]),
                 key=lambda op: -max(med("ours", op), med("nanoGPT", op)))
    print(f"\nProfile (torch.profiler, {blocks} interleaved blocks of {steps} steps; self-CPU ms per step, "
          "median over blocks; the top ops and every op whose call count differs):")
    print("| op | calls/step ours | calls/step nanoGPT | ms/step ours | ms/step nanoGPT | ours - nanoGPT |")
    print("|---|---|---|---|---|---|")
    total = {name: sum(med(name, op) for op in ops) for name in models}
    for i, op in enumerate(ops):
        c_ours, c_nano = calls["ours"].get(op, 0), calls["nanoGPT"].get(op, 0)
        if i < rows or c_ours != c_nano:
            a, b = med("ours", op), med("nanoGPT", op)
            print(f"| {op} | {c_ours:g} | {c_nano:g} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
    print(f"| all ops (sum of medians) | | | {total['ours']:.2f} | {total['nanoGPT']:.2f} | "
          f"{total['ours'] - total['nanoGPT']:+.2f} |")


# ---- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", metavar="PATH/TO/model.py", help=f"nanoGPT's model.py ({CLONE_HINT})")
    parser.add_argument("--vocab", type=int, default=65, help="vocabulary size of both models (65: Shakespeare chars)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--runs", type=int, default=3, help="independent runs (fresh models and optimisers); 0: none")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per run")
    parser.add_argument("--steps", type=int, default=20, help="training steps per model per round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps of each model before a run")
    parser.add_argument("--gelu", choices=("tanh", "exact"), default="tanh",
                        help="tanh: nanoGPT gets our tanh GELU (same function); exact: nanoGPT as shipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--control", action="store_true",
                        help="A/A test: a second nanoGPT in our model's place (the method's own spread)")
    parser.add_argument("--phases", action="store_true", help="also time forward / backward / AdamW separately")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler tables for both")
    args = parser.parse_args()
    for name in ("vocab", "threads", "rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.runs < 0 or args.warmup < 0:
        parser.error("--runs and --warmup must be >= 0 (--runs 0: only --phases / --profile)")

    nanogpt = load_nanogpt(args.nanogpt)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"nanoGPT from {args.nanogpt}; GELU: {args.gelu}")
    if args.control:
        print("CONTROL (A/A): 'ours' below is a second copy of nanoGPT, not llmcourse's GPT")
    print(f"config: {BABY}, vocab {args.vocab}, batch {BATCH}; per run {args.warmup} warm-up steps, "
          f"{args.rounds} rounds x {args.steps} steps per model, interleaved")

    results = []
    for run in range(args.runs):
        res = one_run(nanogpt, args, run)
        results.append(res)
        print(f"run {res['run']} ({res['first']} first): {res['params']:,} parameters each; loss check |ours - nanoGPT| = "
              f"{res['loss_diff']:.1e} (<= 1e-5 OK), after training {res['drift']:.1e}; "
              f"ours {res['ours']['ms']:.2f} ms/step, nanoGPT {res['nanoGPT']['ms']:.2f} ms/step, "
              f"ratio {res['ratio']:.3f}", flush=True)

    ratios = [r["ratio"] for r in results]
    if results:
        print_table(results, ratios)
    if args.phases:
        report_phases(nanogpt, args)
    if args.profile:
        report_profile(nanogpt, args)


def print_table(results: list[dict], ratios: list[float]) -> None:
    print("\n| run (first) | llmcourse GPT | nanoGPT | ratio ours/nanoGPT (tok/s) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} ({r['first']}) | {r['ours']['ms']:.2f} ms/step, {r['ours']['tok_s']:,.0f} tok/s "
              f"| {r['nanoGPT']['ms']:.2f} ms/step, {r['nanoGPT']['tok_s']:,.0f} tok/s | {r['ratio']:.3f}x |")
    print(f"| median | | | **{statistics.median(ratios):.3f}x** |")
    print(f"\nratios: {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
