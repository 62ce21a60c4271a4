"""TieredStore: the local disk store in front of a shared remote store (Redis).

A local hit never touches the network; a local miss reads the remote and fills the local
tier with the remote's remaining TTL; a write goes to both; leases are taken in the remote,
or locally while it is unreachable. The rules: docs/sharing.md#tieredstore.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from persistmemo._codec.decoding import Encoded
from persistmemo._codec.out_of_band import FramedValue, OutOfBand
from persistmemo._keys.layout import identity_of
from persistmemo.stores.base import MISSING, Missing
from persistmemo.stores.disk import Store
from persistmemo.stores.pickled import received_store, sent_settings
from persistmemo.stores.sealed import SealedStore

if TYPE_CHECKING:
    from persistmemo.stores.base import (
        CheckReport,
        EntryInfo,
        FunctionSummary,
        Lease,
        Progress,
        StoreBackend,
    )


class TieredStore:
    """``local`` (a Store or a directory) in front of ``remote`` (a RedisStore)."""

    def __init__(self, local: Store | str | os.PathLike[str], remote: StoreBackend) -> None:
        if not isinstance(local, (Store, str, os.PathLike)):
            raise TypeError(
                f"TieredStore(local=...) takes a directory or a Store (a disk store), not "
                f"{type(local).__name__}"
            )
        if not isinstance(local, Store) and "://" in os.fspath(local):
            raise ValueError(
                f"TieredStore(local={local!r}): the local tier is a directory or a Store, not a URL"
            )
        self.local = local if isinstance(local, Store) else Store(local)
        self.remote = remote
        self.strict = self.local.strict or remote.strict
        self.lease = remote.lease
        self._local_leases: set[str] = set()  # tokens of leases taken in the local tier

    def __repr__(self) -> str:
        return f"TieredStore(local={self.local!r}, remote={self.remote!r})"

    def settings(self) -> dict[str, Any]:
        """The arguments that make this store again: its two tiers (each sent as its own)."""
        return {"local": self.local, "remote": self.remote}

    def __reduce__(self) -> tuple[Any, ...]:
        return (received_store, (TieredStore, sent_settings(self, self.settings())))

    @property
    def pickle_allowed(self) -> bool:
        """Pickle-fallback values only where both tiers may hold them."""
        return self.local.pickle_allowed and self.remote.pickle_allowed

    def open(self) -> bool:
        """Open both tiers; True when the local one is usable."""
        remote = self.remote.open()
        return self.local.open() or remote

    # --- entries -------------------------------------------------------------------------

    def read(self, key: str) -> Encoded | Missing:
        """The verified encoded value, from the local tier or else the remote one."""
        found = self.read_with_expiry(key)
        return found if found is MISSING else found[0]  # type: ignore[index]

    def read_with_expiry(
        self, key: str, with_expiry: bool = True, *, mapped: bool = False
    ) -> tuple[Encoded, float | None] | Missing:
        """Local first; a remote hit fills the local tier with the remote's expiry."""
        found = self.local.read_with_expiry(key, mapped=mapped)
        if found is not MISSING:
            return found
        found = self.remote.read_with_expiry(key, True)
        if found is not MISSING:
            encoded, expires_at = found  # type: ignore[misc]
            remaining = None if expires_at is None else expires_at - time.time()
            if remaining is None or remaining > 0:
                kept = (
                    encoded.as_out_of_band() if type(encoded) is FramedValue else bytes(encoded)  # type: ignore[arg-type]
                )
                self.local.write(key, kept, ttl=remaining, tag=identity_of(key))
        return found

    def read_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Encoded]:
        """Local hits in batches; the rest from the remote, filling the local tier."""
        found = self.local.read_many(keys, mapped=mapped)
        for key in keys:
            if key not in found:
                remote = self.read_with_expiry(key, mapped=mapped)
                if remote is not MISSING:
                    found[key] = remote[0]  # type: ignore[index]
        return found

    def __len__(self) -> int:
        """Stored results: the larger tier's count (the remote is the shared, complete one;
        the local tier holds what this machine read or wrote)."""
        return max(len(self.local), len(self.remote))

    def write(
        self,
        key: str,
        encoded: bytes | OutOfBand,
        *,
        ttl: float | None,
        tag: str,
        seconds: float = 0.0,
        lease: Lease | None = None,
    ) -> bool:
        """Write both tiers; the lease is released with the write of the tier that holds it."""
        if lease is not None and lease.token in self._local_leases:
            if self.local.leases_expire:  # released by the write; a lock is released after it
                self._local_leases.discard(lease.token)
            local = self.local.write(key, encoded, ttl=ttl, tag=tag, seconds=seconds, lease=lease)
            remote = self.remote.write(key, encoded, ttl=ttl, tag=tag, seconds=seconds)
            return local or remote
        local = self.local.write(key, encoded, ttl=ttl, tag=tag, seconds=seconds)
        remote = self.remote.write(key, encoded, ttl=ttl, tag=tag, seconds=seconds, lease=lease)
        return local or remote

    def delete(self, key: str) -> bool:
        """Remove one entry from both tiers."""
        local = self.local.delete(key)
        return self.remote.delete(key) or local

    def delete_tagged(self, tag: str) -> int:
        """Remove a function's entries from both tiers; returns the larger count."""
        return max(self.local.delete_tagged(tag), self.remote.delete_tagged(tag))

    def clear(self) -> int:
        """Remove everything from both tiers; returns the larger count."""
        return max(self.local.clear(), self.remote.clear())

    # --- leases: the remote's, so that machines wait for each other ------------------------
    # When the remote is down its try_lease answers True (a fault must not block a call):
    # then this machine's processes still compute once, under the local tier's lease.

    @property
    def leases_expire(self) -> bool:
        """Renewed whichever tier holds them: a tier holding locks renews nothing."""
        return True

    def try_lease(self, key: str, token: str) -> bool:
        claimed = self.remote.try_lease(key, token)
        if claimed and not self.remote.open():  # open() is False while the remote is away
            claimed = self.local.try_lease(key, token)
            if claimed:
                self._local_leases.add(token)
        return claimed

    def renew_lease(self, key: str, token: str) -> bool:
        if token in self._local_leases:
            return self.local.renew_lease(key, token)
        return self.remote.renew_lease(key, token)

    def lease_holder(self, key: str) -> str | None:
        """The holder in the tier that holds leases now (the local one while the remote is
        away)."""
        return self.remote.lease_holder(key) or self.local.lease_holder(key)

    def release_lease(self, key: str, token: str) -> None:
        if token in self._local_leases:
            self._local_leases.discard(token)
            self.local.release_lease(key, token)
        else:
            self.remote.release_lease(key, token)

    # --- the rest: the remote is the shared truth -----------------------------------------

    def report_fault(self, kind: str, error: BaseException) -> None:
        self.local.report_fault(kind, error)

    def record_hits(self, function: str, hits: int) -> None:
        self.remote.record_hits(function, hits)

    def recorded_hits(self) -> dict[str, int]:
        return self.remote.recorded_hits()

    def forget_hits(self, function: str) -> None:
        self.local.forget_hits(function)
        self.remote.forget_hits(function)

    def entries(self, function: str | None = None) -> Iterator[EntryInfo]:
        return self.remote.entries(function)

    def entry_info(self, key: str) -> EntryInfo | None:
        return self.local.entry_info(key) or self.remote.entry_info(key)

    def functions(self) -> dict[str, FunctionSummary]:
        return self.remote.functions()

    def check(self, *, fix: bool = False, progress: Progress | None = None) -> CheckReport:
        report = self.remote.check(fix=fix, progress=progress)
        local = self.local.check(fix=fix, progress=progress)
        report.entries += local.entries
        report.problems += [f"local: {problem}" for problem in local.problems]
        report.removed += local.removed
        return report

    def prune(
        self,
        *,
        expired: bool = True,
        older_than: float | None = None,
        keep_versions: Mapping[str, Iterable[str]] | None = None,
        progress: Progress | None = None,
    ) -> int:
        options: dict[str, Any] = {
            "expired": expired,
            "older_than": older_than,
            "keep_versions": keep_versions,
            "progress": progress,
        }
        return max(self.local.prune(**options), self.remote.prune(**options))

    memo = SealedStore.memo
    __enter__ = SealedStore.__enter__
    __exit__ = SealedStore.__exit__

    def close(self) -> None:
        self.local.close()
        self.remote.close()
