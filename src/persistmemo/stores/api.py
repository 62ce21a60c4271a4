"""The backend interface: ten operations on bytes under string keys, with expiry.

A backend keeps values and knows nothing of seals, leases, hit counts or functions: all of
that is written once above it, in stores/sealed.py. A new place to keep results subclasses
``Backend`` and passes ``tests/test_backend_contract.py``. The operations, their values and
their faults: docs/architecture.md#stores-a-backend-under-one-sealed-layer.
"""

from __future__ import annotations

import abc
import time

from persistmemo._faults import FaultReporter
from persistmemo.errors import CorruptEntry
from persistmemo.stores.base import looks_sealed_with_another_secret

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from persistmemo._sealing import AreaCheck, SealedParts, Sealer
    from persistmemo.stores.base import CheckReport
    from persistmemo.stores.claims import KeyClaims

    Value = bytes | memoryview | str | int
    Found = tuple[Value, float | None, AreaCheck | None]
    """What ``get`` returns: the value, its expiry (None: none), and for a large value read
    while its bytes were hashed, the running check of its area (see _sealing.py)."""


class Row:
    """One key as ``scan`` lists it, without its whole value."""

    __slots__ = ("expires_at", "head", "key", "size", "stored_at", "tag")

    def __init__(
        self,
        key: str,
        *,
        size: int,
        stored_at: float | None,
        expires_at: float | None,
        head: bytes,
        tag: object = None,
    ) -> None:
        self.key = key
        self.size = size
        self.stored_at = stored_at
        self.expires_at = expires_at
        self.head = head  # the value's first bytes (the sealed header), b"" for others
        self.tag = tag  # a pm1 entry's function name, where the backend keeps tags

    def __repr__(self) -> str:
        return f"Row({self.key!r}, size={self.size})"


