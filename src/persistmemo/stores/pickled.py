"""Stores sent to other processes: a store pickles as its settings and is made again from them.

A worker (joblib's loky, Dask, ``ProcessPoolExecutor``) that receives a memoized function
receives its store as the arguments it was made with (a disk store's resolved directory and
options, a Redis store's URL and options, a tiered store's two tiers), never its
connections, locks or threads, and opens it again there. One store per settings per process:
every function received with the same settings shares it, and so does a store the registry
names for the same place (``memo(store=path)`` in a script run again in the worker).

The secret that seals entries is written in clear only where the worker cannot find it by
itself. Without ``secret=``, none travels: the worker reads ``$PERSISTMEMO_SECRET`` or the
user's key file, as the sender did. A ``secret=`` equal to ``$PERSISTMEMO_SECRET``'s travels as
its fingerprint, and the worker checks its own variable against it. Any other ``secret=``
travels in the pickle (the 32-byte key; a passphrase is never sent as typed): the worker needs
it to read and seal the store's entries (docs/security.md).
"""

from __future__ import annotations

import os
import threading
import weakref

from persistmemo import _environment as environment
from persistmemo._sealing import Sealer
from persistmemo._secret import secret_from_text
from persistmemo.errors import SecretUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from persistmemo.stores.base import StoreBackend

FROM_ENVIRONMENT = f"${environment.SECRET}"
"""What a sent secret equal to the environment's is sent as, with its fingerprint."""

# Stores by their settings: those received, and those of this process once pickled (so that
# a store loaded where it was pickled is the store itself). Weakly: the functions received
# hold theirs.
_received: weakref.WeakValueDictionary[tuple[Any, ...], StoreBackend] = (
    weakref.WeakValueDictionary()
)
# The registry's stores, compared when a store is received (weakly: a test's default store
# is dropped with it).
_named: weakref.WeakSet[StoreBackend] = weakref.WeakSet()
_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def sent_secret(secret: bytes | None) -> bytes | tuple[str, str] | None:
    """How a store's given ``secret`` travels: not at all (None: the receiver resolves its
    own), as ``$PERSISTMEMO_SECRET``'s fingerprint when it is that variable's, else itself."""
    if secret is None:
        return None
    configured = environment.secret()
    if configured and secret_from_text(configured) == secret:
        return (FROM_ENVIRONMENT, Sealer(secret).fingerprint)
    return secret


def _received_secret(sent: object, where: object) -> object:
    """The secret a ``sent_secret`` stands for here; SecretUnavailable when this process's
    ``$PERSISTMEMO_SECRET`` is not the sender's."""
    if not isinstance(sent, tuple):
        return sent
    configured = environment.secret()
    secret = secret_from_text(configured) if configured else None
    if secret is None or Sealer(secret).fingerprint != sent[1]:
        state = "is not set" if secret is None else "holds another secret"
        raise SecretUnavailable(
            f"the store {where} was sent here sealed with {FROM_ENVIRONMENT} of the process "
            f"that sent it, and {FROM_ENVIRONMENT} {state} in this one: give the workers "
            f"the same {FROM_ENVIRONMENT}"
        )
    return secret


def sent_settings(store: StoreBackend, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as they travel (the secret as ``sent_secret`` says); ``store`` is kept as
    this process's store of those settings."""
    key = _key(type(store), settings)
    if key is not None:
        with _lock:
            _received.setdefault(key, store)
    if "secret" in settings:
        settings = {**settings, "secret": sent_secret(settings["secret"])}
    return settings


def _key(kind: type[Any], settings: dict[str, Any]) -> tuple[Any, ...] | None:
    key = (kind, *sorted(settings.items()))
    try:
        hash(key)
    except TypeError:  # a setting that cannot key the table: a store of its own
        return None
    return key


def received_store(kind: type[Any], settings: dict[str, Any]) -> StoreBackend:
    """The store ``kind(**settings)`` of this process, made the first time (what a store's
    pickle calls when it is loaded)."""
    if "secret" in settings:
        where = settings.get("directory") or settings.get("url")
        settings = {**settings, "secret": _received_secret(settings["secret"], where)}
    key = _key(kind, settings)
    with _lock:
        found = None if key is None else _received.get(key)
        if found is None:
            found = next((s for s in list(_named) if _same(s, kind, settings)), None)
        if found is None:
            found = kind(**settings)
        if key is not None:
            _received[key] = found
    return found


def _same(store: StoreBackend, kind: type[Any], settings: dict[str, Any]) -> bool:
    if type(store) is not kind:
        return False
    try:
        return bool(store.settings() == settings)  # type: ignore[attr-defined]
    except Exception:  # a store that cannot tell its settings is not one of these
        return False


def named(store: StoreBackend) -> StoreBackend:
    """Offer the registry's ``store`` to functions received later with the same settings."""
    with _lock:
        _named.add(store)
    return store
