"""persistmemo: persistent memoization whose results outlive the process.

>>> from persistmemo import memo
>>> @memo(ttl=3600)                                     # doctest: +SKIP
... def fetch(url: str) -> dict: ...
"""

# The public names load on first mention (PEP 562): `import persistmemo` alone costs next to
# nothing, and `from persistmemo import memo` loads what the decorator needs, not the extras
# (redis-py, the tiered store). `TYPE_CHECKING = False` rather than typing's: importing
# typing costs a cold start ~9 ms, and type checkers read this block either way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from persistmemo.codec import CorruptEntry, UndecodableValue, UnstorableValue
    from persistmemo.decorator import MemoDecorator, Memoized, memo
    from persistmemo.faults import PersistmemoWarning
    from persistmemo.files import MissingInput
    from persistmemo.keys import KEY_FORMAT
    from persistmemo.locking import ComputationFailed
    from persistmemo.memoized import CacheInfo
    from persistmemo.stores.base import CheckReport, EntryInfo, FunctionSummary
    from persistmemo.stores.disk import Store, default_directory
    from persistmemo.stores.redis import RedisStore
    from persistmemo.stores.registry import default_store
    from persistmemo.stores.tiered import TieredStore

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

_HOMES = {
    "KEY_FORMAT": "persistmemo.keys",
    "CacheInfo": "persistmemo.memoized",
    "CheckReport": "persistmemo.stores.base",
    "ComputationFailed": "persistmemo.locking",
    "CorruptEntry": "persistmemo.codec",
    "EntryInfo": "persistmemo.stores.base",
    "FunctionSummary": "persistmemo.stores.base",
    "MemoDecorator": "persistmemo.decorator",
    "Memoized": "persistmemo.decorator",
    "MissingInput": "persistmemo.files",
    "PersistmemoWarning": "persistmemo.faults",
    "RedisStore": "persistmemo.stores.redis",
    "Store": "persistmemo.stores.disk",
    "TieredStore": "persistmemo.stores.tiered",
    "UndecodableValue": "persistmemo.codec",
    "UnstorableValue": "persistmemo.codec",
    "default_directory": "persistmemo.stores.disk",
    "default_store": "persistmemo.stores.registry",
    "memo": "persistmemo.decorator",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'persistmemo' has no attribute {name!r}")
    value = getattr(__import__(home, fromlist=[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
