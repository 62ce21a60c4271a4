"""The layers point one way: no import circle among persistmemo's modules.

Counted: imports at module level, including those under ``if TYPE_CHECKING:`` and in
``try`` blocks. Imports inside functions are the documented upward reaches (``store.memo``,
the CLI's demo) and are left out, as docs/architecture.md says.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "persistmemo"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The persistmemo modules ``path`` imports outside of functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def target(module: str) -> str:
        while module not in modules and "." in module:
            module = module.rpartition(".")[0]
        return module

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(target(a.name) for a in node.names if a.name.startswith("persistmemo"))
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, module] if module else base)
                if module.startswith("persistmemo"):
                    for alias in node.names:
                        submodule = f"{module}.{alias.name}"
                        found.add(submodule if submodule in modules else target(module))
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): module_level_imports(path, modules) for path in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph.get(node, ())):
            if neighbour not in graph:
                continue
            if neighbour not in index:
                connect(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_module_imports_in_a_circle() -> None:
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_stores_and_the_layers_below_never_import_the_decorator() -> None:
    graph = import_graph()
    above_stores = {
        "persistmemo",
        "persistmemo._memo.decorator",
        "persistmemo._memo.memoized",
        "persistmemo._memo.call_paths",
        "persistmemo._memo.options",
        "persistmemo._memo.mapping",
        "persistmemo.cli",
        "persistmemo._demo",
        "persistmemo.__main__",
    }
    for module, imports in graph.items():
        if module.startswith("persistmemo.stores"):
            assert not imports & above_stores, f"{module} imports {imports & above_stores}"


def test_the_decorator_depends_on_the_store_interface_only() -> None:
    graph = import_graph()
    concrete = {name for name in graph if name.startswith("persistmemo.stores.")}
    concrete.discard("persistmemo.stores.base")
    for module in (
        "persistmemo._memo.decorator",
        "persistmemo._memo.memoized",
        "persistmemo._memo.call_paths",
    ):
        assert not graph[module] & concrete, f"{module} imports {graph[module] & concrete}"
