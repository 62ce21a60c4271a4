"""A toy backend: a dict in this process, written against ``stores.api.Backend`` alone.

It shows what a new backend takes (the ten operations, nothing of seals or leases) and runs
the contract suites beside the real ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from persistmemo._sealing import SealedParts
from persistmemo.stores.api import Backend, Row

if TYPE_CHECKING:
    from persistmemo.stores.api import Found


class MemoryBackend(Backend):
    """Values in a dict: ``key -> (value, expires_at, stored_at, tag)``."""

    where = "memory"

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes | str | int, float | None, float, str | None]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> tuple[bytes | str | int, float | None, float, str | None] | None:
        held = self._values.get(key)
        if held is None or (held[1] is not None and held[1] <= time.time()):
            return None
        return held

    def get(self, key: str, *, mapped: bool = False) -> Found | None:
        held = self._live(key)
        return None if held is None else (held[0], held[1], None)

    def get_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Found]:
        return {key: found for key in keys if (found := self.get(key)) is not None}

    def put(
        self,
        key: str,
        value: bytes | SealedParts | str | int,
        *,
        ttl: float | None = None,
        tag: str | None = None,
        release: tuple[str, str] | None = None,
    ) -> bool:
        if isinstance(value, SealedParts):
            value = value.joined()
        expires_at = None if ttl is None else time.time() + ttl
        with self._lock:
            self._values[key] = (value, expires_at, time.time(), tag)
            if release is not None:
                self._delete_if(*release)
        return True

    def add(self, key: str, value: str, ttl: float) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._values[key] = (value, time.time() + ttl, time.time(), None)
            return True

    def _delete_if(self, key: str, value: object) -> bool:
        held = self._live(key)
        if held is None or held[0] != value:
            return False
        del self._values[key]
        return True

    def delete_if(self, key: str, value: object) -> bool:
        with self._lock:
            return self._delete_if(key, value)

    def expire_if(self, key: str, value: str, ttl: float) -> bool:
        with self._lock:
            held = self._live(key)
            if held is None or held[0] != value:
                return False
            self._values[key] = (held[0], time.time() + ttl, held[2], held[3])
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._values.pop(key, None) is not None

    def scan(self, prefix: str) -> Iterator[Row]:
        with self._lock:
            found = [(key, held) for key, held in self._values.items() if key.startswith(prefix)]
        for key, (value, expires_at, stored_at, tag) in found:
            size = len(value) if isinstance(value, bytes) else 0
            head = value[:64] if isinstance(value, bytes) else b""
            yield Row(
                key, size=size, stored_at=stored_at, expires_at=expires_at, head=head, tag=tag
            )

    def incr(self, key: str, amount: int) -> None:
        with self._lock:
            held = self._live(key)
            count = held[0] if held is not None and isinstance(held[0], int) else 0
            self._values[key] = (count + amount, None, time.time(), None)

    def close(self) -> None:
        """Nothing to release: the values live as long as the object."""
