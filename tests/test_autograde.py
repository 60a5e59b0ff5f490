"""The grader cannot be fooled by deleting, shadowing, patching or editing a check (llmcourse.book.autograde).

One toy chapter with one exercise per attack, graded in one run (each run starts a kernel): the attacks that
change global state come last, and every check after an attack is still graded on its own merit."""
import pathlib
import socket
import threading

import nbformat
import pytest

from llmcourse.book import autograde, coursework

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORGED = "print('✅ sq: all 2 cases match the reference')"
# exercise name -> (its solution in the submission, what the grade must say)
CASES = {
    "correct": ("return x * x", "✅"),
    "stub": (None, "not implemented yet"),
    "forged_tick": (f"return x + 1\n{FORGED}", "differ from the reference"),
    "check_deleted": ("return x + 1", "differ from the reference"),
    "check_edited": ("return x + 1", "differ from the reference"),
    "shadowed": ("return x + 1\ncheck_function = lambda *a, **k: print('✅')\ngrading = None", "differ from the reference"),
    "patched_check": ("return x + 1\nimport llmcourse.book.grading as g\ng.check_function = lambda *a, **k: print('✅')",
                      "differ from the reference"),
    "patched_compare": ("return x + 1\nimport llmcourse.book.grading as g\ng.compare = lambda *a, **k: None",
                        "differ from the reference"),
    "rebound_reference": ("return x + 1\nref_rebound_reference = sq_rebound_reference", "rebound_reference (which the check uses)"),
    "still_graded": ("return x * x", "✅"),
    "patched_numpy": ("return x + 1\nimport math, numpy\nmath.isclose = lambda *a, **k: True\n"
                      "numpy.allclose = lambda *a, **k: True", "the submission replaced math.isclose"),
}


def solution(name, body):
    """The cell of exercise ``name``: ``def sq_<name>(x):`` with the body's first line, then the rest."""
    head, *rest = body.split("\n")
    return f"def sq_{name}(x):\n    {head}\n" + "\n".join(rest)


def instructor_notebook(names=CASES):
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    # the chapter itself may rebind a library function (importing torch._dynamo wraps torch.manual_seed):
    # that is not the learner's doing and must not fail a check
    cells = [md("# Toy chapter"), code("from llmcourse.book import grading\nimport math\nimport numpy as np\n"
                                        "_isclose = math.isclose\nmath.isclose = lambda *a, **k: _isclose(*a, **k)")]
    for name in names:
        cells += [code(f"def ref_{name}(x):\n    return x ** 2"),
                  md(f"```{{exercise}} {name}\n:label: toy-{name}\n```\n```{{solution-start}} toy-{name}\n:class: dropdown\n```"),
                  code(solution(name, "return x * x")),
                  md("```{solution-end}\n```"),
                  code(f"grading.check_function(sq_{name}, ref_{name}, [(2,), (-1.5,)])")]
    return nbformat.v4.new_notebook(cells=cells)


def submit(tmp_path, solutions, names=CASES, **kwargs):
    """The student version with ``solutions`` written in (and the deleted / edited checks), graded."""
    instructor = instructor_notebook(names)
    submission, _ = coursework.student_version(instructor)
    by_label = {label: cid for cid, label in coursework.solution_cells(instructor).items()}
    for cell in submission.cells:
        for name, body in solutions.items():
            if cell.get("id") == by_label[f"toy-{name}"] and body is not None:
                cell.source = solution(name, body)
        if "check_edited, ref_check_edited" in cell.source:
            cell.source = cell.source.replace("ref_check_edited", "lambda x: x + 1")
    submission.cells = [c for c in submission.cells if "sq_check_deleted, ref" not in c.source]
    nbformat.write(instructor, tmp_path / "toy.ipynb")
    nbformat.write(submission, tmp_path / "submitted.ipynb")
    return autograde.grade(tmp_path / "submitted.ipynb", tmp_path / "toy.ipynb", cwd=tmp_path, **kwargs)


def test_every_attack_fails_its_own_check_and_honest_work_passes(tmp_path):
    outcomes, how = submit(tmp_path, {name: body for name, (body, _) in CASES.items()})
    assert [o.name for o in outcomes] == [f"sq_{name}" if name != "stub" else "sq_stub" for name in CASES]
    for (name, (_, expected)), outcome in zip(CASES.items(), outcomes):
        assert outcome.passed == (expected == "✅"), (name, outcome)
        assert expected in outcome.message, (name, outcome)
    assert set(how) == {"network", "time limit", "process"}


def test_a_submission_that_runs_too_long_fails_with_the_time_limit(tmp_path):
    slow = "return x + 1\nimport time\ntime.sleep(60)\ndef sq_correct(x):\n    return x * x  # never reached: stopped first"
    outcomes, how = submit(tmp_path, {"correct": slow}, names=["correct"], cell_timeout=5)
    assert not outcomes[0].passed and "time limit of 5 s" in outcomes[0].message, outcomes
    assert how["time limit"].startswith("5 s per cell")


@pytest.mark.skipif(autograde.network_isolation() is None, reason="`unshare -rn` does not work on this machine")
def test_a_submission_cannot_reach_the_network(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    probe = ("return x * x if not reached else x + 1\nimport socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), "
             "timeout=3)\n    reached = True\nexcept OSError:\n    reached = False" % server.getsockname()[1])
    try:
        outcomes, how = submit(tmp_path, {"correct": probe}, names=["correct"])
    finally:
        server.close()
    assert how["network"].startswith("isolated") and outcomes[0].passed, outcomes


def test_every_check_cell_of_the_book_is_found_and_counted():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        _, expected = autograde.assemble(nb, nb, "nonce")
        n_checks = sum(len(autograde.CHECK_NAME.findall(c.source)) for c in nb.cells
                       if c.cell_type == "code" and coursework.CHECK_CALL.search(c.source))
        assert sum(expected) == n_checks > 0, path.name
        assert len(coursework.solution_cells(nb)) >= 2, path.name
