"""RedisStore: one memo shared by several machines, through a Redis server (redis-py).

The same keys and the same sealed values as the disk store: a key computed on one machine is
the key on another, and every value is checked against its key before it is decoded. For
machines to read each other's entries they must share the sealing secret: set
``$PERSISTMEMO_SECRET`` (the same passphrase) on each, or pass ``secret=``.

Layout, under a namespace prefix (``persistmemo:`` by default):

- ``<ns>:pm2:<function>:<version>:<digest>``: a sealed value, with Redis expiry for a TTL;
- ``<ns>:pm-lease:<key>``: a claim while one caller computes (``SET NX PX`` with a random
  token; renewed and released by compare-and-set scripts, so a caller whose claim expired
  cannot release or extend another's);
- ``<ns>:pm-hits:<function>``: hit counts added by each process at exit.

``cache_clear()`` of one function walks ``SCAN MATCH <ns>:pm[12]:<function>:*`` and unlinks in
batches: no ``KEYS``, no blocking of the server, and nothing to maintain on the write path;
its cost grows with the size of the whole database, not of the function.

Faults: timeouts are short and configurable (0.5 s by default, against redis-py's 5 s and
retries), no command is retried, and after a failure the store stays away for ``backoff``
seconds (a circuit breaker): a dead or hung server costs a caller one timeout, then nothing,
until the server is tried again. Values larger than ``max_value_bytes`` are not sent.

Limits of the lease: it is as reliable as the single Redis server holding it (no Redlock);
a holder paused longer than its lease is taken over, which can mean two computations. Under
an evicting ``maxmemory-policy`` a lease may be evicted: waiters that saw it put it back,
and its holder does at its next renewal, but a caller arriving after the eviction and before
either sees no claim and computes too (one more computation per such eviction). Under
``noeviction`` a full server refuses writes: "store full" is reported once, reads go on, and
misses compute without a claim until there is room.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from persistmemo import _environment as environment
from persistmemo._codec.decoding import Encoded
from persistmemo._codec.out_of_band import OutOfBand
from persistmemo._faults import FaultReporter
from persistmemo._keys.layout import RESULT_FORMATS, identity_of
from persistmemo._sealing import (
    HEADER_READ,
    SealedParts,
    Sealer,
    entry_metadata,
    secret_from_text,
    user_secret,
)
from persistmemo.errors import SecretUnavailable
from persistmemo.stores.base import (
    FAILURE_PREFIX,
    FINGERPRINT_PREFIX,
    LEASE_PREFIX,
    MISSING,
    STATS_PREFIX,
    VERSION_PREFIX,
    WRONG_SECRET,
    CheckReport,
    EntryInfo,
    Missing,
    judge_entry,
    looks_sealed_with_another_secret,
    planted_lease_after,
    split_key,
    summarize,
    unseal_or_report,
)

if TYPE_CHECKING:
    from persistmemo.stores.base import FunctionSummary, Lease, Progress

T = TypeVar("T")

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_TIMEOUT = 0.5
DEFAULT_BACKOFF = 5.0
DEFAULT_MAX_VALUE = 64 * 1024 * 1024
_SCAN_BATCH = 1000

# Compare-and-set scripts: the comparison and the change are one atomic step on the server.
#
# Leases and eviction: under an evicting maxmemory-policy (allkeys-lru, volatile-lru, ...) the
# server may evict a lease while its holder computes, and the waiters would each take over
# and compute again. So a lease that vanishes is told apart from one that was let go:
# releasing leaves a short-lived RELEASED marker instead of nothing, waiters remember the
# holder and the end of the lease they last saw, and a waiter that finds the lease gone early
# (no marker, no value, the end not reached) puts the holder's lease back with the time it
# had left. A holder that died is still taken over when its lease would have ended; the holder
# itself puts back its lease when it finds it gone at a renewal.
_RELEASED = "released"
_RELEASED_MS = 1000
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[5] then
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left <= tonumber(ARGV[6]) then return {0, held, left} end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {2}
end
if not held and ARGV[3] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return {0, ARGV[3], tonumber(ARGV[4])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1}
"""
# {2}: the lease held had no end, or one too far away for any caller to have set (planted):
# taken over, so that callers never wait for it forever.
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
# DEL first: a full server (noeviction) refuses the marker's SET but not the DEL.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.pcall('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_WRITE_AND_RELEASE = """
if ARGV[2] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
return 1
"""  # noqa: E501
_LEASES_REMEMBERED = 1024
_DEFAULT_NAMESPACE = "persistmemo"


_READ_MANY_BATCH = 500
"""Keys per MGET of read_many: bounded replies, and other clients are served between."""

# The words after the namespace that name persistmemo's kinds of keys. A namespace made of
# them ("team:pm1") would put its keys inside another namespace's patterns ("team:pm1:*").
_KEY_KINDS = (
    *(f"{form}:" for form in RESULT_FORMATS),
    LEASE_PREFIX,
    STATS_PREFIX,
    FAILURE_PREFIX,
    FINGERPRINT_PREFIX,
    VERSION_PREFIX,
)
_RESERVED_WORDS = frozenset(kind.rstrip(":") for kind in _KEY_KINDS)
_MOST_HITS = 2**63  # INCRBY's range: a larger or negative count was not written by us


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError("RedisStore needs redis-py: pip install 'persistmemo[redis]'") from None
    return redis


class RedisStore:
    """A persistent store of memoized results in a Redis server, shared across machines.

    - ``url``: ``redis://host:port/db`` (``rediss://`` for TLS, ``unix://`` sockets).
    - ``namespace``: prefix of every key, so several teams or projects share one server.
      Namespaces may nest (``team`` and ``team:dev`` keep apart); their ``:``-separated
      parts may not be ``pm1``, ``pm2``, ``pm-lease`` or ``pm-hits``, the words of the key
      layout.
    - ``timeout``, ``connect_timeout``: seconds a command or a connection may take.
    - ``backoff``: seconds the store stays away from the server after a failure.
    - ``max_value_bytes``: larger results are not sent (a warning; a TieredStore keeps them
      locally).
    - ``strict``, ``lease``, ``secret``: as for ``Store``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        namespace: str = _DEFAULT_NAMESPACE,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        backoff: float = DEFAULT_BACKOFF,
        max_value_bytes: int = DEFAULT_MAX_VALUE,
        strict: bool = False,
        lease: float = 10.0,
        secret: bytes | str | None = None,
    ) -> None:
        _check_namespace(namespace)
        redis = _redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.namespace = namespace
        self.strict = strict
        self.lease = float(lease)
        self.backoff = float(backoff)
        self.max_value_bytes = max_value_bytes
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._response_error: type[BaseException] = redis.ResponseError
        try:
            _check_database(url)
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=connect_timeout if connect_timeout is not None else timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as error:
            raise ValueError(
                f"RedisStore(url={_redacted(url)!r}) is not a Redis URL ({error}): write "
                f"redis://host:6379/0, rediss://host:6380/0 (TLS) or unix:///path/redis.sock"
            ) from None
        self._claim = self._client.register_script(_CLAIM)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._write_and_release = self._client.register_script(_WRITE_AND_RELEASE)
        self._prefix = f"{namespace}:"
        # What each entry's seal is made over: the key with its namespace, so that an entry
        # copied from "team:dev" to "team" does not verify. The default namespace seals the
        # bare key, as every release did (its entries stay readable).
        self._sealed_as = "" if namespace == _DEFAULT_NAMESPACE else self._prefix
        self._given_secret = secret_from_text(secret) if isinstance(secret, str) else secret
        self._sealer: Sealer | None = None
        self._secret = b""
        self.pickle_allowed = False
        self._down_until = 0.0
        self._pinged = False
        # Leases other callers hold, as last seen: key -> (holder's token, monotonic end).
        self._leases_seen: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self._faults = FaultReporter(_redacted(url))

    def __repr__(self) -> str:
        return f"RedisStore({self.display_url!r}, namespace={self.namespace!r})"

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages and listings."""
        return _redacted(self.url)

    # --- the circuit breaker -------------------------------------------------------------

    def _call(self, kind: str, operation: Callable[[], T], default: T) -> T:
        if self._down_until and time.monotonic() < self._down_until:
            return default
        try:
            result = operation()
        except self._errors as error:
            if self._refused_for_memory(error):
                # The server answered: it is full, not down. Reads of what it holds go on.
                self._faults.report(
                    "store full",
                    f"{kind}: the server refused a write: {error} (maxmemory reached under "
                    f"maxmemory-policy noeviction); results are not stored until it has room. "
                    f"Raise maxmemory, or use an evicting policy such as allkeys-lru",
                )
                return default
            if self._wrong_type(error):
                # The server answered: one key holds a list, a hash... that persistmemo did
                # not write. That key is missing to us; the server is not down.
                self._faults.report(
                    "key of another type",
                    f"{kind}: {error}: a key in namespace {self.namespace!r} holds a Redis "
                    f"type persistmemo does not write; it is treated as missing (storing a "
                    f"result there replaces it; `persistmemo check --fix` removes such entries)",
                )
                return default
            self._down_until = time.monotonic() + self.backoff
            self._faults.report(
                "server unavailable",
                f"{kind}: {type(error).__name__}: {error}; calls run without the store, which "
                f"is tried again in {self.backoff:g} s",
            )
            return default
        self._down_until = 0.0
        return result

    def _refused_for_memory(self, error: BaseException) -> bool:
        # redis-py names it OutOfMemoryError; a script's refused write carries the same text.
        return isinstance(error, self._response_error) and (
            type(error).__name__ == "OutOfMemoryError" or "used memory > 'maxmemory'" in str(error)
        )

    def _wrong_type(self, error: BaseException) -> bool:
        # Not a class of its own in redis-py; inside a script the text comes after a prefix.
        return isinstance(error, self._response_error) and "WRONGTYPE" in str(error)

    def _sealer_ready(self) -> Sealer:
        if self._sealer is None:
            with self._lock:
                if self._sealer is None:
                    self._secret = self._resolve_secret()
                    self._sealer = Sealer(self._secret)
        return self._sealer

    def _resolve_secret(self) -> bytes:
        if self._given_secret is not None:
            self.pickle_allowed = not self.strict
            return self._given_secret
        if not environment.secret():
            self._faults.report(
                "no shared secret",
                f"entries are sealed with this user's local key, so other machines cannot "
                f"use them: set ${environment.SECRET} (the same passphrase everywhere) to share",
            )
        try:
            secret = user_secret()
        except SecretUnavailable as error:
            self._faults.report("secret key unavailable", str(error))
            return os.urandom(32)
        self.pickle_allowed = not self.strict
        return secret

    def open(self) -> bool:
        """Settle the secret and, the first time, check the server answers; True when usable.

        Called before every write (it settles ``pickle_allowed``), so only the first call
        costs a round trip."""
        self._sealer_ready()
        if not self._pinged:
            self._pinged = bool(self._call("ping", self._client.ping, False))
            return self._pinged
        return not (self._down_until and time.monotonic() < self._down_until)

    @property
    def secret(self) -> bytes:
        """The key that seals this store's entries."""
        self._sealer_ready()
        return self._secret

    # --- entries -------------------------------------------------------------------------

    def read(self, key: str) -> Encoded | Missing:
        """The verified encoded value under ``key``, or MISSING."""
        found = self.read_with_expiry(key, False)
        return found if found is MISSING else found[0]  # type: ignore[index]

    def read_with_expiry(
        self, key: str, with_expiry: bool = True, *, mapped: bool = False
    ) -> tuple[Encoded, float | None] | Missing:
        """``(encoded value, expiry or None)``; the expiry costs a second command in the same
        round trip, so the plain hit path asks without it."""
        sealer = self._sealer or self._sealer_ready()
        name = self._prefix + key
        # GETRANGE, not GET: at most max_value_bytes + 1 bytes come back, so a planted huge
        # value is refused by its length, never downloaded (nor left to time the connection
        # out, which would bypass the whole store). A missing key reads as b"".
        last = self.max_value_bytes
        if with_expiry:

            def fetch() -> tuple[Any, Any]:
                pipeline = self._client.pipeline(transaction=False)
                pipeline.getrange(name, 0, last)
                pipeline.pttl(name)
                stored, remaining = pipeline.execute()
                return stored, remaining

            stored, remaining = self._call("read", fetch, (None, -2))
            expires_at = time.time() + remaining / 1000 if remaining and remaining > 0 else None
        else:
            stored = self._call("read", lambda: self._client.getrange(name, 0, last), None)
            expires_at = None
        if not stored:
            return MISSING
        if len(stored) > last:
            self._faults.report(
                "oversized entry",
                f"{name} holds more than max_value_bytes={last:,} bytes (persistmemo never "
                "writes such a value): not read, a miss",
            )
            return MISSING
        encoded = unseal_or_report(sealer, self._sealed_as + key, stored, self.report_fault)
        return encoded if encoded is MISSING else (encoded, expires_at)  # type: ignore[return-value]

    def read_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Encoded]:
        """The verified values of those ``keys`` that are stored: one MGET per batch."""
        sealer = self._sealer or self._sealer_ready()
        found: dict[str, Encoded] = {}
        for start in range(0, len(keys), _READ_MANY_BATCH):
            batch = keys[start : start + _READ_MANY_BATCH]
            names = [self._prefix + key for key in batch]

            def fetch(names: list[str] = names) -> list[Any] | None:
                # GETRANGE for each, in one round trip: capped as single reads are; a key of
                # another type answers with its error, a miss like a missing key.
                pipeline = self._client.pipeline(transaction=False)
                for each in names:
                    pipeline.getrange(each, 0, self.max_value_bytes)
                answers = pipeline.execute(raise_on_error=False)
                return [
                    answer
                    if isinstance(answer, bytes) and 0 < len(answer) <= self.max_value_bytes
                    else None
                    for answer in answers
                ]

            values = self._call("read", fetch, None)
            if values is None:
                return found
            for key, stored in zip(batch, values, strict=True):
                if stored is not None:
                    encoded = unseal_or_report(
                        sealer, self._sealed_as + key, stored, self.report_fault
                    )
                    if encoded is not MISSING:
                        found[key] = encoded  # type: ignore[assignment]
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
        """Seal and send ``encoded``; with ``lease``, release it in the same server step."""
        sealed = self._sealer_ready().seal(self._sealed_as + key, encoded, seconds)
        if type(sealed) is SealedParts:
            sealed = sealed.joined()  # redis-py sends one value
        if len(sealed) > self.max_value_bytes:
            self._faults.report(
                "value too large",
                f"a {len(sealed):,}-byte result of {tag} exceeds max_value_bytes="
                f"{self.max_value_bytes:,} and is not sent to Redis",
            )
            return False
        # An infinite ttl is no expiry (int() of it would raise).
        finite = ttl is not None and math.isfinite(ttl)
        milliseconds = max(1, int(ttl * 1000)) if finite and ttl is not None else None
        name = self._prefix + key
        if lease is None:
            return bool(
                self._call("write", lambda: self._client.set(name, sealed, px=milliseconds), False)
            )

        def write_and_release() -> bool:
            arguments = [
                sealed,
                "" if milliseconds is None else milliseconds,
                lease.token,
                _RELEASED,
                _RELEASED_MS,
            ]
            self._write_and_release(keys=[name, self._lease_name(key)], args=arguments)
            return True

        stored = bool(self._call("write", write_and_release, False))
        lease.released = stored
        return stored

    def delete(self, key: str) -> bool:
        """Remove one entry; True when it was there."""
        return bool(self._call("delete", lambda: self._client.delete(self._prefix + key), 0))

    def delete_tagged(self, tag: str) -> int:
        """Remove every entry of the function ``tag`` (SCAN, then UNLINK in batches)."""
        return self._unlink_matching(self._function_pattern(tag), self._of_function(tag))

    def clear(self) -> int:
        """Remove every entry, lease and hit count of this namespace; returns how many
        entries. Namespaces nested in this one (``team:dev`` in ``team``) are left alone."""
        prefix = _glob_escape(self._prefix)
        removed = [self._unlink_matching(f"{prefix}{kind}*") for kind in _KEY_KINDS]
        return sum(removed[: len(RESULT_FORMATS)])  # the results; the rest is bookkeeping

    def _function_pattern(self, function: str | None) -> str:
        suffix = f"{_glob_escape(function)}:*" if function else "*"
        formats = "[" + "".join(form[-1] for form in RESULT_FORMATS) + "]"  # pm[12]
        return f"{_glob_escape(self._prefix)}pm{formats}:{suffix}"

    def _of_function(self, function: str) -> Callable[[bytes], bool]:
        """Whether a scanned name is an entry of exactly ``function``: identities may contain
        ':', so ``app.load:*`` also matches ``app.load:v2``'s entries."""
        start = len(self._prefix)

        def exact(name: bytes) -> bool:
            return identity_of(name.decode("utf-8", "surrogateescape")[start:]) == function

        return exact

    def _unlink_matching(self, pattern: str, keep: Callable[[bytes], bool] | None = None) -> int:
        def unlink() -> int:
            removed = 0
            batch: list[bytes] = []
            for name in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
                if keep is not None and not keep(name):
                    continue
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    removed += self._client.unlink(*batch)
                    batch = []
            if batch:
                removed += self._client.unlink(*batch)
            return removed

        return int(self._call("delete", unlink, 0))

    def __len__(self) -> int:
        """Number of entries in this namespace (a SCAN: proportional to the database)."""
        return sum(1 for _ in self._scan_keys())

    def _scan_keys(self, function: str | None = None) -> Iterator[str]:
        pattern = self._function_pattern(function)
        exact = self._of_function(function) if function else None
        names: list[bytes] = self._call(
            "scan", lambda: list(self._client.scan_iter(match=pattern, count=_SCAN_BATCH)), []
        )
        for name in names:
            if exact is None or exact(name):
                yield name.decode("utf-8", "surrogateescape")[len(self._prefix) :]

    # --- leases --------------------------------------------------------------------------

    def _lease_name(self, key: str) -> str:
        return f"{self._prefix}{LEASE_PREFIX}{key}"

    def try_lease(self, key: str, token: str) -> bool:
        """Claim ``key``; True when claimed or when the server is away. A lease found gone
        before its end (evicted) is put back for its holder: see ``_CLAIM``."""
        milliseconds = int(self.lease * 1000)
        seen = self._leases_seen.get(key)
        now = time.monotonic()
        holder, left = b"", 0
        if seen is not None and seen[1] > now:
            holder, left = seen[0], max(1, int((seen[1] - now) * 1000))

        horizon = int(planted_lease_after(self.lease) * 1000)

        def claim() -> Any:
            return self._claim(
                keys=[self._lease_name(key), self._prefix + key],
                args=[token, milliseconds, holder, left, _RELEASED, horizon],
            )

        answer = self._call("lease", claim, None)
        if answer is None:
            return True
        if answer[0]:
            self._leases_seen.pop(key, None)
            if answer[0] == 2:
                self._faults.report(
                    "planted lease",
                    f"the lease on {key} had no end (or one too far away to be a caller's): "
                    "taken over, so that callers do not wait for it forever",
                )
            return True
        remaining = int(answer[2])
        if remaining > 0:  # measured from before we asked: the end is never late
            self._remember_lease(key, bytes(answer[1]), now + remaining / 1000)
        return False

    def _remember_lease(self, key: str, holder: bytes, end: float) -> None:
        if len(self._leases_seen) >= _LEASES_REMEMBERED:
            # Waiters that got their value leave entries behind: forget those that ended.
            now = time.monotonic()
            self._leases_seen = {k: v for k, v in self._leases_seen.items() if v[1] > now}
            if len(self._leases_seen) >= _LEASES_REMEMBERED:
                self._leases_seen.clear()
        self._leases_seen[key] = (holder, end)

    def renew_lease(self, key: str, token: str) -> bool:
        """Extend our claim, only if it is still ours."""
        milliseconds = int(self.lease * 1000)
        return bool(
            self._call(
                "lease",
                lambda: self._renew(keys=[self._lease_name(key)], args=[token, milliseconds]),
                0,
            )
        )

    def lease_holder(self, key: str) -> str | None:
        """The token of the live lease on ``key``, or None."""
        found = self._call("lease", lambda: self._client.get(self._lease_name(key)), None)
        if not isinstance(found, bytes) or found == _RELEASED.encode():
            return None
        try:
            return found.decode()
        except UnicodeDecodeError:
            return None

    def release_lease(self, key: str, token: str) -> None:
        """Drop our claim, only if it is still ours."""
        arguments = [token, _RELEASED, _RELEASED_MS]
        self._call("lease", lambda: self._release(keys=[self._lease_name(key)], args=arguments), 0)

    # --- hit counts ----------------------------------------------------------------------

    def record_hits(self, function: str, hits: int) -> None:
        """Add ``hits`` to the count kept for ``function``."""
        name = f"{self._prefix}{STATS_PREFIX}{function}"
        self._call("write", lambda: self._client.incrby(name, hits), 0)

    def recorded_hits(self) -> dict[str, int]:
        """Hit counts per function."""
        start = len(self._prefix) + len(STATS_PREFIX)
        pattern = f"{_glob_escape(self._prefix)}{STATS_PREFIX}*"

        def fetch() -> dict[str, int]:
            names = list(self._client.scan_iter(match=pattern, count=_SCAN_BATCH))
            values = self._client.mget(names) if names else []
            counts = {}
            for name, value in zip(names, values, strict=True):
                # Whoever can write the server can plant any name and value here: a count
                # that INCRBY could not have made is left out, not trusted.
                function, count = _text(name), _count(value)
                if function is not None and count is not None:
                    counts[function[start:]] = count
            return counts

        return self._call("read", fetch, {})

    def forget_hits(self, function: str) -> None:
        """Drop the hit count of ``function``."""
        name = f"{self._prefix}{STATS_PREFIX}{function}"
        self._call("delete", lambda: self._client.delete(name), 0)

    # --- looking inside ------------------------------------------------------------------

    def entries(self, function: str | None = None) -> Iterator[EntryInfo]:
        """Metadata of every entry (of one function), from headers and TTLs, not values."""

        keys = list(self._scan_keys(function))
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]

            def fetch(batch: list[str] = batch) -> list[Any]:
                pipeline = self._client.pipeline(transaction=False)
                for key in batch:
                    name = self._prefix + key
                    pipeline.getrange(name, 0, HEADER_READ - 1)
                    pipeline.strlen(name)
                    pipeline.pttl(name)
                # A key of another type fails alone, not its whole batch.
                return list(pipeline.execute(raise_on_error=False))

            answers: list[Any] = self._call("scan", fetch, [])
            now = time.time()
            for index, key in enumerate(batch if answers else []):
                header, size, remaining = answers[3 * index : 3 * index + 3]
                if not isinstance(header, bytes) or not isinstance(size, int) or not size:
                    continue  # expired or removed since the scan, or not a string
                if not isinstance(remaining, int):
                    remaining = None
                identity, version = split_key(key, None)
                metadata = entry_metadata(header) or (None, 0.0)
                yield EntryInfo(
                    key=key,
                    function=identity,
                    version=version,
                    stored_at=metadata[1],
                    expires_at=now + remaining / 1000 if remaining and remaining > 0 else None,
                    size=int(size),
                    compute_seconds=metadata[0],
                )

    def entry_info(self, key: str) -> EntryInfo | None:
        """Metadata of the entry under ``key``, or None."""
        identity = identity_of(key)
        return next((entry for entry in self.entries(identity) if entry.key == key), None)

    def functions(self) -> dict[str, FunctionSummary]:
        """Per-function summaries, as for the disk store."""

        return summarize(self.entries())

    def check(self, *, fix: bool = False, progress: Progress | None = None) -> CheckReport:
        """Verify every entry's seal and that its value decodes; ``fix`` removes the entries
        whose seal fails (and keys of another Redis type planted among them).

        When the entries that fail their tag while their frames are well formed outnumber
        those that verify, they were sealed with another secret, not damaged: the report says
        so and ``fix`` removes nothing. Malformed values count neither way."""
        report = CheckReport()
        sealer = self._sealer_ready()
        keys = list(self._scan_keys())
        malformed: list[str] = []
        verified = well_formed_failures = 0
        for start in range(0, len(keys), _READ_MANY_BATCH):
            batch = keys[start : start + _READ_MANY_BATCH]

            def fetch(batch: list[str] = batch) -> list[Any]:
                pipeline = self._client.pipeline(transaction=False)
                for key in batch:
                    pipeline.get(self._prefix + key)
                return list(pipeline.execute(raise_on_error=False))

            answers = self._call("read", fetch, [None] * len(batch))
            for key, stored in zip(batch, answers, strict=True):
                if stored is None:
                    continue  # expired or removed since the scan
                report.entries += 1
                if not isinstance(stored, bytes):  # an error: a list, a hash... at this key
                    malformed.append(key)
                    report.corrupt.append(key)
                    report.problems.append(f"{key}: not a persistmemo value ({stored})")
                    continue
                outcome = judge_entry(report, sealer, key, stored, self._sealed_as + key)
                verified += outcome == "verified"
                well_formed_failures += outcome == "well-formed"
                if outcome == "malformed":
                    malformed.append(key)
            if progress is not None:
                progress(min(start + _READ_MANY_BATCH, len(keys)), len(keys))
        if looks_sealed_with_another_secret(
            verified=verified, well_formed_failures=well_formed_failures
        ):
            report.wrong_secret = True
            kept = [f"{key}: not a persistmemo value" for key in malformed]
            report.problems = [
                f"{well_formed_failures} of {report.entries} {WRONG_SECRET}; nothing was removed",
                *kept,
            ]
        elif fix:
            report.removed = sum(self.delete(key) for key in report.corrupt)
        return report

    def prune(
        self,
        *,
        expired: bool = True,
        older_than: float | None = None,
        keep_versions: Mapping[str, Iterable[str]] | None = None,
        progress: Progress | None = None,
    ) -> int:
        """As ``Store.prune``; Redis removes expired entries by itself."""
        keep = {name: set(versions) for name, versions in (keep_versions or {}).items()}
        cutoff = None if older_than is None else time.time() - older_than
        doomed = [
            entry.key
            for entry in self.entries()
            if (cutoff is not None and entry.stored_at < cutoff)
            or (entry.function in keep and entry.version not in keep[entry.function])
        ]
        removed = 0
        for done, key in enumerate(doomed, 1):
            removed += self.delete(key)
            if progress is not None:
                progress(done, len(doomed))
        return removed

    # --- the rest ------------------------------------------------------------------------

    def report_fault(self, kind: str, error: BaseException) -> None:
        """Warn once per kind of fault."""
        self._faults.report(kind, f"{type(error).__name__}: {error}")

    def memo(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``memo`` with this store: ``@store.memo`` or ``@store.memo(ttl=60)``."""
        from persistmemo._memo.decorator import memo  # an upward reach: the decorator sits above

        decorate: Any = memo(store=self, **options)
        return decorate if func is None else decorate(func)

    def close(self) -> None:
        """Close the connections (they reopen when used again)."""
        self._client.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _text(name: bytes) -> str | None:
    """A key name as text, or None when it is not UTF-8 (redis-py writes str names as
    UTF-8, so such a name was not written by persistmemo)."""
    try:
        return name.decode()
    except UnicodeDecodeError:
        return None


def _count(value: bytes | None) -> int | None:
    """A hit count as INCRBY keeps it (decimal digits in int64's range), or None."""
    if value is None or not 0 < len(value) <= 19 or not value.isdigit():
        return None
    count = int(value)
    return count if count < _MOST_HITS else None


def _check_namespace(namespace: object) -> None:
    if not isinstance(namespace, str):
        raise TypeError(
            f"RedisStore(namespace=...) takes a str, got {type(namespace).__name__}: "
            f"write namespace='myteam'"
        )
    reserved = sorted(_RESERVED_WORDS.intersection(namespace.split(":")))
    if reserved:
        raise ValueError(
            f"RedisStore(namespace={namespace!r}): {reserved[0]!r} is a word of persistmemo's "
            f"key layout, and a namespace with it would overlap another namespace's keys: "
            "choose a namespace whose ':'-separated parts are not 'pm1', 'pm2', 'pm-lease', "
            "'pm-hits' or 'pm-failed'"
        )


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, for SCAN MATCH."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _check_database(url: str) -> None:
    """Raise ValueError for a database number redis-py would silently read as 0."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        database = parts.path.strip("/")
    elif parts.scheme == "unix":
        database = parse_qs(parts.query).get("db", [""])[0]
    else:
        return
    if database and not database.isdigit():
        raise ValueError(f"database {database!r} is not a number")


def _redacted(url: str) -> str:
    """The URL without a password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
