"""How far the book's numbers move on other numerical paths, and the tolerances sized from that
(可复现性报告).

    python -m llmcourse.book.reproducibility run [NOTEBOOK ...]   # execute on every stand-in path,
                                                                 # then measure and report
    python -m llmcourse.book.reproducibility measure --runs DIR   # measure executions already made
    python -m llmcourse.book.reproducibility report               # rewrite book/execution-report.md

A *stand-in path* is a way of running the same notebook that changes the floating-point arithmetic
the way another machine would: torch's AVX2 or scalar (``default``) CPU kernels instead of the
recording's, or two threads instead of one. Each chapter is executed on each path
(:mod:`llmcourse.book.record` with ``--out``), and every number of every output is compared with
the stored one. A cell whose numbers moved by more than the last printed digit on some path is a
*trained or sampled result*; its tolerance is :data:`MULTIPLE` times the largest movement seen,
relative for numbers of magnitude >= 1 (perplexities, counts), absolute for smaller ones
(probabilities, accuracies, losses per token). Every other cell keeps the closed-form tolerance
(the printed precision). The result is ``notebooks/tolerances.json``, which nbval reads, and the
report page ``book/execution-report.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import tempfile

import nbformat

from llmcourse.book import record
from llmcourse.book.nbval_plugin import coalesced, flatten
from llmcourse.book.numeric_compare import split_numbers

ROOT = record.ROOT
TOLERANCES_FILE = ROOT / "notebooks" / "tolerances.json"
REPORT_PAGE = ROOT / "book" / "execution-report.md"
MULTIPLE = 3
# The stand-in paths: name -> how record.run executes it. "avx2" is what an AVX2-only CPU computes
# (torch's kernels and MKL's matrix products); "scalar" is torch's scalar kernels (the issue's
# ATEN_CPU_CAPABILITY=default); "2 threads" sums in another order; "native" is this machine's own
# path on one thread: on the recording machine it repeats the recording bit for bit, on any other it
# measures the difference between the two CPUs (CI on another CPU once found a chaotic run that the
# three stand-ins had not moved as far).
PATHS = {
    "native": {"threads": 1, "cpu_capability": None, "mkl_cbwr": None, "openblas_coretype": None},
    "avx2": {"threads": 1, "cpu_capability": "avx2", "mkl_cbwr": "AVX2", "openblas_coretype": "Haswell"},
    "scalar": {"threads": 1, "cpu_capability": "default", "mkl_cbwr": None, "openblas_coretype": None},
    "2 threads": {"threads": 2, "cpu_capability": None, "mkl_cbwr": None, "openblas_coretype": None},
}
PATH_KEYS = ("torch", "cpu_capability", "mkl_cbwr", "openblas_coretype", "threads", "machine", "cpu")
# What nbval does not compare (nbval.plugin's skip list, images included).
NOT_COMPARED = ("metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg")
IGNORED = re.compile(r"^\s*#\s*NBVAL_(IGNORE_OUTPUT|SKIP)\s*$", re.MULTILINE)
# Glued values that come from a cell nbval does not compare: wall-clock results that no other machine
# reproduces, which the prose gives as measured "on the machine that built this page". Every other
# glued value is printed by a compared cell (tests/test_reproducibility.py).
UNCOMPARED_GLUE = {
    "10_engineering.ipynb": {"ch10_noise_pct", "ch10_faster", "ch10_slower", "ch10_within", "ch10_v_"},
}


def _flat(cell) -> dict[str, list]:
    """A cell's compared outputs as nbval flattens them: ``{stream name or MIME type: [values]}``."""
    return flatten(coalesced(cell.get("outputs", [])), NOT_COMPARED, lambda value: value)


