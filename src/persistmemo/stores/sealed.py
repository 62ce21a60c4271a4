"""SealedStore: everything a store does, written once above a ``Backend``.

Sealing (every value carries a keyed tag over its key, checked before it is decoded), leases
(one computation per key), hit counts, bookkeeping records, listing entries, ``check``,
``prune``, fault reporting (a fault is one warning and a miss, never an exception in the
user's call) and ``memo()``. A backend (``stores/api.py``) only keeps bytes; the disk and
Redis stores are this class over their backends, and a new one needs nothing from here.
"""

from __future__ import annotations

import threading
import time
from functools import partial

from persistmemo._keys.layout import KEY_FORMAT, RESULT_FORMATS, identity_of, is_result_key
from persistmemo._memo.decorator import memo as decorator
from persistmemo._sealing import Sealer, compute_seconds, entry_metadata
from persistmemo._secret import secret_from_text, user_secret
from persistmemo.errors import CorruptEntry, StoreRefused, StoreUnreadable
from persistmemo.stores.base import (
    LEASE_PREFIX,
    MISSING,
    STATS_PREFIX,
    WRONG_SECRET,
    CheckReport,
    EntryInfo,
    judge_entry,
    planted_lease_after,
    split_key,
    summarize,
)
from persistmemo.stores.pickled import received_store, sent_settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from typing import Any, TypeVar

    from persistmemo._codec.decoding import Encoded
    from persistmemo._codec.out_of_band import OutOfBand
    from persistmemo._faults import FaultReporter
    from persistmemo.stores.api import Backend, Found, Row
    from persistmemo.stores.base import FunctionSummary, Lease, Missing, Progress
    from persistmemo.stores.claims import KeyClaims

    T = TypeVar("T")

_MAX_SECONDS = 1e9
"""Compute seconds above this (31 years) are a planted header, not a measurement."""

_MOST_HITS = 2**62
"""A larger (or negative) count was not added by persistmemo: planted, left out."""


_CURRENT_FORMAT = f"{KEY_FORMAT}:"


