"""Student versions of the chapter notebooks: the exercises' solutions removed, the graded checks kept.

A chapter marks each solution with sphinx-exercise's fences (see CONTRIBUTING.md)::

    ```{solution-start} ch6-ex-attention        <- in a markdown cell
    (code cells and markdown cells: the solution)
    ```{solution-end}                            <- in a later markdown cell

In the student version everything between the two fences goes; each solution code cell becomes a stub
that keeps the names the graded check needs — a function that raises ``NotImplementedError`` (which
``llmcourse.book.grading`` reports as "not implemented yet") or a variable set to ``None`` — so the student
notebook still runs top to bottom. Outputs are cleared.

    python -m llmcourse.book.coursework student notebooks/*.ipynb --out student/ [--execute]
    python -m llmcourse.book.autograde grade submitted.ipynb [...]    # grades it against its chapter
"""
from __future__ import annotations

import argparse
import ast
import copy
import pathlib
import re
import sys

import nbformat

START = re.compile(r"```\{solution-start\}\s*(\S+)[^\n]*\n(?::[^\n]*\n)*```[^\n]*\n?")
CHECK_CALL = re.compile(r"^(?!\s*def )[^#\n]*\bcheck_(function|value)\(", re.M)  # a graded check cell
END = re.compile(r"```\{solution-end\}\s*\n```[^\n]*\n?")
STUDENT_NOTE = (
    "*Student version: the exercises' solutions were removed. Write them where a cell raises "
    "`NotImplementedError` or sets a value to `None`; the check cell after each exercise tells you "
    "what is still wrong.*"
)


def stub_source(source: str, label: str) -> str:
    """The stub that replaces a solution code cell: same top-level names, no solution."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"solution {label}: the cell is not valid Python ({err})") from err
    lines = [f"# Exercise {label}: your solution here."]
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.append(ast.get_source_segment(source, node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = ast.unparse(node.args)
            lines += [f"def {node.name}({args}):", f'    raise NotImplementedError("exercise {label}")', ""]
        elif isinstance(node, ast.ClassDef):
            lines += [f"class {node.name}:", f'    """Exercise {label}: write this class."""', ""]
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        lines.append(f"{name.id} = None  # exercise {label}: compute this")
    return "\n".join(lines).rstrip() + "\n"


def student_version(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """Return ``(student notebook, number of solutions removed)``; ``nb`` itself is not changed."""
    out = copy.deepcopy(nb)
    cells, label, removed = [], None, 0
    for cell in out.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        text = cell.source
        if label is None:
            if cell.cell_type == "markdown" and (m := START.search(text)):
                label = m.group(1)
                removed += 1
                after = text[m.end():]
                if (e := END.search(after)) is not None:  # a solution entirely inside one markdown cell
                    label = None
                    after = after[e.end():]
                else:
                    after = ""
                cell.source = (text[:m.start()] + after).strip()
                if cell.source:
                    cells.append(cell)
                continue
            cells.append(cell)
            continue
        # inside a solution
        if cell.cell_type == "code":
            cell.source = stub_source(text, label)
            cells.append(cell)
        elif (e := END.search(text)) is not None:
            label = None
            cell.source = text[e.end():].strip()
            if cell.source:
                cells.append(cell)
    if label is not None:
        raise ValueError(f"solution {label}: no ```{{solution-end}}``` after it")
    cells.insert(1 if cells and cells[0].cell_type == "markdown" else 0, nbformat.v4.new_markdown_cell(STUDENT_NOTE))
    out.cells = cells
    return out, removed


def solution_cells(nb: nbformat.NotebookNode) -> dict[str, str]:
    """``{cell id: exercise label}`` of the code cells inside solution fences (what a learner writes)."""
    ids, label = {}, None
    for cell in nb.cells:
        if label is None:
            if cell.cell_type == "markdown" and (m := START.search(cell.source)):
                label = None if END.search(cell.source[m.end():]) else m.group(1)
        elif cell.cell_type == "code":
            ids[cell.id] = label
        elif END.search(cell.source):
            label = None
    return ids


def write_student_versions(paths, out_dir, execute: bool = False, timeout: int = 1200) -> dict[str, int]:
    """Write the student version of each notebook into ``out_dir``; optionally execute each there."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for path in map(pathlib.Path, paths):
        nb = nbformat.read(path, as_version=4)
        student, removed = student_version(nb)
        target = out_dir / path.name
        if execute:
            from nbclient import NotebookClient

            NotebookClient(student, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
        nbformat.write(student, target)
        counts[path.name] = removed
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.book.coursework", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    student = sub.add_parser("student", help="write student versions (solutions removed, checks kept)")
    student.add_argument("notebooks", nargs="+", help="chapter notebooks")
    student.add_argument("--out", default="student", help="output folder (default: student/)")
    student.add_argument("--execute", action="store_true", help="also run each student notebook to check it executes")
    args = parser.parse_args(argv)
    counts = write_student_versions(args.notebooks, args.out, execute=args.execute)
    for name, removed in counts.items():
        print(f"{args.out}/{name}: {removed} solutions removed" + (", executed" if args.execute else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
