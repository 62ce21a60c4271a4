"""Import paths of earlier releases, kept working for one release with a DeprecationWarning.

Every module but the public ones (``persistmemo``, ``persistmemo.stores``,
``persistmemo.errors``, ``persistmemo.cli``) became private; code that imported one of the
old paths (``from persistmemo.codec import CorruptEntry``) gets the module that holds those
names now, and a warning naming the public place to import them from.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib.machinery import ModuleSpec

# old module -> the module holding its names now
MOVED = {
    "persistmemo.binding": "persistmemo._memo.binding",
    "persistmemo.call_paths": "persistmemo._memo.call_paths",
    "persistmemo.closures": "persistmemo._versioning.closures",
    "persistmemo.code_watch": "persistmemo._versioning.code_watch",
    "persistmemo.codec": "persistmemo._codec",
    "persistmemo.decorator": "persistmemo._memo.decorator",
    "persistmemo.demo": "persistmemo._demo",
    "persistmemo.faults": "persistmemo._faults",
    "persistmemo.files": "persistmemo._memo.files",
    "persistmemo.hashing": "persistmemo._hashing",
    "persistmemo.integrity": "persistmemo._sealing",
    "persistmemo.keys": "persistmemo._keys",
    "persistmemo.locking": "persistmemo._memo.locking",
    "persistmemo.mapping": "persistmemo._memo.mapping",
    "persistmemo.memoized": "persistmemo._memo.memoized",
    "persistmemo.memory": "persistmemo._memo.memory",
    "persistmemo.naming": "persistmemo._naming",
    "persistmemo.options": "persistmemo._memo.options",
    "persistmemo.origins": "persistmemo._versioning.origins",
    "persistmemo.out_of_band": "persistmemo._codec.out_of_band",
    "persistmemo.source_index": "persistmemo._versioning.sources",
    "persistmemo.source_stamps": "persistmemo._versioning.source_stamps",
    "persistmemo.versioning": "persistmemo._versioning.versions",
}


class _Alias:
    """Finds an old module name and loads it as the module that holds its names now."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name not in MOVED:
            return None
        return ModuleSpec(name, _Alias)  # type: ignore[arg-type]

    @staticmethod
    def create_module(spec: ModuleSpec) -> object:
        warnings.warn(
            f"{spec.name} is private now and will be removed: import public names from "
            "persistmemo, persistmemo.stores or persistmemo.errors",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(MOVED[spec.name])

    @staticmethod
    def exec_module(module: object) -> None:
        """Nothing to run: the module was imported under its new name."""


def install() -> None:
    """Let the old paths import (once per process)."""
    if _Alias not in sys.meta_path:
        sys.meta_path.append(_Alias)
