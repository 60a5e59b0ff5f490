"""pytest plugin, loaded by the repository's root ``conftest.py``: nbval with number-aware comparison,
run on a numerical path other than the one that recorded the notebooks.

- nbval still executes every notebook and compares every stored output, but through
  :mod:`llmcourse.book.numeric_compare`: text exactly, numbers within the cell's tolerance from
  ``notebooks/tolerances.json`` (closed-form precision for a cell that declares none).
- The notebooks were recorded on one path (``metadata.llmcourse.recorded_with``: torch's CPU kernels
  and one thread). Unless the run already differs from that path (``ATEN_CPU_CAPABILITY``,
  ``MKL_CBWR`` or ``OPENBLAS_CORETYPE`` set, another ``OMP_NUM_THREADS``, a CPU whose torch kernels
  are not the recording's), the kernels nbval starts use another set of CPU kernels (torch's, MKL's
  and numpy's OpenBLAS AVX2 code where the recording used AVX-512, as on an AVX2-only CPU), so every
  run shows that the stated numbers hold
  on a path other than the recording one, not only bit for bit where they were made.
  ``LLMCOURSE_NBVAL_PATH=recording`` keeps the recording path (to check a fresh recording).
- Kernels get one torch thread unless ``OMP_NUM_THREADS`` is set (two xdist workers share 2 cores),
  and write the running perplexity table to a scratch copy, so the shipped one is left as recorded.

``pytest --nbval notebooks/NN_x.ipynb`` from the repository root uses all of this, exactly like the
README's test command.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from functools import lru_cache

from llmcourse.book.results import RESULTS_ENV, results_file
from llmcourse.book.numeric_compare import CLOSED_FORM, Tolerance, compare_outputs

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOLERANCES_FILE = ROOT / "notebooks" / "tolerances.json"
# Another set of kernels than the recording's, for the run that proves portability: what an AVX2-only
# CPU computes (torch's own kernels and MKL's matrix products) where the recording used AVX-512.
OTHER_PATH = {"AVX512": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "OPENBLAS_CORETYPE": "Haswell"},
              "AVX2": {"ATEN_CPU_CAPABILITY": "default"}}


@lru_cache(maxsize=None)
def tolerances(path: str = str(TOLERANCES_FILE)) -> dict[tuple[str, str], Tolerance]:
    """``{(notebook file name, cell id): Tolerance}`` for the cells that declare one."""
    spec = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    table = {}
    for notebook, entry in spec["notebooks"].items():
        for cell_id, cell in entry.get("cells", {}).items():
            tol = cell["tolerance"]
            table[(notebook, cell_id)] = Tolerance(tol["rel"], tol["abs"], tol["integers"], tol["why"],
                                                   tol.get("slack", {}))
    return table


def tolerance_for(notebook: str, cell_id: str | None) -> Tolerance:
    return tolerances().get((notebook, cell_id), CLOSED_FORM)


def recorded_path() -> tuple[str | None, int | None]:
    """The CPU kernels torch used and the thread count when the stored notebooks were recorded (from
    their metadata), or None where the chapters disagree."""
    seen = set()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(nb.read_text(encoding="utf-8"))["metadata"].get("llmcourse", {}).get("recorded_with", {})
        seen.add((meta.get("cpu_capability"), meta.get("threads")))
    return seen.pop() if len(seen) == 1 else (None, None)


def coalesced(outputs) -> list[dict]:
    """Streams of one name merged into their first output, as nbval merges them before comparing."""
    merged, streams = [], {}
    for output in outputs:
        if output.get("output_type") == "stream":
            if output["name"] in streams:
                streams[output["name"]]["text"] += output["text"]
                continue
            output = dict(output)
            streams[output["name"]] = output
        merged.append(output)
    return merged


def flatten(outputs, skip: tuple, sanitize) -> dict[str, list]:
    """Outputs as nbval compares them: ``{stream name or MIME type: [values]}`` without skipped keys."""
    flat: dict[str, list] = {}
    for output in outputs:
        if output.get("output_type") == "stream":
            flat.setdefault(output["name"], []).append(sanitize(output["text"]))
            continue
        for key, value in output.items():
            if key in skip:
                continue
            items = value.items() if key == "data" else [(key, value)]
            for name, item in items:
                if name not in skip:
                    flat.setdefault(name, []).append(sanitize(item))
    return flat


def numeric_compare_outputs(self, test, ref, skip_compare=None):
    """Replaces ``nbval.plugin.IPyNbCell.compare_outputs``: same inputs, number-aware comparison."""
    skip = skip_compare or self.parent.skip_compare
    notebook = pathlib.Path(str(self.fspath)).name
    cell_id = self.cell.get("id")
    tolerance = tolerance_for(notebook, cell_id)
    problems = compare_outputs(flatten(ref, skip, self.sanitize), flatten(test, skip, self.sanitize), tolerance)
    self.comparison_traceback = [f"{notebook} cell {self.cell_num} (id {cell_id}): the output differs from the "
                                 "stored one beyond its tolerance (notebooks/tolerances.json)"]
    self.comparison_traceback += [f"  - {p}" for p in problems]
    return not problems


def choose_numerical_path(environ=os.environ) -> str:
    """Set the kernels' environment (see the module docstring); returns a one-line description."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        environ.setdefault(name, "1")
    recorded, threads = recorded_path()
    # Only a run that would repeat the recording path exactly is moved to other kernels: another thread
    # count, other kernels chosen by hand, or another CPU already are another path.
    chosen = {"ATEN_CPU_CAPABILITY", "MKL_CBWR", "OPENBLAS_CORETYPE"} & set(environ) or environ["OMP_NUM_THREADS"] != str(threads)
    if not chosen and environ.get("LLMCOURSE_NBVAL_PATH") != "recording":
        import torch

        native = torch.backends.cpu.get_cpu_capability()
        if native == recorded:
            environ.update(OTHER_PATH.get(native, {}))
    kernels = environ.get("ATEN_CPU_CAPABILITY", "native")
    mkl = environ.get("MKL_CBWR", "native")
    openblas = environ.get("OPENBLAS_CORETYPE", "native")
    return (f"nbval: notebooks recorded with {recorded or 'unknown'} kernels on 1 thread; run here with "
            f"{kernels} torch kernels, {mkl} MKL path, {openblas} OpenBLAS kernels, "
            f"{environ['OMP_NUM_THREADS']} thread(s); numbers "
            f"compared within {TOLERANCES_FILE.relative_to(ROOT)}")


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("nbval") or not getattr(config.option, "nbval", False):
        return
    from nbval.plugin import IPyNbCell

    IPyNbCell.compare_outputs = numeric_compare_outputs
    if hasattr(config, "workerinput"):  # an xdist worker inherits the controller's environment
        return
    config._llmcourse_path = choose_numerical_path()
    if RESULTS_ENV not in os.environ:
        scratch = pathlib.Path(tempfile.mkdtemp(prefix="llmcourse-results-"))
        shutil.copyfile(results_file(), scratch / "perplexity.json")
        os.environ[RESULTS_ENV] = str(scratch / "perplexity.json")
        config._llmcourse_scratch = scratch


