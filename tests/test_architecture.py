"""The layers point one way, as docs/architecture.md draws them, with no import circle.

Counted: every import of a persistmemo module, at module level, under ``if TYPE_CHECKING:``,
in ``try`` blocks and inside functions (those are the named seams of the architecture's
table of deferred imports, and nothing else).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "persistmemo"
ARCHITECTURE = PACKAGE.parent.parent / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """The persistmemo modules ``path`` imports: (outside functions, inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    outside: set[str] = set()
    inside: set[str] = set()

    def target(module: str) -> str:
        while module not in modules and "." in module:
            module = module.rpartition(".")[0]
        return module

    def imported(node: ast.Import | ast.ImportFrom) -> set[str]:
        if isinstance(node, ast.Import):
            return {target(a.name) for a in node.names if a.name.startswith("persistmemo")}
        module = node.module or ""
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, module] if module else base)
        if not module.startswith("persistmemo"):
            return set()
        found = set()
        for alias in node.names:
            submodule = f"{module}.{alias.name}"
            found.add(submodule if submodule in modules else target(module))
        return found

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inside if in_function else outside).update(imported(child))
            functional = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, in_function or functional)

    visit(ast.parse(path.read_text()), False)
    outside.discard(name)
    inside.discard(name)
    return outside, inside


def deferred_imports() -> dict[str, set[str]]:
    """Imports inside functions, by module."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    found = {module_name(path): imports_of(path, modules)[1] for path in paths}
    return {name: imports for name, imports in found.items() if imports}


def import_graph() -> dict[str, set[str]]:
    """Every import of each module, inside functions included."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {}
    for path in paths:
        outside, inside = imports_of(path, modules)
        graph[module_name(path)] = outside | inside
    return graph


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


def table(heading: str) -> list[list[str]]:
    """The rows of the first table under ``heading`` in docs/architecture.md, cells split."""
    text = ARCHITECTURE.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def names(cell: str) -> list[str]:
    """The `code` names in a cell, as module names."""
    found = re.findall(r"`([^`]+)`", cell)
    return [name if name == "persistmemo" else f"persistmemo.{name}" for name in found]


def layers() -> tuple[dict[str, str], dict[str, set[str]]]:
    """(module pattern -> layer, layer -> the layers it may import) from the layer table."""
    patterns: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    for layer, modules, may_import, _ in table("Layers, bottom to top"):
        for pattern in names(modules):
            patterns[pattern] = layer
        allowed[layer] = {layer, *(word.strip() for word in may_import.split(","))}
    return patterns, allowed


def layer_of(module: str, patterns: dict[str, str]) -> str | None:
    if module in patterns:
        return patterns[module]
    for pattern, layer in patterns.items():
        if pattern.endswith(".*") and module.startswith(pattern[:-1]):
            return layer
    return None


def test_every_module_is_in_one_layer_of_the_table() -> None:
    patterns, _ = layers()
    graph = import_graph()
    assert [module for module in graph if layer_of(module, patterns) is None] == []
    named = [pattern for pattern in patterns if not pattern.endswith(".*")]
    assert [pattern for pattern in named if pattern not in graph] == []


def test_every_import_goes_to_a_layer_the_table_allows() -> None:
    patterns, allowed = layers()
    wrong = []
    for module, imports in import_graph().items():
        layer = layer_of(module, patterns)
        for imported in imports:
            if layer_of(imported, patterns) not in allowed[str(layer)]:
                wrong.append(f"{module} ({layer}) imports {imported}")
    assert wrong == []


def test_the_imports_inside_functions_are_the_named_seams() -> None:
    documented: dict[str, set[str]] = {}
    for module, _, imports, _ in table("Deferred imports"):
        documented.setdefault(names(module)[0], set()).update(names(imports))
    assert deferred_imports() == documented
    # A few seams, each named: the cold-start budget's (issue 22: the miss's machinery,
    # pickles, the listing of rows, the keys of types past the builtins) and the optional
    # dependencies'.
    assert sum(len(imports) for imports in documented.values()) <= 17


def test_the_memo_layer_knows_the_store_interface_only() -> None:
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith("persistmemo._memo"):
            stores = {name for name in imports if name.startswith("persistmemo.stores")}
            interface = {"persistmemo.stores.base", "persistmemo.stores.api"}
            assert stores <= {*interface, "persistmemo.stores.claims"}, module
