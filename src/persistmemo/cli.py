"""The ``persistmemo`` command line (also ``python -m persistmemo``).

``ls``, ``show``, ``stats``, ``clear``, ``prune``, ``check``, ``path`` and ``demo`` over the
default store or ``--store DIR|URL``; errors go to stderr as one line, and the exit code
says what happened (0 done, 1 problems found, 2 usage errors). Every command, option and
exit code: docs/cli.md.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import math
import os
import re
import stat
import sys
import time
import types
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from persistmemo import _environment as environment
from persistmemo._faults import LOGGER_NAME
from persistmemo._memo.memoized import MemoizedFunction
from persistmemo._secret import untrusted_reason
from persistmemo._versioning.closures import MEMOIZED_MARK
from persistmemo.errors import CommandError, UsageError
from persistmemo.stores.base import EntryInfo, FunctionSummary
from persistmemo.stores.disk import Store, default_directory
from persistmemo.stores.inspection import directory_size
from persistmemo.stores.redis import RedisStore

WIDTH = 80
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE
_SHORTEST_SECRET = 16  # as for the user's secret.key
_LONGEST_SECRET = 64 * 1024  # a key file holds 32 bytes: anything this large is not one
_NAMES_LISTED = 10  # functions named in a "no entries for ..." message
# Characters that would reach the terminal as something else than themselves: controls
# (escape sequences), format characters (bidi overrides), separators, lone surrogates.
_UNPRINTABLE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- formatting ----------------------------------------------------------------------------


def human_size(size: float) -> str:
    """``1.5 MB`` style sizes (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_seconds(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4.2 min``, ``3.1 h``, ``2.0 d``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    for limit, unit, scale in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds / 86400:.1f} d"


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``15m``, ``45s`` or ``90``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"cannot read {text!r} as a duration: write 30d, 12h, 15m or 45s")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def printable(text: str) -> str:
    """``text`` as it may be shown on a terminal: control characters, escape sequences, bidi
    overrides and lone surrogates written as ``\\x1b``-style escapes.

    Names shown come from the store, which whoever can write it controls.

    >>> printable("app.load\\x1b[2J")
    'app.load\\\\x1b[2J'
    """
    if text.isprintable():
        return text
    return "".join(
        repr(char)[1:-1] if char != " " and _unprintable(char) else char for char in text
    )


def _unprintable(char: str) -> bool:
    return unicodedata.category(char) in _UNPRINTABLE_CATEGORIES or not char.isprintable()


def _listed(names: Sequence[str]) -> str:
    """Names for a message, the first few of a long list."""
    shown = ", ".join(printable(name) for name in sorted(names)[:_NAMES_LISTED]) or "none"
    more = len(names) - _NAMES_LISTED
    return f"{shown} and {more} more (persistmemo ls lists them)" if more > 0 else shown


def _dumps(value: object) -> str:
    """JSON text with inf and NaN written as null: JSON cannot hold them, and the figures
    of an entry's header are not verified, so they may be anything."""
    return json.dumps(_json_safe(value), indent=2, allow_nan=False)


def _json_safe(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], first_width: int) -> str:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [first_width] + [
        max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(1, len(headers))
    ]
    lines = []
    for row in [list(headers), *rows]:
        cells = [_clip(row[0], first_width).ljust(first_width)]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _first_column_width(rows: Sequence[Sequence[str]], header: str, others: int) -> int:
    longest = max([len(header), *(len(printable(row[0])) for row in rows)])
    return max(12, min(longest, WIDTH - others))


