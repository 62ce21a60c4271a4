"""Stable, process-independent names for modules, functions and types.

A function defined in a script runs as ``__main__`` when the script is executed and as its
module name when it is imported. Keys must not depend on which of the two happened, so
``__main__`` is resolved to the name the module would have if imported: the module spec's
name under ``python -m pkg.mod``, the script's file stem under ``python script.py``, and
``__main__`` only where there is no file at all (a REPL or a notebook kernel).

Under the ``spawn`` and ``forkserver`` start methods, multiprocessing runs the script again in
each worker as ``__mp_main__``: it is the same script, so it resolves the same way (workers
share the parent's entries, and two scripts never share names by both being ``__mp_main__``).
A loky worker (joblib) runs the script as ``__mp_main__`` too but keeps its own bootstrap as
``__main__``, so wherever ``__mp_main__`` exists, ``__main__`` resolves as it.

A function sent by value (cloudpickle: joblib, Dask) arrives with its script's classes, all
labelled ``__main__``, in a worker whose own ``__main__`` may be anything (a Dask worker's
command, loky's bootstrap under a notebook). The function brings its sender's name for
``__main__`` (``received_main``), and from then on this process resolves ``__main__`` so:
what its own bootstrap defines is never keyed, what the sender defined is. (A worker fed by
two differently named scripts names both's classes after the last: their keys then differ
from their senders', which costs recomputations, never a wrong result, since the function's
own name is part of every key.)
"""

from __future__ import annotations

import importlib
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
