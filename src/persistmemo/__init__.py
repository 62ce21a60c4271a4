"""persistmemo: persistent memoization whose results outlive the process.

>>> from persistmemo import memo
>>> @memo(ttl=3600)                                     # doctest: +SKIP
... def fetch(url: str) -> dict: ...
"""

# The public names load on first mention (PEP 562): `import persistmemo` alone costs next to
# nothing, and `from persistmemo import memo` loads what the decorator needs, not the extras
# (redis-py, the tiered store). `TYPE_CHECKING = False` rather than typing's: importing
# typing costs a cold start ~9 ms, and type checkers read this block either way.
from persistmemo import _moved

TYPE_CHECKING = False
if TYPE_CHECKING:
    from persistmemo._joblib import Memory
    from persistmemo._keys.layout import KEY_FORMAT
    from persistmemo._keys.registry import register_key
    from persistmemo._memo.decorator import MemoDecorator, Memoized, memo
    from persistmemo._memo.memoized import CacheInfo
    from persistmemo.errors import (
        ComputationFailed,
        CorruptEntry,
        MissingInput,
        PersistmemoError,
        PersistmemoWarning,
        UndecodableValue,
        UnstorableValue,
        UnsupportedArgument,
        UnsupportedType,
    )
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
    "Memory",
    "MissingInput",
    "PersistmemoError",
    "PersistmemoWarning",
    "RedisStore",
    "Store",
    "TieredStore",
    "UndecodableValue",
    "UnstorableValue",
    "UnsupportedArgument",
    "UnsupportedType",
    "default_directory",
    "default_store",
    "memo",
    "register_key",
]
__version__ = "0.1.0"

_moved.install()

_HOMES = {
    "KEY_FORMAT": "persistmemo._keys",
    "CacheInfo": "persistmemo._memo.memoized",
    "CheckReport": "persistmemo.stores.base",
    "ComputationFailed": "persistmemo.errors",
    "CorruptEntry": "persistmemo.errors",
    "EntryInfo": "persistmemo.stores.base",
    "FunctionSummary": "persistmemo.stores.base",
    "MemoDecorator": "persistmemo._memo.decorator",
    "Memoized": "persistmemo._memo.decorator",
    "Memory": "persistmemo._joblib",
    "MissingInput": "persistmemo.errors",
    "PersistmemoError": "persistmemo.errors",
    "PersistmemoWarning": "persistmemo.errors",
    "RedisStore": "persistmemo.stores.redis",
    "Store": "persistmemo.stores.disk",
    "TieredStore": "persistmemo.stores.tiered",
    "UndecodableValue": "persistmemo.errors",
    "UnstorableValue": "persistmemo.errors",
    "UnsupportedArgument": "persistmemo.errors",
    "UnsupportedType": "persistmemo.errors",
    "default_directory": "persistmemo.stores.disk",
    "default_store": "persistmemo.stores.registry",
    "memo": "persistmemo._memo.decorator",
    "register_key": "persistmemo._keys.registry",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'persistmemo' has no attribute {name!r}")
    if home.startswith("persistmemo._memo"):
        # The decorator learns from the store registry (a layer above it) how a path, a URL
        # or None names a store: the entry point loads both.
        __import__("persistmemo.stores.registry")
    value = getattr(__import__(home, fromlist=[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
