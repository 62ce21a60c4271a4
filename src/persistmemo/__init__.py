"""persistmemo: persistent memoization whose results outlive the process.

>>> from persistmemo import memo
>>> @memo(ttl=3600)                                     # doctest: +SKIP
... def fetch(url: str) -> dict: ...
"""

from persistmemo.codec import CorruptEntry, UndecodableValue, UnstorableValue
from persistmemo.decorator import CacheInfo, MemoDecorator, Memoized, memo
from persistmemo.faults import PersistmemoWarning
from persistmemo.inspection import CheckReport, EntryInfo, FunctionSummary  # light: no I/O
from persistmemo.keys import KEY_FORMAT
from persistmemo.locking import ComputationFailed
from persistmemo.store import Store, default_directory, default_store

__all__ = [
    "KEY_FORMAT",
    "CacheInfo",
    "CheckReport",
    "ComputationFailed",
    "CorruptEntry",
    "EntryInfo",
    "FunctionSummary",
    "MemoDecorator",
    "Memoized",
    "PersistmemoWarning",
    "RedisStore",
    "Store",
    "TieredStore",
    "UndecodableValue",
    "UnstorableValue",
    "default_directory",
    "default_store",
    "memo",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The stores of the extras load on first mention: the core import never needs redis-py.
    if name == "RedisStore":
        from persistmemo.backends.redis import RedisStore

        return RedisStore
    if name == "TieredStore":
        from persistmemo.backends.tiered import TieredStore

        return TieredStore
    raise AttributeError(f"module 'persistmemo' has no attribute {name!r}")