def cell_movement(stored, executed) -> dict:
    """How far each number of one cell moved: ``{"changes": {key: [[change of number i] per output]},
    "text_changed": reason or None}``. A change within one unit of the last printed digit counts as 0
    (that much is the closed-form tolerance); an output whose text changed has ``None``."""
    a, b = _flat(stored), _flat(executed)
    if {k: len(v) for k, v in a.items()} != {k: len(v) for k, v in b.items()}:
        return {"changes": {}, "text_changed": "the kinds or number of outputs differ"}
    changes, text_changed = {}, None
    for key in a:
        changes[key] = []
        for x, y in zip(a[key], b[key]):
            if not (isinstance(x, str) and isinstance(y, str)):
                changes[key].append([] if x == y else None)
                continue
            (x_template, x_numbers), (y_template, y_numbers) = split_numbers(x), split_numbers(y)
            if x_template != y_template:
                text_changed = f"{key}: the text around the numbers changed"
                changes[key].append(None)
                continue
            changes[key].append([0.0 if abs(u.value - v.value) <= min(u.unit, v.unit) * (1 + 1e-12)
                                 else abs(u.value - v.value) for u, v in zip(x_numbers, y_numbers)])
    return {"changes": changes, "text_changed": text_changed}


def compared_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and c.get("outputs") and not IGNORED.search(c.source)]


def _summary(values: list, changes: list, integer: list) -> dict:
    """Largest relative change (|x| >= 1), largest absolute change (|x| < 1), whether an integer moved."""
    rel = [d / abs(x) for x, d in zip(values, changes) if abs(x) >= 1]
    abs_ = [d for x, d in zip(values, changes) if abs(x) < 1]
    return {"rel": _round(max(rel, default=0.0)), "abs": _round(max(abs_, default=0.0)),
            "integers": any(d > 0 for d, i in zip(changes, integer) if i)}


def cell_tolerance(cell, movements: dict[str, dict]) -> dict | None:
    """The tolerance of one cell from its movements on each path, or None if no number moved.

    Each number may move by MULTIPLE times the larger of its own largest change and the median change
    of the cell's moving numbers (relative for |x| >= 1, absolute below): a number that happened to
    hold still on every path in a cell whose neighbours moved still gets room to move."""
    stored = _flat(cell)
    numbers = {key: [split_numbers(v)[1] if isinstance(v, str) else [] for v in values]
               for key, values in stored.items()}
    largest = {key: [[0.0] * len(nums) for nums in outputs] for key, outputs in numbers.items()}
    for move in movements.values():
        for key, outputs in move["changes"].items():
            for j, changes in enumerate(outputs):
                for i, d in enumerate(changes or []):
                    largest[key][j][i] = max(largest[key][j][i], d)
    flat = [(n, largest[key][j][i]) for key, outputs in numbers.items()
            for j, nums in enumerate(outputs) for i, n in enumerate(nums)]
    moved = [(n, d) for n, d in flat if d > 0]
    if not moved:
        return None
    rel_floor = _median([d / abs(n.value) for n, d in moved if abs(n.value) >= 1])
    abs_floor = _median([d for n, d in moved if abs(n.value) < 1])

    def slack(n, d):
        floor = rel_floor * abs(n.value) if abs(n.value) >= 1 else abs_floor
        return _round(MULTIPLE * max(d, floor))

    slacks = {key: [[slack(n, largest[key][j][i]) for i, n in enumerate(nums)] for j, nums in enumerate(outputs)]
              for key, outputs in numbers.items()}
    every = [(n, slacks[key][j][i]) for key, outputs in numbers.items()
             for j, nums in enumerate(outputs) for i, n in enumerate(nums)]
    return {
        "rel": _round(max([s / abs(n.value) for n, s in every if abs(n.value) >= 1], default=1e-6)),
        "abs": _round(max([s for n, s in every if abs(n.value) < 1], default=0.0)),
        "integers": any(n.is_integer for n, _ in moved),
        "why": f"trained or sampled: {MULTIPLE} x the largest change measured on {len(movements)} paths",
        "slack": slacks,
    }


