"""Stamps of source files taken at decoration, to tell later whether a file still holds the code.

A version is derived at the first call, but the process runs the code it compiled at import:
``definition_stamp`` records the stat of the files the function came from (and of the user
modules loaded since), and ``holds_running_code`` compares a file's stat with it. Every
``import persistmemo`` imports this module and every decoration calls it: it stays small.
"""

from __future__ import annotations

import os
import sys
import time

# No typing at run time (the cold-start budget, docs/architecture.md).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from persistmemo._typing_stand_ins import NamedTuple

_MAX_LAYERS = 100


class FileStat(NamedTuple):
    """What tells, as git's index does, that a file's content is the one seen before.

    Size and mtime alone miss ``cp -p`` and tools that restore the mtime after a same-size
    rewrite; the ctime (which no user call sets back) catches those, and the inode and
    device a path switched to another file (a symlinked release directory switched)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int


class DefinitionStamp(NamedTuple):
    """The stats, at decoration, of the source files of a function and its wrapped layers."""

    files: tuple[tuple[str, FileStat], ...]


class Stamp(NamedTuple):
    """A file's stat as first seen by this process, and whether it was taken while the
    file's module was being imported (then it proves the file held the code compiled from
    it; otherwise only that the file has not changed since)."""

    stat: FileStat
    at_import: bool


# The stamp per file in this process: taken while its module was being imported (a
# decoration in its body, or in a module it imports), or when a decoration first saw the
# module in sys.modules.
_stamped_files: dict[str, Stamp] = {}
_seen_modules: set[str] = set()
_modules_seen_at: list[int] = [-1]


def definition_stamp(func: Any) -> DefinitionStamp:
    """Record the stat of the files ``func`` (and what it wraps) was compiled from, and of
    every user module loaded so far (see ``stamp_loaded_modules``)."""
    files: list[tuple[str, FileStat]] = []
    importing: str | None = None
    layer = func
    for _ in range(_MAX_LAYERS):
        layer = getattr(layer, "__func__", layer)  # a bound method, staticmethod, classmethod
        code = getattr(layer, "__code__", None)
        module = getattr(layer, "__module__", None)
        if code is not None and _being_imported(module):
            importing = importing or module
            stat = file_stat(code.co_filename)
            if stat is not None and not _racy(stat):
                files.append((code.co_filename, stat))
            if stat is not None:
                _record(code.co_filename, stat, at_import=True)
        layer = getattr(layer, "__wrapped__", None)
        if layer is None:
            break
    stamp_loaded_modules(importing)
    return DefinitionStamp(tuple(files))


def stamp_loaded_modules(importing: str | None = None) -> None:
    """Stamp the source file of every module in sys.modules not stamped yet.

    A helper module imported before the decoration (``import helpers`` at the top of the
    script) is then compared by its whole stat at the first call: a ``cp -p`` over it, or a
    switched symlink, between now and then is seen. Costs one stat per new source file, and
    nothing when no module was imported since the last decoration.
    """
    modules = sys.modules
    if len(modules) == _modules_seen_at[0]:
        return
    _modules_seen_at[0] = len(modules)
    names = list(modules)  # in the order imports began (sys.modules keeps insertion order)
    # Modules imported since `importing` (the module being imported, whose body holds this
    # decoration) began are, like its own file, compiled moments ago: their stamps prove
    # what they were compiled from (`from helpers import scale` above `@memo`).
    within: set[str] = set()
    if importing is not None and importing in modules:
        within = set(names[names.index(importing) :])
    new = modules.keys() - _seen_modules
    _seen_modules.update(new)
    standard_library = _standard_library()
    for name in new:
        # A module's own namespace, read past any __getattribute__ of its class: a lazily
        # loaded module (importlib.util.LazyLoader) or a proxy must not be run, or fail,
        # because a function was decorated.
        try:
            namespace = object.__getattribute__(modules.get(name), "__dict__")
            path = namespace.get("__file__")
            spec = namespace.get("__spec__")
        except Exception:
            continue
        # The standard library's and installed packages' files are never versioned by
        # source: not stamped (a cheap test by prefix; what slips through costs one stat).
        # Nor are persistmemo's own, wherever it is installed (an editable install is not
        # in site-packages): the fingerprint names its files (fingerprints.py).
        if (
            type(path) is not str
            or not path.endswith(".py")
            or path.startswith(standard_library)
            or "-packages" in path  # site-packages, dist-packages
            or name.partition(".")[0] == "persistmemo"
        ):
            continue
        stat = file_stat(path)
        if stat is not None:
            try:
                initializing = bool(getattr(spec, "_initializing", False))
            except Exception:
                initializing = False
            _record(path, stat, at_import=initializing or name in within)


def _record(path: str, stat: FileStat, *, at_import: bool) -> None:
    # The first stamp stays: a file that differs from it changed after it was taken, even if
    # a later import (importlib.reload) compiled it again; those functions have their own
    # DefinitionStamp, and the others are checked against their code.
    at_import = at_import and not _racy(stat)
    found = _stamped_files.get(path)
    if found is None or (at_import and not found.at_import and found.stat == stat):
        _stamped_files[path] = Stamp(stat, at_import)


# A file changed this shortly before its stamp could change again, within the same tick of
# the kernel's coarse file clock, without its ctime changing (git's "racily clean" entries):
# such a stamp proves nothing by itself.
_RACY_NS = 20_000_000


def _racy(stat: FileStat) -> bool:
    return max(stat.mtime_ns, stat.ctime_ns) > time.time_ns() - _RACY_NS


def stamp_of(path: str) -> Stamp | None:
    """The stamp this process took of ``path``, if any."""
    return _stamped_files.get(path)


def holds_running_code(stat: FileStat, stamp: Stamp | None) -> bool:
    """Whether a file with ``stat`` now holds the code the process compiled from it.

    Yes when it still has the stat of a stamp taken at its import; no when it differs from
    any stamp (it changed since its module was imported); otherwise (no stamp, or one taken
    after the import) only when neither its content (mtime) nor its inode (ctime) changed
    since shortly before the process started, which is known on Linux only.
    """
    if stamp is not None:
        if stamp.stat != stat:
            return False
        if stamp.at_import:
            return True
    return unchanged_since_start(stat)


def file_stat(path: str) -> FileStat | None:
    """The stat of ``path`` as a FileStat, or None when it is not a readable file."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return FileStat(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)


