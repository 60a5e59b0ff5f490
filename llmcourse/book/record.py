"""Execute chapter notebooks the way their stored outputs are meant to be made.

    python -m llmcourse.book.record notebooks/06_transformer_gpt.ipynb    # one chapter, in place
    python -m llmcourse.book.record --all                                 # every chapter, in place
    python -m llmcourse.book.record --all --out /tmp/avx2 --cpu-capability avx2   # a stand-in path

**The recording path** is fixed: one torch thread, the CPU's own kernels, the default (``small``)
preset, a fresh kernel per notebook. The stored outputs are what nbval compares against, so they all
come from one path, and the notebook's metadata says which (``metadata.llmcourse.recorded_with``).
With ``--out`` the executed copies go to another folder and ``--threads`` / ``--cpu-capability``
choose another numerical path: that is how the reproducibility report measures how far the numbers
move (``llmcourse.book.reproducibility``). Runs with ``--out`` write the running perplexity table to
a scratch copy, so the shipped table keeps the recorded numbers.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import nbformat

from llmcourse.book.results import RESULTS_ENV, results_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
RECORDING_THREADS = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def chapter_notebooks() -> list[pathlib.Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def kernel_env(threads: int, cpu_capability: str | None, results: pathlib.Path | None,
               mkl_cbwr: str | None = None, openblas_coretype: str | None = None) -> dict:
    """The environment a chapter's kernel runs in: thread count, torch's CPU kernels
    (``ATEN_CPU_CAPABILITY``), MKL's matrix-multiply code path (``MKL_CBWR``, torch's BLAS), OpenBLAS's
    kernels (``OPENBLAS_CORETYPE``, numpy's BLAS: chapters 1, 3 and 4), results table."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    for name, value in (("ATEN_CPU_CAPABILITY", cpu_capability), ("MKL_CBWR", mkl_cbwr),
                        ("OPENBLAS_CORETYPE", openblas_coretype)):
        env.pop(name, None)
        if value:
            env[name] = value
    env.pop("LLMCOURSE_PRESET", None)  # stored outputs are always the default preset
    if results is not None:
        env[RESULTS_ENV] = str(results)
    else:
        env.pop(RESULTS_ENV, None)
    return env


def numerical_path(env: dict) -> dict:
    """torch version and the CPU kernels torch actually uses under ``env`` (asked in a subprocess)."""
    code = "import torch; print(torch.__version__); print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    version, capability = out.stdout.split()
    return {"torch": version, "cpu_capability": capability, "mkl_cbwr": env.get("MKL_CBWR", "native"),
            "openblas_coretype": env.get("OPENBLAS_CORETYPE", "native"), "threads": int(env["OMP_NUM_THREADS"]),
            "machine": platform.machine(), "cpu": cpu_model(), "python": platform.python_version()}


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the architecture where the OS does not say."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def execute(path: pathlib.Path, target: pathlib.Path, env: dict, path_info: dict, timeout: int) -> float:
    """Run ``path`` top to bottom in a fresh kernel, write the executed notebook to ``target``
    atomically, and return the wall time in seconds. A cell that raises stops it: nothing is written."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - start
    stderr_cells = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                    for out in cell.get("outputs", []) if out.get("name") == "stderr"]
    if stderr_cells:
        raise RuntimeError(f"{path.name}: cells {sorted(set(stderr_cells))} wrote to stderr; the stored "
                           "outputs must not hold log lines or warnings (see CONTRIBUTING.md)")
    nb.metadata["llmcourse"] = {"recorded_with": dict(path_info, seconds=round(seconds, 1))}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".ipynb.tmp")
    os.close(fd)
    nbformat.write(nb, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return seconds


def run(paths, out: pathlib.Path | None = None, threads: int = RECORDING_THREADS,
        cpu_capability: str | None = None, jobs: int = 1, timeout: int = 1200,
        mkl_cbwr: str | None = None, openblas_coretype: str | None = None) -> dict[str, float]:
    """Execute ``paths`` (in place, or into ``out``), ``jobs`` at a time; returns seconds per notebook."""
    paths = [pathlib.Path(p).resolve() for p in paths]
    for p in paths:
        if not p.is_file() or p.suffix != ".ipynb":
            raise FileNotFoundError(f"{p}: not a notebook file (expected notebooks/NN_name.ipynb)")
    if out is None and (threads != RECORDING_THREADS or cpu_capability or mkl_cbwr or openblas_coretype):
        raise ValueError("in-place recording uses the recording path (1 thread, native kernels); "
                         "pass --out DIR to execute on another path")
    scratch = None
    if out is not None:
        out = pathlib.Path(out)
        out.mkdir(parents=True, exist_ok=True)
        scratch = out / "perplexity.json"
        shutil.copyfile(results_file(), scratch)
    env = kernel_env(threads, cpu_capability, scratch, mkl_cbwr, openblas_coretype)
    info = numerical_path(env)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {p.name: pool.submit(execute, p, (out / p.name) if out else p, env, info, timeout)
                   for p in paths}
        seconds = {}
        for name, future in futures.items():
            seconds[name] = future.result()
            print(f"{name}: {seconds[name]:.0f} s ({info['cpu_capability']}, {info['threads']} thread(s))",
                  flush=True)
    if out is not None:
        (out / "path.json").write_text(json.dumps(dict(info, seconds=seconds), indent=1) + "\n")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.book.record", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help="chapter notebooks (default with --all: every chapter)")
    parser.add_argument("--all", action="store_true", help="every chapter in notebooks/")
    parser.add_argument("--out", type=pathlib.Path, help="write executed copies here instead of in place")
    parser.add_argument("--threads", type=int, default=RECORDING_THREADS, help="torch threads (only with --out)")
    parser.add_argument("--cpu-capability", help="ATEN_CPU_CAPABILITY: default, avx2, avx512 (only with --out)")
    parser.add_argument("--mkl-cbwr", help="MKL_CBWR: MKL's code path for matrix products, e.g. AVX2 (only with --out)")
    parser.add_argument("--openblas-coretype", help="OPENBLAS_CORETYPE: numpy's OpenBLAS kernels, e.g. Haswell "
                        "(only with --out)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks executed at the same time")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = chapter_notebooks() if args.all else args.notebooks
    if not paths:
        parser.error("name the notebooks to execute, or pass --all")
    run(paths, args.out, args.threads, args.cpu_capability, args.jobs, args.timeout, args.mkl_cbwr,
        args.openblas_coretype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
