"""``Memory``: joblib.Memory's interface over a persistmemo store, for scikit-learn and co.

What scikit-learn (``Pipeline(memory=...)``, ``AgglomerativeClustering``) and other code
written for ``joblib.Memory`` call: ``Memory(location).cache(func, ignore=...)``, the
cached function's ``call_and_shelve`` and ``clear``, ``Memory.clear`` and ``reduce_size``.
Each cached function is ``memo(store=..., ignore=...)`` of it, so keys, versions and the
store's guarantees are persistmemo's (docs/options.md#memory-for-code-written-for-joblib).
"""

from __future__ import annotations

import functools
import os
import sys
import types

from persistmemo._codec.decoding import decode_value
from persistmemo._memo.decorator import memo
from persistmemo._versioning.origins import LIBRARY, origin_of_function
from persistmemo.errors import CorruptEntry
from persistmemo.stores.base import MISSING, StoreBackend
from persistmemo.stores.registry import store_at

TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterable
    from typing import Any

_MMAP_MODES = (None, "r", "r+", "w+", "c")
_KEPT_FUNCTIONS = 256  # cached functions a Memory keeps for reuse (Pipeline asks on every fit)


class Memory:
    """A drop-in for ``joblib.Memory``: results kept in a persistmemo store.

    ``location`` is a directory (or a ``redis://`` URL, or a ``Store``, ``RedisStore``,
    ``TieredStore``); None caches nothing, as joblib's does. ``mmap_mode="r"`` returns
    arrays as read-only maps of the stored file (``memo(mmap=True)``); the other modes
    return arrays in memory, and the store is never written through them. ``backend``,
    ``compress``, ``verbose`` and ``backend_options`` are accepted for compatibility and
    unused: a store compresses nothing, and nothing is printed.

    >>> import tempfile
    >>> memory = Memory(tempfile.mkdtemp())
    >>> square = memory.cache(lambda x: x * x)
    >>> square(3), square.call_and_shelve(4).get()
    (9, 16)
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | StoreBackend | None = None,
        backend: str = "local",
        mmap_mode: str | None = None,
        compress: bool | int | tuple[str, int] = False,
        verbose: int = 1,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        if backend != "local":
            raise ValueError(
                f"persistmemo.Memory(backend={backend!r}): results go to a persistmemo store; "
                "pass a directory, a redis:// URL or a store as location instead"
            )
        self.mmap_mode = _checked_mmap_mode(mmap_mode)
        self.compress = compress
        self.verbose = verbose
        self.backend = backend
        self.backend_options = dict(backend_options or {})
        self.location = location
        self.store: StoreBackend | None
        if location is None or isinstance(location, StoreBackend):
            self.store = location
        elif isinstance(location, (str, os.PathLike)):
            if os.path.isfile(location):
                raise ValueError(
                    f"persistmemo.Memory(location={os.fspath(location)!r}) is a file: give "
                    "a directory (made if missing), a redis:// URL or a store"
                )
            self.store = store_at(location)
        else:
            raise TypeError(
                f"persistmemo.Memory(location=...) takes a directory, a redis:// URL, a store "
                f"or None; got {type(location).__name__}"
            )
        self._cached: dict[tuple[object, ...], CachedFunction] = {}

    def cache(
        self,
        func: Callable[..., Any] | None = None,
        ignore: Iterable[str] | None = None,
        verbose: int | None = None,
        mmap_mode: str | bool | None = False,
        cache_validation_callback: Callable[..., bool] | None = None,
    ) -> Any:
        """``func`` memoized in this memory's store, with joblib's controls; without
        ``func``, a decorator. ``ignore`` names parameters left out of the key;
        ``mmap_mode`` defaults to the memory's."""
        if cache_validation_callback is not None:
            raise TypeError(
                "persistmemo.Memory.cache() does not take cache_validation_callback: use "
                "persistmemo.memo(ttl=...) for results that expire"
            )
        if func is None:
            return functools.partial(
                self.cache, ignore=ignore, verbose=verbose, mmap_mode=mmap_mode
            )
        if isinstance(func, CachedFunction):
            func = func.func
        mode = self.mmap_mode if mmap_mode is False else _checked_mmap_mode(mmap_mode)
        if isinstance(ignore, str):
            raise TypeError(
                f"Memory.cache(ignore=...) takes a list of parameter names; got the string "
                f"{ignore!r} (write ignore=[{ignore!r}])"
            )
        ignored = tuple(ignore or ())
        slot = (func, ignored, mode)
        try:
            found = self._cached.get(slot)
        except TypeError:  # an unhashable callable: not kept for reuse
            return CachedFunction(func, self, ignored, mode)
        if found is None:
            if len(self._cached) >= _KEPT_FUNCTIONS:
                self._cached.pop(next(iter(self._cached)))
            found = self._cached[slot] = CachedFunction(func, self, ignored, mode)
        return found

    def eval(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)``, served from the store when it was computed before."""
        return self.cache(func)(*args, **kwargs)

    def clear(self, warn: bool = True) -> None:
        """Remove every entry of the store (as joblib empties its whole directory)."""
        if self.store is not None:
            self.store.clear()

    def reduce_size(
        self,
        bytes_limit: int | str | None = None,
        items_limit: int | None = None,
        age_limit: dt.timedelta | None = None,
    ) -> None:
        """Remove expired entries, those stored more than ``age_limit`` ago, then the
        oldest until at most ``items_limit`` entries of at most ``bytes_limit`` bytes
        (``"10M"`` as joblib writes it) remain."""
        store = self.store
        if store is None:
            return
        if age_limit is not None and not hasattr(age_limit, "total_seconds"):
            raise TypeError(
                f"reduce_size(age_limit=...) takes a datetime.timedelta; got {age_limit!r}"
            )
        if age_limit is not None and age_limit.total_seconds() < 0:
            raise ValueError("reduce_size(age_limit=...) must be a positive timedelta")
        older_than = None if age_limit is None else age_limit.total_seconds()
        store.prune(older_than=older_than)
        if bytes_limit is None and items_limit is None:
            return
        limit = None if bytes_limit is None else _bytes(bytes_limit)
        size = 0
        newest_first = sorted(store.entries(), key=lambda entry: entry.stored_at, reverse=True)
        for kept, entry in enumerate(newest_first, 1):
            size += entry.size or 0
            too_many = items_limit is not None and kept > items_limit
            if too_many or (limit is not None and size > limit):
                store.delete(entry.key)

    def __persistmemo_key__(self) -> object:
        # A Pipeline nested in another estimator's parameters keys its memory= too.
        location = self.location
        return location if location is None or isinstance(location, str) else repr(location)

    def __repr__(self) -> str:
        return f"Memory(location={self.location})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A store pickles as its settings (secret, strict, options): the copy opens the same.
        location = self.store if self.store is not None else self.location
        arguments = (location, self.backend, self.mmap_mode, self.compress, self.verbose)
        named = self.location if isinstance(self.location, (str, os.PathLike)) else location
        return (Memory, (*arguments, self.backend_options), {"location": named})

    def __copy__(self) -> Memory:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Memory:
        # scikit-learn's clone() deep-copies parameters: a copy would open the store again.
        return self


class CachedFunction:
    """A function cached by a ``Memory``: called like it, with joblib's controls
    (``call_and_shelve``, ``clear``, ``call``, ``check_call_in_cache``)."""

    def __init__(
        self,
        func: Callable[..., Any],
        memory: Memory,
        ignore: tuple[str, ...],
        mmap_mode: str | None,
    ) -> None:
        functools.update_wrapper(self, func, updated=())
        self.func = func
        self.memory = memory
        self.ignore = list(ignore)
        self.mmap_mode = mmap_mode
        store = memory.store
        self.memoized = None
        if store is not None:
            version = _library_version(func)
            self.memoized = memo(
                store=store, ignore=ignore, version=version, mmap=mmap_mode == "r"
            )(func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.memoized is None:
            return self.func(*args, **kwargs)
        return self.memoized(*args, **kwargs)

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> CachedResult:
        """Compute the result unless it is stored, and return a small, picklable reference
        to it; ``.get()`` reads it from the store."""
        memoized, store = self.memoized, self.memory.store
        if memoized is None or store is None:
            return CachedResult(None, "", False, (self.func(*args, **kwargs),))
        key = memoized.key(*args, **kwargs)
        if not _stored(store, key):
            value = memoized(*args, **kwargs)
            if not _stored(store, key):  # not kept (disabled, or the store said why)
                return CachedResult(None, key, False, (value,))
        return CachedResult(self.memory, key, self.mmap_mode == "r")

    def call(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Run the function even when its result is stored, and store the new result;
        returns ``(result, metadata)`` as joblib's does."""
        if self.memoized is None:
            return self.func(*args, **kwargs), {}
        result = self.memoized.refresh(*args, **kwargs)
        return result, {}

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        """Whether a result for these arguments is stored, without computing it."""
        return self.memoized is not None and self.memoized.info(*args, **kwargs) is not None

    def clear(self, warn: bool = True) -> None:
        """Remove this function's stored results."""
        if self.memoized is not None:
            self.memoized.cache_clear()

    def __repr__(self) -> str:
        return f"CachedFunction(func={self.func!r}, location={self.memory.location})"


