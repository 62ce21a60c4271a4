"""persistmemo: persistent memoization whose results outlive the process.

>>> from persistmemo import memo
>>> @memo(ttl=3600)                                     # doctest: +SKIP
... def fetch(url: str) -> dict: ...
"""

from persistmemo.codec import CorruptEntry, UndecodableValue, UnstorableValue
from persistmemo.decorator import MemoDecorator, Memoized, memo
from persistmemo.faults import PersistmemoWarning
from persistmemo.files import MissingInput
from persistmemo.keys import KEY_FORMAT
from persistmemo.locking import ComputationFailed
from persistmemo.memoized import CacheInfo
from persistmemo.stores.base import CheckReport, EntryInfo, FunctionSummary
from persistmemo.stores.disk import Store, default_directory
from persistmemo.stores.registry import default_store

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
    "MissingInput",
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
        from persistmemo.stores.redis import RedisStore

        return RedisStore
    if name == "TieredStore":
        from persistmemo.stores.tiered import TieredStore

        return TieredStore
    raise AttributeError(f"module 'persistmemo' has no attribute {name!r}")
