"""Stable, process-independent names for modules, functions and types.

Keys must not depend on whether a script ran as ``__main__`` (or as ``__mp_main__`` in a
``spawn``, ``forkserver`` or loky worker) or was imported: ``__main__`` resolves to the name the
module would have if imported, ``__main__`` only where there is no file (a REPL, a notebook
kernel); a function sent by value brings its sender's name for ``__main__``. The rules:
docs/options.md#name and docs/sharing.md#worker-processes-joblib-dask-executors.
"""

from __future__ import annotations

import os
import sys

MAIN_NAMES = frozenset(("__main__", "__mp_main__"))
"""The names a running script's module has: its own, and multiprocessing workers' copy."""


_sender_main: str | None = None


def received_main(name: str) -> None:
    """Resolve ``__main__`` as ``name`` from now on: this process runs functions sent by value
    from a script (or notebook) whose ``__main__`` is named so there."""
    global _sender_main
    _sender_main = name


def _main_module_name() -> str:
    # Not cached: in a spawn worker, __main__ is the bootstrap until the script is loaded.
    return _sender_main or _script_name(_main_module())


def _main_module() -> object:
    # While a spawn worker re-runs the script, runpy has put it in sys.modules as
    # __mp_main__ but __main__ is still the bootstrap (and stays loky's): the script's own.
    return sys.modules.get("__mp_main__") or sys.modules.get("__main__")


def _script_name(main: object) -> str:
    spec = getattr(main, "__spec__", None)
    spec_name = getattr(spec, "name", None)
    if spec_name:
        # `python -m pkg` runs pkg.__main__, which is the name an import would give too.
        return str(spec_name)
    path = getattr(main, "__file__", None)
    if path:
        return os.path.splitext(os.path.basename(str(path)))[0]
    return "__main__"


def module_name(module: str | None) -> str:
    """Return the importable name of ``module``, resolving ``__main__`` as described above."""
    if module in MAIN_NAMES:
        return _main_module_name()
    return module or "__unknown__"


def qualified_name(obj: object) -> str:
    """Return ``module.qualname`` of a function or class, with ``__main__`` resolved."""
    module, qualname = object_path(obj)
    return f"{module}.{qualname}"


def object_path(obj: object) -> tuple[str, str]:
    """Return ``(module, qualname)`` of a function or class, with ``__main__`` resolved."""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if qualname is None:
        raise TypeError(f"{obj!r} has no __qualname__ to name it by")
    return module_name(getattr(obj, "__module__", None)), str(qualname)


def lookup(module: str, qualname: str) -> object:
    """Find the object that ``object_path`` named; raises LookupError when it is gone.

    The running script's own name resolves to ``__main__`` rather than being imported,
    which would run the script a second time.
    """
    if module in sys.modules:
        target: object = sys.modules[module]
    elif module in MAIN_NAMES or module == _main_module_name():
        target = _main_module()
    else:
        import importlib  # a module not loaded yet: not on a re-run's path

        try:
            target = importlib.import_module(module)
        except ImportError as error:
            raise LookupError(f"module {module!r} cannot be imported: {error}") from error
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(f"{module}.{qualname} does not exist") from None
    return target
