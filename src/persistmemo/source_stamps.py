"""Stamps of source files taken at decoration, to tell later whether a file still holds the code.

A version is derived at the first call from source files, but the process runs the code it
compiled at import. ``definition_stamp`` records, at decoration, the ``os.stat`` of the files
that the function's code came from; at the first call, a file whose stat still matches is
known to hold the running code, and a file that changed is checked (or not trusted) instead.

A stamp only proves something when it is taken while the function's module is being imported
(the code was compiled moments before): a function decorated later, from a module imported
long ago, gets no stamp for that file. This module must stay tiny: ``import persistmemo``
imports it, and the decorator calls it once per decorated function (a few µs).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NamedTuple

_MAX_LAYERS = 100


class FileStat(NamedTuple):
    """What identifies a file's content cheaply: its modification time and size."""

    mtime_ns: int
    size: int


class DefinitionStamp(NamedTuple):
    """The stats, at decoration, of the source files of a function and its wrapped layers."""

    files: tuple[tuple[str, FileStat], ...]


# The first stamp per file in this process, taken while its module was being imported: a file
# whose stat still equals it holds the code every function of that module was compiled from.
_stamped_files: dict[str, FileStat] = {}


def definition_stamp(func: Any) -> DefinitionStamp:
    """Record the stat of the files ``func`` (and what it wraps) was compiled from."""
    files: list[tuple[str, FileStat]] = []
    layer = func
    for _ in range(_MAX_LAYERS):
        layer = getattr(layer, "__func__", layer)  # a bound method, staticmethod, classmethod
        code = getattr(layer, "__code__", None)
        if code is not None and _being_imported(getattr(layer, "__module__", None)):
            stat = file_stat(code.co_filename)
            if stat is not None:
                files.append((code.co_filename, stat))
                _stamped_files.setdefault(code.co_filename, stat)
        layer = getattr(layer, "__wrapped__", None)
        if layer is None:
            break
    return DefinitionStamp(tuple(files))


def stamped_stat(path: str) -> FileStat | None:
    """The stat recorded for ``path`` while its module was imported in this process, if any."""
    return _stamped_files.get(path)


def file_stat(path: str) -> FileStat | None:
    """The (mtime_ns, size) of ``path``, or None when it is not a readable file."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return FileStat(stat.st_mtime_ns, stat.st_size)


def file_identity(path: str) -> tuple[int, int, int, int, int] | None:
    """(size, mtime_ns, ctime_ns, inode, device) of ``path``: what tells, as git's index
    does, that a file's content is the one seen before (a rewrite that restores the size and
    mtime still changes ctime). None when it is not a readable file."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)


def unchanged_since_start(stat: FileStat) -> bool:
    """Whether a file with this stat was last written before this process started.

    Such a file holds the code the process compiled from it, stamp or not. Known on Linux
    only (elsewhere: False, and the caller checks the code itself).
    """
    started = _process_start_ns()
    return started is not None and stat.mtime_ns < started - _START_MARGIN_NS


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


def _being_imported(module_name: object) -> bool:
    # importlib sets spec._initializing while a module's body runs: decorations at import.
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))
