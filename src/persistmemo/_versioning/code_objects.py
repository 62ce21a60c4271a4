"""What the code is made of: a callable's layers, a class's methods, a code object's names.

The walk that derives a version (basis.py) meets functions, wrappers, methods, classes and
code objects; these read them as the interpreter holds them, without any source: the layers
from the object ``memo`` received down its ``__wrapped__`` chain, the functions a class
defines, the names a code object reads, and the identity of a code object that the
fingerprint of a remembered version is made of.
"""

from __future__ import annotations

import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MAX_LAYERS = 100


def layers(obj: Any) -> list[Any]:
    """``obj`` and what it wraps, outermost first (methods and static/class methods opened)."""
    found: list[Any] = []
    seen: set[int] = set()
    while obj is not None and id(obj) not in seen and len(found) < _MAX_LAYERS:
        seen.add(id(obj))
        if isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            obj = obj.__func__
        found.append(obj)
        wrapped = getattr(obj, "__wrapped__", None) if not isinstance(obj, type) else None
        obj = (
            wrapped
            if callable(wrapped) or isinstance(wrapped, (staticmethod, classmethod))
            else None
        )
    return found


def is_code(value: object) -> bool:
    """Whether ``value`` is code to follow: a function, a class, a method or a wrapper."""
    return isinstance(
        value, (types.FunctionType, type, types.MethodType, staticmethod, classmethod)
    ) or (callable(value) and hasattr(value, "__wrapped__") and not isinstance(value, type))


def methods_of(cls: type) -> list[types.FunctionType]:
    """The functions ``cls`` itself defines: methods, static and class methods, properties'."""
    found: list[types.FunctionType] = []
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            found.extend(f for f in (value.fget, value.fset, value.fdel) if f is not None)  # type: ignore[misc]
        elif isinstance(value, types.FunctionType):
            found.append(value)
    return [f for f in found if isinstance(f, types.FunctionType)]


def owner_class(func: types.FunctionType) -> type | None:
    """The class a method is defined in, found by its qualified name (not for local ones)."""
    qualname = func.__qualname__
    if "." not in qualname or "<locals>" in qualname:
        return None
    target: object = sys.modules.get(str(func.__module__ or ""))
    for part in qualname.split(".")[:-1]:
        namespace = getattr(target, "__dict__", None)
        if namespace is None or part not in namespace:  # no getattr: no lazy imports run
            return None
        target = namespace[part]
    return target if isinstance(target, type) else None


def names_of(code: types.CodeType) -> frozenset[str]:
    """The global and attribute names ``code`` (and code nested in it) reads."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= names_of(constant)
    return frozenset(names)


def code_identity(code: types.CodeType) -> list[object]:
    """A code object as the light walk tells it apart: its position, bytecode, names and
    constants (nested code included); the Python version is in the fingerprint."""
    constants: list[object] = []
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            constants.append(code_identity(constant))
        else:
            constants.append([type(constant).__qualname__, repr(constant)])
    return [
        code.co_name,
        code.co_firstlineno,
        code.co_code,
        list(code.co_names),
        list(code.co_varnames),
        list(code.co_freevars),
        [code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags],
        constants,
    ]


def qualified(value: object) -> str:
    """``module:qualname`` of a function, class or (for anything else) of its type."""
    module = getattr(value, "__module__", None) or ""
    qualname = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}:{qualname}"


def qualname_of(func: types.FunctionType) -> str:
    return func.__qualname__
