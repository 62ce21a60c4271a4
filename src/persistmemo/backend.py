"""What a store offers the decorator and the tools: the disk ``Store``, ``RedisStore`` and
``TieredStore`` all do, with the same meaning and the same fail-open rule (a fault is a
warning and a miss, never an exception)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from persistmemo.inspection import CheckReport, EntryInfo, FunctionSummary, Progress
    from persistmemo.locking import Lease
    from persistmemo.store import Missing


@runtime_checkable
class StoreBackend(Protocol):
    """The store interface."""

    strict: bool
    lease: float

    @property
    def pickle_allowed(self) -> bool: ...

    def read(self, key: str) -> bytes | memoryview | Missing: ...

    def read_with_expiry(
        self, key: str, with_expiry: bool = True
    ) -> tuple[bytes | memoryview, float | None] | Missing: ...

    def read_many(self, keys: list[str]) -> dict[str, bytes | memoryview]:
        """The verified values of those ``keys`` that are stored (absent ones left out)."""
        ...

    def write(
        self,
        key: str,
        encoded: bytes,
        *,
        ttl: float | None,
        tag: str,
        seconds: float = 0.0,
        lease: Lease | None = None,
    ) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def delete_tagged(self, tag: str) -> int: ...

    def clear(self) -> int: ...

    def open(self) -> bool: ...

    def close(self) -> None: ...

    def try_lease(self, key: str, token: str) -> bool: ...

    def renew_lease(self, key: str, token: str) -> bool: ...

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
