"""A function's version derived from its code, so that editing it stops old results being served.

The entry points: ``code_version`` (16 hex digits), ``watched_version`` (with the watch of
what it was derived from, checked at each call), ``watched_fingerprint`` (the same, told
without parsing, for a version remembered in the store) and ``explain_version``; the walk is
basis.py's. The rules: docs/guarantees.md#versions-follow-the-code.
"""

from __future__ import annotations

from persistmemo._versioning.basis import NotByStat, VersionBasis
from persistmemo._versioning.explanation import explanation
from persistmemo._versioning.fingerprints import fingerprint
from persistmemo._versioning.source_stamps import definition_stamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from persistmemo._versioning.code_watch import CodeWatch

__all__ = [
    "code_version",
    "definition_stamp",
    "explain_version",
    "version_fingerprint",
    "watched_fingerprint",
    "watched_version",
]


def code_version(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> str:
    """Return the hex version of ``func``'s code (16 hex digits).

    ``func`` may be a wrapper: every layer of its ``__wrapped__`` chain is versioned.
    ``stamp`` is what ``definition_stamp(func)`` returned at decoration.
    """
    return VersionBasis(func, include_globals, packages, stamp).version()


def watched_version(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> tuple[str, CodeWatch]:
    """``code_version``, and the watch of the code and names it was derived from."""
    basis = VersionBasis(func, include_globals, packages, stamp)
    return basis.version(), basis.watch()


def watched_fingerprint(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> tuple[str, CodeWatch] | None:
    """``version_fingerprint``, and the watch of the code and names it was taken from."""
    try:
        basis = VersionBasis(func, include_globals, packages, stamp, light=True)
        return fingerprint(basis), basis.watch()
    except NotByStat:
        return None


def version_fingerprint(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> str | None:
    """A digest of everything ``code_version(func, ...)`` is derived from, read without
    parsing any source: the same walk through the code, with each source file taken by its
    stat (path, size, mtime_ns, ctime_ns, inode, device) instead of its syntax tree, and the
    runtime values (constants, defaults, closures, class attributes) as the walk meets them.

    Equal fingerprints mean equal versions, so a version remembered under its fingerprint
    (memoized.py) can be served without deriving it again. None when that cannot be told
    from stats and values alone: a file edited since this process imported it, code without
    a source file, ``packages=`` (installed versions change outside the code), a value known
    only by the source of its assignment. Then the version is derived.
    """
    found = watched_fingerprint(
        func, include_globals=include_globals, packages=packages, stamp=stamp
    )
    return None if found is None else found[0]


def explain_version(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> dict[str, Any]:
    """What went into ``code_version(func, ...)``, as JSON-serializable data.

    The function (module, qualname, whether its source or its bytecode was used), the wrapper
    layers, the helpers followed with a short digest each, the captured functions and
    classes, the constants with their repr, and the packages with their versions.
    """
    return explanation(VersionBasis(func, include_globals, packages, stamp))
