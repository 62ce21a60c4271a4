"""A memoized function's captured variables, read at call time as inputs like its arguments.

``CapturedInputs`` keys the values a closure captures, follows captured functions to their
own, and leaves out what the function itself changes (state, told from its source or its
bytecode) or what ``ignore=`` names. Functions without a closure pay nothing on the hit path.
The rules: docs/keys.md#captured-variables-closures.
"""

from __future__ import annotations

import functools
import types

from persistmemo._keys.classes import HOOK_NAME
from persistmemo._naming import qualified_name
from persistmemo._versioning.origins import LIBRARY, origin_of_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

# Methods whose call on a captured object changes it (list, dict, set, deque, Counter...).
MUTATING_METHODS = frozenset(
    (
        "append",
        "appendleft",
        "extend",
        "extendleft",
        "insert",
        "remove",
        "pop",
        "popleft",
        "popitem",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
        "sort",
        "reverse",
        "rotate",
        "put",
        "put_nowait",
        "send",
        "write",
        "set",
    )
)

MEMOIZED_MARK = "__persistmemo_memoized__"
"""Set on memoized functions: their closures hold persistmemo's state, not the user's."""

# How deep captured functions are followed (a function capturing a function capturing...).
FOLLOW_DEPTH = 8


class CapturedInputs:
    """Reads the keyed captured variables of one function (and of the functions it captures).

    ``values()`` returns a dict ``{name: value}`` of what to key, read now; nested names
    are dotted (``helper.k``). Built at the first call, as it may parse source.
    """

    __slots__ = ("_func", "_ignored", "_owner")

    def __init__(self, func: Callable[..., Any], ignored: Iterable[str], owner: str) -> None:
        self._func = func
        self._ignored = frozenset(ignored)
        self._owner = owner

    @staticmethod
    def of(func: Callable[..., Any], ignored: Iterable[str], owner: str) -> CapturedInputs | None:
        """The reader for ``func``, or None when it captures nothing that may be keyed."""
        if not _has_closure(func) and not isinstance(func, types.MethodType):
            return None
        return CapturedInputs(func, ignored, owner)

    def values(self) -> dict[str, object]:
        """The captured inputs of a call, read now: a bound method's object as ``self`` (a
        class, for a class's method, by its name), then the captured variables."""
        found: dict[str, object] = {}
        func = self._func
        if isinstance(func, types.MethodType) and "self" not in self._ignored:
            bound = func.__self__
            found["self"] = ("class", qualified_name(bound)) if isinstance(bound, type) else bound
        _collect(func, "", found, self._ignored, {id(func)}, 0, self._owner)
        return found


def _has_closure(func: Any) -> bool:
    target = getattr(func, "func", func) if is_partial(func) else func
    return bool(getattr(target, "__closure__", None))


def is_partial(func: object) -> bool:
    """Whether ``func`` is a ``functools.partial`` (memoized as its function, with its bound
    arguments keyed)."""
    return isinstance(func, functools.partial)


def _collect(
    func: Any,
    prefix: str,
    found: dict[str, object],
    ignored: frozenset[str],
    seen: set[int],
    depth: int,
    owner: str,
) -> None:
    code = getattr(func, "__code__", None)
    closure = getattr(func, "__closure__", None)
    if code is None or not closure or _library_file(code.co_filename):
        return  # a library's captured internals: its version is packages='s business
    state = state_variables(func)
    for name, cell in zip(code.co_freevars, closure, strict=True):
        qualified = prefix + name
        if name == "__class__" or name in state or qualified in ignored:
            continue  # super()'s class cell: the method's code is its version already
        try:
            value = cell.cell_contents
        except ValueError:
            continue  # not bound yet: the function cannot read it either
        _collect_value(value, qualified, found, ignored, seen, depth, owner)


def _collect_value(
    value: object,
    name: str,
    found: dict[str, object],
    ignored: frozenset[str],
    seen: set[int],
    depth: int,
    owner: str,
) -> None:
    if isinstance(value, types.ModuleType) or name in ignored:
        return
    if isinstance(value, type):
        return  # versioned by its code (basis.py): a class is code, not data
    if callable(value) and not hasattr(type(value), HOOK_NAME):
        bound_to = _bound_object(value)
        if bound_to is not None:
            # model.predict, table.get, pattern.fullmatch: the object is an input as much
            # as the method's code (keyed, or refused with the usual TypeError).
            _collect_value(bound_to, name + ".__self__", found, ignored, seen, depth, owner)
        function = _plain_function(value)
        if function is not None:
            if id(function) in seen or depth >= FOLLOW_DEPTH:
                return
            seen.add(id(function))
            _collect(function, name + ".", found, ignored, seen, depth + 1, owner)
            if is_partial(value):
                found[name] = [list(value.args), dict(value.keywords)]  # type: ignore[attr-defined]
            return
        if isinstance(value, (types.BuiltinFunctionType, types.MethodWrapperType)):
            return  # len, math.sqrt: code of the interpreter (its object, if any, keyed above)
    # Not checked here: an unsupported value fails when the key is built, and the decorator
    # names the captured variable then (checking here would encode every value twice).
    found[name] = value


