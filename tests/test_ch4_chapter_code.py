"""Chapter 4 builds the autograd engine and the MLP in cells; the package must keep exactly that code."""
import ast
import inspect
import textwrap
from pathlib import Path

import nbformat
import pytest

from llmcourse.chapters import autograd

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_backprop.ipynb"


def chapter_definitions():
    """Top-level functions and classes of the chapter's code cells, name -> source text."""
    defs = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in defs:
                defs[node.name] = ast.get_source_segment(cell.source, node, padded=False)
    return defs


DEFS = chapter_definitions()
PACKAGE = {**autograd.OPERATIONS, "_check_number": autograd._check_number, "Value": autograd.Value,
           "Module": autograd.Module, "Neuron": autograd.Neuron, "Layer": autograd.Layer, "MLP": autograd.MLP}


@pytest.mark.parametrize("name", sorted(PACKAGE))
def test_chapter_defines_the_package_code(name):
    assert name in DEFS, f"the chapter does not define {name}"
    package_src = textwrap.dedent(inspect.getsource(PACKAGE[name])).rstrip()
    assert DEFS[name].rstrip() == package_src, f"{name} differs between the chapter and the package"


def test_every_operation_is_attached_in_the_chapter():
    code = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    for name in autograd.OPERATIONS:
        assert f"Value.{name} = {name}" in code
        assert getattr(autograd.Value, name) is autograd.OPERATIONS[name]