class Backend(abc.ABC):
    """Values under string keys, with expiry. Subclass it and write the ten operations."""

    where: str = ""
    """Where the values are, for messages (a directory, a URL without its password)."""

    seal_prefix: str = ""
    """Prepended to a key before it is sealed, binding an entry to this place: an entry
    copied elsewhere does not verify (Redis: the namespace)."""

    @property
    def faults(self) -> FaultReporter:
        """The store's reporter: one warning per kind of fault (made on first use)."""
        reporter: FaultReporter | None = self.__dict__.get("_faults")
        if reporter is None:
            reporter = self.__dict__["_faults"] = FaultReporter(self.where)
        return reporter

    def may_map(self) -> bool:
        """Whether ``get(..., mapped=True)`` may return read-only maps of files (asked before
        each mapped read: a backend may refuse where others can write the files)."""
        return False

    offers_key_claims: bool = False
    """Whether claims on keys are ``key_claims()`` (stores/claims.py) rather than lease rows
    written with ``add`` and renewed with ``expire_if``."""

    def key_claims(self) -> KeyClaims | None:
        """The claims, where ``offers_key_claims``; None when they cannot be taken now."""
        return None

    @abc.abstractmethod
    def get(self, key: str, *, mapped: bool = False) -> Found | None:
        """The live value under ``key`` with its expiry, or None when absent or expired."""

    @abc.abstractmethod
    def get_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Found]:
        """``get`` for many keys, in few round trips; absent keys left out. A value that
        could not be read is a ``CorruptEntry`` in its place (reported by the caller)."""

    def get_many_bytes(
        self, keys: list[str], *, mapped: bool = False
    ) -> tuple[list[tuple[str, bytes]], dict[str, Found | CorruptEntry]]:
        """``get_many`` for reads that need no expiry (f.map's hits), in two parts:
        ``(key, value)`` of the values that are ``bytes`` (with no area check), and every
        other as ``get_many`` answers it. This default splits ``get_many``'s answer; a
        backend may answer directly, sparing a tuple per value."""
        held: list[tuple[str, bytes]] = []
        others: dict[str, Found | CorruptEntry] = {}
        for key, each in self.get_many(keys, mapped=mapped).items():
            if type(each) is tuple and type(each[0]) is bytes and each[2] is None:
                held.append((key, each[0]))
            else:
                others[key] = each
        return held, others

    @abc.abstractmethod
    def put(
        self,
        key: str,
        value: bytes | SealedParts | str | int,
        *,
        ttl: float | None = None,
        tag: str | None = None,
        release: tuple[str, str] | None = None,
    ) -> bool:
        """Store ``value`` (replacing any), expiring in ``ttl`` seconds. ``release``:
        ``(lease key, token)`` deleted in the same step if it still holds that token (a
        result and the release of its claim commit together). True when stored."""

    @abc.abstractmethod
    def add(self, key: str, value: str, ttl: float) -> bool:
        """Store ``value`` only if no live value is under ``key``; True when stored."""

    @abc.abstractmethod
    def delete_if(self, key: str, value: object) -> bool:
        """Delete ``key`` only if it holds ``value``; True when deleted."""

    @abc.abstractmethod
    def expire_if(self, key: str, value: str, ttl: float) -> bool:
        """Set ``key`` to expire in ``ttl`` seconds only if it holds ``value`` (live)."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Delete ``key``, live or expired; True when it was there."""

    @abc.abstractmethod
    def scan(self, prefix: str) -> Iterator[Row]:
        """Every key that starts with ``prefix``, expired ones included, in no order."""

    @abc.abstractmethod
    def incr(self, key: str, amount: int) -> None:
        """Add ``amount`` to the count under ``key`` (absent: 0), atomically."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and files; the backend reopens them when used again."""

    # --- with a default written on the ten: a backend overrides them where it has better ---

    def read_all(self, key: str) -> bytes | memoryview | None:
        """The whole stored value under ``key``, expired or not (what ``check`` verifies)."""
        found = self.get(key)
        value = None if found is None else found[0]
        return value if isinstance(value, (bytes, memoryview)) else None

    def keys(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix`` (``scan`` without the rest of each row)."""
        return [row.key for row in self.scan(prefix)]

    def values(self, prefix: str) -> Iterator[tuple[str, bytes | memoryview | CorruptEntry]]:
        """Every key under ``prefix`` with its whole stored value, expired ones too (what
        ``check`` verifies), or the CorruptEntry saying why it cannot be read."""
        for key in self.keys(prefix):
            try:
                value = self.read_all(key)
            except CorruptEntry as error:
                yield key, error
                continue
            if value is not None:
                yield key, value

    def delete_many(self, keys: list[str]) -> int:
        """Delete ``keys``; returns how many were there."""
        return sum(self.delete(key) for key in keys)

    def purge_expired(self) -> int:
        """Delete every expired key; returns how many were deleted."""
        now = time.time()
        doomed = [
            row.key for row in self.scan("") if row.expires_at is not None and row.expires_at <= now
        ]
        return self.delete_many(doomed)

    def clear(self) -> None:
        """Delete every key."""
        self.delete_many([row.key for row in self.scan("")])

    def claim(self, key: str, token: str, ttl: float, horizon: float) -> tuple[bool, bool]:
        """``(claimed, planted)``: ``add`` the lease ``token`` under ``key``; a lease held
        with no end, or one further than ``horizon`` seconds away, no caller could have set:
        it is taken over (``planted`` True) rather than waited for forever."""
        if self.add(key, token, ttl):
            return True, False
        found = self.get(key)
        if found is None:  # released between the two steps
            return self.add(key, token, ttl), False
        held, expires_at, _ = found
        if isinstance(held, str) and expires_at is not None and expires_at <= time.time() + horizon:
            return False, False
        if not self.delete_if(key, held):
            return False, False  # changed meanwhile: someone else's now
        return self.add(key, token, ttl), True

    def check_storage(self, report: CheckReport, *, fix: bool) -> None:
        """Check what the backend keeps beneath the entries (a database's integrity),
        adding problems to ``report``; ``fix`` repairs what can be. Nothing by default."""
        return

    def sealed_with_another_secret(
        self, sealer: Sealer, *, verified: int, well_formed_failures: int
    ) -> bool:
        """Whether ``check``'s tag failures say "another secret" rather than "damage": by
        default the counts decide (``looks_sealed_with_another_secret``); a backend that
        records which secrets wrote it (the disk store's ``pm-secret:`` rows) knows better."""
        return looks_sealed_with_another_secret(
            verified=verified, well_formed_failures=well_formed_failures
        )

    def fault(self, kind: str, error: BaseException) -> tuple[str, str] | None:
        """The kind and message to report (once) for ``error``; None when the backend has
        reported it in its own words already."""
        return kind, f"{type(error).__name__}: {error}"

    def usable(self) -> bool:
        """False while the backend is known to be away (the store then skips it)."""
        return True
