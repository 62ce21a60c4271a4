"""The bottom of the store layer: the interface every store implements, and the words they share.

Disk (``stores/disk.py``), Redis (``stores/redis.py``) and tiered (``stores/tiered.py``) stores
all speak this vocabulary; nothing here imports a concrete store or anything above the
stores (see docs/architecture.md). What a store promises is fixed by the contract suite,
``tests/test_store_contract.py``, which every store runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from persistmemo._codec.decoding import Encoded, decode_value, is_pickled
from persistmemo._codec.out_of_band import OutOfBand
from persistmemo._keys.layout import KEY_FORMAT, identity_of
from persistmemo._sealing import FRAME_VERSION, HEADER_SIZE, Sealer, area_header_size
from persistmemo.errors import CorruptEntry, UndecodableValue
from persistmemo.errors import StoreUnreadable as StoreUnreadable  # its home until errors.py

# No typing at run time (the cold-start budget, docs/architecture.md): for type checkers.
# At run time the two that make classes are made here as typing makes them: a NamedTuple
# class is a collections.namedtuple (with the class's other attributes), and isinstance()
# against a Protocol checks that the object has every member it declares, as
# @runtime_checkable makes it.
TYPE_CHECKING = False
if not TYPE_CHECKING:
    from persistmemo._typing_stand_ins import NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

LEASE_PREFIX = "pm-lease:"


def planted_lease_after(lease: float) -> float:
    """How far away a lease's end may be before no caller could have set it: twice the
    store's lease, and at least a minute (members may choose other lease lengths)."""
    return max(2 * lease, 60.0)


STATS_PREFIX = "pm-hits:"
FAILURE_PREFIX = "pm-failed:"
"""Before a key, the record of its last failed computation (see locking.py): bookkeeping,
like leases and hit counts, never counted as a result."""
FINGERPRINT_PREFIX = "pm-file:"
"""Before a file fingerprint (device, inode, size, times), the content digest recorded for it
(see files.py): bookkeeping, never counted as a result."""
SECRET_PREFIX = "pm-secret:"
"""Before the fingerprint of a secret that sealed entries in the store (integrity.Sealer):
bookkeeping, never counted as a result."""


def secret_scoped(store: object, key: str) -> str:
    """A bookkeeping record's ``key`` (``pm-version:...``, ``pm-file:...``) within the store's
    sealing secret: members of a team store who seal with their own secrets keep records of
    their own, rather than overwrite each other's (each failing the other's seal)."""
    secret = getattr(store, "secret", None)
    if not isinstance(secret, bytes):
        return key
    scope = _secret_scopes.get(secret)
    if scope is None:
        scope = _secret_scopes[secret] = Sealer(secret).fingerprint
    prefix, _, rest = key.partition(":")
    return f"{prefix}:{scope}:{rest}"


_secret_scopes: dict[bytes, str] = {}

VERSION_PREFIX = "pm-version:"
"""Before a fingerprint of a function's source files, the version derived from them (see
memoized.py): bookkeeping, never counted as a result."""


