"""`model/` draws no import cycle, counting the imports made inside functions too: a lazy import
hides a cycle from the interpreter, not from the design (backends and ranking once imported
each other that way). A module importing a submodule also runs the packages above it, so those
count as edges, except a module's own ancestors (a package naming its submodules is no cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rationanomaly.model

PACKAGE = "rationanomaly.model"
MODEL_DIR = Path(rationanomaly.model.__file__).resolve().parent


def module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, anywhere in its body."""
    modules = {module_name(root, p, package): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:  # `from pkg import name`: name may be no module
                    target = target.rpartition(".")[0]
                # The target and the packages above it run; the importer's own ancestors excepted.
                while target.startswith(package) and target != name:
                    if not name.startswith(target + "."):
                        graph[name].add(target)
                    target = target.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_model_package_has_no_import_cycle() -> None:
    graph = import_graph(MODEL_DIR, PACKAGE)
    assert f"{PACKAGE}.decision" in graph and f"{PACKAGE}.backends.base" in graph  # the scan saw the package
    assert cycles(graph) == []


def test_backends_are_transport_only() -> None:
    """No backend reaches for the decision, the ranking or the drafts."""
    graph = import_graph(MODEL_DIR, PACKAGE)
    deciding = {f"{PACKAGE}.{m}" for m in ("decision", "ranking", "drafts", "classifier")}
    for name, targets in graph.items():
        if name.startswith(f"{PACKAGE}.backends"):
            assert not targets & deciding, (name, targets & deciding)


def test_the_scan_finds_a_cycle_made_of_lazy_imports(tmp_path: Path) -> None:
    """The check can fail: two modules importing each other inside functions, as backends and
    ranking did, and a package whose submodule imports a sibling that imports it back."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.b import g\n    return g\n")
    (pkg / "b.py").write_text("def g():\n    import pkg.a\n    return pkg.a\n")
    (pkg / "sub" / "__init__.py").write_text("def make():\n    from pkg.c import thing\n    return thing\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("from pkg.sub.leaf import X\nthing = X\n")
    graph = import_graph(pkg, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.sub"]]


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": set()}, []),
    ({"a": {"a"}}, [["a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_cycles(graph, expected) -> None:
    assert cycles(graph) == expected
