"""scikit-learn estimators: keyed by their class, their parameters, their state and code.

An estimator (any ``sklearn.base.BaseEstimator``) stands for ``[get_params(deep=True), every
other attribute it holds (None before fit), its set_output() configuration, the code of its
classes defined outside installed packages]``, estimators inside keyed the same way. An
unfitted estimator (the clone a Pipeline fits through its memory) is its parameters; a fitted
one is also all it learned, public (``coef_``) or private (``_tfidf``, ``_fit_X``), so two
models with the same parameters fitted on different data never share a key. State with no
key encoding of its own (a KD-tree, a fitted helper object) stands for a digest of its
pickle: deterministic for the same state, so at worst a miss, never a shared key; state that
cannot even be pickled is refused. A class of your own (a transformer in a script or a
notebook) is keyed by its methods' code, so editing it stops its cached fits being served.
Parameters sklearn takes as functions (``score_func``, ``func``) are keyed by name and code,
a random state by its state. scikit-learn is never imported here: an estimator exists once
it is loaded.
"""

from __future__ import annotations

import collections
import sys
import threading
import types

from blake3 import blake3

from persistmemo._naming import qualified_name
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

ESTIMATOR_ENTRY = "sklearn.estimator/2"
"""The entry's name in the key bytes: a change to what an estimator stands for bumps it."""

StandIn = collections.namedtuple("StandIn", "kind state")
"""What a parameter with no key encoding of its own (a function, a random state) stands for:
a class of its own, so it never shares bytes with a parameter that is a plain list."""


def estimator_base() -> type | None:
    """``sklearn.base.BaseEstimator``, when scikit-learn is loaded."""
    base = sys.modules.get("sklearn.base")
    found = getattr(base, "BaseEstimator", None)
    return found if isinstance(found, type) else None


# The estimators and functions being represented by this thread: one met again inside
# itself (an estimator holding itself, a function calling itself) is a cycle, not a value.
_in_progress = threading.local()


def _entered(value: object) -> bool:
    """Mark ``value`` as being represented; False when it already is (a cycle)."""
    seen: set[int] | None = getattr(_in_progress, "ids", None)
    if seen is None:
        seen = _in_progress.ids = set()
    if id(value) in seen:
        return False
    seen.add(id(value))
    return True


def _left(value: object) -> None:
    _in_progress.ids.discard(id(value))


def represent_estimator(estimator: Any, keyable: Callable[[object], bool]) -> object:
    """The value an estimator is keyed by (the entry's function); ``keyable(value)`` tells
    whether a value has a key encoding."""
    if not _entered(estimator):
        raise UnsupportedType(type(estimator), " (it holds itself: a cycle has no key)")
    try:
        state = getattr(estimator, "__dict__", {})
        given = estimator.get_params(deep=True)
        params = {name: _parameter(value) for name, value in given.items()}
        learned = {
            name: _state(estimator, name, value, keyable)
            for name, value in state.items()
            if name not in given and not name.startswith("__") and not _transient(name, value)
        }
        code = _classes_code(type(estimator), keyable)
        return [params, learned or None, state.get(_OUTPUT_CONFIG), code]
    finally:
        _left(estimator)


_OUTPUT_CONFIG = "_sklearn_output_config"


def _transient(name: str, value: object) -> bool:
    """Attributes that are not state: the set_output() configuration (keyed apart), and an
    object's ``id()`` kept to notice a change (TfidfVectorizer's ``_stop_words_id``), which
    differs in every process."""
    return name == _OUTPUT_CONFIG or (name.endswith("_id") and type(value) is int)


def _state(estimator: Any, name: str, value: Any, keyable: Callable[[object], bool]) -> object:
    represented = _object_state(value, keyable, depth=0)
    if keyable(represented):
        return represented
    # Last: a pickle's digest. It follows the order of any set inside, which is that of the
    # process (PYTHONHASHSEED): the same state may then miss in another process.
    import pickle  # not at import: pickle loads re, which a re-run never needs

    try:
        pickled = pickle.dumps(value, protocol=5)
    except Exception as error:
        raise UnsupportedType(
            type(estimator),
            f" (its attribute {name!r}, a {qualified_name(type(value))}, can be neither keyed "
            f"nor pickled: {error})",
        ) from None
    return StandIn("pickled", blake3(pickled).digest())


_OBJECT_DEPTH = 8
"""How deep plain objects inside an estimator's state are keyed by their attributes."""


