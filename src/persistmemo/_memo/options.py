"""The options of ``memo(...)``, checked once at decoration: a clear error for each mistake."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

from persistmemo.stores.base import StoreBackend

# typing costs a cold start ~8 ms (it imports re): names for the type checker only.
TYPE_CHECKING = False
if not TYPE_CHECKING:
    from persistmemo._typing_stand_ins import cast


if TYPE_CHECKING:
    from typing import Any, cast


_FIELDS = (
    "store",
    "ttl",
    "version",
    "ignore",
    "key",
    "name",
    "include_globals",
    "packages",
    "files",
    "lock",
    "memory",
    "mmap",
)


class MemoOptions:
    """What one ``memo(...)`` call asked for, validated (read-only by convention).

    A plain class, not a NamedTuple: making a NamedTuple class costs a cold start ~0.2 ms,
    and typing; nothing unpacks or compares options.
    """

    __slots__ = _FIELDS

    store: StoreBackend
    ttl: float | None
    version: str | None
    ignore: tuple[str, ...]
    key: Callable[..., object] | None
    name: str | None
    include_globals: bool
    packages: tuple[str, ...] | bool
    files: tuple[str, ...]
    lock: bool | str
    memory: int | None
    mmap: bool

    def __init__(
        self,
        *,
        store: StoreBackend,
        ttl: float | None,
        version: str | None,
        ignore: tuple[str, ...],
        key: Callable[..., object] | None,
        name: str | None,
        include_globals: bool,
        packages: tuple[str, ...] | bool,
        files: tuple[str, ...],
        lock: bool | str,
        memory: int | None,
        mmap: bool = False,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.version = version
        self.ignore = ignore
        self.key = key
        self.name = name
        self.include_globals = include_globals
        self.packages = packages
        self.files = files
        self.lock = lock
        self.memory = memory
        self.mmap = mmap

    def __repr__(self) -> str:
        fields = ", ".join(f"{field}={getattr(self, field)!r}" for field in _FIELDS)
        return f"MemoOptions({fields})"

    @classmethod
    def checked(
        cls,
        *,
        store: object,
        ttl: object,
        version: object,
        ignore: object,
        key: object,
        name: object,
        include_globals: bool,
        packages: object = (),
        files: object = (),
        lock: bool | str,
        memory: int | None,
        mmap: bool = False,
    ) -> MemoOptions:
        """The options, or a TypeError/ValueError naming the option and the remedy."""
        return cls(
            store=_resolve_store(store),
            ttl=_ttl_seconds(ttl),
            version=_check_version(version),
            ignore=_check_ignore(ignore),
            key=_check_key(key, ignore),
            name=_check_name(name),
            include_globals=_check_flag("include_globals", include_globals),
            packages=_check_packages(packages),
            files=_check_files(files, key),
            lock=_check_lock(lock),
            memory=memory,
            mmap=_check_flag("mmap", mmap),
        )


class StoreNames:
    """What a path, a URL or None names: set by stores/registry.py, which sits above this
    layer (the concrete stores offer ``store.memo``, so they import the decorator; the
    decorator knows the store interface alone, and is told how names become stores)."""

    default_store: Callable[[], StoreBackend] | None = None
    store_at: Callable[[str | os.PathLike[str]], StoreBackend] | None = None


def _resolve_store(store: object) -> StoreBackend:
    # None first: checking an object against the runtime Protocol costs ~0.1 ms, and @memo
    # alone is the common case.
    if store is not None and isinstance(store, StoreBackend):
        return store
    if store is not None and not isinstance(store, (str, os.PathLike)):
        raise TypeError(
            "memo(store=...) takes a Store, RedisStore or TieredStore, a directory path or None; "
            f"got {type(store).__name__}"
        )
    if StoreNames.default_store is None or StoreNames.store_at is None:
        raise RuntimeError(
            "persistmemo's stores are not loaded: import memo from persistmemo "
            "(`from persistmemo import memo`), not from a private module"
        )
    return StoreNames.default_store() if store is None else StoreNames.store_at(store)


def _ttl_seconds(ttl: object) -> float | None:
    if ttl is None:
        return None
    # datetime is not imported for this (~2 ms of a cold start): a timedelta cannot exist
    # before its module is loaded.
    datetime = sys.modules.get("datetime")
    if datetime is not None and isinstance(ttl, datetime.timedelta):
        seconds = float(ttl.total_seconds())
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"memo(ttl=...) takes seconds or a timedelta; got {type(ttl).__name__}")
    if not seconds > 0:
        raise ValueError(f"memo(ttl=...) must be positive; got {ttl!r}")
    if seconds == float("inf"):
        return None  # forever: every store's "no expiry"
    return seconds


def _check_version(version: object) -> str | None:
    if version is None:
        return None
    if isinstance(version, (str, int)) and not isinstance(version, bool):
        text = str(version)
        if ":" in text or not text or _has_control_characters(text):
            raise ValueError(
                "memo(version=...) must be non-empty, without ':' and without control "
                f"characters (newlines, tabs); got {version!r}"
            )
        return text
    raise TypeError(f"memo(version=...) takes a str or an int; got {type(version).__name__}")


def _has_control_characters(text: str) -> bool:
    # Names and versions are printed in tables and logs: a newline would break them.
    return any(ord(character) < 32 or ord(character) == 127 for character in text)


def _check_files(files: object, key: object) -> tuple[str, ...]:
    if isinstance(files, str):
        raise TypeError(f"memo(files=...) takes a list of parameter names; write files=[{files!r}]")
    names = tuple(cast("Iterable[Any]", files))
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"memo(files=...) takes parameter names (str); got {name!r}")
    if names and key is not None:
        raise TypeError("memo() takes key= or files=, not both: key= decides what is keyed")
    return names


def _check_lock(lock: object) -> bool | str:
    if lock == "always" or isinstance(lock, bool):
        return lock
    raise TypeError(f"memo(lock=...) takes True, False or 'always'; got {lock!r}")


def _check_flag(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"memo({option}=...) takes True or False; got {value!r}")
    return value


def _check_packages(packages: object) -> tuple[str, ...] | bool:
    if isinstance(packages, bool):
        return packages
    if isinstance(packages, str):
        raise TypeError(
            f"memo(packages=...) takes a list of distribution names or True; "
            f"write packages=[{packages!r}]"
        )
    try:
        names = tuple(cast("Iterable[Any]", packages))
    except TypeError:
        raise TypeError(
            "memo(packages=...) takes a list of distribution names or True; "
            f"got {type(packages).__name__}"
        ) from None
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"memo(packages=...) takes distribution names (str); got {name!r}")
    return names


def _check_ignore(ignore: object) -> tuple[str, ...]:
    if isinstance(ignore, str):
        raise TypeError(f"memo(ignore=...) takes a list of names; write ignore=[{ignore!r}]")
    names = tuple(cast("Iterable[Any]", ignore))
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"memo(ignore=...) takes parameter names (str); got {name!r}")
    return names


def _check_key(key: object, ignore: object) -> Callable[..., object] | None:
    if key is None:
        return None
    if not callable(key):
        raise TypeError(f"memo(key=...) takes a callable; got {type(key).__name__}")
    if ignore:
        raise TypeError("memo() takes key= or ignore=, not both: key= decides what is keyed")
    return cast("Callable[..., object]", key)


def _check_name(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise TypeError(f"memo(name=...) takes a non-empty str; got {name!r}")
    if _has_control_characters(name):
        raise ValueError(
            f"memo(name=...) must not contain control characters (newlines, tabs); got {name!r}"
        )
    return name