class Progress:
    """Progress on stderr when it is a terminal; nothing when piped."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or done == total):
            self.last = now
            print(f"\r{self.label} {done}/{total}", end="", file=sys.stderr, flush=True)
            if done == total:
                print(file=sys.stderr)


# --- commands --------------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> Any:
    secret = _secret(args)
    if not args.store and environment.url():
        # The library's default store is then Redis (with $PERSISTMEMO_DIR, a local tier in
        # front of it): the command looks at the shared one.
        args.store = environment.url()
    if args.store and "://" in args.store:
        try:
            namespace = {} if args.namespace is None else {"namespace": args.namespace}
            remote = RedisStore(args.store, secret=secret, **namespace)
        except ImportError as error:
            raise CommandError(str(error)) from None
        except ValueError as error:  # a URL or namespace the user has to correct
            option = "--namespace" if "namespace=" in str(error) else "--store"
            raise UsageError(f"{option}: {error}") from None
        if not remote.open():
            raise ConnectionError(f"cannot reach the Redis store at {remote.display_url}")
        return remote
    if args.namespace is not None:
        raise UsageError(
            "--namespace picks the namespace of a Redis store: give --store redis://host:6379/0 "
            "with it (a store directory has no namespaces)"
        )
    shared = bool(getattr(args, "shared", False))
    store = (
        Store(args.store, secret=secret, shared=shared)
        if args.store
        else Store(secret=secret, shared=shared)
    )
    if not (store.directory / "cache.db").exists():
        raise FileNotFoundError(f"no persistmemo store at {store.directory}")
    changes = args.command in ("clear", "prune") or (
        args.command == "check" and getattr(args, "fix", False)
    )
    if changes and not shared:
        problem = untrusted_reason(store.directory)
        if problem is not None:
            raise UsageError(
                f"{store.directory} {problem}: persistmemo changes such a store only when it "
                "is opened as shared; add --shared (with the team's secret) to change it"
            )
    return store


def _secret(args: argparse.Namespace) -> bytes | None:
    """The key of ``--secret-file``, or None: the stores then read ``$PERSISTMEMO_SECRET``
    or the user's ``secret.key``, as the library does."""
    if not args.secret_file:
        return None
    path = Path(args.secret_file).expanduser()
    try:
        secret = _read_key_file(path)
    except OSError as error:
        raise UsageError(
            f"--secret-file: cannot read {str(path)!r}: {error.strerror or error}"
        ) from None
    if len(secret) < _SHORTEST_SECRET:
        raise UsageError(
            f"--secret-file: {str(path)!r} holds {len(secret)} bytes, fewer than "
            f"{_SHORTEST_SECRET}: give a key file such as secret.key (its bytes are the key), "
            f"or set $PERSISTMEMO_SECRET to a passphrase"
        )
    return secret


def _read_key_file(path: Path) -> bytes:
    """The bytes of the regular file at ``path``. A FIFO or a device would block or never
    end, and a symbolic link may point anywhere: refused before anything is read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP and path.is_symlink():
            raise UsageError(
                f"--secret-file: {str(path)!r} is a symbolic link: give the file it points to "
                f"({str(path.resolve())!r})"
            ) from None
        raise
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise UsageError(
                f"--secret-file: {str(path)!r} is not a regular file: give the key file itself"
            )
        if status.st_size > _LONGEST_SECRET:
            raise UsageError(
                f"--secret-file: {str(path)!r} holds {status.st_size:,} bytes, more than a key "
                f"file ({_LONGEST_SECRET:,} at most): give a key file such as secret.key"
            )
        chunks = []
        while chunk := os.read(descriptor, _LONGEST_SECRET + 1):
            chunks.append(chunk)
            if sum(map(len, chunks)) > _LONGEST_SECRET:  # grew since fstat
                raise UsageError(
                    f"--secret-file: {str(path)!r} holds more than {_LONGEST_SECRET:,} bytes: "
                    f"give a key file such as secret.key"
                )
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _where(store: Any) -> str:
    return str(getattr(store, "directory", None) or store.display_url)


def _summaries(store: Any) -> list[tuple[FunctionSummary, int]]:
    hits = store.recorded_hits()
    found = sorted(store.functions().values(), key=lambda s: s.compute_seconds, reverse=True)
    return [(summary, hits.get(summary.function, 0)) for summary in found]


def _cmd_ls(args: argparse.Namespace) -> int:
    store = _open_store(args)
    summaries = _summaries(store)
    if args.json:
        print(_dumps([_summary_json(summary, hits) for summary, hits in summaries]))
        return 0
    if not summaries:
        print(f"{_where(store)}: empty")
        return 0
    headers = ["FUNCTION", "ENTRIES", "SIZE", "VERSIONS", "COMPUTE", "HITS", "SAVED"]
    rows = [
        [
            summary.function,
            str(summary.entries),
            human_size(summary.size),
            str(len(summary.versions)),
            human_seconds(summary.compute_seconds),
            str(hits),
            human_seconds(_saved(summary, hits)),
        ]
        for summary, hits in summaries
    ]
    others = sum(
        max(len(headers[i]), *(len(printable(r[i])) for r in rows)) + 2 for i in range(1, 7)
    )
    print(_table(headers, rows, _first_column_width(rows, "FUNCTION", others)))
    return 0


def _saved(summary: FunctionSummary, hits: int) -> float:
    """Compute time saved by the recorded hits, at the function's mean compute time."""
    return hits * summary.compute_seconds / summary.entries if hits and summary.entries else 0.0


