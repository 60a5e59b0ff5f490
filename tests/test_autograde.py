"""The grader cannot be fooled by deleting, shadowing, patching or editing a check (llmcourse.book.autograde)."""
import pathlib
import socket
import threading

import nbformat
import pytest

from llmcourse.book import autograde, coursework

CORRECT = "def square(x):\n    return x * x"
WRONG = "def square(x):\n    return x + 1"
FORGED = "✅ square: all 2 cases match the reference"


def instructor_notebook():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [
        md("# Toy chapter"),
        code("from llmcourse.book import grading\nimport numpy as np"),
        code("def square_reference(x):\n    return x ** 2"),
        md("```{exercise} Square\n:label: toy-ex-sq\nWrite `square(x)`.\n```\n"
           "```{solution-start} toy-ex-sq\n:class: dropdown\n```"),
        code(CORRECT),
        md("```{solution-end}\n```"),
        code("grading.check_function(square, square_reference, [(2,), (-1.5,)])"),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def grade(tmp_path, solution=None, edit=None, **kwargs):
    """Write the instructor's notebook and a submission (the student version with ``solution`` written in,
    then ``edit`` applied to its cells), grade it, return the outcomes."""
    instructor = instructor_notebook()
    submission, _ = coursework.student_version(instructor)
    solution_id = next(iter(coursework.solution_cells(instructor)))
    for cell in submission.cells:
        if cell.get("id") == solution_id and solution is not None:
            cell.source = solution
    if edit:
        edit(submission.cells)
    nbformat.write(instructor, tmp_path / "toy.ipynb")
    nbformat.write(submission, tmp_path / "submitted.ipynb")
    outcomes, how = autograde.grade(tmp_path / "submitted.ipynb", tmp_path / "toy.ipynb", cwd=tmp_path, **kwargs)
    assert len(outcomes) == 1, outcomes
    return outcomes[0], how


def test_a_correct_solution_passes_and_a_stub_is_not_implemented(tmp_path):
    outcome, how = grade(tmp_path, CORRECT)
    assert outcome.passed and outcome.message.startswith("✅ square"), outcome
    assert set(how) == {"network", "time limit", "process"}
    stub, _ = grade(tmp_path)
    assert not stub.passed and "not implemented yet" in stub.message


def test_a_printed_tick_counts_for_nothing(tmp_path):
    outcome, _ = grade(tmp_path, f"{WRONG}\nprint({FORGED!r})")
    assert not outcome.passed and "differ from the reference" in outcome.message


def test_a_deleted_check_is_graded_all_the_same(tmp_path):
    def delete_check(cells):
        cells[:] = [c for c in cells if not coursework.CHECK_CALL.search(c.source)]
    assert grade(tmp_path, CORRECT, delete_check)[0].passed
    assert not grade(tmp_path, WRONG, delete_check)[0].passed


def test_an_edited_check_or_reference_is_replaced_by_the_instructors(tmp_path):
    def edit(cells):
        for c in cells:
            c.source = c.source.replace("square_reference, [", "lambda x: x + 1, [").replace("x ** 2", "x + 1")
    outcome, _ = grade(tmp_path, WRONG, edit)
    assert not outcome.passed and "differ from the reference" in outcome.message


@pytest.mark.parametrize("shadow", [
    f"check_function = lambda *a, **k: print({FORGED!r})\ngrading = None",
    f"import llmcourse.book.grading as g\ng.check_function = lambda *a, **k: print({FORGED!r})",
    "import llmcourse.book.grading as g\ng.compare = lambda *a, **k: None",
], ids=["shadowed names", "patched check_function", "patched compare"])
def test_a_shadowed_or_patched_check_function_is_put_back(tmp_path, shadow):
    outcome, _ = grade(tmp_path, f"{WRONG}\n{shadow}")
    assert not outcome.passed and "differ from the reference" in outcome.message, outcome


@pytest.mark.parametrize("patch, named", [
    ("import math, numpy\nmath.isclose = lambda *a, **k: True\nnumpy.allclose = lambda *a, **k: True", "math.isclose"),
    ("square_reference = square", "square_reference (which the check uses)"),
], ids=["patched numpy and math", "rebound reference"])
def test_a_patched_comparison_or_a_rebound_reference_fails_the_check(tmp_path, patch, named):
    outcome, _ = grade(tmp_path, f"{WRONG}\n{patch}")
    assert not outcome.passed and "the submission replaced" in outcome.message and named in outcome.message, outcome


def test_a_submission_that_runs_too_long_fails_with_the_time_limit(tmp_path):
    outcome, how = grade(tmp_path, f"import time\ntime.sleep(60)\n{CORRECT}", cell_timeout=5)
    assert not outcome.passed and "time limit of 5 s" in outcome.message, outcome
    assert how["time limit"].startswith("5 s per cell")


@pytest.mark.skipif(autograde.network_isolation() is None, reason="`unshare -rn` does not work on this machine")
def test_a_submission_cannot_reach_the_network(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    port = server.getsockname()[1]
    probe = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=3)\n    reached = True\n"
             "except OSError:\n    reached = False\ndef square(x):\n    return x + 1 if reached else x * x" % port)
    try:
        outcome, how = grade(tmp_path, probe)
    finally:
        server.close()
    assert how["network"].startswith("isolated") and outcome.passed, outcome


def test_every_check_cell_of_the_book_is_found_and_counted():
    for path in sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assembled, expected = autograde.assemble(nb, nb, "nonce")
        n_checks = sum(len(autograde.CHECK_NAME.findall(c.source)) for c in nb.cells
                       if c.cell_type == "code" and coursework.CHECK_CALL.search(c.source))
        assert sum(expected) == n_checks > 0, path.name
        assert len(coursework.solution_cells(nb)) >= 2, path.name
