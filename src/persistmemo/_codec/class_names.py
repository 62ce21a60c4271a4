"""Finding a class again by the name a stored value gives it, under the trust rules.

A class is found in a module already in ``sys.modules``. A module is imported to find it only
with ``allow_import`` (granted where pickles are allowed: a private store with a private
key), and then only from the standard library or site-packages. A script is never imported
to read a value (its top-level code would run): the running script's own name
(``python script.py`` stores its classes as ``script.X``, like function identities in
_naming.py; ``__mp_main__`` in multiprocessing workers is the same script) resolves to the
running ``__main__`` module.
"""

from __future__ import annotations

import functools
import os
import sys

from persistmemo._naming import module_name
from persistmemo.errors import UndecodableValue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

MAIN_NAMES = frozenset(("__main__", "__mp_main__"))
"""The names a running script's module has: its own, and multiprocessing workers' copy."""


def _running_script(name: str) -> ModuleType | None:
    """The running script's module when ``name`` is its importable name (see _naming.py)."""
    for alias in ("__mp_main__", "__main__"):
        # __mp_main__ first: while a spawn worker re-runs the script, __main__ is still the
        # multiprocessing bootstrap.
        script = sys.modules.get(alias)
        if script is not None and (name in MAIN_NAMES or name == module_name(alias)):
            return script
    return None


def find_module(name: str, *, allow_import: bool) -> ModuleType:
    """The module ``name`` for a stored value; raises UndecodableValue saying why not."""
    found = sys.modules.get(name)
    if found is not None:
        return found
    script = _running_script(name)
    if script is not None:
        return script
    if not all(part.isidentifier() for part in name.split(".")):
        raise UndecodableValue(f"{name!r} is not a module name")
    if not allow_import:
        raise UndecodableValue(
            f"module {name} is not loaded here, and values read from a store that refuses "
            "pickles never import modules"
        )
    if not _installed(name):
        raise UndecodableValue(
            f"module {name} is not loaded here and is not installed (standard library or "
            "site-packages): persistmemo never imports a script to read a value"
        )
    import importlib  # not on a re-run's path: its hits decode what is loaded

    try:
        return importlib.import_module(name)
    except Exception as error:
        raise UndecodableValue(f"importing module {name} failed: {error!r}") from None


def _installed(name: str) -> bool:
    """Whether module ``name`` would be imported from the standard library or site-packages
    (and not from a script's directory or the working directory)."""
    top = name.partition(".")[0]
    if top in sys.builtin_module_names:
        return True
    import importlib.util

    try:
        # A top-level name: finding its spec imports nothing.
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if spec.origin in ("built-in", "frozen"):
        return True
    locations: list[str | None] = list(spec.submodule_search_locations or ()) or [spec.origin]
    roots = _installed_roots()
    return all(
        location is not None and os.path.realpath(location).startswith(roots)
        for location in locations
    )


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {
        paths[kind] for kind in ("stdlib", "platstdlib", "purelib", "platlib") if kind in paths
    }
    roots.update(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        roots.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def resolve_global(module: str, qualname: str, *, allow_import: bool, by_getattr: bool) -> Any:
    """The object ``module.qualname``; raises UndecodableValue when it is not here."""
    try:
        target: Any = find_module(module, allow_import=allow_import)
    except UndecodableValue as error:
        raise UndecodableValue(
            f"class {module}.{qualname} is not importable here: {error}"
        ) from None
    for part in qualname.split("."):
        try:
            # For msgpack values, the namespace itself and not getattr: a module's
            # __getattr__ (PEP 562) or a metaclass would run code for a name the bytes chose.
            target = getattr(target, part) if by_getattr else vars(target)[part]
        except (AttributeError, KeyError, TypeError):
            raise UndecodableValue(
                f"class {module}.{qualname} is not importable here: {module} has no {qualname}"
            ) from None
    return target