def _summary_json(summary: FunctionSummary, hits: int) -> dict[str, Any]:
    return {
        "function": summary.function,
        "entries": summary.entries,
        "bytes": summary.size,
        "versions": sorted(summary.versions),
        "oldest": summary.oldest,
        "newest": summary.newest,
        "compute_seconds": summary.compute_seconds,
        "expired": summary.expired,
        "hits": hits,
        "saved_seconds": _saved(summary, hits),
    }


def _cmd_show(args: argparse.Namespace) -> int:
    store = _open_store(args)
    entries = sorted(store.entries(args.function), key=lambda e: e.stored_at, reverse=True)
    if not entries:
        known = _listed(list(store.functions()))
        raise CommandError(f"no entries for {args.function!r} (functions in this store: {known})")
    if args.json:
        print(_dumps([_entry_json(entry) for entry in entries]))
        return 0
    now = time.time()
    rows = [
        [
            entry.key.rsplit(":", 1)[1][:16],
            entry.version[:16],
            human_size(entry.size),
            human_seconds(now - entry.stored_at) + " ago",
            human_seconds(entry.compute_seconds),
            _expiry(entry, now),
        ]
        for entry in entries
    ]
    print(f"{printable(args.function)}: {len(entries)} entries, newest first")
    headers = ["DIGEST", "VERSION", "SIZE", "STORED", "COMPUTE", "EXPIRES"]
    print(_table(headers, rows, 16))
    if args.module:
        print(_version_description(args.function, args.module))
    return 0