class CachedResult:
    """A reference to a stored result, from ``call_and_shelve``: ``.get()`` reads it,
    ``.clear()`` removes it. A result the store did not keep is held in the reference."""

    def __init__(
        self, memory: Memory | None, key: str, mapped: bool, held: tuple[object] | None = None
    ) -> None:
        self.memory = memory
        self.key = key
        self.mapped = mapped
        self._held = held

    def get(self) -> Any:
        """The result; KeyError when it was removed since."""
        store = None if self.memory is None else self.memory.store
        if store is None:
            if self._held is None:
                raise KeyError("this result was cleared")
            return self._held[0]
        found = store.read_with_expiry(self.key, mapped=self.mapped)
        if found is MISSING:
            raise KeyError(f"the result {self.key} is no longer in {store!r}")
        try:
            return decode_value(
                found[0],  # type: ignore[index]
                allow_pickle=store.pickle_allowed,
                read_only=self.mapped,
            )
        except CorruptEntry as error:
            raise KeyError(f"the result {self.key} cannot be read: {error}") from error

    def clear(self) -> None:
        """Remove the result from the store."""
        store = None if self.memory is None else self.memory.store
        if store is None:
            self._held = None
        else:
            store.delete(self.key)

    def __repr__(self) -> str:
        where = "memory" if self.memory is None else self.memory.location
        return f"CachedResult(location={where}, key={self.key!r})"


