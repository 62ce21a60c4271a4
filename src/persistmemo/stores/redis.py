"""RedisStore: one memo shared by several machines, through a Redis server (redis-py).

``RedisBackend`` keeps the disk store's keys and sealed values under a namespace, with Redis
expiry for a TTL and leases claimed, renewed and released by scripts; short timeouts, no
retries and a backoff after a failure hold a dead or hung server to one timeout. The key
layout: docs/sharing.md#key-layout; the options: docs/options.md#redisstore-a-redis-server.
"""

from __future__ import annotations

import math
import os
import time

from persistmemo import _environment as environment
from persistmemo._keys.layout import RESULT_FORMATS
from persistmemo._sealing import HEADER_READ, SealedParts
from persistmemo._secret import user_secret
from persistmemo.errors import CorruptEntry, SecretUnavailable, StoreRefused
from persistmemo.stores.api import Backend, Row
from persistmemo.stores.base import (
    FAILURE_PREFIX,
    FINGERPRINT_PREFIX,
    LEASE_PREFIX,
    STATS_PREFIX,
    VERSION_PREFIX,
)
from persistmemo.stores.sealed import SealedStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from persistmemo.stores.api import Found


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
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
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


class RedisBackend(Backend):
    """Values in a Redis server under ``<namespace>:``, with short timeouts and a circuit
    breaker: after a failure the server is left alone for ``backoff`` seconds."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        timeout: float,
        connect_timeout: float | None,
        backoff: float,
        max_value_bytes: int,
    ) -> None:
        _check_namespace(namespace)
        redis = _redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.where = _redacted(url)
        self.namespace = namespace
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.backoff = float(backoff)
        self.max_value_bytes = max_value_bytes
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._response_error: type[BaseException] = redis.ResponseError
        try:
            _check_database(url)
            self.client = redis.Redis.from_url(
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
        self._claim = self.client.register_script(_CLAIM)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._write_and_release = self.client.register_script(_WRITE_AND_RELEASE)
        self._delete_if = self.client.register_script(_DELETE_IF)
        self.prefix = f"{namespace}:"
        # What each entry's seal is made over: the key with its namespace, so that an entry
        # copied from "team:dev" to "team" does not verify. The default namespace seals the
        # bare key, as every release did (its entries stay readable).
        self.seal_prefix = "" if namespace == _DEFAULT_NAMESPACE else self.prefix
        self.down_until = 0.0
        # Leases other callers hold, as last seen: key -> (holder's token, monotonic end).
        self._leases_seen: dict[str, tuple[bytes, float]] = {}

    # --- faults: the circuit breaker -------------------------------------------------------

    def usable(self) -> bool:
        return not (self.down_until and time.monotonic() < self.down_until)

    def fault(self, kind: str, error: BaseException) -> tuple[str, str] | None:
        if not isinstance(error, self._errors):
            return kind, f"{type(error).__name__}: {error}"
        if isinstance(error, self._response_error) and (
            type(error).__name__ == "OutOfMemoryError" or "used memory > 'maxmemory'" in str(error)
        ):
            # The server answered: it is full, not down. Reads of what it holds go on.
            return "store full", (
                f"{kind}: the server refused a write: {error} (maxmemory reached under "
                "maxmemory-policy noeviction); results are not stored until it has room. "
                "Raise maxmemory, or use an evicting policy such as allkeys-lru"
            )
        if isinstance(error, self._response_error) and "WRONGTYPE" in str(error):
            # One key holds a list, a hash... that persistmemo did not write: it is missing
            # to us; the server is not down.
            return "key of another type", (
                f"{kind}: {error}: a key in namespace {self.namespace!r} holds a Redis type "
                "persistmemo does not write; it is treated as missing (storing a result there "
                "replaces it; `persistmemo check --fix` removes such entries)"
            )
        if isinstance(error, self._response_error):
            # The server answered, refusing this one command (a planted count that is not
            # an integer, say): not a reason to stay away from it.
            return kind, f"{type(error).__name__}: {error}"
        self.down_until = time.monotonic() + self.backoff
        return "server unavailable", (
            f"{kind}: {type(error).__name__}: {error}; calls run without the store, which "
            f"is tried again in {self.backoff:g} s"
        )

    def ping(self) -> bool:
        """Whether the server answers (raises on a fault, as every operation)."""
        return bool(self.client.ping())

    # --- values ----------------------------------------------------------------------------

    def _typed(self, key: str, stored: bytes) -> bytes | str | int | None:
        """A stored value as the sealed layer knows it: leases are tokens, counts are ints,
        the rest sealed bytes. A value persistmemo could not have written is None."""
        if key.startswith(LEASE_PREFIX):
            if stored == _RELEASED.encode():
                return None
            try:
                return stored.decode()
            except UnicodeDecodeError:
                return None
        if key.startswith(STATS_PREFIX):
            return _count(stored)
        return stored

    def get(self, key: str, *, mapped: bool = False) -> Found | None:
        # GETRANGE, not GET: at most max_value_bytes + 1 bytes come back, so a planted huge
        # value is refused by its length, never downloaded (nor left to time the connection
        # out, which would bypass the whole store). A missing key reads as b"".
        if not self.usable():
            return None
        name = self.prefix + key
        pipeline = self.client.pipeline(transaction=False)
        pipeline.getrange(name, 0, self.max_value_bytes)
        pipeline.pttl(name)
        stored, remaining = pipeline.execute()
        if not stored:
            return None
        if len(stored) > self.max_value_bytes:
            raise StoreRefused(
                "oversized entry",
                f"{name} holds more than max_value_bytes={self.max_value_bytes:,} bytes "
                "(persistmemo never writes such a value): not read, a miss",
            )
        value = self._typed(key, stored)
        if value is None:
            return None
        expires_at = time.time() + remaining / 1000 if remaining and remaining > 0 else None
        return value, expires_at, None

    def get_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Found]:
        found: dict[str, Found] = {}
        if not self.usable():
            return found
        for start in range(0, len(keys), _READ_MANY_BATCH):
            batch = keys[start : start + _READ_MANY_BATCH]
            # GETRANGE for each, in one round trip: capped as single reads are; a key of
            # another type answers with its error, a miss like a missing key.
            pipeline = self.client.pipeline(transaction=False)
            for key in batch:
                pipeline.getrange(self.prefix + key, 0, self.max_value_bytes)
            answers = pipeline.execute(raise_on_error=False)
            for key, stored in zip(batch, answers, strict=True):
                if isinstance(stored, bytes) and 0 < len(stored) <= self.max_value_bytes:
                    value = self._typed(key, stored)
                    if value is not None:
                        found[key] = (value, None, None)
        return found

    def read_all(self, key: str) -> bytes | memoryview | None:
        # Capped as a hit is: a planted huge value is refused by its length, not downloaded.
        try:
            stored = self.client.getrange(self.prefix + key, 0, self.max_value_bytes)
        except self._response_error as error:  # a list, a hash... planted at this key
            raise CorruptEntry(f"not a persistmemo value ({error})") from None
        if not isinstance(stored, bytes) or not stored:
            return None
        if len(stored) > self.max_value_bytes:
            raise CorruptEntry(f"holds more than max_value_bytes={self.max_value_bytes:,} bytes")
        return stored

    def values(self, prefix: str) -> Iterator[tuple[str, bytes | memoryview | CorruptEntry]]:
        keys = self._names(prefix)
        for start in range(0, len(keys), _READ_MANY_BATCH):
            batch = keys[start : start + _READ_MANY_BATCH]
            pipeline = self.client.pipeline(transaction=False)
            for key in batch:
                pipeline.getrange(self.prefix + key, 0, self.max_value_bytes)
            # A key of another type answers with its error, alone, not its batch's.
            for key, stored in zip(batch, pipeline.execute(raise_on_error=False), strict=True):
                if isinstance(stored, Exception):
                    yield key, CorruptEntry(f"not a persistmemo value ({stored})")
                elif len(stored) > self.max_value_bytes:
                    limit = f"max_value_bytes={self.max_value_bytes:,}"
                    yield key, CorruptEntry(f"holds more than {limit} bytes")
                elif stored:
                    yield key, stored

    def put(
        self,
        key: str,
        value: bytes | SealedParts | str | int,
        *,
        ttl: float | None = None,
        tag: str | None = None,
        release: tuple[str, str] | None = None,
    ) -> bool:
        if type(value) is SealedParts:
            value = value.joined()  # redis-py sends one value
        if isinstance(value, bytes) and len(value) > self.max_value_bytes:
            raise StoreRefused(
                "value too large",
                f"a {len(value):,}-byte result of {tag or key} exceeds max_value_bytes="
                f"{self.max_value_bytes:,} and is not sent to Redis",
            )
        # An infinite ttl is no expiry (int() of it would raise).
        finite = ttl is not None and math.isfinite(ttl)
        milliseconds = max(1, int(ttl * 1000)) if finite and ttl is not None else None
        name = self.prefix + key
        if release is None:
            return bool(self.client.set(name, value, px=milliseconds))
        lease, token = release
        arguments = [value, "" if milliseconds is None else milliseconds, token]
        self._write_and_release(
            keys=[name, self.prefix + lease], args=[*arguments, _RELEASED, _RELEASED_MS]
        )
        return True

    def add(self, key: str, value: str, ttl: float) -> bool:
        return bool(self.client.set(self.prefix + key, value, nx=True, px=int(ttl * 1000)))

    def claim(self, key: str, token: str, ttl: float, horizon: float) -> tuple[bool, bool]:
        """The lease, in one server step: a lease found gone before its end (evicted) is put
        back for its holder, and a planted one taken over (see ``_CLAIM``)."""
        seen = self._leases_seen.get(key)
        now = time.monotonic()
        holder, left = b"", 0
        if seen is not None and seen[1] > now:
            holder, left = seen[0], max(1, int((seen[1] - now) * 1000))
        result_key = self.prefix + key[len(LEASE_PREFIX) :]
        arguments = [token, int(ttl * 1000), holder, left, _RELEASED, int(horizon * 1000)]
        answer = self._claim(keys=[self.prefix + key, result_key], args=arguments)
        if answer[0]:
            self._leases_seen.pop(key, None)
            return True, answer[0] == 2
        remaining = int(answer[2])
        if remaining > 0:  # measured from before we asked: the end is never late
            self._remember_lease(key, bytes(answer[1]), now + remaining / 1000)
        return False, False

    def _remember_lease(self, key: str, holder: bytes, end: float) -> None:
        if len(self._leases_seen) >= _LEASES_REMEMBERED:
            # Waiters that got their value leave entries behind: forget those that ended.
            now = time.monotonic()
            self._leases_seen = {k: v for k, v in self._leases_seen.items() if v[1] > now}
            if len(self._leases_seen) >= _LEASES_REMEMBERED:
                self._leases_seen.clear()
        self._leases_seen[key] = (holder, end)

    def expire_if(self, key: str, value: str, ttl: float) -> bool:
        # A lease found gone (evicted) is put back for its holder: see _RENEW.
        return bool(self._renew(keys=[self.prefix + key], args=[value, int(ttl * 1000)]))

    def delete_if(self, key: str, value: object) -> bool:
        if key.startswith(LEASE_PREFIX):  # leaves the RELEASED marker: see _RELEASE
            arguments = [value, _RELEASED, _RELEASED_MS]
            return bool(self._release(keys=[self.prefix + key], args=arguments))
        return bool(self._delete_if(keys=[self.prefix + key], args=[value]))

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(self.prefix + key))

    def delete_many(self, keys: list[str]) -> int:
        removed = 0
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = [self.prefix + key for key in keys[start : start + _SCAN_BATCH]]
            removed += int(self.client.unlink(*batch)) if batch else 0
        return removed

    def _names(self, prefix: str) -> list[str]:
        pattern = f"{_glob_escape(self.prefix + prefix)}*"
        start = len(self.prefix)
        names = []
        for name in self.client.scan_iter(match=pattern, count=_SCAN_BATCH):
            text = _text(name)
            if text is not None:
                names.append(text[start:])
        return names

    def scan(self, prefix: str) -> Iterator[Row]:
        keys = self._names(prefix)
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]
            pipeline = self.client.pipeline(transaction=False)
            for key in batch:
                name = self.prefix + key
                pipeline.getrange(name, 0, HEADER_READ - 1)
                pipeline.strlen(name)
                pipeline.pttl(name)
            # A key of another type fails alone, not its whole batch.
            answers = pipeline.execute(raise_on_error=False)
            now = time.time()
            for index, key in enumerate(batch):
                head, size, remaining = answers[3 * index : 3 * index + 3]
                if not isinstance(head, bytes) or not isinstance(size, int) or not size:
                    continue  # expired or removed since the scan, or not a string
                expires = isinstance(remaining, int) and remaining > 0
                yield Row(
                    key,
                    size=size,
                    stored_at=None,  # the sealed header's time
                    expires_at=now + remaining / 1000 if expires else None,
                    head=head,
                )

    def keys(self, prefix: str) -> list[str]:
        return self._names(prefix)

    def purge_expired(self) -> int:
        return 0  # Redis removes expired keys by itself

    def clear(self) -> None:
        """Every key of this namespace's kinds; namespaces nested in it (``team:dev`` in
        ``team``) are left alone."""
        for kind in _KEY_KINDS:
            self.delete_many(self._names(kind))

    def incr(self, key: str, amount: int) -> None:
        self.client.incrby(self.prefix + key, amount)

    def close(self) -> None:
        self.client.close()


class RedisStore(SealedStore):
    """A persistent store of memoized results in a Redis server, shared across machines.

    - ``url``: ``redis://host:port/db`` (``rediss://`` for TLS, ``unix://`` sockets).
    - ``namespace``: prefix of every key, so several teams or projects share one server.
      Namespaces may nest (``team`` and ``team:dev`` keep apart); their ``:``-separated
      parts may not be ``pm1``, ``pm2``, ``pm3``, ``pm-lease`` or ``pm-hits``, the words of the key
      layout.
    - ``timeout``, ``connect_timeout``: seconds a command or a connection may take.
    - ``backoff``: seconds the store stays away from the server after a failure.
    - ``max_value_bytes``: larger results are not sent (a warning; a TieredStore keeps them
      locally).
    - ``strict``, ``lease``, ``secret``: as for ``Store``. Pickled, it sends its settings:
      the URL (with its password, if it has one), and ``secret`` as ``Store`` does.
    """

    backend: RedisBackend

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
        backend = RedisBackend(
            url,
            namespace=namespace,
            timeout=timeout,
            connect_timeout=connect_timeout,
            backoff=backoff,
            max_value_bytes=max_value_bytes,
        )
        super().__init__(backend, strict=strict, lease=lease, secret=secret)
        self._pinged = False

    def __repr__(self) -> str:
        return f"RedisStore({self.display_url!r}, namespace={self.namespace!r})"

    def settings(self) -> dict[str, Any]:
        """The arguments that make this store again (the URL with its password, if it has
        one: the receiver connects with it); ``secret`` as given, or None."""
        backend = self.backend
        return {
            "url": backend.url,
            "namespace": backend.namespace,
            "timeout": backend.timeout,
            "connect_timeout": backend.connect_timeout,
            "backoff": backend.backoff,
            "max_value_bytes": backend.max_value_bytes,
            "strict": self.strict,
            "lease": self.lease,
            "secret": self._given_secret,
        }

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def namespace(self) -> str:
        return self.backend.namespace

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages and listings."""
        return self.backend.where

    @property
    def max_value_bytes(self) -> int:
        return self.backend.max_value_bytes

    def resolve_secret(self) -> tuple[bytes, bool]:
        if self._given_secret is not None:
            return self._given_secret, not self.strict
        if not environment.secret():
            self._faults.report(
                "no shared secret",
                f"entries are sealed with this user's local key, so other machines cannot "
                f"use them: set ${environment.SECRET} (the same passphrase everywhere) to share",
            )
        try:
            return user_secret(), not self.strict
        except SecretUnavailable as error:
            self._faults.report("secret key unavailable", str(error))
            return os.urandom(32), False

    def open(self) -> bool:
        """Settle the secret and, the first time, check the server answers; True when usable.

        Called before every write (it settles ``pickle_allowed``), so only the first call
        costs a round trip."""
        self._sealer_ready()
        if not self._pinged:
            self._pinged = bool(self._call("ping", self.backend.ping, False))
            return self._pinged
        return self.backend.usable()

    def _lease_name(self, key: str) -> str:
        return f"{self.backend.prefix}{LEASE_PREFIX}{key}"


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
            "choose a namespace whose ':'-separated parts are not 'pm1', 'pm2', 'pm3', 'pm-lease', "
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
