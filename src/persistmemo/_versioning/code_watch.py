"""Whether the code a version was derived from is still the code that runs.

A ``CodeWatch`` holds, for every name the derivation read, the object it found, and for every
function it versioned, the code object it ran; ``changed()`` compares them by identity, so
that each call sees a reload, an ``%autoreload`` or a rebound global before it trusts its key.
"""

from __future__ import annotations

import operator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any


_code_of = operator.attrgetter("__code__")
ABSENT = object()
"""What a watch expects of a name not bound yet (a module a function body imports later)."""
_IN_BULK = 8  # names of one namespace (or functions) from which C-level comparison pays


class CodeWatch:
    """The names (namespace, name, object) and functions a version was derived from."""

    __slots__ = ("changed", "replaced")

    def __init__(
        self,
        names: Iterable[tuple[Mapping[str, Any], str, object]],
        functions: Iterable[Any],
        cells: Iterable[tuple[Any, object]] = (),
    ) -> None:
        # One generated comparison (as namedtuple generates its methods): each check is a
        # subscript or an attribute read and an identity test in bytecode, on objects held in
        # the closure (a cell read each, nothing copied per call), where a loop over the
        # points in Python costs several times more per point.
        bound: dict[str, object] = {"code_of": _code_of}
        tests: list[str] = []
        grouped: dict[int, tuple[Mapping[str, Any], dict[str, object]]] = {}
        for namespace, name, value in names:
            grouped.setdefault(id(namespace), (namespace, {}))[1].setdefault(name, value)
        bound["absent"] = ABSENT
        imports: list[str] = []
        for index, (namespace, found) in enumerate(grouped.values()):
            bound[f"n{index}"] = namespace
            for name in [name for name, value in found.items() if value is ABSENT]:
                del found[name]  # a module not imported yet: watched until it is
                imports.append(f"n{index}.get({name!r}, absent) is not absent")
            if len(found) >= _IN_BULK:
                # Many names of one module: fetched by one itemgetter, compared as tuples
                # (an identity test per item in C; an equal object rebound counts as the
                # same, which describes the same code or value).
                bound[f"g{index}"] = operator.itemgetter(*found)
                bound[f"t{index}"] = tuple(found.values())
                tests.append(f"g{index}(n{index}) != t{index}")
                continue
            for position, (name, value) in enumerate(found.items()):
                bound[f"v{index}_{position}"] = value
                tests.append(f"n{index}[{name!r}] is not v{index}_{position}")
        unique = list({id(function): function for function in functions}.values())
        if len(unique) >= _IN_BULK:
            bound["fs"], bound["cs"] = tuple(unique), tuple(map(_code_of, unique))
            tests.append("tuple(map(code_of, fs)) != cs")
        else:
            for index, function in enumerate(unique):
                bound[f"f{index}"], bound[f"c{index}"] = function, function.__code__
                tests.append(f"f{index}.__code__ is not c{index}")
        for index, (cell, value) in enumerate(cells):
            # A helper's captured variable, rebound through nonlocal by other code.
            bound[f"k{index}"], bound[f"w{index}"] = cell, value
            tests.append(f"k{index}.cell_contents is not w{index}")
        # changed(): derive again (a module the body imports has been imported meanwhile:
        # the version then follows its names). replaced(): the code that ran is not the
        # code of the version, so its result must not be stored; a module imported by the
        # call itself is the source the version read, not a replacement.
        self.replaced: Callable[[], bool] = never_changed
        if tests:
            self.replaced = _compiled(bound, tests)
        self.changed = self.replaced
        if imports:
            self.changed = _compiled(bound, [*imports, *tests])


def _compiled(bound: dict[str, object], tests: list[str]) -> Callable[[], bool]:
    source = (
        f"def watch({', '.join(bound)}):\n"
        "    def changed():\n"
        "        try:\n"
        f"            return {' or '.join(tests)}\n"
        "        except Exception:  # a name deleted, a cell emptied, an __eq__ that fails\n"
        "            return True\n"
        "    return changed\n"
    )
    scope: dict[str, Any] = {}
    exec(compile(source, "<persistmemo code watch>", "exec"), scope)
    changed: Callable[[], bool] = scope["watch"](*bound.values())
    return changed


def never_changed() -> bool:
    """The watch of a version given by hand (``version=``): nothing to compare."""
    return False
