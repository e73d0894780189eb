"""The package's layering, read from the source with ``ast`` (nothing is imported).

* The core (``stalesgd/``) depends on no engine, not on the analysis and not on the command
  line: it never imports ``stalesgd.analysis``, ``stalesgd.sim``, ``stalesgd.real`` or
  ``stalesgd.app`` (engines are found by name, through :mod:`stalesgd.engines`).
* The analysis layer, both engines and the top layer (``app/``, the command line and the
  runner) use other modules only through their public names (no ``_private`` name imported or
  reached as an attribute of an imported module); the modules of the analysis, of each
  engine, of the top layer and of the core's packages import each other without circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: package name -> folder (pyproject.toml maps the engine and analysis packages so)
PACKAGES = {"stalesgd": ROOT / "stalesgd", "stalesgd.sim": ROOT / "sim",
            "stalesgd.real": ROOT / "real", "stalesgd.analysis": ROOT / "analysis",
            "stalesgd.app": ROOT / "app"}
UPPER_LAYERS = ("stalesgd.analysis", "stalesgd.sim", "stalesgd.real", "stalesgd.app")


def module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([package, *parts])


def modules(package: str) -> dict[str, Path]:
    return {module_name(package, p): p for p in sorted(PACKAGES[package].rglob("*.py"))}


def imports(name: str, path: Path) -> list[tuple[str, list[str], ast.AST]]:
    """(imported module, names taken from it, node) for every import in the file, relative
    imports resolved against ``name``; function-level imports included."""
    out = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.append((base, [a.name for a in node.names], node))
    return out


def core_modules() -> dict[str, Path]:
    return {n: p for n, p in modules("stalesgd").items()
            if not any(p.is_relative_to(PACKAGES[u]) for u in UPPER_LAYERS)}


def test_the_core_imports_no_engine_no_analysis_and_no_command_line():
    core = core_modules()
    assert "stalesgd.calibration" in core and "stalesgd.data.real" in core
    assert "stalesgd.engines" in core and "stalesgd.experiment.tables" in core
    assert not any(n.endswith((".cli", ".runner")) and n.count(".") == 1 for n in core)
    bad = []
    for name, path in core.items():
        for target, names, node in imports(name, path):
            full = [target] + [f"{target}.{n}" for n in names]
            if any(t == u or t.startswith(u + ".") for t in full for u in UPPER_LAYERS):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not bad, "\n".join(bad)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("package", ["stalesgd.analysis", "stalesgd.sim", "stalesgd.real",
                                     "stalesgd.app"])
def test_no_private_name_of_another_module_is_used(package):
    bad = []
    for name, path in modules(package).items():
        tree = ast.parse(path.read_text(), str(path))
        imported: set[str] = set()
        for target, names, node in imports(name, path):
            for n in names:
                if _private(n):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {n} "
                               f"from {target}")
            if isinstance(node, ast.Import):
                imported |= {a.asname or a.name.partition(".")[0] for a in node.names}
            else:
                imported |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported and _private(node.attr)):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses "
                           f"{node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def import_graph(package: str) -> dict[str, set[str]]:
    mods = core_modules() if package == "stalesgd" else modules(package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names, _ in imports(name, path):
            for t in [target] + [f"{target}.{n}" for n in names]:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("package", "module"), [
    ("stalesgd.analysis", "stalesgd.analysis.report"),
    ("stalesgd.sim", "stalesgd.sim.engine"),
    ("stalesgd.real", "stalesgd.real.engine"),
    ("stalesgd.app", "stalesgd.app.runner"),
    ("stalesgd", "stalesgd.experiment.sweep"),
])
def test_no_import_circles(package, module):
    graph = import_graph(package)
    assert module in graph and graph[module]  # the graph sees the package's imports
    assert cycles(graph) == []