@functools.lru_cache(maxsize=4096)
def _library_file(path: str) -> bool:
    return origin_of_path(path) == LIBRARY


def _bound_object(value: object) -> object | None:
    """The object a bound method (Python or builtin) is bound to, unless a class or module."""
    if isinstance(value, (types.MethodType, types.BuiltinMethodType, types.MethodWrapperType)):
        bound_to: object = getattr(value, "__self__", None)
        if bound_to is not None and not isinstance(bound_to, (type, types.ModuleType)):
            return bound_to
    return None


def _plain_function(value: object) -> types.FunctionType | None:
    """The Python function behind a captured callable, if any.

    A memoized function is followed to the function it memoizes (its wrapper's closure is
    persistmemo's own state); any other wrapper is followed as it is, since a decorator's
    captured values (its arguments, the wrapped function) are what it runs.
    """
    if is_partial(value):
        value = value.func  # type: ignore[attr-defined]
    if isinstance(value, types.MethodType):
        value = value.__func__
    while getattr(value, MEMOIZED_MARK, False):
        value = value.__wrapped__  # type: ignore[attr-defined]
    return value if isinstance(value, types.FunctionType) else None


# --- which captured variables are state ---------------------------------------------------

_STATE_CACHE: dict[types.CodeType, frozenset[str]] = {}


def state_variables(func: Any) -> frozenset[str]:
    """Captured names that ``func`` rebinds, mutates or advances: state, not input
    (docs/keys.md#captured-variables-closures)."""
    code = func.__code__
    cached = _STATE_CACHE.get(code)
    if cached is None:
        cached = _state_from_source(func)
        if cached is None:
            cached = _state_from_bytecode(code)
        _STATE_CACHE[code] = cached
    return cached


def _state_from_source(func: Any) -> frozenset[str] | None:
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    return frozenset(mutated_names(tree) & set(func.__code__.co_freevars))


def mutated_names(tree: Any) -> set[str]:
    """Names a syntax tree rebinds (``nonlocal``/``global``), mutates or advances, and never
    reads otherwise: state the code keeps, not input.

    Mutation: a method call in MUTATING_METHODS on the name (or on an item or attribute of
    it), an item or attribute assignment, augmented assignment or deletion through it, or
    ``next(name)``. A name the code also reads (``opts.setdefault("k", 2); x * opts["k"]``,
    ``if x in seen``, ``return total``, a mutating call whose result it uses) is input, read
    and mutated: it stays in the key or the version. Shared by the closure rules here and
    kept_state.py (the globals, defaults and class attributes a version leaves out).
    """
    import ast

    state: set[str] = set()
    writes_only: set[int] = set()  # Name nodes loaded only to write through them

    def base(node: ast.AST) -> ast.Name | None:
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return node if isinstance(node, ast.Name) else None

    def mutated(node: ast.Name | None, *, result_unused: bool) -> None:
        if node is not None:
            state.add(node.id)
            if result_unused:
                writes_only.add(id(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Nonlocal, ast.Global)):
            state.update(node.names)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            callee = node.value.func
            if isinstance(callee, ast.Attribute) and callee.attr in MUTATING_METHODS:
                mutated(base(callee.value), result_unused=True)  # `calls.append(x)`
        elif isinstance(node, ast.Call):
            callee = node.func
            if isinstance(callee, ast.Attribute) and callee.attr in MUTATING_METHODS:
                mutated(base(callee.value), result_unused=False)  # `stack.pop()` read too
            elif isinstance(callee, ast.Name) and callee.id == "next" and node.args:
                mutated(base(node.args[0]), result_unused=True)  # an iterator advanced
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets: list[ast.expr] = (
                list(node.targets) if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            )  # a copy: the tree is shared (source_index caches it)
            while targets:
                target = targets.pop()
                if isinstance(target, (ast.Tuple, ast.List)):
                    targets.extend(target.elts)
                elif isinstance(target, ast.Starred):
                    targets.append(target.value)
                elif isinstance(target, (ast.Subscript, ast.Attribute)):
                    # Only the object assigned into: in row[COLS[0]] = x, COLS is only read.
                    into = base(target)
                    mutated(into, result_unused=True)
                    value = getattr(node, "value", None)
                    if into is not None and value is not None:
                        # `totals["n"] = totals.get("n", 0) + 1`: read to update itself, a
                        # counter's read, not an input
                        writes_only.update(
                            id(read)
                            for read in ast.walk(value)
                            if isinstance(read, ast.Name) and read.id == into.id
                        )
    read = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name)
        and isinstance(node.ctx, ast.Load)
        and id(node) not in writes_only
    }
    return state - read