class SealedStore:
    """A store of memoized results over ``backend``: sealed values, leases, records.

    - ``strict=True`` refuses results that need the pickle fallback.
    - ``lease``: seconds a computing caller's claim on a key lasts if it dies.
    - ``secret``: the key that seals entries (bytes or a passphrase); by default the
      backend's choice (``resolve_secret``).
    """

    _sealer: Sealer | None = None  # set when the secret is settled (the disk store's: opened)

    def __init__(
        self,
        backend: Backend,
        *,
        strict: bool = False,
        lease: float = 10.0,
        secret: bytes | str | None = None,
    ) -> None:
        if not lease > 0:
            raise ValueError("lease=... must be positive seconds")
        self.backend = backend
        self.strict = strict
        self.lease = float(lease)
        self._given_secret = secret_from_text(secret) if isinstance(secret, str) else secret
        self._secret = b""
        self.pickle_allowed = False
        self._sealer_lock = threading.Lock()

    @property
    def _faults(self) -> FaultReporter:
        return self.backend.faults

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend.where!r})"

    # --- in another process (stores/pickled.py) --------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The arguments that make this store again, ``type(store)(**store.settings())``:
        what it pickles as. A store over a backend of your own defines it to be sent to
        worker processes."""
        raise TypeError(
            f"{self!r} cannot be sent to another process: {type(self).__name__} does not "
            "say how to make it again there. Define settings() (the arguments of its class), "
            "or memoize on a Store, RedisStore or TieredStore."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (received_store, (type(self), sent_settings(self, self.settings())))

    # --- the secret ----------------------------------------------------------------------

    def resolve_secret(self) -> tuple[bytes, bool]:
        """``(secret, pickles allowed)``: the given secret, else the user's key file (a
        subclass decides where its backend's secret comes from)."""
        if self._given_secret is not None:
            return self._given_secret, not self.strict
        return user_secret(), not self.strict

    def _sealer_ready(self) -> Sealer:
        if self._sealer is None:
            with self._sealer_lock:
                if self._sealer is None:
                    self._secret, self.pickle_allowed = self.resolve_secret()
                    self._sealer = Sealer(self._secret)
        return self._sealer

    @property
    def secret(self) -> bytes:
        """The key that seals this store's entries."""
        self._sealer_ready()
        return self._secret

    def open(self) -> bool:
        """Settle the secret; True when the backend is usable."""
        self._sealer_ready()
        return self.backend.usable()

    # --- faults --------------------------------------------------------------------------

    def report_fault(self, kind: str, error: BaseException) -> None:
        """Warn once per kind of fault."""
        self._faults.report(kind, f"{type(error).__name__}: {error}")

    def _call(self, kind: str, operation: Callable[[], T], default: T) -> T:
        """``operation()``, or ``default`` when the backend is away or faults (reported
        once per kind, in the backend's words where it has them)."""
        try:
            if not self.backend.usable():
                return default
            return operation()
        except RecursionError:
            raise  # too deep a stack: the claim is released once unwound (_memo/locking.py)
        except Exception as error:
            self._failed(kind, error)
        return default

    def _failed(self, kind: str, error: Exception) -> None:
        """Report ``error`` of an operation of ``kind``, once per kind of fault."""
        if isinstance(error, StoreRefused):
            self._faults.report(error.kind, error.message)
        elif isinstance(error, CorruptEntry):
            self.report_fault("corrupt entry", error)
        else:
            try:
                named = self.backend.fault(kind, error)
            except Exception:  # a backend's own words failed: ours, then
                named = (kind, f"{type(error).__name__}: {error}")
            if named is not None:
                self._faults.report(*named)

    # --- entries -------------------------------------------------------------------------

    def read(self, key: str) -> Encoded | Missing:
        """The verified encoded value under ``key``, or MISSING (absent, expired, unusable)."""
        found = self.read_with_expiry(key, False)
        return found if found is MISSING else found[0]  # type: ignore[index]

    def read_with_expiry(
        self, key: str, with_expiry: bool = True, *, mapped: bool = False
    ) -> tuple[Encoded, float | None] | Missing:
        """``(encoded value, expiry or None)`` under ``key``, or MISSING. ``mapped``: a value
        with an area may come back as a read-only map (backends that keep files)."""
        backend = self.backend
        if mapped:
            mapped = self._may_map()
        try:  # _call, inlined: every hit passes here
            found = backend.get(key, mapped=mapped)
        except RecursionError:
            raise  # too deep a stack: the claim is released once unwound (_memo/locking.py)
        except Exception as error:
            self._failed("read failed", error)
            return MISSING
        if found is None:
            return MISSING
        value, expires_at, area_check = found
        # After the read: the backend may have opened (and settled its secret) to make it.
        sealer = self._sealer or self._sealer_ready()
        if area_check is None and not mapped and type(value) is bytes:  # a small entry
            prefix = backend.seal_prefix  # read each time: a backend may settle it late
            try:
                return sealer.unseal(prefix + key if prefix else key, value), expires_at
            except CorruptEntry as error:
                self.report_fault("corrupt entry", error)
                return MISSING
        return self._unsealed(sealer, key, found, mapped)

    def _may_map(self) -> bool:
        """Whether a value may come back as a map of its file (a fault: not mapped)."""
        try:
            return self.backend.may_map()
        except Exception as error:
            self._failed("read failed", error)
            return False

    def _unsealed(
        self, sealer: Sealer, key: str, found: Found, mapped: bool
    ) -> tuple[Encoded, float | None] | Missing:
        value, expires_at, area_check = found
        if isinstance(value, bytearray):
            value = bytes(value)
        if not isinstance(value, (bytes, memoryview)):
            self.report_fault("corrupt entry", CorruptEntry(f"{key}: not a sealed value"))
            return MISSING
        try:
            if area_check is None and not mapped:  # a small entry: no keywords to pass
                return sealer.unseal(self.backend.seal_prefix + key, value), expires_at
            sealed_as = self.backend.seal_prefix + key
            return sealer.unseal(sealed_as, value, mapped=mapped, area_check=area_check), expires_at
        except CorruptEntry as error:
            self.report_fault("corrupt entry", error)
            return MISSING

    def read_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Encoded]:
        """The verified encoded values of those ``keys`` that are stored, in few round trips."""
        if mapped:
            mapped = self._may_map()
        nothing: tuple[list[tuple[str, bytes]], dict[str, Found | CorruptEntry]] = ([], {})
        held, others = self._call(
            "read failed", lambda: self.backend.get_many_bytes(keys, mapped=mapped), nothing
        )
        sealer = self._sealer or self._sealer_ready()
        # The values read as bytes are checked in one loop; the others (a value file mapped,
        # or hashed while it was read) as a single read checks them. A seal that fails is a
        # miss, reported once per store.
        found, failed = sealer.unseal_many(held, self.backend.seal_prefix)
        for error in failed:
            self.report_fault("corrupt entry", error)
        for key, each in others.items():
            if isinstance(each, CorruptEntry):
                self.report_fault("corrupt entry", each)
                continue
            unsealed = self._unsealed(sealer, key, each, mapped)
            if unsealed is not MISSING:
                found[key] = unsealed[0]  # type: ignore[index]
        return found

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
        """Seal and store ``encoded`` (computed in ``seconds``) under ``key``, releasing
        ``lease`` (our claim on the key) in the same step. False (and a warning) when the
        store cannot keep it."""
        sealer = self._sealer_ready()
        sealed = sealer.seal(self.backend.seal_prefix + key, encoded, seconds)
        # A result's key names its function: a tag would store the name again for nothing.
        stored_tag = None if is_result_key(key) else tag
        # A claim held as a lock is dropped after the write (locking.py), not with it.
        if lease is not None and not self.leases_expire:
            lease = None
        release = None if lease is None else (LEASE_PREFIX + key, lease.token)

        def put() -> bool:
            return self.backend.put(key, sealed, ttl=ttl, tag=stored_tag, release=release)

        stored = bool(self._call("write failed", put, False))
        if lease is not None and stored:
            lease.released = True
        return stored

    def delete(self, key: str) -> bool:
        """Remove one entry; True when it was there."""
        return bool(self._call("delete failed", lambda: self.backend.delete(key), False))

    def purge(self, key: str) -> bool:
        """Remove one entry, expired or not; True when it was there."""
        return self.delete(key)

    def _result_keys(self, function: str | None = None) -> list[str]:
        """The keys of stored results (of exactly ``function``, if given)."""
        keys = []
        for form in RESULT_FORMATS:
            prefix = f"{form}:" + (f"{function}:" if function else "")
            keys += [key for key in self.backend.keys(prefix) if is_result_key(key)]
        # Identities may contain ':': ``app.load:*`` also holds ``app.load:v2``'s entries.
        return keys if function is None else [key for key in keys if identity_of(key) == function]

    def _inspect(self, operation: Callable[[], T], default: T) -> T:
        """``operation()`` of looking inside. A store that cannot be read at all (a damaged
        or missing database) raises, for the tools to say so; another fault is a warning
        and ``default``."""
        try:
            if not self.backend.usable():
                return default
            return operation()
        except (StoreUnreadable, RecursionError):
            raise
        except Exception as error:
            self._failed("read failed", error)
            return default

    def delete_tagged(self, tag: str) -> int:
        """Remove every entry of the function ``tag``; returns how many."""
        none: list[str] = []
        keys = self._call("read failed", lambda: self._result_keys(tag), none)
        return int(self._call("delete failed", lambda: self.backend.delete_many(keys), 0))

    def clear(self) -> int:
        """Remove every entry and the store's bookkeeping; returns how many results."""
        before = len(self)
        self._call("clear failed", self.backend.clear, None)
        return max(0, before - len(self))  # a store that refused the clear removed nothing

    def remove_expired(self) -> int:
        """Remove every expired entry now (they are misses already); returns how many."""
        return int(self._call("delete failed", self.backend.purge_expired, 0))

    def __len__(self) -> int:
        """Number of stored results (leases, hit counts and records are not results)."""
        none: list[str] = []
        return len(self._call("read failed", self._result_keys, none))

    # --- leases (one computation per key; see _memo/locking.py) ---------------------------

    @property
    def leases_expire(self) -> bool:
        """Whether a claim on a key is a lease row that runs out unless renewed (else a lock
        the system releases when its holder dies: stores/claims.py). Asks nothing of the
        store: a type check may read it."""
        return not self.backend.offers_key_claims

    def _key_claims(self) -> KeyClaims | None:
        """The backend's claims, or None where it cannot take them now (a store that cannot
        be written: its callers compute unclaimed, as they store nothing)."""
        try:
            return self.backend.key_claims()
        except Exception:
            return None

    def try_lease(self, key: str, token: str) -> bool:
        """Claim ``key``; True when claimed (or the store is unusable). A lease row lasts
        ``lease`` seconds unless renewed; one no caller could have made (no end, or one too
        far away) is taken over and reported: waiting on it would never end."""
        if self.backend.offers_key_claims:
            claims = self._key_claims()
            if claims is None or not self.backend.usable():
                return True  # nothing can be stored: callers compute unclaimed
            try:
                return claims.try_claim(key, token, self.lease)
            except OSError as error:
                self.report_fault("lease failed", error)
                return True  # computed unclaimed: a fault must not keep the caller waiting
        horizon = planted_lease_after(self.lease)

        def claim() -> bool:
            claimed, planted = self.backend.claim(LEASE_PREFIX + key, token, self.lease, horizon)
            if planted:
                self._faults.report(
                    "planted lease",
                    f"the lease on {key} had no end (or one too far away to be a caller's): "
                    "taken over, so that callers do not wait for it forever",
                )
            return claimed

        return bool(self._call("lease failed", claim, True))

    def renew_lease(self, key: str, token: str) -> bool:
        """Extend our claim on ``key``; False when it is no longer ours (or cannot be told).
        Runs in the lease keeper's thread: it never raises and never warns."""
        if self.backend.offers_key_claims:
            claims = self._key_claims()
            return claims is not None and claims.holds(key, token)
        try:
            return self.backend.usable() and bool(
                self.backend.expire_if(LEASE_PREFIX + key, token, self.lease)
            )
        except Exception:
            return False

    def lease_holder(self, key: str) -> str | None:
        """The token of the live lease on ``key``, or None (none, or unknown)."""
        if self.backend.offers_key_claims:
            claims = self._key_claims()
            return None if claims is None else claims.holder(key)
        try:
            found = self.backend.get(LEASE_PREFIX + key) if self.backend.usable() else None
        except Exception:
            return None
        return found[0] if found is not None and isinstance(found[0], str) else None

    def release_lease(self, key: str, token: str) -> None:
        """Drop our claim on ``key``, unless it expired and someone else holds it now."""
        if self.backend.offers_key_claims:
            claims = self._key_claims()
            if claims is not None:
                # Whatever the store's state: a claim kept after the store was bypassed
                # would keep this process's next caller of the key waiting for itself.
                try:
                    claims.release(key, token)
                except RecursionError:
                    raise
                except Exception as error:
                    self._failed("lease failed", error)
            return
        self._call("lease failed", lambda: self.backend.delete_if(LEASE_PREFIX + key, token), 0)

    # --- hit counts ----------------------------------------------------------------------

    def record_hits(self, function: str, hits: int) -> None:
        """Add ``hits`` to the hit count the store keeps for ``function``."""
        if hits > 0:
            name = STATS_PREFIX + function
            self._call("write failed", lambda: self.backend.incr(name, hits), None)

    def recorded_hits(self) -> dict[str, int]:
        """Hit counts per function, as flushed by processes at their exit."""

        def counts() -> dict[str, int]:
            names = [row.key for row in self.backend.scan(STATS_PREFIX)]
            found = self.backend.get_many(names) if names else {}
            # Whoever can write the store can plant any name and value here: a count that
            # incr could not have made is left out, not trusted.
            return {
                name[len(STATS_PREFIX) :]: each[0]
                for name, each in found.items()
                if type(each) is tuple and type(each[0]) is int and 0 <= each[0] < _MOST_HITS
            }

        return self._call("read failed", counts, {})

    def forget_hits(self, function: str) -> None:
        """Drop the recorded hit count of ``function`` (its entries were cleared)."""
        self._call("delete failed", lambda: self.backend.delete(STATS_PREFIX + function), 0)

    # --- looking inside ------------------------------------------------------------------

    def entries(self, function: str | None = None) -> Iterator[EntryInfo]:
        """Every entry's metadata (of one function identity, if given), without decoding."""

        def rows() -> list[Row]:
            found = []
            for form in RESULT_FORMATS:
                prefix = f"{form}:" + (f"{function}:" if function else "")
                found += [row for row in self.backend.scan(prefix) if is_result_key(row.key)]
            return found

        none: list[Row] = []
        for row in self._inspect(rows, none):
            entry = _entry_of(row)
            if function is None or entry.function == function:
                yield entry

    def entry_info(self, key: str) -> EntryInfo | None:
        """Metadata of the entry under ``key``, or None."""
        return next((entry for entry in self.entries(identity_of(key)) if entry.key == key), None)

    def functions(self) -> dict[str, FunctionSummary]:
        """Per-function summaries: entries, bytes, versions, oldest/newest, compute stored."""
        return summarize(self.entries())

    def check(self, *, fix: bool = False, progress: Progress | None = None) -> CheckReport:
        """Check the backend's own integrity and every entry's seal (expired ones too) and
        that each sealed value decodes; ``fix`` removes entries whose seal fails.

        When well-formed entries failing their tag outnumber those that verify, the store
        was sealed with another secret: that is reported and nothing is removed."""
        report = CheckReport()
        sealer = self._sealer_ready()
        self._inspect(partial(self.backend.check_storage, report, fix=fix), None)
        no_keys: list[str] = []
        total = len(self._inspect(self._result_keys, no_keys))
        verified = well_formed_failures = 0
        kept: list[str] = []  # problems that stand whatever the secret
        kept += report.problems
        for form in RESULT_FORMATS:
            # One value at a time: a store larger than memory is checked too. A fault part
            # way is a problem of the report, never a silent "ok".
            try:
                for key, stored in self.backend.values(f"{form}:"):
                    if not is_result_key(key):
                        continue
                    report.entries += 1
                    if isinstance(stored, CorruptEntry):
                        report.corrupt.append(key)
                        kept.append(f"{key}: {stored}")
                        report.problems.append(kept[-1])
                        continue
                    outcome = judge_entry(
                        report, sealer, key, stored, self.backend.seal_prefix + key
                    )
                    verified += outcome == "verified"
                    well_formed_failures += outcome == "well-formed"
                    if outcome == "malformed":
                        kept.append(f"{key}: not a persistmemo value")
                    if progress is not None:
                        progress(report.entries, max(total, report.entries))
            except (StoreUnreadable, RecursionError):
                raise
            except Exception as error:
                self._failed("read failed", error)
                kept.append(
                    f"{form} entries could not all be read: {type(error).__name__}: {error}"
                )
                report.problems.append(kept[-1])
        another_secret = self._inspect(
            partial(
                self.backend.sealed_with_another_secret,
                sealer,
                verified=verified,
                well_formed_failures=well_formed_failures,
            ),
            False,
        )
        if another_secret:
            report.wrong_secret = True
            report.problems = [
                f"{well_formed_failures} of {report.entries} {WRONG_SECRET}; nothing was removed",
                *kept,
            ]
        elif fix:
            report.removed = sum(self.purge(key) for key in report.corrupt)
        return report

    def prune(
        self,
        *,
        expired: bool = True,
        older_than: float | None = None,
        keep_versions: Mapping[str, Iterable[str]] | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Remove expired entries (and, with them, entries of an older key format, which are
        never read again), entries stored more than ``older_than`` seconds ago, and entries
        of the functions named in ``keep_versions`` whose version is not listed; returns how
        many."""
        keep = {name: set(versions) for name, versions in (keep_versions or {}).items()}
        cutoff = None if older_than is None else time.time() - older_than
        removed = self.remove_expired() if expired else 0
        # Expired entries count too: one older than the cutoff is old, whatever its TTL says.
        doomed = [
            entry.key
            for entry in self.entries()
            if (cutoff is not None and entry.stored_at < cutoff)
            or (entry.function in keep and entry.version not in keep[entry.function])
            or (expired and not entry.key.startswith(_CURRENT_FORMAT))
        ]
        for done, key in enumerate(doomed, 1):
            removed += self.purge(key)
            if progress is not None:
                progress(done, len(doomed))
        return removed

    # --- the rest ------------------------------------------------------------------------

    def memo(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``memo`` with this store: ``@store.memo`` or ``@store.memo(ttl=60)``."""
        decorate: Any = decorator(store=self, **options)
        return decorate if func is None else decorate(func)

    def close(self) -> None:
        """Close the backend's connections and files (they reopen when used again)."""
        self._call("close failed", self.backend.close, None)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _entry_of(row: Row) -> EntryInfo:
    """An entry's metadata from its row; every field is untrusted (a co-writer may plant)."""
    identity, version = split_key(row.key, row.tag)
    seconds = compute_seconds(row.head)
    metadata = entry_metadata(row.head)
    stored_at = row.stored_at if row.stored_at is not None else (metadata or (0.0, 0.0))[1]
    return EntryInfo(
        key=row.key,
        function=identity,
        version=version,
        stored_at=stored_at,
        expires_at=row.expires_at,
        size=row.size,
        compute_seconds=seconds if seconds is not None and 0 <= seconds < _MAX_SECONDS else None,
    )
