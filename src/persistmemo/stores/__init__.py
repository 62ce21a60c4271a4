"""The stores: where memoized results are kept, and the interface to add one of your own.

``Store`` (a directory), ``RedisStore`` (a Redis server; extra ``persistmemo[redis]``) and
``TieredStore`` (a local store in front of a remote one) are each a ``SealedStore`` over a
``Backend`` of ten byte operations; a new place to keep results is a ``Backend`` subclass
(docs/architecture.md). Names load when first used: importing this imports no store.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from persistmemo.stores.api import Backend, Row
    from persistmemo.stores.base import (
        MISSING,
        CheckReport,
        EntryInfo,
        FunctionSummary,
        Lease,
        StoreBackend,
    )
    from persistmemo.stores.disk import Store, default_directory
    from persistmemo.stores.redis import RedisStore
    from persistmemo.stores.registry import default_store
    from persistmemo.stores.sealed import SealedStore
    from persistmemo.stores.tiered import TieredStore

_HOMES = {
    "Backend": "persistmemo.stores.api",
    "Row": "persistmemo.stores.api",
    "MISSING": "persistmemo.stores.base",
    "CheckReport": "persistmemo.stores.base",
    "EntryInfo": "persistmemo.stores.base",
    "FunctionSummary": "persistmemo.stores.base",
    "Lease": "persistmemo.stores.base",
    "StoreBackend": "persistmemo.stores.base",
    "Store": "persistmemo.stores.disk",
    "default_directory": "persistmemo.stores.disk",
    "RedisStore": "persistmemo.stores.redis",
    "default_store": "persistmemo.stores.registry",
    "SealedStore": "persistmemo.stores.sealed",
    "TieredStore": "persistmemo.stores.tiered",
}
__all__ = [
    "MISSING",
    "Backend",
    "CheckReport",
    "EntryInfo",
    "FunctionSummary",
    "Lease",
    "RedisStore",
    "Row",
    "SealedStore",
    "Store",
    "StoreBackend",
    "TieredStore",
    "default_directory",
    "default_store",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'persistmemo.stores' has no attribute {name!r}")
    module = __import__(home, fromlist=[name])
    if home != "persistmemo.stores.registry":
        __import__("persistmemo.stores.registry")  # a store's memo() needs the registry wired
    value = getattr(module, name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
