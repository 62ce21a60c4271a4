"""The ``persistmemo`` command line (also ``python -m persistmemo``).

    persistmemo ls [--json]            functions: entries, size, versions, compute, hits
    persistmemo show FUNCTION          one function's entries, newest first
    persistmemo stats                  the whole store
    persistmemo clear [FUNCTION ...]   remove entries (a whole store asks first, or --yes)
    persistmemo prune [--expired] [--older-than 30d] [--keep-versions current|F=V1,V2]
    persistmemo check [--fix]          SQLite integrity and every entry's seal
    persistmemo path                   where the default store lives, and why
    persistmemo demo                   the README's main job

``--store DIR`` picks a store (default: the default store). Exit codes: 0 ok, 1 problems found
(or no store there), 2 usage errors. Long operations show progress on a terminal only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from persistmemo.inspection import EntryInfo, FunctionSummary, directory_size
from persistmemo.naming import lookup
from persistmemo.store import Store, default_directory

WIDTH = 80
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit code 2)."""


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
    if seconds is None:
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


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], first_width: int) -> str:
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
    longest = max([len(header), *(len(row[0]) for row in rows)])
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
    if args.store and "://" in args.store:
        from persistmemo.backends.redis import RedisStore

        remote = RedisStore(args.store)
        if not remote.open():
            raise ConnectionError(f"cannot reach the Redis store at {args.store}")
        return remote
    store = Store(args.store) if args.store else Store()
    if not (store.directory / "cache.db").exists():
        raise FileNotFoundError(f"no persistmemo store at {store.directory}")
    return store


def _where(store: Any) -> str:
    return str(getattr(store, "directory", None) or store.url)


def _summaries(store: Any) -> list[tuple[FunctionSummary, int]]:
    hits = store.recorded_hits()
    found = sorted(store.functions().values(), key=lambda s: s.compute_seconds, reverse=True)
    return [(summary, hits.get(summary.function, 0)) for summary in found]


def _cmd_ls(args: argparse.Namespace) -> int:
    store = _open_store(args)
    summaries = _summaries(store)
    if args.json:
        print(json.dumps([_summary_json(summary, hits) for summary, hits in summaries], indent=2))
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
    others = sum(max(len(headers[i]), *(len(r[i]) for r in rows)) + 2 for i in range(1, 7))
    print(_table(headers, rows, _first_column_width(rows, "FUNCTION", others)))
    return 0


def _saved(summary: FunctionSummary, hits: int) -> float:
    """Compute time saved by the recorded hits, at the function's mean compute time."""
    return hits * summary.compute_seconds / summary.entries if summary.entries else 0.0


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
        known = ", ".join(sorted(store.functions())) or "none"
        print(f"no entries for {args.function!r} (functions in this store: {known})")
        return 1
    if args.json:
        print(json.dumps([_entry_json(entry) for entry in entries], indent=2))
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
    print(f"{args.function}: {len(entries)} entries, newest first")
    headers = ["DIGEST", "VERSION", "SIZE", "STORED", "COMPUTE", "EXPIRES"]
    print(_table(headers, rows, 16))
    return 0


def _expiry(entry: EntryInfo, now: float) -> str:
    if entry.expires_at is None:
        return "never"
    if entry.expires_at <= now:
        return "expired"
    return "in " + human_seconds(entry.expires_at - now)


def _entry_json(entry: EntryInfo) -> dict[str, Any]:
    return {
        "key": entry.key,
        "version": entry.version,
        "bytes": entry.size,
        "stored_at": entry.stored_at,
        "expires_at": entry.expires_at,
        "compute_seconds": entry.compute_seconds,
    }


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
        print(json.dumps(figures, indent=2))
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
        known = store.functions()
        for function in args.functions:
            removed = store.delete_tagged(function)
            store.forget_hits(function)
            note = "" if function in known else " (no such function in this store)"
            print(f"{function}: removed {removed} entries{note}")
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
    keep = _keep_versions(store, args.keep_versions) if args.keep_versions else None
    expired = args.expired or (older_than is None and keep is None)
    removed = store.prune(
        expired=expired, older_than=older_than, keep_versions=keep, progress=Progress("pruning")
    )
    print(f"removed {removed} entries")
    return 0


def _keep_versions(store: Any, specs: list[str]) -> dict[str, list[str]]:
    keep: dict[str, list[str]] = {}
    for spec in specs:
        if spec == "current":
            for function in store.functions():
                version = current_version(function)
                if version is None:
                    print(f"{function}: cannot import it, its versions are kept", file=sys.stderr)
                else:
                    keep[function] = [version]
        elif "=" in spec:
            function, versions = spec.split("=", 1)
            keep[function] = [v for v in versions.split(",") if v]
        else:
            raise UsageError(f"--keep-versions takes 'current' or FUNCTION=V1,V2; got {spec!r}")
    return keep


def current_version(function: str) -> str | None:
    """The version the importable memoized function ``function`` has now, or None."""
    parts = function.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found = lookup(".".join(parts[:split]), ".".join(parts[split:]))
        except LookupError:
            continue
        version = getattr(found, "version", None)
        return str(version()) if callable(version) else None
    return None


def _cmd_check(args: argparse.Namespace) -> int:
    store = _open_store(args)
    report = store.check(fix=args.fix, progress=Progress("checking"))
    for problem in report.problems:
        print(problem)
    fixed = f", removed {report.removed}" if args.fix else ""
    verdict = "ok" if report.ok else f"{len(report.problems)} problems"
    print(f"checked {report.entries} entries: {verdict}{fixed}")
    return 0 if report.ok else 1


def _cmd_path(args: argparse.Namespace) -> int:
    if args.store:
        print(f"{Store(args.store).directory}\t(--store)")
        return 0
    path, reason = default_directory()
    print(f"{path}\t({reason})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from persistmemo.demo import run  # the demo module defines a memoized function

    return run(args.store, args.samples)


# --- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        metavar="DIR|URL",
        help="store directory or redis:// URL (default: the default store)",
    )
    parser = argparse.ArgumentParser(
        prog="persistmemo", description="Inspect and manage persistmemo stores."
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
    stats = command("stats", _cmd_stats, "store-wide figures")
    stats.add_argument("--json", action="store_true", help="JSON for scripts")
    clear = command("clear", _cmd_clear, "remove entries of functions, or of the whole store")
    clear.add_argument("functions", nargs="*", metavar="FUNCTION")
    clear.add_argument("--yes", action="store_true", help="clear a whole store without asking")
    prune = command("prune", _cmd_prune, "remove expired, old or outdated entries")
    prune.add_argument("--expired", action="store_true", help="expired entries (the default)")
    prune.add_argument("--older-than", metavar="AGE", help="entries stored before AGE (30d)")
    prune.add_argument(
        "--keep-versions",
        action="append",
        metavar="SPEC",
        help="'current' (import each function) or FUNCTION=V1,V2: other versions go",
    )
    check = command("check", _cmd_check, "check SQLite integrity and every entry's seal")
    check.add_argument("--fix", action="store_true", help="remove entries that fail")
    command("path", _cmd_path, "where the default store lives, and why")
    demo = command("demo", _cmd_demo, "compute once, then answer from disk in a fresh process")
    demo.add_argument("--samples", type=int, default=8_000_000, help="size of the computation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as error:
        print(f"persistmemo {args.command}: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, OSError) as error:
        print(f"persistmemo {args.command}: {error}", file=sys.stderr)
        return 1
