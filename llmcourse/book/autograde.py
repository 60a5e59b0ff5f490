"""Grading submitted notebooks so that a check cannot be deleted, shadowed, patched or edited (自动评分).

    python -m llmcourse.book.autograde grade submissions/*.ipynb [--instructor CHAPTER.ipynb]

A submission is graded against the instructor's chapter notebook, which is the skeleton:

1. **Assemble.** Every code cell comes from the instructor's notebook except the exercises' solution
   cells, which come from the submission, matched by cell id (the student versions keep the ids; a
   solution cell the submission lacks becomes its stub). Check cells, the reference functions and the
   rest of the chapter are the instructor's, so deleting a check, editing its expected values or
   editing a reference changes nothing. Cells the learner added are not run.
2. **Run in a separate process** (``python -m llmcourse.book.autograde run``) with a time limit per cell and
   for the whole run, its kernel on IPC sockets, and, where ``unshare -rn`` works (Linux user
   namespaces), in a network namespace of its own: no network at all.
3. **Structured results.** Around every submitted solution cell the grader takes a *fingerprint* of the
   functions of ``builtins``, ``math``, ``numpy``, ``torch``, ``torch.Tensor`` and the loaded ``llmcourse``
   modules (their object ids) and the tracing hooks, and remembers what the cell replaced. Each check cell
   runs through :func:`run_check`: it reloads ``llmcourse.book.grading`` from disk (undoing any patch of
   it), runs the instructor's check with ``check_function`` / ``check_value`` / ``grading`` bound to the
   fresh module (undoing any shadowing), and emits every :class:`~llmcourse.book.grading.CheckResult` as
   JSON under its own MIME type, with what the solution cells replaced and the names the check reads that
   a solution cell rebound after the chapter's cells had bound them (a reference, an input). A check passes
   only if the fresh check passed *and* nothing was replaced; printed text, such as a forged "✅", counts for
   nothing.

What this does not protect against is written on the instructors' page (book/for-instructors.md): code
written to attack the grader itself (hooking the kernel's events to forge its messages, replacing its
modules, reading files) runs with the learner's rights and is left to the instructor's reading of it.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import pathlib
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

import nbformat

from llmcourse.book import coursework

MIME = "application/vnd.llmcourse.check+json"
FINGERPRINTED = ("builtins", "math", "numpy", "torch", "torch.nn.functional")
OWN = ("llmcourse.book.grading", "llmcourse.book.autograde")  # reloaded or the grader's own
VOLATILE = {"builtins.input"}  # the kernel itself rebinds it for every cell (to forward input requests)
_BOUND: dict[str, int] = {}  # name -> id of the object the instructor's cells last bound to it
_BEFORE: dict[str, int] = {}  # the fingerprint just before the current solution cell
_REPLACED: dict[str, str] = {}  # "module.attr" -> the exercise whose solution cell replaced it
_NAMES_BEFORE: dict[str, int] = {}  # ids of the chapter's names just before the current solution cell
_REBOUND: dict[str, str] = {}  # chapter name -> the exercise whose solution cell rebound it (until the chapter does)
CHECK_NAME = re.compile(r"\bcheck_(?:function|value)\(")


@dataclass
class Outcome:
    name: str
    passed: bool
    message: str


# ---- inside the kernel ------------------------------------------------------------------------------
def fingerprint() -> dict:
    """``{"module.attr": id}`` of the public callables of :data:`FINGERPRINTED`, of every loaded
    ``llmcourse`` module (the references the checks call) and of ``torch.Tensor``, plus the tracing hooks:
    what a submission would have to replace to fake a comparison."""
    names = [*FINGERPRINTED, *(m for m in list(sys.modules) if m.startswith("llmcourse.") and m not in OWN)]
    out = {}
    for name in names:
        module = sys.modules.get(name) or importlib.import_module(name)
        out.update({f"{name}.{k}": id(v) for k, v in list(vars(module).items()) if not k.startswith("_") and callable(v)})
    torch = sys.modules["torch"]
    out.update({f"torch.Tensor.{k}": id(v) for k, v in vars(torch.Tensor).items() if callable(v)})
    out["sys.gettrace()"], out["sys.getprofile()"] = id(sys.gettrace()), id(sys.getprofile())
    return out


def remember(namespace: dict, names) -> None:
    """After a chapter cell: the objects it bound, so that a check can tell if a submission rebound them."""
    for n in names:
        if n in namespace:
            _BOUND[n] = id(namespace[n])
            _REBOUND.pop(n, None)


def _bound_names(source: str) -> list[str] | None:
    """The top-level names a cell binds (assignments, definitions, imports); None if it is not plain Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        else:
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return sorted(names)


