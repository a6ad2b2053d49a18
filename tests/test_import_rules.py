"""The import rule of the house, read from the source (AST, ``import_module`` strings included).

- engine/ imports neither actors/, strategies/ nor ui/, nor Ray, Panel or the plotting stack;
- strategies/ imports nothing of the project but engine/;
- no cycle among engine modules (lazy imports inside functions count: they hide a cycle, they
  do not remove it).

The checker is tested on a small tree of its own first, so a rule that stopped firing fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "actors", "strategies", "ui")
#: what engine/ must not import (top-level package names)
ENGINE_FORBIDDEN = {"actors", "strategies", "ui", "ray", "panel", "bokeh", "holoviews", "hvplot"}
#: calls whose first string argument names a module
_DYNAMIC = {"import_module", "__import__", "find_spec"}
#: a string that names a module of the project (kept for a later import_module)
_MODULE_PATH = re.compile(rf"(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_PATH.fullmatch(node.value):  # a module path kept in a string
                found.add(node.value)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0] if node.args else None
            if name in _DYNAMIC and isinstance(getattr(first, "value", None), str):
                found.add(first.value)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules it imports, for every .py file of the project's packages."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            graph[module_name(path, root)] = imports_of(path, root)
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, names in sorted(graph.items()):
        top = module.split(".")[0]
        for name in sorted(names):
            head = name.split(".")[0]
            if top == "engine" and head in ENGINE_FORBIDDEN:
                out.append(f"{module} imports {name}: engine/ must not")
            if top == "strategies" and head in PACKAGES and head not in ("engine", "strategies"):
                out.append(f"{module} imports {name}: strategies/ may import only engine/")
    return out


def engine_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles among engine modules (each reported once, as found by a depth-first search)."""
    modules = {m for m in graph if m.split(".")[0] == "engine"}

    def targets(module: str) -> set[str]:
        out = set()
        for name in graph[module]:  # "engine.x.y" may be module engine.x's attribute y
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and name != "engine":
                out.add(name)
        return out

    edges = {m: targets(m) for m in modules}
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for nxt in sorted(edges[module]):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [])
    return cycles


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_catches_each_kind_of_breach(tmp_path):
    _write(tmp_path, {
        "engine/__init__.py": "",
        "engine/a.py": "def f():\n    from engine import b\n",
        "engine/b.py": "from .a import f\n",
        "engine/c.py": "import importlib\nM = importlib.import_module('actors.pair')\n",
        "engine/d.py": "def g():\n    import ray\n",
        "engine/e.py": "VERBS = {'run': ('actors.cli_run', 'help text')}\n",
        "engine/sub/__init__.py": "from ..c import M\n",
        "strategies/__init__.py": "from ui import app\n",
        "actors/__init__.py": "", "ui/__init__.py": "",
    })  # fmt: skip
    graph = import_graph(tmp_path)
    assert "engine.c" in graph["engine.sub"]
    found = violations(graph)
    assert "engine.c imports actors.pair: engine/ must not" in found
    assert "engine.d imports ray: engine/ must not" in found
    assert "engine.e imports actors.cli_run: engine/ must not" in found
    assert "strategies imports ui: strategies/ may import only engine/" in found
    assert engine_cycles(graph) == [["engine.a", "engine.b", "engine.a"]]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_graph_covers_the_project(graph):
    assert {"engine.bars", "engine.store", "strategies", "ui.app"} <= set(graph)


def test_engine_and_strategies_keep_the_import_rule(graph):
    assert violations(graph) == []


def test_no_cycle_among_engine_modules(graph):
    assert engine_cycles(graph) == []