class Missing:
    """The type of ``MISSING``: what a read returns when there is no usable entry."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        # The one instance, by name: a call path sent by value (cloudpickle) compares with it.
        return "MISSING"


MISSING: Final = Missing()


class Lease:
    """Our claim on one key while we compute it."""

    __slots__ = ("key", "released", "token")

    def __init__(self, key: str, token: str) -> None:
        self.key = key
        self.token = token
        self.released = False  # set by a store write that released it with the value


Progress = Callable[[int, int], None]
"""Called with (done, total) during long operations."""


class EntryInfo(NamedTuple):
    """One stored result, described without decoding it."""

    key: str
    function: str
    version: str
    stored_at: float
    expires_at: float | None
    size: int
    compute_seconds: float | None

    @property
    def expired(self) -> bool:
        """Whether the entry is past its TTL (a miss, awaiting removal)."""
        return self.expires_at is not None and self.expires_at <= time.time()


class FunctionSummary:
    """What one function has in a store."""

    def __init__(self, function: str) -> None:
        self.function = function
        self.entries = 0
        self.size = 0
        self.versions: set[str] = set()
        self.oldest = float("inf")
        self.newest = 0.0
        self.compute_seconds = 0.0
        self.expired = 0

    def __repr__(self) -> str:
        return (
            f"FunctionSummary({self.function!r}, entries={self.entries}, size={self.size}, "
            f"versions={sorted(self.versions)}, compute_seconds={self.compute_seconds:.3f})"
        )


class CheckReport:
    """The outcome of ``Store.check``: problems found, and how many entries were removed.

    ``corrupt`` lists the keys that failed their seal (removed by ``fix``), ``undecodable``
    the sealed ones whose value the codec cannot decode (kept: a codec matter, not damage),
    and ``wrong_secret`` says the store was sealed with another secret (nothing removed).
    """

    def __init__(self) -> None:
        self.entries = 0
        self.problems: list[str] = []
        self.removed = 0
        self.corrupt: list[str] = []
        self.undecodable: list[str] = []
        self.wrong_secret = False

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not self.problems

    def __repr__(self) -> str:
        return f"CheckReport(entries={self.entries}, problems={len(self.problems)})"


def split_key(key: str, tag: object) -> tuple[str, str]:
    """(function identity, version) of an entry key."""
    # The tag names the function only if the key agrees (a planted row's tag may not).
    function = identity_of(key)
    if isinstance(tag, str) and key[4:].startswith(f"{tag}:"):
        function = tag
    rest = key[len(KEY_FORMAT) + 1 + len(function) + 1 :]  # every format is 3 letters
    return function, rest.rsplit(":", 1)[0]


def summarize(entries: Iterable[EntryInfo]) -> dict[str, FunctionSummary]:
    """Per-function totals of ``entries``, by function identity."""
    summaries: dict[str, FunctionSummary] = {}
    for entry in entries:
        summary = summaries.setdefault(entry.function, FunctionSummary(entry.function))
        summary.entries += 1
        summary.size += entry.size
        summary.versions.add(entry.version)
        summary.oldest = min(summary.oldest, entry.stored_at)
        summary.newest = max(summary.newest, entry.stored_at)
        summary.compute_seconds += entry.compute_seconds or 0.0
        summary.expired += entry.expired
    return summaries


WRONG_SECRET = (
    "entries are sealed with a different secret (set $PERSISTMEMO_SECRET or --secret-file)"
)


def looks_sealed_with_another_secret(*, verified: int, well_formed_failures: int) -> bool:
    """Whether tag failures say "another secret" rather than "damage".

    ``verified`` counts the entries whose tag checked, ``well_formed_failures`` those whose
    tag failed although their frame is well formed (the frame version, a whole header and a
    body). Malformed rows (junk, truncated frames, planted diskcache modes) count neither
    way: anyone who can write the store can plant them, and they must not tip the verdict.
    The secret is judged wrong when the well-formed failures outnumber the verified
    entries (and there is at least one): then nothing may be removed, since with the wrong
    secret every good entry looks damaged. A store of 10 good entries with 2 damaged ones
    is damage; 2 entries both failing is a wrong secret.

    >>> looks_sealed_with_another_secret(verified=0, well_formed_failures=2)
    True
    >>> looks_sealed_with_another_secret(verified=10, well_formed_failures=2)
    False
    """
    return well_formed_failures >= 1 and well_formed_failures > verified


def sealed_with_another_secret(
    recorded: set[str], sealer: Sealer, *, verified: int, well_formed_failures: int
) -> bool:
    """Whether the tag failures of ``check`` say "another secret" rather than "damage". The
    fingerprints of the secrets that wrote the store settle it when it keeps them: only
    ours means damage; others but not ours, another secret. Otherwise the counts decide
    (``looks_sealed_with_another_secret``)."""
    if recorded == {sealer.fingerprint}:
        return False
    if recorded and sealer.fingerprint not in recorded:
        return well_formed_failures > 0
    return looks_sealed_with_another_secret(
        verified=verified, well_formed_failures=well_formed_failures
    )


def frame_is_well_formed(stored: object) -> bool:
    """Whether ``stored`` has the shape of a sealed entry (frame version, header, body),
    whatever its tag: what ``looks_sealed_with_another_secret`` counts as a failure."""
    if not isinstance(stored, (bytes, bytearray, memoryview)):
        return False
    header_size = area_header_size(stored[0]) if stored else None
    if header_size is not None:
        return len(stored) >= header_size
    return len(stored) > HEADER_SIZE and stored[:1] == FRAME_VERSION


def check_decodes(encoded: Encoded) -> None:
    """Decode a verified value as ``check`` does: msgpack values fully; pickles never (their
    tag verified, and unpickling would run code: a secret given to check may be another
    user's), and no module is imported for them: a value whose class is not loaded in this
    process cannot be rebuilt here, which is not a defect. Raises CorruptEntry when a msgpack
    value is malformed."""
    if not is_pickled(encoded):
        with contextlib.suppress(UndecodableValue):
            decode_value(encoded, allow_pickle=False)


def judge_entry(
    report: CheckReport,
    sealer: Sealer,
    key: str,
    stored: bytes | memoryview,
    sealed_as: str | None = None,
) -> str:
    """One entry of ``check``: its seal (made over ``sealed_as``, by default the key), then
    whether its value decodes, recorded in ``report``. Returns "verified", "well-formed" (the
    tag failed on intact bytes: another secret, or damage) or "malformed"; the stores weigh
    the counts with ``looks_sealed_with_another_secret``."""
    try:
        encoded = sealer.unseal(sealed_as or key, stored)
    except CorruptEntry as error:
        report.corrupt.append(key)
        report.problems.append(f"{key}: {error}")
        return "well-formed" if frame_is_well_formed(stored) else "malformed"
    try:
        check_decodes(encoded)
    except CorruptEntry as error:
        report.undecodable.append(key)
        report.problems.append(f"{key}: does not decode (codec): {error}")
    return "verified"


@runtime_checkable
class StoreBackend(Protocol):
    """The store interface."""

    strict: bool
    lease: float

    @property
    def pickle_allowed(self) -> bool: ...

    def read(self, key: str) -> Encoded | Missing: ...

    def read_with_expiry(
        self, key: str, with_expiry: bool = True, *, mapped: bool = False
    ) -> tuple[Encoded, float | None] | Missing:
        """``(encoded value, expiry or None)``, or MISSING. ``mapped``: a value with an area
        may come back as a read-only map of the stored file (stores without files ignore
        it)."""
        ...

    def read_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Encoded]:
        """The verified values of those ``keys`` that are stored (absent ones left out);
        ``mapped`` as in ``read_with_expiry``."""
        ...

    def write(
        self,
        key: str,
        encoded: bytes | OutOfBand,
        *,
        ttl: float | None,
        tag: str,
        seconds: float = 0.0,
        lease: Lease | None = None,
    ) -> bool: ...

    def __len__(self) -> int:
        """Stored results only: leases, hit counts and failure records are not counted."""
        ...

    def delete(self, key: str) -> bool: ...

    def delete_tagged(self, tag: str) -> int: ...

    def clear(self) -> int: ...

    def open(self) -> bool: ...

    def close(self) -> None: ...

    @property
    def leases_expire(self) -> bool:
        """Whether a claim is a lease that runs out unless renewed (else a lock)."""
        ...

    def try_lease(self, key: str, token: str) -> bool: ...

    def renew_lease(self, key: str, token: str) -> bool: ...

    def lease_holder(self, key: str) -> str | None:
        """The token of the live lease on ``key``, or None (none, or unknown)."""
        ...

    def release_lease(self, key: str, token: str) -> None: ...

    def report_fault(self, kind: str, error: BaseException) -> None: ...

    def record_hits(self, function: str, hits: int) -> None: ...

    def recorded_hits(self) -> dict[str, int]: ...

    def forget_hits(self, function: str) -> None: ...

    def entries(self, function: str | None = None) -> Iterator[EntryInfo]: ...

    def entry_info(self, key: str) -> EntryInfo | None: ...

    def functions(self) -> dict[str, FunctionSummary]: ...

    def check(self, *, fix: bool = False, progress: Progress | None = None) -> CheckReport: ...

    def prune(
        self,
        *,
        expired: bool = True,
        older_than: float | None = None,
        keep_versions: Mapping[str, Iterable[str]] | None = None,
        progress: Progress | None = None,
    ) -> int: ...

    def memo(self, func: Any = None, /, **options: Any) -> Any: ...