def _display(mime: str, payload: dict) -> None:
    from IPython.display import display

    display({mime: payload}, raw=True)


def before_solution(namespace: dict) -> None:
    """Just before a submitted solution cell: the fingerprint and the chapter's names, to compare after it."""
    _BEFORE.clear()
    _BEFORE.update(fingerprint())
    _NAMES_BEFORE.clear()
    _NAMES_BEFORE.update({n: id(namespace[n]) for n in _BOUND if n in namespace})


def after_solution(label: str, namespace: dict, own: list[str]) -> None:
    """Just after a submitted solution cell (run even if it failed): what it replaced, remembered for the
    checks. Only submitted cells are watched: the chapter's own cells may rebind library functions (importing
    ``torch._dynamo`` wraps ``torch.manual_seed``, for one) without anyone tampering."""
    now = fingerprint()
    for key in _tampered(_BEFORE, now):
        _REPLACED.setdefault(key, label)
    for name, before in _NAMES_BEFORE.items():  # ``own``: the names the exercise asks the learner to define
        if name not in own and (name not in namespace or id(namespace[name]) != before):  # rebound or deleted
            _REBOUND[name] = label


def run_check(index: int, source: str, namespace: dict, nonce: str) -> None:
    """Run one instructor check cell with a fresh ``grading`` module and emit its results as JSON."""
    grading = importlib.reload(importlib.import_module("llmcourse.book.grading"))
    results = []

    def recorded(check):
        def wrapper(*args, **kwargs):
            result = check(*args, **kwargs)
            results.append(result)
            return result
        return wrapper

    fresh = type(grading)("grading")
    vars(fresh).update(vars(grading), check_function=recorded(grading.check_function),
                       check_value=recorded(grading.check_value))
    ours = {"grading": fresh, "check_function": fresh.check_function, "check_value": fresh.check_value}
    theirs = {k: namespace[k] for k in ours if k in namespace}  # put back afterwards: the cell's names stay
    used = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    rebound = sorted((used & set(_REBOUND)) - set(ours))  # grading's own names were put back above
    error = None
    namespace.update(ours)
    try:
        exec(compile(source, f"<check {index}>", "exec"), namespace)
    except BaseException as err:  # the learner's code failed inside the check: reported, not raised
        error = f"{type(err).__name__}: {err}"
    finally:
        for k in ours:
            namespace.pop(k, None)
        namespace.update(theirs)
        remember(namespace, _bound_names(source) or [])  # the check cell is the chapter's own code
    payload = [{"name": r.name, "passed": r.passed is True and isinstance(r, grading.CheckResult),
                "message": str(r)} for r in results]
    _display(MIME, {"nonce": nonce, "index": index, "results": payload, "error": error,
                    "replaced": sorted(_REPLACED) + [f"{name} (which the check uses)" for name in rebound]})