def _state_from_bytecode(code: types.CodeType) -> frozenset[str]:
    free = set(code.co_freevars)
    return frozenset(mutated_names_in_code(code, ("LOAD_DEREF", "LOAD_CLASSDEREF")) & free)


def mutated_names_in_code(code: types.CodeType, loads: tuple[str, ...]) -> set[str]:
    """``mutated_names`` from bytecode, where there is no source (exec, a REPL).

    Rebinding is a STORE/DELETE of the name; a mutation is a mutating method or an attribute
    store right after one of the ``loads`` of it. Item assignment is not seen this way. Any
    other load of the name (but the one an augmented assignment makes) is a read: a name
    read and mutated is input, as in ``mutated_names``.
    """
    state, read = _mutations_in_code(code, loads)
    return state - read


def _mutations_in_code(code: types.CodeType, loads: tuple[str, ...]) -> tuple[set[str], set[str]]:
    import dis

    state: set[str] = set()
    read: set[str] = set()
    instructions = list(dis.get_instructions(code))
    stores = ("STORE_DEREF", "DELETE_DEREF", "STORE_GLOBAL", "DELETE_GLOBAL")
    for index, instruction in enumerate(instructions):
        if instruction.opname in stores:
            state.add(instruction.argval)
        elif instruction.opname in loads:
            following = instructions[index + 1 : index + 4]
            mutating_call = bool(following) and (
                following[0].opname in ("LOAD_ATTR", "LOAD_METHOD")
                and following[0].argval in MUTATING_METHODS
            )
            if mutating_call or (
                following and following[0].opname in ("STORE_ATTR", "DELETE_ATTR")
            ):
                state.add(instruction.argval)
                if mutating_call and following[0].argval in _RETURNING_CONTENT:
                    read.add(instruction.argval)  # `x * opts.setdefault("k", 2)`: read too
            elif not _augmented(following, instruction.argval, stores):
                read.add(instruction.argval)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            nested_state, nested_read = _mutations_in_code(constant, loads)
            state |= nested_state
            read |= nested_read
    return state, read


# Mutating methods whose result is part of the content (bytecode cannot tell cheaply whether
# the result is used: counted as a read, so the value is keyed rather than dropped).
_RETURNING_CONTENT = frozenset(("setdefault", "pop", "popitem", "popleft"))


def _augmented(following: list[Any], name: str, stores: tuple[str, ...]) -> bool:
    """Whether a load of ``name`` is an augmented assignment's (``count += 1``): the value,
    the in-place operation, then a store of the same name."""
    return (
        len(following) == 3
        and (following[1].opname == "BINARY_OP" or following[1].opname.startswith("INPLACE_"))
        and following[2].opname in stores
        and following[2].argval == name
    )


def mutated_attributes(tree: Any) -> set[str]:
    """Attribute names through which a syntax tree mutates an object (``self.cache[k] = v``,
    ``cls.seen.add(x)``, ``Table.rows.append(r)``, ``self.items += [x]``): a class
    attribute of that name is state the class keeps, not a value it was defined with."""
    import ast

    state: set[str] = set()

    def attributes_in(node: ast.AST) -> None:
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Attribute):
                state.add(node.attr)
            node = node.value

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = node.func
            if isinstance(callee, ast.Attribute) and callee.attr in MUTATING_METHODS:
                attributes_in(callee.value)
        elif isinstance(node, (ast.Assign, ast.Delete)):
            for target in node.targets:
                if isinstance(target, (ast.Subscript, ast.Attribute)):
                    attributes_in(target.value)
        elif isinstance(node, ast.AugAssign):
            attributes_in(node.target)  # `self.items += [x]` extends a class's list in place
    return state


def mutated_attributes_in_code(code: types.CodeType) -> set[str]:
    """``mutated_attributes`` from bytecode (no source): an attribute loaded right before a
    mutating method, an item store or deletion one load later, or an attribute store."""
    import dis

    state: set[str] = set()
    instructions = list(dis.get_instructions(code))
    for index, instruction in enumerate(instructions):
        if instruction.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
            continue
        following = instructions[index + 1 : index + 3]
        if not following:
            continue
        mutating_call = (
            following[0].opname in ("LOAD_ATTR", "LOAD_METHOD")
            and following[0].argval in MUTATING_METHODS
        )
        if (
            mutating_call
            or following[0].opname == "STORE_ATTR"
            or any(f.opname in ("STORE_SUBSCR", "DELETE_SUBSCR") for f in following)
        ):
            state.add(instruction.argval)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            state |= mutated_attributes_in_code(constant)
    return state