def _median(values: list) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def measure_notebook(stored_path: pathlib.Path, runs: dict[str, pathlib.Path]) -> dict:
    """Movements of every compared cell of one notebook on each path, and the tolerances they imply."""
    stored = nbformat.read(stored_path, as_version=4)
    executed = {name: nbformat.read(folder / stored_path.name, as_version=4) for name, folder in runs.items()}
    # Cells are numbered as nbval numbers them (code cells only), so "::Cell 12" is cell 12 here.
    index = {c.id: i for i, c in enumerate(c for c in stored.cells if c.cell_type == "code")}
    cells, text_changed = {}, {}
    largest = {name: {"rel": 0.0, "abs": 0.0} for name in runs}
    for cell in compared_cells(stored):
        movements = {}
        for name, nb in executed.items():
            twin = next((c for c in nb.cells if c.get("id") == cell.id), None)
            if twin is None or twin.source != cell.source:
                continue  # another version of the notebook (an earlier recording): not comparable
            movements[name] = cell_movement(cell, twin)
            if movements[name]["text_changed"]:
                text_changed.setdefault(cell.id, []).append(name)
        tolerance = cell_tolerance(cell, movements)
        if tolerance is None:
            continue
        per_path = {}
        for name, move in movements.items():
            values, changes, integer = [], [], []
            for key, outputs in move["changes"].items():
                for j, output_changes in enumerate(outputs):
                    text = _flat(cell)[key][j]
                    if output_changes and isinstance(text, str):
                        nums = split_numbers(text)[1]
                        values += [n.value for n in nums]
                        integer += [n.is_integer for n in nums]
                        changes += output_changes
            summary = _summary(values, changes, integer)
            if summary["rel"] or summary["abs"] or summary["integers"]:
                per_path[name] = summary
                for k in ("rel", "abs"):
                    largest[name][k] = max(largest[name][k], summary[k])
        cells[cell.id] = {"index": index[cell.id], "moved": per_path, "tolerance": tolerance}
    seconds = {name: nb.metadata.get("llmcourse", {}).get("recorded_with", {}).get("seconds")
               for name, nb in executed.items()}
    return {"compared_cells": len(compared_cells(stored)), "cells": cells, "text_changed": text_changed,
            "largest": {name: {k: _round(v) for k, v in m.items()} for name, m in largest.items()},
            "seconds": seconds}


def _round(x):
    return float(f"{x:.3g}") if isinstance(x, float) else x


def measure(runs: dict[str, pathlib.Path], notebooks=None, path: pathlib.Path = TOLERANCES_FILE) -> dict:
    """Measure ``notebooks`` (default: all) against executions in ``runs`` and update ``path``."""
    notebooks = [pathlib.Path(p) for p in (notebooks or record.chapter_notebooks())]
    spec = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    spec.update({
        "about": "Tolerances for nbval's number-aware comparison, sized from measurement by "
                 "`python -m llmcourse.book.reproducibility run`; see llmcourse/book/reproducibility.py.",
        "multiple": MULTIPLE,
    })
    spec.setdefault("paths", {})
    spec.setdefault("notebooks", {})
    for name, folder in runs.items():
        info = json.loads((pathlib.Path(folder) / "path.json").read_text())
        spec["paths"][name] = {k: info.get(k, "not recorded" if k == "cpu" else "native") for k in PATH_KEYS}
    for nb in notebooks:
        # Each notebook keeps the paths it was measured on: a later run of other chapters on changed
        # paths must not make an older measurement look as if it had been made there.
        spec["notebooks"][nb.name] = dict(measure_notebook(nb, runs),
                                          measured_on={name: spec["paths"][name] for name in runs})
    spec["notebooks"] = dict(sorted(spec["notebooks"].items()))
    _write(path, json.dumps(spec, indent=1, ensure_ascii=False) + "\n")
    return spec