def file_identity(path: str) -> tuple[int, int, int, int, int] | None:
    """(size, mtime_ns, ctime_ns, inode, device) of ``path``, or None (see FileStat)."""
    stat = file_stat(path)
    return None if stat is None else tuple(stat)  # type: ignore[return-value]


def unchanged_since_start(stat: FileStat) -> bool:
    """Whether a file with this stat was last written, and last replaced or renamed (its
    ctime), before this process started, so that it holds what the process compiled.

    Known on Linux only (elsewhere: False, and the caller checks the code itself).
    """
    started = _process_start_ns()
    if started is None:
        return False
    before = started - _START_MARGIN_NS
    return stat.mtime_ns < before and stat.ctime_ns < before


_START_MARGIN_NS = 2_000_000_000  # coarse file system clocks, and btime's whole seconds
_process_start: list[int | None] = []


def _process_start_ns() -> int | None:
    # The wall-clock time the process started: boot time plus the start in ticks since boot
    # (both as the kernel sees them now). Both are rounded down: the result is early, the
    # safe side.
    if not _process_start:
        started: int | None = None
        try:
            with open("/proc/self/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
            with open("/proc/stat", "rb") as file:
                boot = next(int(line.split()[1]) for line in file if line.startswith(b"btime"))
            ticks = int(fields[19])  # field 22, starttime; fields[0] is field 3
            started = boot * 1_000_000_000 + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, StopIteration, AttributeError):
            started = None
        _process_start.append(started)
    return _process_start[0]


_standard_library_directory: list[str] = []


def _standard_library() -> str:
    # Not sys.prefix, which is the project's own directory when a venv is made in it.
    if not _standard_library_directory:
        _standard_library_directory.append(os.path.join(os.path.dirname(os.__file__), ""))
    return _standard_library_directory[0]


def _being_imported(module_name: object) -> bool:
    # importlib sets spec._initializing while a module's body runs: decorations at import.
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))