@lru_cache(maxsize=1)
def measured_seconds(path: str = str(TOLERANCES_FILE)) -> dict[str, float]:
    """Each notebook's longest measured run in seconds (``notebooks/tolerances.json``), by file name."""
    state = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    return {name: max((s for s in (entry.get("seconds") or {}).values() if s), default=0.0)
            for name, entry in state.get("notebooks", {}).items()}


def longest_notebooks_first(items) -> list:
    """The collected items with the chapters first, longest measured first; every file's items stay
    together and in order, and the other files keep their order after them.

    Under ``--dist loadfile --no-loadscope-reorder`` xdist hands files to its workers in this order.
    With the chapters (minutes each) handed out last, one worker ran the last chapter alone while the
    other sat idle; longest first, the short unit-test files fill the gaps at the end."""
    seconds = measured_seconds()

    def key(pair):
        index, item = pair
        path = pathlib.Path(str(item.fspath))
        return (-seconds.get(path.name, 0.0) if path.suffix == ".ipynb" else 0.0, index)

    return [item for _, item in sorted(enumerate(items), key=key)]


def pytest_collection_modifyitems(session, config, items):
    items[:] = longest_notebooks_first(items)


def pytest_report_header(config):
    line = getattr(config, "_llmcourse_path", None)
    return [line] if line else []


def pytest_unconfigure(config):
    scratch = getattr(config, "_llmcourse_scratch", None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
        os.environ.pop(RESULTS_ENV, None)