def _write(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def run(notebooks=None, out: pathlib.Path | None = None, jobs: int = 2) -> dict:
    """Execute ``notebooks`` on every path of :data:`PATHS` into ``out``, then measure and report."""
    notebooks = [pathlib.Path(p) for p in (notebooks or record.chapter_notebooks())]
    out = pathlib.Path(out or tempfile.mkdtemp(prefix="llmcourse-repro-"))
    runs = {}
    for name, how in PATHS.items():
        folder = out / name.replace(" ", "-")
        # Two threads already fill both cores: run those notebooks one at a time.
        record.run(notebooks, folder, how["threads"], how["cpu_capability"],
                   jobs=1 if how["threads"] > 1 else jobs, mkl_cbwr=how["mkl_cbwr"],
                   openblas_coretype=how["openblas_coretype"])
        runs[name] = folder
    spec = measure(runs, notebooks)
    write_report(spec)
    return spec


# ---- the report page ---------------------------------------------------------------------------------
def _pct(x) -> str:
    if not x:
        return "0"
    return f"{100 * x:.0f} %" if x >= 0.1 else f"{100 * x:.2g} %"


def _per_number(entry: dict) -> tuple[list, list]:
    """Each measured number's tolerance: relative (|x| >= 1) and absolute (|x| < 1) lists."""
    rel, abs_ = [], []
    cells = {c.id: c for c in nbformat.read(record.NOTEBOOKS / entry["notebook"], as_version=4).cells}
    for cell_id, cell in entry["cells"].items():
        flat = _flat(cells[cell_id])
        for key, outputs in cell["tolerance"]["slack"].items():
            for j, slacks in enumerate(outputs):
                text = flat[key][j]
                for number, slack in zip(split_numbers(text)[1] if isinstance(text, str) else [], slacks):
                    if number.is_integer and not cell["tolerance"]["integers"]:
                        continue
                    if abs(number.value) >= 1:
                        rel.append(slack / abs(number.value))
                    else:
                        abs_.append(slack)
    return rel, abs_


def _seconds(x) -> str:
    return "–" if x is None else f"{x:.0f}"


def _recording(notebook: str) -> dict:
    return nbformat.read(record.NOTEBOOKS / notebook, as_version=4).metadata.get("llmcourse", {}).get(
        "recorded_with", {})


def _how_far(entry: dict) -> str:
    """A chapter's class: closed form only, small movements, or movements the size of a new seed."""
    tols = [c["tolerance"] for c in entry["cells"].values()]
    if not tols:
        return "last printed digit"
    worst_rel = max(m["rel"] for m in entry["largest"].values())
    worst_abs = max(m["abs"] for m in entry["largest"].values())
    return "small (< 1 %)" if worst_rel < 0.01 and worst_abs < 0.01 else "like a change of seed"


def report_text(spec: dict) -> str:
    """The execution and reproducibility report (Markdown), from ``notebooks/tolerances.json``."""
    notebooks = spec["notebooks"]
    # Each chapter names the paths it was measured on; a path's name can mean other kernels on another CPU.
    paths = list(dict.fromkeys(n for e in notebooks.values() for n in e.get("measured_on", {})))
    recordings = {nb: _recording(nb) for nb in notebooks}
    by_capability = {}
    for nb, rec in recordings.items():
        by_capability.setdefault(rec.get("cpu_capability", "?"), []).append(nb)
    lines = [
        "# Execution and reproducibility report (执行与可复现性报告)",
        "",
        "Every number this book states is read from the stored outputs of its chapter notebooks, and the",
        "tests re-execute every notebook and compare those outputs again. Bit-for-bit equality only holds on",
        "one CPU at one thread count, so the comparison is *number-aware*: the text around the numbers must",
        "match exactly, counts and other deterministic integers exactly, closed-form results to their printed",
        "precision, and trained or sampled results within a tolerance **sized from measurement** on this page.",
        "The page is generated (`make tolerances`, i.e. `python -m llmcourse.book.reproducibility run`) from",
        "`notebooks/tolerances.json`, the file the tests read.",
        "",
        "## How the stored outputs were made",
        "",
        "`make record` (`python -m llmcourse.book.record --all`) executes each chapter top to bottom in a",
        "fresh kernel with the default `small` preset, on one torch thread with the CPU's own kernels, and",
        "stores the outputs; each notebook's metadata records the environment (the table of the next section).",
        "On that machine a second run repeats them bit for bit.",
        "To see how far the numbers depend on that path, every chapter was also run on these paths, each of",
        "which changes the floating-point arithmetic the way another machine does:",
        "",
        "| path | CPU | torch CPU kernels | MKL code path (torch) | OpenBLAS kernels (numpy) | threads | torch | chapters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += _path_rows(notebooks)
    lines += _test_path_text(by_capability)
    lines += [
        "OpenBLAS is numpy's BLAS; only chapters 1, 3 and 4 multiply numpy matrices (torch uses MKL).",
        "",
        "## The last verified run of each chapter",
        "",
        "Each chapter's stored outputs, the environment they were recorded in, and the paths on which the",
        "measurement above re-executed it: a chapter passes nbval on a path when it runs without error and",
        "every compared cell keeps its text and its numbers within tolerance (the tolerances are sized from these",
        "runs, so only a changed text can fail there). The device is the CPU throughout; no GPU is needed.",
        "",
        "| chapter | preset | device | torch | CPU | CPU kernels | threads | python | re-executed on | nbval on those paths |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for notebook, entry in notebooks.items():
        rec = recordings[notebook]
        on = [n for n in paths if n in entry["seconds"] or n in entry.get("largest", {})]
        status = ("passes" if not entry["text_changed"] else
                  "text changed in cells " + ", ".join(str(_cell_index(notebook, c)) for c in entry["text_changed"]))
        lines.append(f"| {notebook} | small | cpu | {rec.get('torch', '?')} | {rec.get('cpu', 'not recorded')} | "
                     f"{rec.get('cpu_capability', '?')} | {rec.get('threads', '?')} | {rec.get('python', '?')} | "
                     f"{', '.join(on) or '–'} | {status} |")
    lines += [
        "",
        "## Execution times",
        "",
        "Seconds to execute each chapter with the default preset, kernel start included, on the recording",
        "machine. On `2 threads` a chapter runs alone on 2 cores: that column is the one to hold against the",
        "book's budget of about 90 s per chapter on 2 cores. The one-thread columns ran two chapters at a time.",
        "",
    ]
    timed = [n for n in paths if any(e["seconds"].get(n) for e in notebooks.values())]
    if "previous machine" in timed:
        lines[-1:] = ["A `previous machine` column is that machine's own recording (one thread, alone).", ""]
    lines += ["| chapter | recording (s) | " + " | ".join(f"{n} (s)" for n in timed) + " |",
              "|---|---|" + "---|" * len(timed)]
    for notebook, entry in notebooks.items():
        lines.append(f"| {notebook} | {_seconds(recordings[notebook].get('seconds'))} | "
                     + " | ".join(_seconds(entry["seconds"].get(n)) for n in timed) + " |")
    lines += [
        "",
        "## How far the numbers moved",
        "",
        "For each chapter: the code cells whose outputs are compared, how many of them hold numbers that moved",
        "by more than their last printed digit on some path (trained or sampled results), and the largest",
        "movement on each path: relative for numbers of magnitude 1 or more (perplexities, counts), absolute",
        "for smaller ones (probabilities, accuracies, losses per token). Each such cell's tolerance is",
        f"**{spec['multiple']} times** the largest movement measured for it on any path: each number of the cell",
        "gets its own, at least the median movement of the cell's moving numbers, so that one volatile column",
        "does not loosen a whole table. Every other cell keeps the closed-form tolerance. Sampled text",
        "(generated reviews) is shown in cells of its own that are not compared; the numbers computed from",
        "it are.",
        "",
        "| chapter | compared cells | with a measured tolerance | " + " | ".join(
            f"{n}: rel / abs" for n in paths) + " | tolerance per number, median (largest): rel / abs "
        "| the numbers move |",
        "|---|---|---|" + "---|" * (len(paths) + 2),
    ]
    for notebook, entry in notebooks.items():
        rel, abs_ = _per_number(dict(entry, notebook=notebook))
        spread = (f"{_pct(_median(rel))} ({_pct(max(rel, default=0))}) / "
                  f"{_median(abs_):.2g} ({max(abs_, default=0):.2g})") if entry["cells"] else "–"
        moved = " | ".join(f"{_pct(entry['largest'][n]['rel'])} / {entry['largest'][n]['abs']:.2g}"
                           if n in entry["largest"] else "–" for n in paths)
        lines.append(f"| {notebook} | {entry['compared_cells']} | {len(entry['cells'])} | {moved} | {spread} | "
                     f"{_how_far(entry)} |")
    changed = [f"{nb} cell {_cell_index(nb, cell_id)} ({', '.join(on)})"
               for nb, e in notebooks.items() for cell_id, on in e["text_changed"].items()]
    seedlike = [str(int(nb[:2])) for nb, e in notebooks.items() if _how_far(e) == "like a change of seed"]
    lines += [
        "",
        "Compared cells whose text changed on some path: " + ("; ".join(changed) + "." if changed else "none."),
        "",
        "## What this means for a reader",
        "",
        "Run a chapter on your own machine and its counts and closed-form numbers agree with the book to the",
        "last printed digit. Trained results (perplexities, accuracies, rewards) may differ in their last",
        "digits, by about the movements above.",
    ]
    if seedlike:
        lines += [
            f"In chapter{'s' if len(seedlike) > 1 else ''} {' and '.join(seedlike)} they move like a change of "
            "seed: these chapters amplify small",
            "differences (training at a high learning rate, then sampling from the model, so that another CPU",
            "draws other samples and trains on them). Their conclusions are stated only where they held on",
            "every path, and their exact values are one run among many.",
        ]
    lines += [
        "The book's conclusions (which model is better, whether a method helps) are glued as computed",
        "results and compared exactly: they hold wherever the tests pass.",
        "",
    ]
    return "\n".join(lines)


def _test_path_text(by_capability: dict[str, list[str]]) -> list[str]:
    """What ``make test`` runs the chapters on (``nbval_plugin.choose_numerical_path``), as recorded."""
    if len(by_capability) == 1:
        return ["", "`make test` itself executes the notebooks on another path than the recording's (on a CPU with",
                "the recording's kernels, the next set down: AVX-512 to the `avx2` path, AVX2 to `scalar`), so every",
                "test run checks the tolerances rather than assuming them."]
    groups = "; ".join(f"chapters {_chapter_list(nbs)} with {cap}" for cap, nbs in sorted(by_capability.items()))
    return ["", "The chapters were recorded with different torch kernels (" + groups + "). `make test` runs",
            "them all on the CPU's own kernels: each chapter recorded with other kernels is checked on another",
            "CPU's arithmetic, and the others repeat their recording. `ATEN_CPU_CAPABILITY=default make test`",
            "(torch's scalar kernels) runs every chapter on a path other than its recording's."]


def _path_rows(notebooks: dict) -> list[str]:
    """One table row per path as it was run, with the chapters measured on it."""
    rows: dict[tuple, list[str]] = {}
    for nb, entry in notebooks.items():
        for name, info in entry.get("measured_on", {}).items():
            key = (name, info.get("cpu", "not recorded"), info["cpu_capability"], info["mkl_cbwr"],
                   info.get("openblas_coretype", "native"), info["threads"], info["torch"])
            rows.setdefault(key, []).append(nb)
    return ["| " + " | ".join(str(v) for v in key) + f" | {_chapter_list(nbs)} |" for key, nbs in rows.items()]


def _chapter_list(notebooks: list[str]) -> str:
    """``01_x, 02_y, 03_z, 05_w`` -> ``1-3, 5`` (runs of consecutive chapter numbers)."""
    numbers = sorted(int(nb[:2]) for nb in notebooks)
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _cell_index(notebook: str, cell_id: str) -> int:
    """nbval's number of a cell (it counts code cells only)."""
    cells = [c for c in nbformat.read(record.NOTEBOOKS / notebook, as_version=4).cells if c.cell_type == "code"]
    return next(i for i, c in enumerate(cells) if c.get("id") == cell_id)


def write_report(spec: dict | None = None, path: pathlib.Path = REPORT_PAGE) -> None:
    spec = spec or json.loads(TOLERANCES_FILE.read_text(encoding="utf-8"))
    _write(path, report_text(spec))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.book.reproducibility",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute on every stand-in path, measure, write the report")
    run_p.add_argument("notebooks", nargs="*", help="chapter notebooks (default: all)")
    run_p.add_argument("--out", type=pathlib.Path, help="keep the executed copies here")
    run_p.add_argument("--jobs", type=int, default=2, help="notebooks executed at once on one-thread paths")
    measure_p = sub.add_parser("measure", help="measure executions already made")
    measure_p.add_argument("notebooks", nargs="*")
    measure_p.add_argument("--run", action="append", required=True, metavar="NAME=DIR",
                           help="a path's name and the folder of its executed notebooks (with path.json), "
                                "e.g. avx2=/tmp/runs/avx2; repeat for each path")
    sub.add_parser("report", help="rewrite book/execution-report.md from notebooks/tolerances.json")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.notebooks, args.out, args.jobs)
    elif args.command == "measure":
        runs = dict(item.split("=", 1) for item in args.run)
        runs = {name: pathlib.Path(folder) for name, folder in runs.items()}
        missing = [str(p) for p in runs.values() if not (p / "path.json").exists()]
        if missing:
            parser.error(f"no executions in {missing}: run `python -m llmcourse.book.record --out DIR` first")
        write_report(measure(runs, args.notebooks))
    else:
        write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
