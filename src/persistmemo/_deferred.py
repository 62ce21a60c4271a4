"""Modules loaded late (at a first miss, pickle or listing) are loaded before a fork.

A module another thread is importing when the process forks stays locked in the child,
whose own import of it then waits forever. So each seam that defers an import to keep a
re-run's start short also loads its modules just before a fork: the fork waits for an
import under way, and the child finds the modules loaded.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def load_before_fork(load: Callable[[], object]) -> None:
    """Run ``load`` (it imports a seam's modules) in the parent before every ``os.fork``."""
    if not hasattr(os, "register_at_fork"):  # no fork on Windows
        return

    def before_fork() -> None:
        try:  # noqa: SIM105  (contextlib is not on a re-run's path)
            load()
        except Exception:  # not importable here (an optional module): nothing to wait for
            pass

    os.register_at_fork(before=before_fork)
