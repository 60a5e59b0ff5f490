"""Drawing tokens: ``torch.multinomial`` against inverse-CDF draws (``generate.draw_inverse_cdf``).

    python benchmarks/sampling_draws.py                  # 2 threads, 5 interleaved repeats
    python benchmarks/sampling_draws.py --threads 1 --repeats 3

Two measurements, each interleaved (multinomial, inverse CDF, multinomial, ...) so that a slow phase of
the machine hits both, with the median and range of the repeats:

1. one draw per row from ``probs`` (rows, V) at V = 3,724 (the book's characters), for 512 and 4,096 rows;
2. the whole best-of-n pool of chapter 11: ``rlhf.sample_responses`` with the shipped chapter-6 GPT,
   8 x 512 responses of 31 tokens, with ``draw="multinomial"`` and ``draw="inverse_cdf"``.

``torch.multinomial(probs, 1)`` draws one exponential number per entry and takes the argmax of p / E;
the inverse CDF draws one uniform number per row and searches the cumulative sums. The script also
checks that both give the same distribution (a frequency test on 200,000 draws). Timings are measured
here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from llmcourse.book import pretrained
from llmcourse.chapters import rlhf
from llmcourse.data.tokenizers import EOS_ID
from llmcourse.generate import draw_inverse_cdf


def multinomial(probs, generator):
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def interleaved(runs: dict, repeats: int) -> dict:
    """Seconds of each of ``runs`` (name -> callable), ``repeats`` rounds, the order rotated per round."""
    names = list(runs)
    for name in names:
        runs[name]()  # warm-up
    seconds = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def report(title: str, seconds: dict) -> None:
    print(title)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    for name, s in seconds.items():
        print(f"  {name:<14} median {1000 * med[name]:9.1f} ms  (range {1000 * min(s):.1f}-{1000 * max(s):.1f})")
    print(f"  multinomial / inverse CDF: {med['multinomial'] / med['inverse_cdf']:.1f}x")


def same_distribution() -> None:
    p = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05])
    n = 200_000
    for name, draw in (("multinomial", multinomial), ("inverse_cdf", draw_inverse_cdf)):
        freq = torch.bincount(draw(p.expand(n, -1), torch.Generator().manual_seed(0)), minlength=5) / n
        worst = float(((freq - p).abs() / (p * (1 - p) / n).sqrt().clamp_min(1e-12)).max())
        print(f"  {name}: frequencies {[round(f, 4) for f in freq.tolist()]}, worst {worst:.1f} standard errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("same distribution (p = 0.5, 0, 0.3, 0.15, 0.05):")
    same_distribution()
    V = 3724
    for rows in (512, 4096):
        probs = torch.randn(rows, V, generator=torch.Generator().manual_seed(0)).softmax(-1)
        g = torch.Generator().manual_seed(1)
        report(f"one draw per row, ({rows}, {V}):",
               interleaved({"multinomial": lambda: multinomial(probs, g),
                            "inverse_cdf": lambda: draw_inverse_cdf(probs, g)}, args.repeats))
    gpt = pretrained.load("gpt-reviews").model.eval()

    def pool(draw):
        return lambda: rlhf.sample_responses(gpt, [EOS_ID], 8 * 512, 31, EOS_ID, torch.Generator().manual_seed(2),
                                             draw=draw)

    report("chapter 11's best-of-n pool (8 x 512 responses of 31 tokens, the shipped GPT):",
           interleaved({"multinomial": pool("multinomial"), "inverse_cdf": pool("inverse_cdf")},
                       max(1, args.repeats // 2)))


if __name__ == "__main__":
    main()
