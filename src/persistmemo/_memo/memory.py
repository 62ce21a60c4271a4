"""The opt-in in-process tier: ``memo(memory=N)`` keeps the N most recent results in memory.

A hit here costs a dict lookup instead of a SQLite read and a decode, for hot loops; entries
keep the store entry's expiry, and the oldest stored goes first when the tier is full. The
rules: docs/options.md#memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

from persistmemo.stores.base import MISSING

# No typing at run time (the cold-start budget, docs/architecture.md): for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DIRECT_TYPES = frozenset((int, str, bytes, type(None)))


def direct_key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``args`` itself when it can key the tier directly: positional arguments (the caller
    passes no keywords) that are all ``int``, ``str``, ``bytes`` or ``None``. Values of those
    types are never equal across types, so no two calls share an entry that the canonical key
    would separate; other calls use the store key."""
    if len(args) == 1:  # the commonest call, spared the loop
        return args if type(args[0]) in DIRECT_TYPES else None
    for arg in args:
        if type(arg) not in DIRECT_TYPES:
            return None
    return args or None


class MemoryTier:
    """A bounded map of results with expiry times; the oldest stored goes first when full.

    The decorator reads ``entries`` directly on its hit path: ``key -> (value, expires_at)``.
    It pickles as its owner's tier: a memoized function sent to another process has one.
    """

    __slots__ = ("_lock", "entries", "owner", "size")

    def __init__(self, size: int, owner: object = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise TypeError(f"memo(memory=...) takes a positive number of entries; got {size!r}")
        self.size = size
        self.owner = owner
        self.entries: dict[Hashable, tuple[object, float | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> object:
        """The live value under ``key``, or MISSING."""
        entry = self.entries.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= time.time()):
            return MISSING
        return entry[0]

    def put(self, key: Hashable, value: object, expires_at: float | None) -> None:
        """Keep ``value`` until ``expires_at`` (epoch seconds) or eviction."""
        with self._lock:
            self.entries.pop(key, None)  # re-inserted last: the newest
            self.entries[key] = (value, expires_at)
            while len(self.entries) > self.size:
                del self.entries[next(iter(self.entries))]

    def discard(self, key: Hashable) -> None:
        """Forget ``key``."""
        with self._lock:
            self.entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __reduce__(self) -> tuple[Any, ...]:
        # The call path holds the tier as its owner does: unpickled, both are one object.
        if self.owner is None:
            return (MemoryTier, (self.size,))
        return (getattr, (self.owner, "memory"))
