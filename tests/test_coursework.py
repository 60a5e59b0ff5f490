"""Student versions (solutions removed, checks kept, still executable), grading, and the Colab set-up cell."""
import pathlib
import re

import nbformat
import pytest
import yaml

from llmcourse.book import autograde, coursework

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK = coursework.CHECK_CALL


def toy_notebook():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [
        md("# Toy chapter"),
        code("from llmcourse.book import grading"),
        md("```{exercise} Square\n:label: toy-ex-sq\nWrite `square(x)`.\n```\n"
           "```{solution-start} toy-ex-sq\n:class: dropdown\n```"),
        code("import math\n\ndef square(x):\n    return x * x\n\nanswer = square(3)"),
        md("The solution squares its argument."),  # prose inside the solution: removed too
        md("```{solution-end}\n```\nText after the solution stays."),
        code("grading.check_function(square, lambda x: x ** 2, [(2,), (-1.5,)])"),
    ]
    cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="9\n")]
    cells[3].execution_count = 4
    return nbformat.v4.new_notebook(cells=cells)


def test_student_version_removes_solutions_and_keeps_checks():
    nb = toy_notebook()
    student, removed = coursework.student_version(nb)
    assert removed == 1
    text = "\n".join(c.source for c in student.cells)
    assert "solution-start" not in text and "solution-end" not in text
    assert "return x * x" not in text and "squares its argument" not in text
    assert "Write `square(x)`." in text and "Text after the solution stays." in text
    assert sum(bool(CHECK.search(c.source)) for c in student.cells) == 1
    stub = next(c.source for c in student.cells if c.source.startswith("# Exercise toy-ex-sq"))
    assert "import math" in stub and "def square(x):" in stub and "NotImplementedError" in stub
    assert "answer = None" in stub
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in student.cells if c.cell_type == "code")
    assert nb.cells[3].source.endswith("answer = square(3)"), "the original notebook must not change"


def test_stub_runs_and_the_check_says_not_implemented():
    student, _ = coursework.student_version(toy_notebook())
    namespace = {}
    for cell in student.cells:
        if cell.cell_type == "code":
            exec(cell.source, namespace)
    result = namespace["grading"].check_function(namespace["square"], lambda x: x ** 2, [(2,)])
    assert not result.passed and "not implemented yet" in repr(result)


def test_bad_solution_markup_errors():
    nb = toy_notebook()
    del nb.cells[5]  # no solution-end
    with pytest.raises(ValueError, match="no ```\\{solution-end\\}"):
        coursework.student_version(nb)
    with pytest.raises(ValueError, match="not valid Python"):
        coursework.stub_source("def broken(:\n", "toy-ex")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_a_student_version(path):
    nb = nbformat.read(path, as_version=4)
    student, removed = coursework.student_version(nb)
    assert removed >= 2, f"{path.name}: expected graded exercises with solutions"
    n_checks = sum(bool(CHECK.search(c.source)) for c in nb.cells if c.cell_type == "code")
    assert sum(bool(CHECK.search(c.source)) for c in student.cells if c.cell_type == "code") == n_checks
    for cell in student.cells:
        assert "solution-start" not in cell.source and "solution-end" not in cell.source
        if cell.cell_type == "code":
            compile(cell.source if not cell.source.lstrip().startswith(("%", "!")) else "", path.name, "exec")


def test_student_notebook_executes_and_grades(tmp_path):
    """The quickest chapter end to end: the student version runs top to bottom, every check fails as
    unsolved ('not implemented', or a property check whose unsolved value is wrong), and the
    instructor's copy passes every check."""
    chapter = ROOT / "notebooks" / "03_math.ipynb"
    coursework.write_student_versions([chapter], tmp_path, execute=True)  # raises if a cell fails
    student_results, _ = autograde.grade(tmp_path / chapter.name, chapter, cwd=chapter.parent)
    assert student_results and not any(o.passed for o in student_results)
    unsolved = [o for o in student_results if "not implemented" in o.message]
    assert len(unsolved) >= len(student_results) - 2, student_results
    assert all(o in unsolved or "got False, expected True" in o.message for o in student_results), student_results
    solved, _ = autograde.grade(chapter, autograde.instructor_notebook(chapter))
    assert len(solved) == len(student_results) and all(o.passed for o in solved), solved


def test_every_chapter_installs_from_the_one_configured_repository():
    """The Colab set-up cell is identical in every chapter and installs from `_config.yml`'s repository."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]
    first_cells = {}
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        first_cells[path.name] = next(c.source for c in nb.cells if c.cell_type == "code")
    assert len(set(first_cells.values())) == 1, "the set-up cell differs between chapters"
    cell = next(iter(first_cells.values()))
    assert f'"llmcourse[chapters] @ git+{url}"' in cell, f"the set-up cell does not install from {url} with the chapters extra"
    assert '"google.colab" in sys.modules' in cell and "fonts-wqy-microhei" in cell
