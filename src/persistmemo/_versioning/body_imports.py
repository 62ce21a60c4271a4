"""The modules a function imports inside its body, and the source of those not imported yet.

The version follows the names the code reads from such modules, as for a module bound
globally. A module not imported yet is never imported here (importing may print, parse the
command line or exit): it is versioned by its source and the sources of the user's modules
it imports, or by the ``.pyc`` the import system would load instead.
"""

from __future__ import annotations

import marshal
import os
import sys
import types

from persistmemo._hashing import blake2b
from persistmemo._keys.canonical import encode
from persistmemo._versioning.origins import USER, origin_of_module, origin_of_path
from persistmemo._versioning.running_source import code_fingerprint, same_code, source_index

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from persistmemo._versioning.sources import SourceIndex


# IMPORT_NAME's opcode as ``opcode.opmap`` has it, on the Pythons whose number is known:
# importing opcode builds every table dis reads, and the light walk of a re-run asks this of
# every function (the cold-start budget, docs/architecture.md). Another Python reads opcode.
_IMPORT_NAME = {(3, 10): 108, (3, 11): 108, (3, 12): 108, (3, 13): 75}.get(sys.version_info[:2])


def import_name_opcode() -> int:
    """The opcode of IMPORT_NAME on the running Python."""
    if _IMPORT_NAME is not None:
        return _IMPORT_NAME
    from opcode import opmap  # a Python the table does not list

    return opmap["IMPORT_NAME"]


def imports_anything(code: types.CodeType) -> bool:
    """A quick filter: whether ``code`` (or code nested in it) has an IMPORT_NAME at all."""
    if import_name_opcode() in code.co_code[::2]:
        return True
    return any(
        isinstance(constant, types.CodeType) and imports_anything(constant)
        for constant in code.co_consts
    )


def user_modules_imported(
    code: types.CodeType, namespace: dict[str, Any]
) -> tuple[list[Any], list[str]]:
    """The modules ``code`` imports inside itself (nested code included): the user's that
    are imported already, and the names of those not imported yet (never imported here: a
    module may print, parse the command line or exit when imported)."""
    import importlib.util

    loaded: list[Any] = []
    pending: list[str] = []
    for name, level, fromlist in _import_statements(code):
        try:
            target = importlib.util.resolve_name("." * level + name, namespace.get("__package__"))
        except (ImportError, ValueError, TypeError):
            continue
        # `import a.b.c` binds `a` and reads `a.b.c` through it: each package on the way;
        # `from . import sub` may name a submodule.
        parts = target.split(".")
        candidates = [".".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
        candidates += [f"{target}.{item}" for item in fromlist if item != "*"]
        for dotted in candidates:
            module = sys.modules.get(dotted)
            if module is None:
                pending.append(dotted)
            elif origin_of_module(module) == USER:
                loaded.append(module)
    return loaded, pending


def imported_top_names(code: types.CodeType) -> list[str]:
    """Top-level names of the modules ``code`` imports inside itself (IMPORT_NAME)."""
    import dis

    found: list[str] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
            found.append(instruction.argval.partition(".")[0])
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found += imported_top_names(constant)
    return found


def _import_statements(code: types.CodeType) -> list[tuple[str, int, tuple[str, ...]]]:
    """(module name, relative level, names imported from it) of each IMPORT_NAME in
    ``code`` and its nested code."""
    import dis

    found: list[tuple[str, int, tuple[str, ...]]] = []
    constants: list[object] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_CONST", "LOAD_SMALL_INT"):  # 3.14: small ints
            constants.append(instruction.argval)
        elif instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
            level = constants[-2] if len(constants) >= 2 else 0
            fromlist = constants[-1] if constants else None
            names = (
                tuple(n for n in fromlist if isinstance(n, str)) if type(fromlist) is tuple else ()
            )
            found.append((instruction.argval, level if type(level) is int else 0, names))
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found += _import_statements(constant)
    return found


def unimported_source(name: str, seen: set[str], depth: int = 0) -> list[tuple[str, bytes]]:
    """(path, digest of the normalized source) of the user's module ``name``, found without
    importing it, and of the user's modules its source imports, transitively; nothing for a
    module that is not the user's (or not found)."""
    path = _source_path_without_import(name)
    if path is None or path in seen or depth > 20 or origin_of_path(path) != USER:
        return []
    seen.add(path)
    index = source_index(path)
    if index is None:
        return [(path, b"unreadable")]
    found = [(path, _what_import_would_run(path, index))]
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for imported in index.imported_names(package):
        found += unimported_source(imported, seen, depth + 1)
    return found


def _what_import_would_run(path: str, index: SourceIndex) -> bytes:
    """The digest of what importing ``path`` would run: its normalized source, unless the
    import system would load a ``.pyc`` that does not hold that source (a stale one, after
    an edit that kept size and mtime), whose code objects are then digested instead."""
    import importlib.util

    try:
        cached = importlib.util.cache_from_source(path)
        with open(cached, "rb") as file:
            data = file.read()
        info = os.stat(path)
    except (OSError, NotImplementedError, ValueError):
        return index.tree_digest()  # no bytecode: the source is what would be compiled
    if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
        return index.tree_digest()  # not this Python's: recompiled from the source
    flags = int.from_bytes(data[4:8], "little")
    if flags == 0:  # checked by the source's mtime and size only
        mtime = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        if mtime != int(info.st_mtime) & 0xFFFFFFFF or size != info.st_size & 0xFFFFFFFF:
            return index.tree_digest()  # out of date by its stamp: recompiled
    elif flags & 0b10:  # a hash-based .pyc checked against the source: it holds the source
        return index.tree_digest()
    try:
        loaded = marshal.loads(data[16:])
        compiled = compile(index.tree, path, "exec", dont_inherit=True)
    except Exception:
        return index.tree_digest()
    if same_code(loaded, compiled):
        return index.tree_digest()
    return blake2b(encode(["bytecode", *code_fingerprint(loaded)]), digest_size=16).digest()


def _source_path_without_import(name: str) -> str | None:
    """The source file of module ``name`` as the path finder would find it, without running
    any package's ``__init__`` (find_spec of ``a.b`` imports ``a``)."""
    from importlib.machinery import PathFinder

    search: list[str] | None = None
    spec = None
    parts = name.split(".")
    for depth in range(len(parts)):
        prefix = ".".join(parts[: depth + 1])
        loaded = sys.modules.get(prefix)
        if loaded is not None and depth < len(parts) - 1:
            search = list(getattr(loaded, "__path__", None) or [])
            continue
        try:
            spec = PathFinder.find_spec(prefix, search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return origin if isinstance(origin, str) and origin.endswith(".py") else None
