"""The state the code keeps: globals, defaults and class attributes it writes or mutates.

A module-level cache, a default the function fills or a class-level cache changes as the
program runs, so it is left out of the version (docs/guarantees.md#what-the-version-covers).
The source tells which names are mutated when it holds the running code, else the bytecode;
globals assigned with ``global`` are told from the bytecode alone, without parsing.
"""

from __future__ import annotations

import sys
import types

from persistmemo._versioning.closures import (
    mutated_attributes,
    mutated_attributes_in_code,
    mutated_names,
    mutated_names_in_code,
)
from persistmemo._versioning.running_source import running_definition

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from persistmemo._versioning.source_stamps import FileStat


def mutated_globals(
    func: types.FunctionType, trusted: Callable[[str, FileStat | None], bool]
) -> frozenset[str]:
    """Globals ``func`` mutates (``_CACHE[k] = v``, ``REGISTRY.append(f)``): state it keeps.

    Their content changes as the program runs, so as part of the version they would give
    each process its own version (misses everywhere); like a closure's state, they are left
    out. The rules are the closures' (see closures.mutated_names).
    """
    code = func.__code__
    definition = running_definition(func, trusted)
    if definition is not None:
        return frozenset(mutated_names(definition.node))
    return frozenset(mutated_names_in_code(code, ("LOAD_GLOBAL", "LOAD_NAME")))


def mutated_parameters(
    func: types.FunctionType, trusted: Callable[[str, FileStat | None], bool]
) -> frozenset[str]:
    """Parameters ``func`` mutates (``def f(x, _seen={}): _seen[x] = 1``): the source tells
    (closures.mutated_names), else the bytecode."""
    code = func.__code__
    definition = running_definition(func, trusted)
    if definition is not None:
        return frozenset(mutated_names(definition.node))
    return frozenset(mutated_names_in_code(code, ("LOAD_FAST",)))


def mutated_class_attributes(definition: Any, methods: list[types.FunctionType]) -> set[str]:
    """Attribute names a class's code mutates through (``self.cache[k] = v``): from the
    class's source when it is trusted, else from its methods' bytecode."""
    if definition is not None:
        return mutated_attributes(definition.node)
    found: set[str] = set()
    for method in methods:
        found |= mutated_attributes_in_code(method.__code__)
    return found


def written_globals(code: types.CodeType) -> frozenset[str]:
    """Names the code assigns with ``global``: state it keeps, not constants it reads."""
    writes, extended_arg = _global_write_opcodes()
    written: set[str] = set()
    raw = code.co_code
    if not any(bytes([op]) in raw for op in writes):
        raw = b""  # a quick filter: most functions write no global
    extended = 0
    for offset in range(0, len(raw) - 1, 2):
        op, arg = raw[offset], raw[offset + 1] | extended
        if op == extended_arg:
            extended = arg << 8
            continue
        extended = 0
        if op in writes and arg < len(code.co_names):
            written.add(code.co_names[arg])
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            written |= written_globals(constant)
    return frozenset(written)


# (STORE_GLOBAL, DELETE_GLOBAL, EXTENDED_ARG) of the Pythons persistmemo supports, so that a
# warm start's fingerprint does not import opcode; another Python asks opcode. EXTENDED_ARG
# is 144 up to 3.12 and 71 from 3.13 (tests/test_versions_cold_start.py checks the table).
_GLOBAL_WRITE_OPCODES = {
    (3, 10): (97, 98, 144),
    (3, 11): (97, 98, 144),
    (3, 12): (97, 98, 144),
    (3, 13): (113, 66, 71),
}
_STORE_GLOBAL_OPCODES: tuple[frozenset[int], int] | None = None


def _global_write_opcodes() -> tuple[frozenset[int], int]:
    global _STORE_GLOBAL_OPCODES
    if _STORE_GLOBAL_OPCODES is None:
        known = _GLOBAL_WRITE_OPCODES.get(sys.version_info[:2])
        if known is None:
            import opcode

            store, delete, extended = (
                opcode.opmap.get(name, -1)
                for name in ("STORE_GLOBAL", "DELETE_GLOBAL", "EXTENDED_ARG")
            )
            known = (store, delete, extended)
        _STORE_GLOBAL_OPCODES = (frozenset(known[:2]) - {-1}, known[2])
    return _STORE_GLOBAL_OPCODES
