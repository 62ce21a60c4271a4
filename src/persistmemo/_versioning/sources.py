"""Source files parsed once per process: their definitions by qualified name, normalized.

Each file is parsed once per process (again only when its stat changes), and a definition's
normalized form (``ast.dump`` without docstrings, positions and, for the decorated function,
decorators) is computed once. ``compiles_to`` tells whether the file as it is now compiles
to the code object the process runs: the source is used only then.
"""

from __future__ import annotations

import ast
import importlib.util
import linecache
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from persistmemo._hashing import blake2b
from persistmemo._keys.canonical import encode
from persistmemo._versioning.source_stamps import FileStat, file_stat
from persistmemo.errors import UnsupportedType

_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)

# Indexes share their trees between threads; normalizing edits a tree for a moment.
_lock = threading.RLock()

_indexes: dict[str, SourceIndex] = {}

_NO_CODE = compile("", "<nothing>", "exec")
parse_count = 0  # how many files this process parsed (the tests check each is parsed once)


@dataclass(eq=False)
class Definition:
    """One ``def`` or ``class`` statement, and the top-level statement that holds it."""

    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    top: ast.stmt
    first_line: int
    normalized: dict[bool, bytes] = field(default_factory=dict)


class SourceIndex:
    """The definitions of one source file, by qualified name, as the file is now."""

    def __init__(self, path: str, stat: FileStat | None, tree: ast.Module) -> None:
        self.path = path
        self.stat = stat  # None: the source came from linecache (a notebook cell, exec)
        self.definitions: dict[str, list[Definition]] = {}
        self.by_name: dict[str, list[Definition]] = {}
        self.tree = tree
        self._module_code: types.CodeType | None = None
        self._codes: dict[str, list[tuple[types.CodeType, str]]] | None = None
        self._verified: dict[int, tuple[types.CodeType, bool]] = {}
        self._tree_digest: bytes | None = None
        self.lines: list[str] = []  # for source from linecache: the lines it was parsed from
        for statement in tree.body:
            self._index(statement, "", statement)

    def _index(self, node: ast.AST, prefix: str, top: ast.stmt) -> None:
        if isinstance(node, _DEFINITIONS):
            qualname = prefix + node.name
            lines = [node.lineno, *(d.lineno for d in node.decorator_list)]
            definition = Definition(node, top, min(lines))
            self.definitions.setdefault(qualname, []).append(definition)
            self.by_name.setdefault(node.name, []).append(definition)
            inner = qualname + (".<locals>." if isinstance(node, _FUNCTIONS) else ".")
            for statement in node.body:
                self._index(statement, inner, top)
            return
        for child in ast.iter_child_nodes(node):
            # Definitions sit in statement lists (if/try/with/for bodies, except handlers,
            # match cases), never inside expressions: do not walk expressions.
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                self._index(child, prefix, top)

    def tree_digest(self) -> bytes:
        """The whole file's normalized tree, digested (computed once per index)."""
        with _lock:
            if self._tree_digest is None:
                self._tree_digest = blake2b(
                    _normalized_dump(self.tree, drop_decorators=False), digest_size=16
                ).digest()
            return self._tree_digest

    def imported_names(self, package: str | None) -> list[str]:
        """The absolute names of the modules the file imports, anywhere in it (``from .
        import sub`` names ``package.sub`` too, which may be a submodule)."""
        names: list[str] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    try:
                        base = importlib.util.resolve_name("." * node.level + base, package)
                    except (ImportError, ValueError):
                        continue
                if base:
                    names.append(base)
                    names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        return names

    def assignment(self, name: str) -> tuple[bytes, frozenset[str]] | None:
        """The normalized last module-level statement assigning ``name`` (also inside ``if``,
        ``try`` or ``with`` blocks, and in tuple targets), and the names its value reads."""
        found: ast.stmt | None = None
        blocks: list[list[ast.stmt]] = [self.tree.body]
        while blocks:
            for statement in blocks.pop(0):
                if isinstance(statement, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                    blocks.append(statement.body)
                    blocks.append(getattr(statement, "orelse", []))
                    blocks.append(getattr(statement, "finalbody", []))
                    for handler in getattr(statement, "handlers", []):
                        blocks.append(handler.body)
                    continue
                if isinstance(statement, ast.Assign):
                    targets = list(statement.targets)
                elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
                    targets = [statement.target]
                else:
                    continue
                names = set()
                for target in targets:
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            names.add(node.id)
                if name in names and (found is None or statement.lineno >= found.lineno):
                    found = statement
        if found is None:
            return None
        value = getattr(found, "value", None)
        reads = (
            frozenset(
                node.id
                for node in ast.walk(value)
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
            )
            if value is not None
            else frozenset()
        )
        with _lock:
            return _normalized_dump(found, drop_decorators=False), reads

    def find(self, qualname: str, name: str, first_line: int | None) -> Definition | None:
        """The definition of ``qualname`` (the one starting at ``first_line`` if several)."""
        candidates = [d for d in self.definitions.get(qualname, ()) if d.node.name == name]
        if not candidates:
            # functools.wraps copies __qualname__ onto wrappers: find them by name and line.
            candidates = [d for d in self.by_name.get(name, ()) if d.first_line == first_line]
        for definition in candidates:
            if definition.first_line == first_line:
                return definition
        return candidates[-1] if candidates else None  # the last one is the one bound

    def qualname_at(self, name: str, first_line: int) -> str | None:
        """The qualified name of the definition ``name`` that starts at ``first_line`` (the
        code of Python 3.10 does not carry its own), or None."""
        for qualname, found in self.definitions.items():
            if any(d.node.name == name and d.first_line == first_line for d in found):
                return qualname
        return None

    def normalized(self, definition: Definition, *, drop_decorators: bool) -> bytes:
        """The definition's syntax tree without docstrings (and decorators), as bytes."""
        with _lock:  # two threads may compute it at once: the same bytes
            found = definition.normalized.get(drop_decorators)
            if found is None:
                found = _normalized_dump(definition.node, drop_decorators=drop_decorators)
                definition.normalized[drop_decorators] = found
            return found

    @property
    def _codes_by_name(self) -> dict[str, list[tuple[types.CodeType, str]]]:
        if self._codes is None:
            self._codes = {}
            for nested, qualname in _nested_codes(self._module_code or _NO_CODE, ""):
                self._codes.setdefault(nested.co_name, []).append((nested, qualname))
        return self._codes

    def compiles_to(self, code: types.CodeType, qualname: str) -> bool:
        """Whether the file, as it is now, compiles to the running ``code``, the definition
        ``qualname`` (whatever its line numbers)."""
        with _lock:
            known = self._verified.get(id(code))
            if known is not None and known[0] is code:
                return known[1]
            if self._module_code is None:
                # The whole module: how a function compiles depends on its module (3.11
                # compiles `math.sqrt(x)` one way when `math` is imported at module level).
                try:
                    self._module_code = compile(self.tree, self.path, "exec", dont_inherit=True)
                except (SyntaxError, ValueError, TypeError):
                    self._module_code = _NO_CODE
            candidates = self._codes_by_name.get(code.co_name, ())
            # By qualified name too: two functions of one name may compile alike (the
            # `wrapper`s of two decorators), and only one of them is the running one.
            same = any(
                name == qualname and same_code(candidate, code) for candidate, name in candidates
            )
            self._verified[id(code)] = (code, same)  # holds `code`: its id stays its own
            return same


def source_index(path: str) -> SourceIndex | None:
    """The index of ``path`` as it is now (parsed once per content), or None without source."""
    global parse_count
    stat = file_stat(path)
    with _lock:
        cached = _indexes.get(path)
        # No file (a notebook cell in linecache): the same name may hold new text, as
        # runners that reuse a cell's name do: then compared by the lines themselves.
        if (
            cached is not None
            and cached.stat == stat
            and (stat is not None or cached.lines == linecache.getlines(path))
        ):
            return cached
        source = _read_source(path, stat)
        if source is None:
            return None
        text, stat = source
        try:
            tree = ast.parse(text, filename=path)
        except (SyntaxError, ValueError):
            return None
        parse_count += 1
        index = SourceIndex(path, stat, tree)
        if stat is None:
            index.lines = linecache.getlines(path)
        _indexes[path] = index
        return index


def _read_source(path: str, stat: FileStat | None) -> tuple[str, FileStat | None] | None:
    if stat is None:
        # No file: code typed in a notebook or a REPL that registered its lines in linecache.
        lines = linecache.getlines(path)
        return ("".join(lines), None) if lines else None
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    after = file_stat(path)
    if after != stat:
        return None  # changed while read: the next first call reads it again
    try:
        return importlib.util.decode_source(data), stat
    except (SyntaxError, UnicodeDecodeError):
        return None


# Fields that later Python versions added to existing nodes, left out while empty so that the
# same source gives the same version on 3.10 to 3.13 (3.12: generic type parameters).
_ADDED_FIELDS = frozenset(("type_params",))


def _normalized_dump(node: ast.AST, *, drop_decorators: bool) -> bytes:
    # A compact ast.dump (ast.dump itself is 3x slower, and this runs for every helper):
    # node types and field values in order, without positions, docstrings or (for the
    # decorated function) decorators. Constants by repr: 1, 1.0, True and '1' differ.
    parts: list[str] = []
    _dump_into(node, parts, drop_decorators)
    return "".join(parts).encode()


def _dump_into(node: object, parts: list[str], drop_decorators: bool = False) -> None:
    if isinstance(node, ast.AST):
        kind = type(node)
        parts.append(kind.__name__)
        parts.append("(")
        for name in node._fields:
            value: Any = getattr(node, name, None)
            if name == "body" and kind in _DEFINITIONS and _has_docstring(value):
                value = value[1:] or [_PASS]
            elif name == "decorator_list" and drop_decorators:
                value = []
            elif name in _ADDED_FIELDS and not value:
                continue  # a field newer Pythons add, unused: the same code, the same bytes
            elif kind is ast.JoinedStr and name == "values":
                # 3.12's parser ends a nested format spec (f"{x:>{w}}") with an empty string
                value = [v for v in value if not (isinstance(v, ast.Constant) and v.value == "")]
            _dump_into(value, parts)
            parts.append(",")
        parts.append(")")
    elif isinstance(node, list):
        parts.append("[")
        for item in node:
            _dump_into(item, parts)
            parts.append(",")
        parts.append("]")
    else:
        parts.append(repr(node))


def _has_docstring(body: list[ast.stmt]) -> bool:
    first = body[0] if body else None
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


_PASS = ast.Pass()


_CO_NEWLOCALS = 0x2  # a function's code (a class body runs in the class's namespace)


def _nested_codes(code: types.CodeType, prefix: str) -> Iterator[tuple[types.CodeType, str]]:
    """The code objects nested in ``code``, with their qualified names (``co_qualname`` from
    3.11; built the way the compiler builds it before)."""
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            qualname = getattr(constant, "co_qualname", None) or prefix + constant.co_name
            yield constant, qualname
            inner = ".<locals>." if constant.co_flags & _CO_NEWLOCALS else "."
            yield from _nested_codes(constant, qualname + inner)


def same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """Whether two code objects do the same, whatever their line numbers and file names."""
    if (
        a.co_code != b.co_code
        or a.co_names != b.co_names
        or a.co_varnames != b.co_varnames
        or a.co_freevars != b.co_freevars
        or a.co_cellvars != b.co_cellvars
        or a.co_flags != b.co_flags
        or a.co_argcount != b.co_argcount
        or a.co_posonlyargcount != b.co_posonlyargcount
        or a.co_kwonlyargcount != b.co_kwonlyargcount
        or len(a.co_consts) != len(b.co_consts)
    ):
        return False
    for x, y in zip(a.co_consts, b.co_consts, strict=True):
        if isinstance(x, types.CodeType):
            if not (isinstance(y, types.CodeType) and same_code(x, y)):
                return False
        elif type(x) is not type(y) or repr(x) != repr(y):
            return False  # repr: 0.0 == -0.0 and 1 == True, yet they are different code
    return True


def code_fingerprint(code: types.CodeType) -> list[object]:
    """What a code object does, without line numbers: bytecode, names, constants, nested code.

    It changes with the Python version (the bytecode does), which can only cost misses.
    """
    constants: list[object] = []
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            constants.append(code_fingerprint(constant))
            continue
        try:
            encode(constant)
        except UnsupportedType:
            constants.append([repr(type(constant))])  # a list: never a constant itself
        else:
            constants.append(constant)
    return [
        code.co_code,
        list(code.co_names),
        list(code.co_varnames),
        list(code.co_freevars),
        list(code.co_cellvars),
        [code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags],
        constants,
    ]
