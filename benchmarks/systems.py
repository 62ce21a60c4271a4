"""The memoizers compared: each wraps a function the way its users would write it."""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persistmemo import Store, memo

Memoizer = Callable[[Callable[..., Any], Path], Callable[..., Any]]
_names = itertools.count()


def hashable(value: Any) -> Any:
    """The textbook workaround in-memory memos need for a dict or list argument."""
    if isinstance(value, dict):
        return frozenset((key, hashable(item)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(hashable(item) for item in value)
    return value


def dict_memo(func: Callable[..., Any], _: Path) -> Callable[..., Any]:
    """``memo = {}``: the textbook in-memory memo."""
    cache: dict[Any, Any] = {}

    def memoized(*args: Any) -> Any:
        if args in cache:
            return cache[args]
        value = cache[args] = func(*args)
        return value

    return memoized


def lru_cache(func: Callable[..., Any], _: Path) -> Callable[..., Any]:
    return functools.lru_cache(maxsize=None)(func)


def diskcache_memoize(func: Callable[..., Any], tmp: Path) -> Callable[..., Any]:
    import diskcache

    cache = diskcache.Cache(str(tmp / f"diskcache-{next(_names)}"))
    return cache.memoize(name=f"bench{next(_names)}")(func)  # type: ignore[no-any-return]


def joblib_memory(func: Callable[..., Any], tmp: Path) -> Callable[..., Any]:
    import joblib

    memory = joblib.Memory(str(tmp / f"joblib-{next(_names)}"), verbose=0)
    return memory.cache(func)


def cachier_pickle(func: Callable[..., Any], tmp: Path) -> Callable[..., Any]:
    from cachier import cachier

    renamed = _renamed(func)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cachier(cache_dir=str(tmp / f"cachier-{next(_names)}"))(renamed)  # type: ignore[no-any-return]


def persistmemo_disk(func: Callable[..., Any], tmp: Path) -> Callable[..., Any]:
    store = Store(tmp / f"persistmemo-{next(_names)}")
    return memo(store=store, name=f"bench.f{next(_names)}", version="1")(func)


def persistmemo_unlocked(func: Callable[..., Any], tmp: Path) -> Callable[..., Any]:
    store = Store(tmp / f"persistmemo-{next(_names)}")
    return memo(store=store, name=f"bench.f{next(_names)}", version="1", lock=False)(func)


def persistmemo_memory(func: Callable[..., Any], tmp: Path) -> Callable[..., Any]:
    store = Store(tmp / f"persistmemo-{next(_names)}")
    return memo(store=store, name=f"bench.f{next(_names)}", version="1", memory=4096)(func)


def _renamed(func: Callable[..., Any]) -> Callable[..., Any]:
    """A distinct function object per use: cachier keys its files by function name."""

    @functools.wraps(func)
    def renamed(*args: Any) -> Any:
        return func(*args)

    renamed.__name__ = renamed.__qualname__ = f"{func.__name__}_{next(_names)}"
    return renamed


IN_MEMORY: dict[str, Memoizer] = {"dict memo": dict_memo, "functools.lru_cache": lru_cache}
PERSISTENT: dict[str, Memoizer] = {
    "persistmemo": persistmemo_disk,
    "persistmemo memory=": persistmemo_memory,
    "diskcache memoize": diskcache_memoize,
    "joblib.Memory": joblib_memory,
    "cachier": cachier_pickle,
}


def spin(seconds: float) -> float:
    """Busy for ``seconds`` of CPU: the computation the map scenario runs in workers."""
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass
    return seconds
