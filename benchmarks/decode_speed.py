"""Decoding speed: tokens per second generating new tokens with the model's cache and without it.

    python benchmarks/decode_speed.py                 # 256 new tokens after a 64-token prompt, 2 threads
    python benchmarks/decode_speed.py --repeats 5 --new 256 --prompt 64 --threads 2

Models: the baby GPT (4 layers, 4 heads, 128 wide, block_size 320 = prompt + 256, so the cache never
has to restart) and the book's LSTM (64-wide embeddings, 128 hidden units), both with the book's
3,724-character vocabulary and random weights (speed does not depend on what the weights learnt).
Greedy decoding, one sequence: ``use_cache=True`` feeds one token per step (the GPT keeps its keys and
values, the LSTM its state); ``use_cache=False`` re-reads the whole context at every step.

The two are interleaved (cached, uncached, cached, ...) so that a slow phase of the machine hits both,
repeated ``--repeats`` times; the table gives the median tokens per second of each and the ratio of the
medians. Both must produce the same tokens, which the script checks. Timings are measured here, never
asserted in tests.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from llmcourse.generate import greedy
from llmcourse.models import GPT, LSTMLM, GPTConfig


def tokens_per_second(model, prompt: torch.Tensor, new: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = greedy(model, prompt, new, use_cache=use_cache)
    return new / (time.perf_counter() - start), out


def measure(name: str, model, prompt: torch.Tensor, new: int, repeats: int) -> dict:
    greedy(model, prompt, 8, use_cache=True)  # warm-up: first calls allocate memory and pick kernels
    greedy(model, prompt, 8, use_cache=False)
    speeds = {True: [], False: []}
    outputs = {}
    for _ in range(repeats):
        for use_cache in (True, False):  # interleaved
            speed, outputs[use_cache] = tokens_per_second(model, prompt, new, use_cache)
            speeds[use_cache].append(speed)
    if not torch.equal(outputs[True], outputs[False]):
        raise AssertionError(f"{name}: cached and uncached decoding gave different tokens")
    cached, uncached = statistics.median(speeds[True]), statistics.median(speeds[False])
    return dict(model=name, cached=cached, uncached=uncached, ratio=cached / uncached,
                runs_cached=speeds[True], runs_uncached=speeds[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", type=int, default=256, help="new tokens per generation")
    parser.add_argument("--prompt", type=int, default=64, help="prompt length")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (>= 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=3724, help="vocabulary (3,724 = the book's characters)")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be >= 3: the median of fewer runs is not robust")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prompt = torch.randint(0, args.vocab, (1, args.prompt))
    gpt = GPT(GPTConfig(vocab_size=args.vocab, block_size=args.prompt + args.new, n_layer=4, n_head=4, n_embd=128))
    lstm = LSTMLM(args.vocab, emb_dim=64, hidden_size=128)
    rows = [measure("GPT (4 layers, 4 heads, 128 wide)", gpt.eval(), prompt, args.new, args.repeats),
            measure("LSTM (64 emb, 128 hidden)", lstm.eval(), prompt, args.new, args.repeats)]

    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}; "
          f"prompt {args.prompt}, {args.new} new tokens, greedy, batch 1, median of {args.repeats} interleaved runs")
    print("| model | uncached tok/s | cached tok/s | cached / uncached |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['uncached']:,.0f} | {r['cached']:,.0f} | {r['ratio']:.1f}x |")
    for r in rows:
        runs = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)  # noqa: E731
        print(f"{r['model']}: cached runs {runs(r['runs_cached'])}; uncached runs {runs(r['runs_uncached'])}")


if __name__ == "__main__":
    main()
