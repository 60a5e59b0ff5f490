"""The package's architecture, checked from its imports: lower layers never import higher ones, the
import graph has no cycle, and no module reaches into another module's private (underscore) names."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "llmcourse"
# Bottom to top. A module may import its own layer or any layer below it, never one above.
LAYERS = {
    "core": 0,
    "data": 1,
    "models": 2,
    "train": 3, "generate": 3, "evaluate": 3,
    "chapters": 4,
    "book": 5,
}
LAYER_NAMES = ["core", "data", "models", "train/generate/evaluate", "chapters", "book"]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> int | None:
    """The layer of ``llmcourse.X...`` (None for the package root, which only re-exports core)."""
    parts = name.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else None


def imported_llmcourse_modules(tree: ast.Module, known: set[str]) -> set[str]:
    """Every llmcourse module a file imports: ``import a.b``, ``from a.b import c`` (c a module or a name)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("llmcourse")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmcourse"):
            assert node.level == 0, "use absolute imports inside llmcourse"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


@pytest.fixture(scope="module")
def graph():
    trees = modules()
    return trees, {name: imported_llmcourse_modules(tree, set(trees)) - {name} for name, tree in trees.items()}


def test_every_module_belongs_to_a_layer(graph):
    trees, _ = graph
    unplaced = [m for m in trees if m != "llmcourse" and m.split(".")[1] not in LAYERS]
    assert not unplaced, f"modules outside the layers {LAYER_NAMES}: {unplaced}; put them in a layer's folder"


def test_no_module_imports_a_higher_layer(graph):
    _, imports = graph
    upward = []
    for module, targets in imports.items():
        here = layer_of(module)
        for target in targets:
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} ({LAYER_NAMES[here]}) imports {target} ({LAYER_NAMES[there]})")
    assert not upward, "lower layers must not import higher ones:\n" + "\n".join(upward)


def test_the_package_root_only_re_exports_the_bottom_layer(graph):
    _, imports = graph
    assert {layer_of(t) for t in imports["llmcourse"]} <= {0}


def test_the_import_graph_has_no_cycle(graph):
    _, imports = graph
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(imports.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for module in sorted(imports):
        if module not in state:
            visit(module, [])


def private_names_defined(tree: ast.Module) -> set[str]:
    """Underscore names a module defines: functions, classes, methods, and ``self._x`` attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_module_uses_another_modules_private_names(graph):
    trees, _ = graph
    defined = {name: private_names_defined(tree) for name, tree in trees.items()}
    violations = []
    for module, tree in trees.items():
        others = set().union(*(names for m, names in defined.items() if m != module)) - defined[module]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmcourse"):
                violations += [f"{module}: from {node.module} import {a.name}" for a in node.names
                               if a.name.startswith("_") and not a.name.startswith("__")]
            elif isinstance(node, ast.Attribute) and node.attr in others:
                owner = node.value.id if isinstance(node.value, ast.Name) else ast.unparse(node.value)
                if owner not in ("self", "cls"):
                    violations.append(f"{module}:{node.lineno}: {owner}.{node.attr}")
    assert not violations, "private names used across modules (make them public or move the code):\n" + \
        "\n".join(violations)


def test_one_ignore_index_and_no_local_copies_of_the_shared_checks(graph):
    trees, _ = graph
    shared = {"IGNORE_INDEX", "_check_int", "_model_device", "_eval_mode", "_check_texts", "_check_generator",
              "check_ids"}
    copies = []
    for module, tree in trees.items():
        if module == "llmcourse.core.checks":
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in shared:
                copies.append(f"{module}: def {node.name}")
            elif isinstance(node, ast.Assign):
                copies += [f"{module}: {t.id} = ..." for t in node.targets if isinstance(t, ast.Name) and t.id in shared]
            elif isinstance(node, ast.Constant) and node.value == -100:
                copies.append(f"{module}:{node.lineno}: the literal -100 (use IGNORE_INDEX)")
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and \
                    isinstance(node.operand, ast.Constant) and node.operand.value == 100:
                copies.append(f"{module}:{node.lineno}: the literal -100 (use IGNORE_INDEX)")
    assert not copies, "use llmcourse.core.checks instead of local copies:\n" + "\n".join(copies)


def test_the_checks_above_can_fail():
    # the same functions on a made-up upward import and a private access
    tree = ast.parse("from llmcourse.book.viz import setup\nfrom llmcourse.models.gpt import _secret\nx = m._hidden\n")
    assert "llmcourse.book.viz" in imported_llmcourse_modules(tree, {"llmcourse.book.viz"})
    assert layer_of("llmcourse.book.viz") > layer_of("llmcourse.core.checks")
    assert "_hidden" not in private_names_defined(tree)
    assert private_names_defined(ast.parse("self._hidden = 1\ndef _f(): pass")) == {"_hidden", "_f"}