# ---- assembling and running -------------------------------------------------------------------------
def assemble(instructor: nbformat.NotebookNode, submission: nbformat.NotebookNode, nonce: str):
    """The notebook to run and the number of results each check cell must produce (in order)."""
    solutions = coursework.solution_cells(instructor)
    submitted = {c.get("id"): c.source for c in submission.cells if c.cell_type == "code"}
    student, _ = coursework.student_version(instructor)
    stubs = {c.id: c.source for c in student.cells if c.cell_type == "code" and c.id in solutions}
    cells, expected = [], []
    grader = "__import__('llmcourse.book.autograde', fromlist=['run_check'])"
    for cell in instructor.cells:
        if cell.cell_type != "code":
            continue
        if cell.id in solutions:  # watched: a cell of its own before and after, which run even if it fails
            cells.append(nbformat.v4.new_code_cell(f"{grader}.before_solution(globals())"))
            cells.append(nbformat.v4.new_code_cell(submitted.get(cell.id, stubs[cell.id])))
            own = sorted(set(_bound_names(cell.source) or []) | set(_bound_names(stubs[cell.id]) or []))
            source = f"{grader}.after_solution({solutions[cell.id]!r}, globals(), {own!r})"
        elif coursework.CHECK_CALL.search(cell.source):
            source = f"{grader}.run_check({len(expected)}, {cell.source!r}, globals(), {nonce!r})"
            expected.append(len(CHECK_NAME.findall(cell.source)))
        else:
            names = _bound_names(cell.source)
            source = cell.source if not names else f"{cell.source}\n{grader}.remember(globals(), {names!r})"
        cells.append(nbformat.v4.new_code_cell(source))
    return nbformat.v4.new_notebook(cells=cells, metadata=instructor.metadata), expected


