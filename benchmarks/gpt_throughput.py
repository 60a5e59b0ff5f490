"""GPT training throughput: llmcourse's GPT against Hugging Face GPT-2 at the same configuration.

    python benchmarks/gpt_throughput.py              # CPU config: 4 layers, 4 heads, 128 wide, ctx 64, batch 12
    python benchmarks/gpt_throughput.py --gpt2-small --peak-tflops 989   # GPT-2 small (124M) on a GPU
    python benchmarks/gpt_throughput.py --gpt2-small --compile --peak-tflops 65  # e.g. a T4 (fp16 peak)

Both models get identical weights (converted with ``gpt_to_hf``), the same batches and AdamW (fused
on CUDA). On CUDA the step runs in the mixed precision that ``llmcourse.train`` chooses
(``amp_dtype``: bf16 autocast on Ampere and newer, fp16 autocast with a ``GradScaler`` on older
GPUs such as the T4); on a CPU in float32. The script reports ms per training step (median),
tokens per second and, on CUDA, the peak memory allocated (``torch.cuda.max_memory_allocated``, per
model) and the model FLOPs utilisation: (6·N + 12·layers·width·context) FLOPs per token times
tokens per second, over the GPU's dense peak for that type, which you give with ``--peak-tflops``
(the script cannot know it; without it MFU is reported as null). Timings are measured here, never
asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from llmcourse.core import precision
from llmcourse.models import GPT, GPTConfig, gpt_to_hf


def step_fn(model, opt, x, y, device, hf: bool):
    """One training step as llmcourse.train makes it with amp=True: autocast in amp_dtype(device), and
    for float16 the loss scaled by a GradScaler (unscaled before the step, as train unscales before clipping)."""
    dtype = precision.amp_dtype(device)
    scaler = precision.grad_scaler(dtype, device)

    def step():
        with precision.autocast(dtype, device):
            loss = model(x, labels=x).loss if hf else model(x, y)[1]
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
    return step


def time_steps(step, device, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt2-small", action="store_true", help="GPT-2 small config (for a GPU)")
    parser.add_argument("--vocab", type=int, default=3724, help="CPU config vocabulary (65 = nanoGPT's Shakespeare chars)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense peak TFLOP/s in the type used (bf16 or fp16), for MFU; e.g. H100 SXM "
                             "bf16 989, A100 bf16 312, T4 fp16 65 (the vendors' figures)")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.gpt2_small:
        cfg, batch = GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768), 8
    else:
        cfg, batch = GPTConfig(vocab_size=args.vocab, block_size=64, n_layer=4, n_head=4, n_embd=128), 12
    torch.manual_seed(0)
    ours = GPT(cfg).to(device)
    theirs = gpt_to_hf(ours).to(device)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=device)
    y = torch.roll(x, -1, dims=1)
    fused = device.type == "cuda"
    results = {}
    candidates = [("llmcourse GPT", ours, False), ("HF GPT2LMHeadModel", theirs, True)]
    if args.compile:
        candidates.append(("llmcourse GPT + torch.compile", torch.compile(ours), False))
    for name, model, hf in candidates:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=fused)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)  # per model: the previous one's peak does not count
        times = time_steps(step_fn(model, opt, x, y, device, hf), device, args.warmup, args.steps)
        ms = 1000 * statistics.median(times)
        tokens_per_s = batch * cfg.block_size / (ms / 1000)
        row = {"ms_per_step": round(ms, 1), "tokens_per_s": round(tokens_per_s)}
        if device.type == "cuda":
            row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            flops_per_token = 6 * ours.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
            row["mfu"] = (round(flops_per_token * tokens_per_s / (args.peak_tflops * 1e12), 4)
                          if args.peak_tflops else None)
        results[name] = row
    dtype = precision.amp_dtype(device)
    print(json.dumps({"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                      "dtype": str(dtype or torch.float32).removeprefix("torch."),
                      "loss_scaling": dtype == torch.float16, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "config": vars(cfg) | {"batch": batch},
                      "peak_tflops": args.peak_tflops, "results": results}, indent=1))


if __name__ == "__main__":
    main()
