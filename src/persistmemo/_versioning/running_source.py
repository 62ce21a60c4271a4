"""The source of the code that runs: parsed only to derive a version, used only if it runs.

A definition's source is used only when its file, as it is now, compiles to the running code
object (``sources.compiles_to``); otherwise it is versioned by its code objects. sources.py
(ast, inspect) is imported at the first use, never by a remembered version's fingerprint.
"""

from __future__ import annotations

from persistmemo._versioning.code_objects import qualified, qualname_of
from persistmemo._versioning.constants import class_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from collections.abc import Callable

    from persistmemo._versioning.source_stamps import FileStat
    from persistmemo._versioning.sources import Definition, SourceIndex


def _sources() -> types.ModuleType:
    """The parser of source files, imported on first use: a warm start's fingerprint parses
    nothing (ast and tokenize stay off a re-run's path: docs/architecture.md#cold-start)."""
    from persistmemo._versioning import sources

    return sources


def source_index(path: str) -> SourceIndex | None:
    return _sources().source_index(path)  # type: ignore[no-any-return]


def code_fingerprint(code: types.CodeType) -> list[object]:
    return _sources().code_fingerprint(code)  # type: ignore[no-any-return]


def same_code(a: types.CodeType, b: types.CodeType) -> bool:
    return _sources().same_code(a, b)  # type: ignore[no-any-return]


def code_qualname(func: types.FunctionType) -> str:
    """The qualified name of the code ``func`` runs: its ``co_qualname`` (3.11+).

    Python 3.10's code has none, and ``func.__qualname__`` is the wrapped function's in a
    ``functools.wraps`` wrapper: a wrapper's own is then read from the source (its name and
    first line), else it is its bare name.
    """
    code = func.__code__
    qualname: str | None = getattr(code, "co_qualname", None)
    if qualname is not None:
        return qualname
    if func.__qualname__.rpartition(".")[2] == code.co_name:
        return func.__qualname__
    index = source_index(code.co_filename)
    found = None if index is None else index.qualname_at(code.co_name, code.co_firstlineno)
    return found or code.co_name


def function_nodes() -> tuple[type, ...]:
    """The syntax nodes of a ``def`` and an ``async def``."""
    import ast

    return (ast.FunctionDef, ast.AsyncFunctionDef)


def source_runs(index: SourceIndex, func: types.FunctionType) -> bool:
    """Whether the source as indexed holds the code ``func`` runs: its module's text, as the
    file is now, compiles to the running code object.

    Always compiled, never vouched for by file stamps: a stale ``.pyc`` (an edit that kept
    the size and the mtime: ``cp -p``, ``rsync -t``, a same-second edit), an edit under a
    running process, a reload from another file and ``exec``'d text all run code the file
    does not hold, and are then versioned by their bytecode. A notebook cell's lines (no
    file) are the text it was compiled from.
    """
    return index.stat is None or index.compiles_to(func.__code__, code_qualname(func))


def running_definition(
    func: types.FunctionType, trusted: Callable[[str, FileStat | None], bool]
) -> Definition | None:
    """The definition of ``func`` in its source, only if the source holds the running code
    (an edit since import could add a mutation the running code does not make, and take a
    value out of the version); the same test as the version's (basis.py), cached."""
    code = func.__code__
    index = source_index(code.co_filename)
    if index is None:
        return None
    definition = index.find(code_qualname(func), code.co_name, code.co_firstlineno)
    if definition is None:
        return None
    if source_runs(index, func):
        return definition
    return None


def class_fingerprint(cls: type, methods: list[types.FunctionType]) -> list[object]:
    """A class without trustworthy source: its bases, methods' code and plain attributes."""
    return [
        [qualified(base) for base in cls.__bases__],
        [[m.__qualname__, code_fingerprint(m.__code__)] for m in sorted(methods, key=qualname_of)],
        class_attributes(cls),
    ]
