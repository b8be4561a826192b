"""The shape of the code: no import cycle between tunesmith modules (imports inside functions count), no
function longer than about 100 lines, no module longer than about 600 apart from data tables.

These are the limits that keep each unit small enough to read in one sitting; a unit that outgrows them is
split by phase (see docs/architecture.md) rather than allowed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "tunesmith"
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 600
# Modules that are data (word lists, tables), not logic: their length is the data's.
DATA_TABLES = {"tunesmith.data.novel.lexicon"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every tunesmith module `module` imports, at any depth of its code (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for child in node.body for n in ast.walk(child)}
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name`: an edge to pkg.name when that is a module, else to pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import tunesmith.data.formats.x` -> the module part
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    """The checker itself: a cycle hidden by an import inside a function is still a cycle."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from tunesmith_t.b import g\n", encoding="utf-8")
    b.write_text("def g():\n    from tunesmith_t import a\n    return a\n", encoding="utf-8")
    known = {"tunesmith_t", "tunesmith_t.a", "tunesmith_t.b"}
    graph = {"tunesmith_t.a": _imports("tunesmith_t.a", a, known), "tunesmith_t.b": _imports("tunesmith_t.b", b, known)}
    assert graph == {"tunesmith_t.a": {"tunesmith_t.b"}, "tunesmith_t.b": {"tunesmith_t.a"}}
    assert cycles(graph) == [["tunesmith_t.a", "tunesmith_t.b"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycle_between_tunesmith_modules():
    found = cycles(import_graph())
    assert not found, "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in found)


def _long_functions() -> list[str]:
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{module}:{node.lineno} {node.name} ({n} lines)")
    return long


def test_no_function_longer_than_about_100_lines():
    long = _long_functions()
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them by phase):\n" + "\n".join(long)


@pytest.mark.parametrize("module", sorted(set(_modules()) - DATA_TABLES))
def test_module_length(module):
    n = len(_modules()[module].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_MODULE_LINES, f"{module}: {n} lines (over {MAX_MODULE_LINES}: split it by concept)"