def _import_named(module: str) -> Any:
    """Import a module the user named on the command line, from the working directory too
    (as ``python -m`` would: the installed ``persistmemo`` script does not put it on the
    path). Only names given on the command line come here, never names read from a store."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module)


def _version_description(function: str, module: str) -> str:
    """What goes into the current version of ``function``, found among the memoized
    functions of ``module`` (the name never decides what is imported or called)."""
    try:
        memoized = memoized_functions(_import_named(module)).get(function)
    except Exception as error:
        raise CommandError(
            f"--module {module}: importing it failed ({type(error).__name__}: {error})"
        ) from None
    if memoized is None:
        raise CommandError(f"--module {module}: no memoized function {printable(function)!r} there")
    info = memoized.version_info()
    lines = [f"current version {info['version']}" + (" (pinned)" if info.get("pinned") else "")]
    own = info.get("function") or {}
    if own:
        lines.append(f"  code       {own.get('module')}.{own.get('qualname')} ({own.get('basis')})")
    for layer in info.get("layers", []):
        lines.append(f"  layer      {layer['module']}.{layer['qualname']} ({layer['basis']})")
    for helper in info.get("helpers", []):
        lines.append(f"  helper     {helper['module']}.{helper['qualname']} ({helper['digest']})")
    for captured in info.get("captured", []):
        lines.append(f"  captured   {captured}")
    for constant in info.get("constants", []):
        lines.append(f"  constant   {constant['module']}.{constant['name']} = {constant['repr']}")
    for name, version in sorted((info.get("packages") or {}).items()):
        lines.append(f"  package    {name} {version}")
    return "\n".join(printable(line) for line in lines)


def _expiry(entry: EntryInfo, now: float) -> str:
    # An infinite ttl reaches the disk store as an infinite expiry time.
    if entry.expires_at is None or not math.isfinite(entry.expires_at):
        return "never"
    if entry.expires_at <= now:
        return "expired"
    return "in " + human_seconds(entry.expires_at - now)


def _entry_json(entry: EntryInfo) -> dict[str, Any]:
    return {
        "key": entry.key,
        "version": entry.version,
        "bytes": entry.size,
        "stored_at": _finite(entry.stored_at),
        "expires_at": _finite(entry.expires_at),
        "compute_seconds": _finite(entry.compute_seconds),
    }


def _finite(number: float | None) -> float | None:
    """``number``, or None for inf and NaN, which JSON cannot hold (an infinite expiry is
    no expiry; the header figures are not verified and may be anything)."""
    return number if number is not None and math.isfinite(number) else None


def _cmd_stats(args: argparse.Namespace) -> int:
    store = _open_store(args)
    summaries = _summaries(store)
    entries = sum(summary.entries for summary, _ in summaries)
    expired = sum(summary.expired for summary, _ in summaries)
    value_bytes = sum(summary.size for summary, _ in summaries)
    disk_bytes = directory_size(store.directory) if isinstance(store, Store) else None
    compute = sum(summary.compute_seconds for summary, _ in summaries)
    hits = sum(count for _, count in summaries)
    saved = sum(_saved(summary, count) for summary, count in summaries)
    if args.json:
        figures = {
            "store": _where(store),
            "functions": len(summaries),
            "entries": entries,
            "expired": expired,
            "value_bytes": value_bytes,
            "disk_bytes": disk_bytes,
            "compute_seconds": compute,
            "hits": hits,
            "saved_seconds": saved,
        }
        print(_dumps(figures))
        return 0
    print(f"store          {_where(store)}")
    print(f"functions      {len(summaries)}")
    print(f"entries        {entries} ({expired} expired)")
    print(f"values         {human_size(value_bytes)}")
    if disk_bytes is not None:
        print(f"on disk        {human_size(disk_bytes)}")
    print(f"compute stored {human_seconds(compute)}")
    print(f"hits recorded  {hits} (saved about {human_seconds(saved)})")
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if args.functions:
        unmatched = []
        for function in args.functions:
            removed = store.delete_tagged(function)
            store.forget_hits(function)
            if removed:
                print(f"{printable(function)}: removed {removed} entries")
            else:
                unmatched.append(function)
        if unmatched:
            known = _listed(list(store.functions()))
            names = ", ".join(repr(function) for function in unmatched)
            raise CommandError(
                f"no entries matched {names}: nothing removed for it "
                f"(functions in this store: {known})"
            )
        return 0
    count = len(store)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("clearing a whole store asks for confirmation: pass --yes")
        answer = input(f"Remove all {count} entries from {_where(store)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 0
    removed = store.clear()
    print(f"removed {removed} entries from {_where(store)}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    store = _open_store(args)
    older_than = parse_duration(args.older_than) if args.older_than else None
    keep = _keep_versions(store, args.keep_versions, args.module) if args.keep_versions else None
    expired = args.expired or (older_than is None and keep is None)
    removed = store.prune(
        expired=expired, older_than=older_than, keep_versions=keep, progress=Progress("pruning")
    )
    print(f"removed {removed} entries")
    return 0


def _keep_versions(store: Any, specs: list[str], modules: list[str] | None) -> dict[str, list[str]]:
    keep: dict[str, list[str]] = {}
    for spec in specs:
        if spec == "current":
            keep.update(_current_versions(store, modules or []))
        elif "=" in spec:
            function, versions = spec.split("=", 1)
            keep[function] = [v for v in versions.split(",") if v]
        else:
            raise UsageError(
                f"--keep-versions takes 'current' (with --module) or FUNCTION=V1,V2; got {spec!r}"
            )
    return keep


def _current_versions(store: Any, modules: list[str]) -> dict[str, list[str]]:
    """The current version of every stored function that is a memoized function of one of
    ``modules``.

    Function names come from the store, which whoever can write it (a shared Redis server, a
    planted ``tool.py`` next to the user) controls: they only select among the memoized
    functions found in the namespaces of the modules the user named. They never decide what
    is imported, looked up or called."""
    if not modules:
        raise UsageError(
            "--keep-versions current needs --module MODULE (repeatable), the modules whose "
            "functions' current versions to keep: they are imported, nothing read from the "
            "store is"
        )
    found: dict[str, dict[str, MemoizedFunction[..., Any]]] = {}
    for named in dict.fromkeys(modules):
        try:
            found[named] = memoized_functions(_import_named(named))
        except Exception as error:  # the user's module failed to import: prune nothing
            raise CommandError(
                f"--module {named}: importing it failed ({type(error).__name__}: {error}); "
                "nothing was pruned"
            ) from None
    keep: dict[str, list[str]] = {}
    outside = 0
    for function in store.functions():
        module = _owning_module(function, modules)
        if module is None:
            outside += 1
            continue
        if module not in found:
            continue  # its import failed, said above
        memoized = found[module].get(function)
        if memoized is None:
            print(
                f"{printable(function)}: not a memoized function of {module}, its versions "
                f"are kept",
                file=sys.stderr,
            )
            continue
        try:
            keep[function] = [memoized.version()]
        except Exception as error:  # deriving the version failed (source unreadable...)
            print(
                f"{printable(function)}: its current version is unknown "
                f"({type(error).__name__}: {error}), its versions are kept",
                file=sys.stderr,
            )
    if outside:
        print(
            f"{outside} functions are outside the --module modules: their versions are kept",
            file=sys.stderr,
        )
    return keep


def _owning_module(function: str, modules: Sequence[str]) -> str | None:
    """The longest of ``modules`` that ``function`` (``module.qualname``) lives in."""
    owners = [module for module in modules if function.startswith(module + ".")]
    return max(owners, key=len) if owners else None


# Read through the base types' own descriptors: a class's metaclass, a module subclass or a
# staticmethod subclass could otherwise run code of its own when asked for them.
_MODULE_NAMESPACE: Any = vars(types.ModuleType)["__dict__"]
_CLASS_NAMESPACE: Any = vars(type)["__dict__"]
_WRAPPED_FUNCTION: dict[type, Any] = {
    staticmethod: vars(staticmethod)["__func__"],
    classmethod: vars(classmethod)["__func__"],
}


def memoized_functions(module: types.ModuleType) -> dict[str, MemoizedFunction[..., Any]]:
    """The memoized functions in ``module``'s own namespace, and the memoized methods of the
    classes there (one level down), by their identity in the store.

    Only namespaces are read (no ``getattr``): a module's ``__getattr__`` (lazy imports of
    submodules), properties and other descriptors never run, and nothing is called."""
    found: dict[str, MemoizedFunction[..., Any]] = {}
    if not issubclass(type(module), types.ModuleType):
        return found
    for value in list(_MODULE_NAMESPACE.__get__(module).values()):
        members = [value]
        if issubclass(type(value), type):
            members += list(_CLASS_NAMESPACE.__get__(value).values())
        for member in members:
            memoized = _memoized_behind(member)
            if memoized is not None:
                found.setdefault(memoized.identity, memoized)
    return found


def _memoized_behind(value: object) -> MemoizedFunction[..., Any] | None:
    """The state of the memoized function ``value`` is (or that a staticmethod or
    classmethod wraps), or None: checked by type and identity, not by asking ``value``."""
    for kind, wrapped in _WRAPPED_FUNCTION.items():
        if issubclass(type(value), kind):
            value = wrapped.__get__(value)
            break
    if type(value) is not types.FunctionType or value.__dict__.get(MEMOIZED_MARK) is not True:
        return None
    control = value.__dict__.get("version")
    if (
        type(control) is types.MethodType
        and control.__func__ is MemoizedFunction.version
        and type(control.__self__) is MemoizedFunction
    ):
        return control.__self__
    return None


def current_version(function: str, module: str) -> str | None:
    """The version the memoized ``function`` of ``module`` has now, or None when ``module``
    holds no memoized function of that identity.

    Imports ``module`` (the caller vouches for it: its top-level code runs), and nothing
    else: ``function`` is looked for among the memoized functions found there."""
    memoized = memoized_functions(_import_named(module)).get(function)
    return None if memoized is None else memoized.version()


def _cmd_check(args: argparse.Namespace) -> int:
    store = _open_store(args)
    report = store.check(fix=args.fix, progress=Progress("checking"))
    for problem in report.problems:
        print(printable(problem))
    fixed = f", removed {report.removed}" if args.fix else ""
    verdict = "ok" if report.ok else f"{len(report.problems)} problems"
    print(f"checked {report.entries} entries: {verdict}{fixed}")
    return 0 if report.ok else 1


def _cmd_path(args: argparse.Namespace) -> int:
    if args.store and "://" in args.store:
        raise UsageError("path shows a store directory: --store takes a directory here")
    if args.store:
        print(f"{Store(args.store).directory}\t(--store)")
        return 0
    path, reason = default_directory()
    print(f"{path}\t({reason})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from persistmemo._demo import run  # the demo module defines a memoized function

    return run(args.store, args.samples)


# --- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="persistmemo", description="Inspect and manage persistmemo stores."
    )
    # The global options are accepted before and after the command; after it, SUPPRESS keeps
    # an option given before it from being reset to the default.
    common = argparse.ArgumentParser(add_help=False)
    for options, default in ((parser, None), (common, argparse.SUPPRESS)):
        options.add_argument(
            "--store",
            metavar="DIR|URL",
            default=default,
            help="store directory or redis:// URL (default: the default store)",
        )
        options.add_argument(
            "--namespace",
            metavar="NAME",
            default=default,
            help="with a redis:// --store: the namespace of its keys, as RedisStore(namespace=) "
            "(default: persistmemo)",
        )
        options.add_argument(
            "--shared",
            action="store_true",
            default=False if default is None else default,
            help="open the store directory as a team store, as Store(shared=True): without it, "
            "a directory others can write is read but never changed (clear, prune and check "
            "--fix then remove nothing)",
        )
        options.add_argument(
            "--secret-file",
            metavar="PATH",
            default=default,
            help="file whose bytes are the key the entries were sealed with, such as another "
            "user's secret.key (default: $PERSISTMEMO_SECRET, else your secret.key)",
        )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    command("ls", _cmd_ls, "list functions with entries, size, versions and time saved")
    commands.choices["ls"].add_argument("--json", action="store_true", help="JSON for scripts")
    show = command("show", _cmd_show, "one function's entries, newest first")
    show.add_argument("function", help="function identity, e.g. mypkg.data.load")
    show.add_argument("--json", action="store_true", help="JSON for scripts")
    show.add_argument(
        "--module",
        metavar="PKG.MOD",
        help="also import this module (its top-level code runs) and say what goes into the "
        "function's current version: its code, the helpers, constants, captured functions "
        "and packages followed",
    )
    stats = command("stats", _cmd_stats, "store-wide figures")
    stats.add_argument("--json", action="store_true", help="JSON for scripts")
    clear = command(
        "clear",
        _cmd_clear,
        "remove entries of functions, or of the whole store (exit 1 when a named function has "
        "no entries)",
    )
    clear.add_argument("functions", nargs="*", metavar="FUNCTION")
    clear.add_argument("--yes", action="store_true", help="clear a whole store without asking")
    prune = command("prune", _cmd_prune, "remove expired, old or outdated entries")
    prune.add_argument("--expired", action="store_true", help="expired entries (the default)")
    prune.add_argument("--older-than", metavar="AGE", help="entries stored before AGE (30d)")
    prune.add_argument(
        "--keep-versions",
        action="append",
        metavar="SPEC",
        help="FUNCTION=V1,V2: that function's other versions go; or 'current': each "
        "function of the --module modules keeps only the version it has now",
    )
    prune.add_argument(
        "--module",
        action="append",
        metavar="PKG.MOD",
        help="with --keep-versions current: a module to import to learn its functions' "
        "current versions (repeatable). Its top-level code runs, as on import; function "
        "names read from the store never decide what is imported, and functions outside "
        "these modules keep every version",
    )
    check = command(
        "check",
        _cmd_check,
        "check SQLite integrity and every entry's seal (with the key of --secret-file or "
        "$PERSISTMEMO_SECRET)",
    )
    check.add_argument(
        "--fix",
        action="store_true",
        help="remove entries that fail (nothing is removed when the entries failing their seal "
        "outnumber those that pass: they were sealed with a different secret)",
    )
    command("path", _cmd_path, "where the default store lives, and why")
    demo = command("demo", _cmd_demo, "compute once, then answer from disk in a fresh process")
    demo.add_argument("--samples", type=int, default=8_000_000, help="size of the computation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    _one_line_warnings()
    try:
        code = int(args.handler(args))
        # Flushed here, not at exit, so that a reader gone away is handled below.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_gone()
    except UsageError as error:
        print(f"persistmemo {args.command}: {error}", file=sys.stderr)
        return 2
    except (CommandError, OSError) as error:
        print(f"persistmemo {args.command}: {error}", file=sys.stderr)
        return 1


def _one_line_warnings() -> None:
    """A store fault reaches a command line user as one line on stderr: not twice (the
    warning and the logger's last-resort handler), nor with a line of our source."""
    import logging
    import warnings

    logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())

    def show(message: Warning | str, *_: object, **__: object) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def _reader_gone() -> int:
    """The reader of stdout closed it (``| head``): stop quietly, as Unix tools do.

    stdout still holds unwritten bytes that the interpreter would try to flush at exit, and
    fail again, noisily: point it at /dev/null first."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE
