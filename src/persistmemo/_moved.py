"""Import paths of earlier releases, kept working for one release with a DeprecationWarning.

Every module but the public ones (``persistmemo``, ``persistmemo.stores``,
``persistmemo.errors``, ``persistmemo.cli``) became private. An old path
(``from persistmemo.codec import CorruptEntry``) imports a stand-in module that finds each of
the old module's names where it lives now, and warns once, naming the public place.
"""

from __future__ import annotations

import sys

# importlib, warnings and types load on first use of an old path, not with every
# `import persistmemo` (the cold-start budget, docs/architecture.md): the finder's spec class
# is the one the import system itself runs on.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType
else:
    ModuleSpec = sys.modules["_frozen_importlib"].ModuleSpec
    ModuleType = type(sys)

# old module -> the modules that hold its names now, searched in order
MOVED = {
    "persistmemo.binding": ("persistmemo._memo.binding",),
    "persistmemo.call_paths": ("persistmemo._memo.call_paths",),
    "persistmemo.closures": ("persistmemo._versioning.closures", "persistmemo.errors"),
    "persistmemo.code_watch": ("persistmemo._versioning.code_watch",),
    "persistmemo.codec": ("persistmemo._codec", "persistmemo._codec.pickles", "persistmemo.errors"),
    "persistmemo.decorator": ("persistmemo._memo.decorator",),
    "persistmemo.demo": ("persistmemo._demo",),
    "persistmemo.faults": ("persistmemo._faults", "persistmemo.errors"),
    "persistmemo.files": ("persistmemo._memo.files", "persistmemo.errors"),
    "persistmemo.hashing": ("persistmemo._hashing",),
    "persistmemo.integrity": ("persistmemo._sealing", "persistmemo._secret", "persistmemo.errors"),
    "persistmemo.keys": ("persistmemo._keys", "persistmemo.errors"),
    "persistmemo.locking": ("persistmemo._memo.locking", "persistmemo.errors"),
    "persistmemo.mapping": ("persistmemo._memo.mapping",),
    "persistmemo.memoized": ("persistmemo._memo.memoized",),
    "persistmemo.memory": ("persistmemo._memo.memory",),
    "persistmemo.naming": ("persistmemo._naming",),
    "persistmemo.options": ("persistmemo._memo.options",),
    "persistmemo.origins": ("persistmemo._versioning.origins",),
    "persistmemo.out_of_band": ("persistmemo._codec.out_of_band",),
    "persistmemo.source_index": ("persistmemo._versioning.sources",),
    "persistmemo.source_stamps": ("persistmemo._versioning.source_stamps",),
    "persistmemo.versioning": (
        "persistmemo._versioning.versions",
        "persistmemo._versioning.running_source",
        "persistmemo.errors",
    ),
}

# Old names that became words of their own: environment variables and extension codes.
RENAMED = {
    "ENV_DISABLE": ("persistmemo._environment", "DISABLE"),
    "ENV_SECRET": ("persistmemo._environment", "SECRET"),
    "ENV_DIRECTORY": ("persistmemo._environment", "DIRECTORY"),
    "ENV_URL": ("persistmemo._environment", "URL"),
}
EXTENSIONS = {
    "persistmemo.keys": ("persistmemo._keys.framing", "KeyExtension"),
    "persistmemo.codec": ("persistmemo._codec.formats", "ValueExtension"),
}


# Names stored pickles refer to (``persistmemo.codec._script_global``): found without a warning,
# since it is persistmemo's own unpickling that asks, not the user's code.
QUIET = {("persistmemo.codec", "_script_global")}


class _OldModule(ModuleType):
    """An old module path: its names, looked up where they live now (a warning at the first)."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        if (self.__name__, name) not in QUIET and not self.__dict__.get("_warned"):
            import warnings

            self.__dict__["_warned"] = True
            warnings.warn(
                f"{self.__name__} is private now and will be removed: import public names "
                "from persistmemo, persistmemo.stores or persistmemo.errors",
                DeprecationWarning,
                stacklevel=2,
            )
        import importlib

        for home in MOVED[self.__name__]:
            module = importlib.import_module(home)
            if hasattr(module, name):
                return getattr(module, name)
        if name in RENAMED:
            home, new_name = RENAMED[name]
            return getattr(importlib.import_module(home), new_name)
        if name.startswith("EXT_") and self.__name__ in EXTENSIONS:
            home, codes = EXTENSIONS[self.__name__]
            found = getattr(getattr(importlib.import_module(home), codes), name[4:], None)
            if found is not None:
                return found
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
        # A setting changed through the old path (``files.RACY_NANOSECONDS = 0``, a test's
        # monkeypatch) changes it where the code reads it.
        if not name.startswith("__"):
            import importlib

            for home in MOVED[self.__name__]:
                module = importlib.import_module(home)
                if name in vars(module):
                    setattr(module, name, value)
                    return
        super().__setattr__(name, value)


class _Alias:
    """Finds an old module name and makes its stand-in."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name not in MOVED:
            return None
        return ModuleSpec(name, _Alias)  # type: ignore[arg-type]

    @staticmethod
    def create_module(spec: ModuleSpec) -> ModuleType:
        # The decorator learns from the store registry how names become stores: the entry
        # point loads both, and so does every old path (an old `decorator.memo` decorates).
        __import__("persistmemo.stores.registry")
        return _OldModule(spec.name)

    @staticmethod
    def exec_module(module: ModuleType) -> None:
        """Nothing to run: the names are looked up when asked for."""


def install() -> None:
    """Let the old paths import (once per process)."""
    if _Alias not in sys.meta_path:
        sys.meta_path.append(_Alias)
