"""Whether the code a version was derived from is still the code that runs.

A version is derived once per process, at the first call, from the functions, classes and
globals the function reaches. Between calls the process can change what runs without any
file stamp telling: ``importlib.reload(helpers)`` rebinds the names of ``helpers``, IPython's
``%autoreload`` swaps the ``__code__`` of existing functions in place, a notebook cell or any
code rebinds a module global (``helpers.SCALE = 7``). A ``CodeWatch`` holds, for every name
the derivation read, the object it found, and for every function it versioned, the code
object it ran; ``changed()`` compares them by identity, so that each call can ask before it
trusts its key.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any


class CodeWatch:
    """The names (namespace, name, object) and functions a version was derived from."""

    __slots__ = ("changed", "size")

    def __init__(
        self,
        names: Iterable[tuple[Mapping[str, Any], str, object]],
        functions: Iterable[Any],
    ) -> None:
        # One generated comparison (as namedtuple generates its methods): each check is a
        # subscript or an attribute read and an identity test in bytecode, where a loop
        # over the points in Python costs several times more per point.
        bound: dict[str, object] = {}
        tests: list[str] = []
        namespaces: dict[int, str] = {}
        seen: set[tuple[int, str]] = set()
        for namespace, name, value in names:
            if (id(namespace), name) in seen:
                continue
            seen.add((id(namespace), name))
            space = namespaces.get(id(namespace))
            if space is None:
                space = namespaces[id(namespace)] = f"n{len(namespaces)}"
                bound[space] = namespace
            held = f"v{len(tests)}"
            bound[held] = value
            tests.append(f"{space}[{name!r}] is not {held}")
        unique = {id(function): function for function in functions}
        for index, function in enumerate(unique.values()):
            bound[f"f{index}"], bound[f"c{index}"] = function, function.__code__
            tests.append(f"f{index}.__code__ is not c{index}")
        self.size = len(tests)
        self.changed: Callable[[], bool] = never_changed
        if tests:
            self.changed = _compiled(bound, tests)

    def __len__(self) -> int:
        return self.size


def _compiled(bound: dict[str, object], tests: list[str]) -> Callable[[], bool]:
    # The watched objects are bound as defaults: read as fast locals, never looked up.
    source = (
        f"def changed({', '.join(f'{name}={name}' for name in bound)}):\n"
        "    try:\n"
        f"        return {' or '.join(tests)}\n"
        "    except KeyError:  # a name deleted\n"
        "        return True\n"
    )
    scope: dict[str, Any] = dict(bound)
    exec(compile(source, "<persistmemo code watch>", "exec"), scope)
    changed: Callable[[], bool] = scope["changed"]
    return changed


def never_changed() -> bool:
    """The watch of a version given by hand (``version=``): nothing to compare."""
    return False
