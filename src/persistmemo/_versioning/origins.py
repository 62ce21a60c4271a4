"""Whose code a file holds: the user's, a library's (standard library, installed packages)
or persistmemo's own.

Versions follow the user's code only: the standard library and installed packages change
with their versions (``packages=``), never by an edit that should stop results being served,
and their functions' captured internals are not the user's inputs. Told by path: a file under
a ``site-packages``/``dist-packages`` directory or under the interpreter's library
directories is a library's; anything outside every installation is the user's without
asking sysconfig (a cold start's milliseconds).
"""

from __future__ import annotations

import functools
import os
import sys

USER, LIBRARY, OWN = "user", "library", "persistmemo"
OWN_DIRECTORY = (
    os.path.normcase(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep
)


def origin_of_path(path: str) -> str:
    """Whose code a file holds: the user's (``USER``), the standard library's or an
    installed package's (``LIBRARY``), or persistmemo's own (``OWN``)."""
    if not path or path.startswith("<"):
        return USER  # exec'd or typed in: the user's, read from its code object
    normalized = os.path.normcase(os.path.abspath(path))
    if normalized.startswith(OWN_DIRECTORY):
        return OWN
    parts = set(normalized.split(os.sep))
    if "site-packages" in parts or "dist-packages" in parts:
        return LIBRARY
    if not normalized.startswith(_install_roots()):
        return USER  # outside every installation: no need for sysconfig's paths (~3 ms)
    if any(normalized.startswith(prefix) for prefix in _library_prefixes()):
        return LIBRARY
    return USER


@functools.lru_cache(maxsize=1)
def _install_roots() -> tuple[str, ...]:
    """The directories every library directory lies under: the prefixes and the user base."""
    import site

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.add(getattr(site, "getuserbase", lambda: "")() or "")
    return tuple(os.path.normcase(os.path.abspath(root)) + os.sep for root in roots if root)


@functools.lru_cache(maxsize=1)
def _library_prefixes() -> tuple[str, ...]:
    """The directories of the standard library and installed packages (and the venv's lib)."""
    import site
    import sysconfig

    directories: set[str] = set()
    for scheme_vars in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars)
        directories.update(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        directories.update(os.path.join(prefix, lib) for lib in ("lib", "Lib", "lib64"))
    directories.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user_site, str):
        directories.add(user_site)
    return tuple(os.path.normcase(os.path.abspath(d)) + os.sep for d in directories if d)