def _checked_mmap_mode(mode: object) -> str | None:
    if mode not in _MMAP_MODES:
        raise ValueError(f"mmap_mode must be one of {_MMAP_MODES}; got {mode!r}")
    return mode


def _stored(store: StoreBackend, key: str) -> bool:
    try:
        return store.entry_info(key) is not None
    except OSError:  # no store yet (nothing was written), or one that cannot be read
        return False


def _library_version(func: object) -> str | None:
    """The version of a library's function: its package's release (``sklearn-1.9.1``), so
    an upgrade is a miss rather than an object of the old release served to the new one.
    None for your own code, whose version memo() derives from the code."""
    code = func.func if isinstance(func, functools.partial) else func
    kind = type(code)
    builtin = (
        kind
        in (
            types.BuiltinFunctionType,
            types.MethodDescriptorType,
            types.WrapperDescriptorType,
            types.ClassMethodDescriptorType,
        )
        or (kind.__name__ == "ufunc" and kind.__module__ == "numpy")
        or (isinstance(code, type) and code.__module__ == "builtins")
    )
    if not builtin and not (
        isinstance(code, types.FunctionType) and origin_of_function(code) == LIBRARY
    ):
        return None
    top = str(getattr(code, "__module__", None) or "numpy").partition(".")[0]
    release = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(release, str) and ":" not in release:
        return f"{top}-{release}"
    # The standard library: its Python code versions by name, and code in C has no source.
    return "builtin" if builtin else None


def _bytes(limit: int | float | str) -> int:
    """joblib's sizes: a number of bytes, or ``"10K"``, ``"10M"``, ``"10G"`` (``"10MB"``)."""
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit >= 0:
        return int(limit)
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = limit.strip().upper().removesuffix("B") if isinstance(limit, str) else ""
    try:
        if text[-1:] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise ValueError(
            f"reduce_size(bytes_limit=...) takes a number of bytes or a size such as '10M'; "
            f"got {limit!r}"
        ) from None
