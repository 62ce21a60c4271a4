"""Which store a path, a URL or the environment names: one store object per place, per process.

``default_store()`` is the store of ``memo(store=None)`` and ``store_at(path)`` that of
``memo(store=path)``; every decorator naming the same place shares one store object (one
connection pool, one fault report), and so does a function received from another process
with a store of the same settings (stores/pickled.py).
"""

from __future__ import annotations

import os
import threading

from persistmemo import _environment as environment
from persistmemo._memo.options import StoreNames
from persistmemo.stores.base import StoreBackend
from persistmemo.stores.disk import Store
from persistmemo.stores.pickled import named

TYPE_CHECKING = False
if TYPE_CHECKING:
    from persistmemo.stores.redis import RedisStore
    from persistmemo.stores.tiered import TieredStore

_default_store: StoreBackend | None = None
_stores_by_directory: dict[str, StoreBackend] = {}
_registry_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def default_store() -> StoreBackend:
    """The process-wide default store.

    ``$PERSISTMEMO_URL`` (``redis://...``) makes it a RedisStore, and with
    ``$PERSISTMEMO_DIR`` also set, a TieredStore with that directory in front. Without
    ``$PERSISTMEMO_URL`` it is the disk store in ``$PERSISTMEMO_DIR``, else in the platform
    cache directory (resolved when first used).
    """
    global _default_store
    with _registry_lock:
        if _default_store is None:
            url = environment.url()
            if url:
                RedisStore, TieredStore = _remote_stores()
                remote = RedisStore(url)
                local = environment.directory()
                chosen: StoreBackend = TieredStore(Store(local), remote) if local else remote
            else:
                chosen = Store()
            _default_store = named(chosen)
        return _default_store


REMOTE_SCHEMES = ("redis", "rediss", "unix")


def store_at(directory: str | os.PathLike[str]) -> StoreBackend:
    """The process-wide store of ``directory``: every ``memo(store=path)`` shares one.

    A ``redis://``, ``rediss://`` or ``unix://`` URL names a RedisStore (one per URL); any
    other URL is refused rather than taken for a directory named ``http:``.
    """
    text = os.fspath(directory)
    scheme, separator, _ = text.partition("://")
    if separator:
        if scheme.lower() not in REMOTE_SCHEMES:
            raise ValueError(
                f"store={text!r}: a store is a directory path or a redis://, rediss:// or "
                f"unix:// URL; the scheme {scheme!r} is not supported"
            )
        with _registry_lock:
            remote = _stores_by_directory.get(text)
            if remote is None:
                remote = _stores_by_directory[text] = named(_remote_stores()[0](text))
            return remote
    path = os.path.abspath(os.path.expanduser(text))
    with _registry_lock:
        store = _stores_by_directory.get(path)
        if store is None:
            store = _stores_by_directory[path] = named(Store(path))
        return store


def _remote_stores() -> tuple[type[RedisStore], type[TieredStore]]:
    """RedisStore and TieredStore, imported when a URL names a remote store: a script on
    the disk store never reads their modules (a seam of the cold-start budget)."""
    from persistmemo.stores.redis import RedisStore
    from persistmemo.stores.tiered import TieredStore

    return RedisStore, TieredStore


# The decorator (a layer below) learns here how a path, a URL or None names a store.
StoreNames.default_store = default_store
StoreNames.store_at = store_at
