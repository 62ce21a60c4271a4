"""Whose code a file, function, class or module holds: the user's, a library's or persistmemo's.

Versions follow the user's code only; the standard library and installed packages come in
through ``packages=`` (docs/guarantees.md#what-the-version-covers). Told by path: under a
``site-packages``/``dist-packages`` directory or the interpreter's library directories is a
library's, and anything outside every installation is the user's without asking sysconfig.
"""

from __future__ import annotations

import functools
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types

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


def origin_of_function(func: types.FunctionType) -> str:
    """Whose code ``func`` is, by the file its code came from (or its module's, if none)."""
    path = func.__code__.co_filename
    if path.startswith("<"):
        # "<frozen posixpath>" is the standard library's; "<string>" is exec'd text, whose
        # module says whose it is (a dataclass's generated __init__ is its module's).
        if path.startswith("<frozen"):
            return LIBRARY
        module = sys.modules.get(getattr(func, "__module__", None) or "")
        return USER if module is None else _origin_of_defining_module(module)
    return origin_of_path(path)


def origin_of_type(cls: type) -> str:
    """Whose code ``cls`` is, by the module that defines it."""
    module = sys.modules.get(getattr(cls, "__module__", "") or "")
    if module is None:
        return LIBRARY if cls.__module__ == "builtins" else USER
    return _origin_of_defining_module(module)


def origin_of_module(module: types.ModuleType) -> str:
    """Whose code ``module`` is, by its file (a module without one is a library's)."""
    path = module_file(module)
    return LIBRARY if path is None else origin_of_path(path)


def _origin_of_defining_module(module: types.ModuleType) -> str:
    if getattr(module, "__file__", None) is None and not hasattr(module, "__path__"):
        # builtins and frozen modules are the interpreter's; __main__ in a REPL is the user's
        return USER if module.__name__ == "__main__" else LIBRARY
    return origin_of_module(module)


@functools.cache
def module_file(module: object) -> str | None:
    """The normalized path of ``module``'s file (a namespace package's first directory)."""
    path = getattr(module, "__file__", None)
    if path is None:
        # A namespace package has no file: its directories say whose it is.
        locations = list(getattr(module, "__path__", None) or ())
        path = str(locations[0]) + os.sep if locations else None
    return os.path.normcase(os.path.abspath(path)) if isinstance(path, str) else None


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
