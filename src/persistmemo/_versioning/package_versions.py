"""The installed versions of the distributions named by ``packages=``, for the version.

The standard library and installed packages are never versioned by their code: an upgrade
is a miss only when asked for, with ``packages=["numpy"]`` (the named distributions) or
``packages=True`` (every installed distribution whose top-level modules the code refers to).
importlib.metadata is imported only then: it costs a cold start tens of milliseconds.
"""

from __future__ import annotations

import functools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def package_versions(packages: tuple[str, ...] | bool, modules: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` of ``packages`` (``True``: the distributions of the
    top-level ``modules`` the code refers to); "not installed" for one that is not."""
    if packages is False or packages == ():
        return {}
    from importlib import metadata  # only when packages= asks (see the docstring)

    if packages is True:
        mapping = _packages_distributions()
        names = sorted({d for top in modules for d in mapping.get(top, ())})
    else:
        names = list(packages)
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    from importlib import metadata

    return dict(metadata.packages_distributions())