def _object_state(value: Any, keyable: Callable[[object], bool], depth: int) -> object:
    """``value`` as a keyable stand-in where it can be: a plain object of a class with no
    key encoding (a fitted helper) by its class and attributes, which keys the sets inside
    by their content rather than by a pickle's order."""
    represented = _parameter(value)
    if keyable(represented) or depth >= _OBJECT_DEPTH:
        return represented
    attributes = getattr(value, "__dict__", None)
    if type(attributes) is not dict or isinstance(value, type) or not _entered(value):
        return represented
    try:
        return StandIn(
            "object",
            [
                qualified_name(type(value)),
                {
                    name: _object_state(item, keyable, depth + 1)
                    for name, item in attributes.items()
                    if isinstance(name, str)
                },
            ],
        )
    finally:
        _left(value)


def _classes_code(cls: type, keyable: Callable[[object], bool]) -> list[object] | None:
    """The code of the estimator's classes that are not from an installed package (whose
    release is in the version already): yours, edited as you work. Methods, static and
    class methods, properties, and the class's other attributes (by value where they can be
    keyed, else by their type)."""
    code: list[object] = []
    for klass in cls.__mro__:
        if klass is object or _installed(klass):
            continue
        members: dict[str, object] = {}
        for name, member in sorted(vars(klass).items()):
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, types.FunctionType):
                members[name] = function_state(member)
            elif isinstance(member, property):
                members[name] = [
                    None if part is None else function_state(part)
                    for part in (member.fget, member.fset, member.fdel)
                ]
            elif not name.startswith("__"):
                represented = _parameter(member)
                members[name] = (
                    represented if keyable(represented) else qualified_name(type(member))
                )
        code.append([qualified_name(klass), members])
    return code or None


def _installed(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None) or ""
    return cls.__module__ == "builtins" or any(
        part in path for part in ("site-packages", "dist-packages", "/lib/python")
    )


def _parameter(value: Any) -> Any:
    cls = type(value)
    if cls is types.FunctionType or cls is types.BuiltinFunctionType:
        return StandIn("function", function_state(value))
    functools = sys.modules.get("functools")
    if functools is not None and cls is functools.partial:
        arguments = [list(value.args), dict(value.keywords)]
        return StandIn("partial", [_parameter(value.func), *arguments])
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return value
    if cls is numpy.ufunc:
        return StandIn("function", [f"numpy.{value.__name__}"])
    if cls.__name__ == "_ArrayFunctionDispatcher" and cls.__module__ == "numpy":
        return _parameter(value.__wrapped__)  # numpy.round, numpy.mean: their Python code
    if cls is numpy.random.RandomState:
        return StandIn("RandomState", value.get_state(legacy=True))
    if cls is numpy.random.Generator:
        return StandIn("Generator", value.bit_generator.state)
    if cls is numpy.ndarray and value.dtype.hasobject:
        # Learned labels and feature names (classes_, feature_names_in_) are object arrays.
        return StandIn("objects", [list(value.shape), value.ravel().tolist()])
    return value


def function_state(func: Any) -> list[object]:
    """A function by its name, and a Python function also by its own code, defaults and
    captured values (not the functions it calls, which joblib does not follow either)."""
    code = getattr(func, "__code__", None)
    if code is None:  # a builtin: its code changes with its package's version
        return [qualified_name(func)]
    if not _entered(func):  # a function that captures itself (recursion): named once
        return [qualified_name(func), "itself"]
    try:
        return _function_state(func, code)
    finally:
        _left(func)


def _function_state(func: Any, code: Any) -> list[object]:
    closure = [_parameter(cell.cell_contents) for cell in func.__closure__ or ()]
    defaults = [_parameter(item) for item in func.__defaults__ or ()]
    keyword_defaults = {
        name: _parameter(item) for name, item in (func.__kwdefaults__ or {}).items()
    }
    return [qualified_name(func), _code_state(code), defaults, keyword_defaults, closure]


def _code_state(code: Any) -> list[object]:
    return [code.co_code, list(code.co_names), [_constant(item) for item in code.co_consts]]


def _constant(item: Any) -> Any:
    if hasattr(item, "co_code"):
        return _code_state(item)
    if item is Ellipsis:
        return StandIn("Ellipsis", None)
    if type(item) is tuple:
        return tuple(_constant(each) for each in item)
    return item
