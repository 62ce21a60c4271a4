"""Every SQLite connection persistmemo opens, so that a forked child closes them all first.

A child that kept an inherited connection open would lose its writes and could damage the
database (SQLite's lock bookkeeping lives in process memory): so every connection is
registered here, a fork waits for the statements under way, and the child closes the
inherited ones before it opens its own. Why: docs/architecture.md#the-disk-store-on-sqlite.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# By id (connections take no weak references): the connection, the thread that opened it,
# and what tells whether a statement runs on it now (see ``connect``).
_open: dict[int, tuple[sqlite3.Connection, int, Callable[[], bool] | None]] = {}
_busy_at_fork: set[int] = set()
_forking_thread = [0]

# How long a fork waits for statements under way in other threads: a statement holds its
# connection's SQLite mutex, which the child would wait for forever if it closed it.
STATEMENT_WAIT = 2.0


def connect(
    database: str | os.PathLike[str],
    *,
    busy: Callable[[], bool] | None = None,
    **options: Any,
) -> sqlite3.Connection:
    """``sqlite3.connect`` for a store's database, registered to be closed after a fork.

    ``busy`` tells whether a statement runs on the connection now (a reader's flag); a
    connection opened without it is either guarded by the store's fork lock (diskcache's
    writes: pass ``idle``) or used within one call by the thread that opened it.
    """
    if _inherited:
        _close_inherited()
    connection: sqlite3.Connection = sqlite3.connect(database, check_same_thread=False, **options)
    _open[id(connection)] = (connection, threading.get_ident(), busy)
    return connection


def watch(connection: sqlite3.Connection, busy: Callable[[], bool]) -> None:
    """Say what tells whether a statement runs on ``connection`` (see ``connect``)."""
    entry = _open.get(id(connection))
    if entry is not None:
        _open[id(connection)] = (entry[0], entry[1], busy)


def idle() -> bool:
    """``busy`` for connections whose statements a fork already waits for (its fork lock)."""
    return False


def close(connection: sqlite3.Connection) -> None:
    """Close ``connection`` (again is harmless) and forget it; SQLite errors are ignored."""
    _open.pop(id(connection), None)
    with contextlib.suppress(sqlite3.Error):
        connection.close()


forking = [False]
"""True while a fork waits for the statements under way: readers start none meanwhile."""


def wait_for_fork() -> None:
    """Called by a reader that found ``forking`` set: wait until the fork is done."""
    while forking[0]:
        time.sleep(0.0005)


def _wait_for_statements() -> None:
    # Runs with the GIL held until the fork, once no statement is under way: no thread can
    # start one in between (starting one takes Python code), and readers wait at the gate.
    _forking_thread[0] = threading.get_ident()
    forking[0] = True
    deadline = time.monotonic() + STATEMENT_WAIT
    while True:
        busy = {key for key, (_, _, check) in list(_open.items()) if check and check()}
        if not busy or time.monotonic() > deadline:
            _busy_at_fork.clear()
            _busy_at_fork.update(busy)
            return
        time.sleep(0.0005)


_inherited: list[tuple[int, tuple[sqlite3.Connection, int, Callable[[], bool] | None]]] = []


def _forget_inherited() -> None:
    # In the child, at the fork: nothing is closed yet. Closing calls into SQLite, which a
    # thread of the parent may have been inside (its memory or file-lock mutex, held by a
    # thread that does not exist here): a child that never uses a store (a subprocess's
    # preexec_fn, a worker of another library) must never wait for that. The connections
    # are closed at the child's first connection of its own, before it opens one.
    forking[0] = False
    _inherited.extend(_open.items())  # a child that forks before it connected: both
    _open.clear()


def _close_inherited() -> None:
    inherited = list(_inherited)
    _inherited.clear()
    for key, (connection, opener, busy) in inherited:
        if key in _busy_at_fork or (busy is None and opener != _forking_thread[0]):
            # Under way in a thread that did not survive the fork (a statement that outlasted
            # the wait, another thread's brief check): closing it would wait forever for
            # that statement's mutex. Left as it is: this child's own connections to that
            # database may then share its stale lock record (docs: Guarantees, Forks).
            continue
        with contextlib.suppress(sqlite3.Error):
            connection.close()
    _busy_at_fork.clear()


if hasattr(os, "register_at_fork"):  # no fork on Windows
    os.register_at_fork(
        before=_wait_for_statements,
        after_in_parent=lambda: forking.__setitem__(0, False),
        after_in_child=_forget_inherited,
    )
