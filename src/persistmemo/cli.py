"""The ``persistmemo`` command line (also ``python -m persistmemo``).

Exit codes: 0 ok, 1 problems found, 2 usage errors.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from persistmemo.store import Store, default_directory


def _cmd_demo(args: argparse.Namespace) -> int:
    from persistmemo.demo import run  # the demo imports a decorated function

    return run(args.store, args.samples)


def _cmd_path(args: argparse.Namespace) -> int:
    if args.store:
        print(f"{Store(args.store).directory}\t(--store)")
        return 0
    path, reason = default_directory()
    print(f"{path}\t({reason})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="persistmemo", description="Inspect and manage persistmemo stores."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="compute once, answer from disk in a fresh process")
    demo.add_argument("--store", help="store directory (default: a new temporary one)")
    demo.add_argument("--samples", type=int, default=8_000_000, help="size of the computation")
    demo.set_defaults(handler=_cmd_demo)

    path = commands.add_parser("path", help="where the default store lives, and why")
    path.add_argument("--store", help="a store directory instead of the default")
    path.set_defaults(handler=_cmd_path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
