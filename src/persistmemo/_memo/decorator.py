"""memo(): the persistent memo decorator, and the typed face of what it returns.

``memo`` checks its options once (options.py) and wraps each function in a
``MemoizedFunction`` (memoized.py), whose call paths are in call_paths.py. ``Memoized`` is
the type users see: the original signature (ParamSpec) plus the controls.
"""

from __future__ import annotations

import functools
import itertools
import os
import types
from collections.abc import Callable, Iterable

from persistmemo._memo.call_paths import is_async
from persistmemo._memo.memoized import CacheInfo, MemoizedFunction
from persistmemo._memo.options import MemoOptions
from persistmemo.stores.base import StoreBackend

StoreOption = StoreBackend | str | os.PathLike[str] | None

# typing costs a cold start ~8 ms (it imports re): the protocols and overloads below are
# for type checkers; at run time ``Memoized`` and ``MemoDecorator`` are plain classes that
# subscript like generics (``Memoized[[int], str]``), and ``memo`` is one function.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as dt
    from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

    from persistmemo.stores.base import EntryInfo

    P = ParamSpec("P")
    Q = ParamSpec("Q")
    R = TypeVar("R")
    S = TypeVar("S")
    T = TypeVar("T")

    class Memoized(Protocol[P, R]):
        """A memoized function: called like the original, plus its cache controls."""

        __wrapped__: Callable[P, R]
        store: StoreBackend

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

        def cache_info(self) -> CacheInfo:
            """Hits and misses counted in this process since decoration or cache_clear()."""
            ...

        def cache_clear(self) -> int:
            """Remove this function's entries (every version) from its store; returns how many."""
            ...

        def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
            """Remove the entry of this call; True when there was one."""
            ...

        def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
            """The store key of this call."""
            ...

        def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
            """Run the function for this call and overwrite its entry; returns the new result."""
            ...

        def version(self) -> str:
            """The version in this function's keys (pinned, or derived from its code)."""
            ...

        def version_info(self) -> dict[str, Any]:
            """What went into the version: the code, helpers followed, constants, packages."""
            ...

        def map(
            self,
            *iterables: Iterable[Any],
            workers: int | None = None,
            progress: bool | None = None,
        ) -> Any:
            """Call for each tuple of items, computing only the misses; results in input order.

            A list (``await`` it for ``async def`` functions). See persistmemo._memo.mapping.
            """
            ...

        # A memoized method binds like a function. Bound, it is typed as what it is at run time:
        # a callable without self; its controls stay on the class (``Model.predict.key(model, 1)``).
        @overload
        def __get__(self, instance: None, owner: type[Any] | None = None) -> Memoized[P, R]: ...

        @overload
        def __get__(
            self: Memoized[Concatenate[S, Q], T], instance: S, owner: type[Any] | None = None
        ) -> Callable[Q, T]: ...

        def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any: ...

        def entries(self) -> list[EntryInfo]:
            """Metadata of this function's stored entries (every version), newest first."""
            ...

        def info(self, *args: P.args, **kwargs: P.kwargs) -> EntryInfo | None:
            """Metadata of this call's entry (when computed, how long it took...), or None."""
            ...

    class MemoDecorator(Protocol):
        """What ``memo(...)`` returns: applied to a function, it gives its memoized form."""

        def __call__(self, func: Callable[P, R], /) -> Memoized[P, R]: ...

else:

    class _LooksMemoized(type):
        """``isinstance(f, Memoized)`` says whether ``f`` has a memoized function's
        controls, as a runtime-checkable protocol would."""

        def __instancecheck__(cls, instance: object) -> bool:
            return callable(instance) and all(
                hasattr(instance, name) for name in _MEMOIZED_CONTROLS
            )

    _MEMOIZED_CONTROLS = ("__wrapped__", "cache_info", "cache_clear", "invalidate", "key")

    class Memoized(metaclass=_LooksMemoized):
        """A memoized function: called like the original, plus its cache controls.

        At run time a plain class (typing is not imported for it); type checkers read the
        protocol above. ``Memoized[P, R]`` subscripts as a generic alias, and
        ``isinstance(f, Memoized)`` checks for the controls.
        """

        __class_getitem__ = classmethod(types.GenericAlias)

    class MemoDecorator:
        """What ``memo(...)`` returns: applied to a function, it gives its memoized form."""


if TYPE_CHECKING:  # memo's two forms, for type checkers

    @overload
    def memo(func: Callable[P, R], /) -> Memoized[P, R]: ...

    @overload
    def memo(
        func: None = None,
        /,
        *,
        store: StoreOption = None,
        ttl: float | dt.timedelta | None = None,
        version: str | int | None = None,
        ignore: Iterable[str] = (),
        key: Callable[..., object] | None = None,
        name: str | None = None,
        include_globals: bool = True,
        packages: Iterable[str] | bool = (),
        files: Iterable[str] = (),
        lock: bool | Literal["always"] = True,
        memory: int | None = None,
        mmap: bool = False,
    ) -> MemoDecorator: ...