def network_isolation() -> list[str] | None:
    """The command prefix that runs a process without network (``unshare -rn``), or None where it fails."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    return ["unshare", "-rn"] if probe.returncode == 0 else None


def _execute(nb_path: str, out_path: str, cwd: str, cell_timeout: int) -> None:
    """Run the assembled notebook; a cell still running after ``cell_timeout`` seconds is interrupted (its
    index goes into the notebook's metadata) and the run goes on with the next cell."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(nb_path, as_version=4)
    sockets = tempfile.mkdtemp(prefix="lg-")  # IPC socket files: an absolute path, as the kernel runs in `cwd`
    km = KernelManager(kernel_name="python3", transport="ipc", ip=f"{sockets}/kernel")  # no TCP: no network needed
    stopped, timers = [], []

    def start(cell, cell_index, **_):
        timer = threading.Timer(cell_timeout, lambda: (stopped.append(cell_index), km.interrupt_kernel()))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    def complete(cell, cell_index, **_):
        while timers:
            timers.pop().cancel()

    client = NotebookClient(nb, km=km, timeout=None, allow_errors=True, resources={"metadata": {"path": cwd}},
                            on_cell_execute=start, on_cell_executed=complete)
    try:
        client.execute()
    finally:
        nb.metadata["llmcourse_stopped_cells"] = stopped
        nbformat.write(nb, out_path)
        shutil.rmtree(sockets, ignore_errors=True)


def _outputs(nb: nbformat.NotebookNode, mime: str, nonce: str) -> list[dict]:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            payload = out.get("data", {}).get(mime)
            if isinstance(payload, dict) and payload.get("nonce") == nonce:
                found.append(payload)
    return found


def _tampered(start: dict, now: dict) -> list[str]:
    return sorted(k for k, v in start.items() if k in now and now[k] != v and k not in VOLATILE)


def read_results(nb: nbformat.NotebookNode, expected: list[int], nonce: str, failure: str | None) -> list[Outcome]:
    """One :class:`Outcome` per check the instructor's cells make, from the grader's JSON outputs only."""
    by_index = {p["index"]: p for p in _outputs(nb, MIME, nonce)}
    outcomes = []
    for index, n in enumerate(expected):
        payload = by_index.get(index)
        if payload is None:
            why = "the check cell did not run"
            outcomes += [Outcome(f"check {index + 1}", False, f"❌ check {index + 1}: {why}")] * n
            continue
        replaced = payload["replaced"]
        results = payload["results"]
        for j in range(n):
            if j >= len(results):
                why = payload["error"] or "the check was not reached"
                outcomes.append(Outcome(f"check {index + 1}.{j + 1}", False, f"❌ check {index + 1}.{j + 1}: {why}"))
                continue
            r = results[j]
            if replaced:
                shown = ", ".join(replaced[:3]) + (" …" if len(replaced) > 3 else "")
                outcomes.append(Outcome(r["name"], False, f"❌ {r['name']}: the submission replaced {shown}; "
                                                          "a check cannot pass after that"))
            else:
                outcomes.append(Outcome(r["name"], r["passed"], r["message"]))
    if failure:  # say why a check failed when the run itself was cut short
        outcomes = [o if o.passed else Outcome(o.name, False, f"{o.message} ({failure})") for o in outcomes]
    return outcomes


def grade(submission, instructor, timeout: int = 1800, cell_timeout: int = 600, cwd=None,
          isolate: bool = True) -> tuple[list[Outcome], dict]:
    """Grade ``submission`` against ``instructor`` (paths); returns the outcomes and how it ran."""
    submission, instructor = pathlib.Path(submission), pathlib.Path(instructor)
    nonce = secrets.token_hex(16)
    nb, expected = assemble(nbformat.read(instructor, as_version=4), nbformat.read(submission, as_version=4), nonce)
    if not expected:
        raise ValueError(f"{instructor}: no graded check cells (grading.check_function / check_value) found")
    prefix = network_isolation() if isolate else None
    failure = None
    with tempfile.TemporaryDirectory(prefix="llmcourse-grade-") as tmp:
        nb_in, nb_out = pathlib.Path(tmp) / "assembled.ipynb", pathlib.Path(tmp) / "executed.ipynb"
        nbformat.write(nb, nb_in)
        command = [*(prefix or []), sys.executable, "-m", "llmcourse.book.autograde", "run", str(nb_in), str(nb_out),
                   "--cwd", str(pathlib.Path(cwd or instructor.parent).resolve()), "--cell-timeout", str(cell_timeout)]
        try:
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                log = (done.stderr + done.stdout).strip()
                failure = f"the grader's process failed: {log.splitlines()[-1] if log else done.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"the notebook ran longer than the time limit of {timeout} s"
        executed = nbformat.read(nb_out, as_version=4) if nb_out.exists() else nb
    if executed.metadata.get("llmcourse_stopped_cells") and failure is None:
        failure = f"a cell was stopped at the time limit of {cell_timeout} s"
    how = {"network": "isolated (unshare -rn)" if prefix else "not isolated: `unshare -rn` is not available here",
           "time limit": f"{cell_timeout} s per cell, {timeout} s in all", "process": "a separate kernel process"}
    return read_results(executed, expected, nonce, failure), how


def instructor_notebook(submission) -> pathlib.Path:
    """The chapter a submission answers: the book's notebook of the same file name."""
    path = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / pathlib.Path(submission).name
    if not path.exists():
        raise FileNotFoundError(f"{submission}: no chapter notebooks/{pathlib.Path(submission).name} to grade it "
                                f"against; name the submission as its chapter or pass --instructor")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.book.autograde",
                                     description="grade submitted notebooks against their chapters")
    sub = parser.add_subparsers(dest="command", required=True)
    grader = sub.add_parser("grade", help="grade submitted (student) notebooks")
    grader.add_argument("notebooks", nargs="+", help="submitted notebooks, named as their chapters")
    grader.add_argument("--instructor", default=None, help="the chapter notebook to grade against "
                        "(default: notebooks/ of the same name)")
    grader.add_argument("--cwd", default=None, help="folder to run them in (default: the chapter's own)")
    grader.add_argument("--timeout", type=int, default=1800, help="time limit of one submission in seconds")
    runner = sub.add_parser("run", help="(internal) execute an assembled notebook in this process")
    runner.add_argument("notebook")
    runner.add_argument("out")
    runner.add_argument("--cwd", required=True)
    runner.add_argument("--cell-timeout", type=int, default=600)
    args = parser.parse_args(argv)
    if args.command == "run":
        _execute(args.notebook, args.out, args.cwd, args.cell_timeout)
        return 0
    for path in args.notebooks:
        outcomes, how = grade(path, args.instructor or instructor_notebook(path), timeout=args.timeout, cwd=args.cwd)
        passed = sum(o.passed for o in outcomes)
        print(f"{path}: {passed}/{len(outcomes)} checks pass ({'; '.join(f'{k}: {v}' for k, v in how.items())})")
        for o in outcomes:
            lines = o.message.splitlines()
            print(f"  {lines[0][:160]}" + (f"\n    {lines[1].strip()[:160]}" if len(lines) > 1 else ""))
    return 0


__all__ = ["MIME", "Outcome", "after_solution", "assemble", "before_solution", "fingerprint", "grade", "instructor_notebook", "network_isolation",
           "read_results",
           "remember", "run_check"]

if __name__ == "__main__":
    sys.exit(main())