def memo(
    func: Callable[..., Any] | None = None,
    /,
    *,
    store: StoreOption = None,
    ttl: float | dt.timedelta | None = None,
    version: str | int | None = None,
    ignore: Iterable[str] = (),
    key: Callable[..., object] | None = None,
    name: str | None = None,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    files: Iterable[str] = (),
    lock: bool | Literal["always"] = True,
    memory: int | None = None,
    mmap: bool = False,
) -> Any:
    """Memoize a function persistently: ``@memo`` or ``@memo(ttl=3600, ignore=["verbose"])``.

    - ``store``: a ``Store`` (or ``RedisStore``, ``TieredStore``), a directory path, or None
      for the default store
      (``$PERSISTMEMO_DIR``, else the user cache directory).
    - ``ttl``: seconds (or a ``timedelta``) a result stays fresh; None keeps it until evicted.
    - ``version``: pin the version by hand. When None it is derived from the function's code,
      so editing what the function does stops old results from being served (a reformat, a
      comment or a docstring edit does not).
    - ``include_globals``: the derived version covers the functions, classes and constants
      the function refers to by name, followed into the other modules of your own code
      (default). ``False`` versions the function's own code only.
    - ``packages``: distribution names (or True: every third-party distribution the code
      refers to) whose installed versions are part of the version: an upgrade is a miss.
    - ``files``: parameter names whose values are paths (or lists of paths): keyed by the
      path and the content of the file, or of every file under a directory, so editing
      one is a miss (see persistmemo._memo.files). A path that does not exist runs uncached.
    - ``ignore``: parameter names left out of the key (by position or keyword alike), and
      captured variables of a closure left out of the key.
    - ``key``: a callable taking the function's arguments and returning the value to key on.
    - ``name``: the function's identity in the store; default ``module.qualname``, with a
      script's ``__main__`` named after its file, so running and importing it agree.
    - ``lock``: when callers in several threads or processes miss the same key at once, one
      computes and the others wait for its result (default). The claim costs a write, so
      once this process has seen a function's last 3 misses each compute in under 10 ms,
      its misses skip it unless another caller is computing the key: two callers missing
      the same new key at the same moment may then both compute it.
      ``lock="always"`` claims every miss (for functions with side effects, or whose cost
      varies by argument); ``lock=False`` never claims, for cheap functions.
    - ``memory``: also keep the N most recent results in this process's memory, for hot
      loops (see persistmemo._memo.memory: TTL holds, this process's invalidations are seen,
      other processes' are not until the entry expires).
    - ``mmap``: arrays in a result (at the top level, inside containers, a DataFrame's
      columns) come back as read-only memory maps of the stored file, so a hit costs the
      same whatever their size (joblib's ``mmap_mode="r"``). Each hit checks the entry's
      header; the array bytes are checked when written and by ``persistmemo check``. The
      arrays are read-only on every path, maps or not (a miss, ``f.map``, a Redis store:
      docs/options.md#mmap).

    Arguments must be of a supported type (see ``docs/keys.md``), ignored, or keyed through
    ``key=`` or a ``__persistmemo_key__`` method; otherwise the call raises TypeError. The
    variables a closure captures are keyed like arguments (see persistmemo._versioning.closures).
    """
    options = MemoOptions.checked(
        store=store,
        ttl=ttl,
        version=version,
        ignore=ignore,
        key=key,
        name=name,
        include_globals=include_globals,
        packages=packages,
        files=files,
        lock=lock,
        memory=memory,
        mmap=mmap,
    )

    def decorate(target: Callable[..., Any]) -> Any:
        if isinstance(target, classmethod):
            return _MemoizedClassMethod(decorate(target.__func__))
        if isinstance(target, staticmethod):
            return staticmethod(decorate(target.__func__))
        if not callable(target):
            raise TypeError(f"memo() decorates functions; got {type(target).__name__}")
        if options.memory is not None and is_async(target):
            raise TypeError(
                f"memo(memory=...) is for plain functions; {target.__qualname__}() is async. "
                "Leave memory= out: its results are still kept in the store."
            )
        return MemoizedFunction(target, options).wrapper

    return decorate if func is None else decorate(func)


class _MemoizedClassMethod(classmethod):  # type: ignore[type-arg]
    """``@memo`` over ``@classmethod``: ``Model.build(1)`` and ``Model.build.key(1)`` alike.

    A plain classmethod hands out a bound method whose attributes are the function's, so the
    controls would need the class passed by hand; here they are bound to the class too.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        cls = owner if owner is not None else type(instance)
        return _BoundControls(self.__func__, cls)

    def __reduce__(self) -> tuple[Any, ...]:
        # A class sent by value (cloudpickle: a notebook's class) carries its methods.
        return (_MemoizedClassMethod, (self.__func__,))


class _BoundControls:
    """A memoized function bound to its first argument, controls included."""

    __slots__ = ("__self__", "__wrapped__", "_memoized")

    def __init__(self, memoized: Any, bound_to: object) -> None:
        self._memoized = memoized
        self.__self__ = bound_to
        self.__wrapped__ = memoized

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._memoized(self.__self__, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._memoized, name)
        if name in _BOUND_CONTROLS:
            return functools.partial(attribute, self.__self__)
        return attribute

    def map(self, *iterables: Any, **options: Any) -> list[Any]:
        """``f.map`` with the class (or instance) before each call's arguments."""
        if not iterables:
            raise TypeError("map() needs at least one iterable of arguments")
        return self._memoized.map(  # type: ignore[no-any-return]
            itertools.repeat(self.__self__), *iterables, **options
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Found again where it is loaded, as Model.build is here: by its name on its owner.
        return (getattr, (self.__self__, self._memoized.__name__))

    def __repr__(self) -> str:
        return f"<memoized bound method {self._memoized.__qualname__} of {self.__self__!r}>"


# Controls that take the call's arguments, so a bound form passes the class or instance.
_BOUND_CONTROLS = frozenset(("key", "invalidate", "refresh", "info"))
