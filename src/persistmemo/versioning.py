"""A function's version derived from its code, so that editing it stops old results being served.

The version is a digest of the function's normalized syntax tree: ``ast.dump`` of its
definition without the docstring, the decorators, line numbers, comments or formatting.
Reformatting, commenting or re-documenting a function keeps its cache; changing what it does
drops it, and changing it back finds the old entries again.

Where the source cannot be read (a REPL, ``exec``), the code object is digested instead: its
bytecode, names and constants. That form changes with the Python version, which can only
cost misses, never serve a stale result.

With ``include_globals=True`` the version also covers what the function refers to by global
name in its own module: functions and classes (by their normalized source, recursively) and
constants of simple types. Functions of other modules (libraries) are not followed.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import types
from collections.abc import Callable, Iterator
from typing import Any

from persistmemo.keys import UnsupportedType, encode

VERSION_DIGEST_SIZE = 8


def code_version(func: Callable[..., Any], *, include_globals: bool = False) -> str:
    """Return the hex version of ``func``'s code (16 hex digits)."""
    hasher = hashlib.blake2b(digest_size=VERSION_DIGEST_SIZE)
    hasher.update(_normalized_code(func))
    if include_globals:
        seen = {id(func)}
        for name, value in sorted(_referenced_globals(func, seen)):
            hasher.update(encode([name, value]))
    return hasher.hexdigest()


def _normalized_code(obj: Any) -> bytes:
    tree = _definition_tree(obj)
    if tree is not None:
        return ast.dump(tree, annotate_fields=True, include_attributes=False).encode()
    code = getattr(obj, "__code__", None)
    if code is None:
        raise TypeError(f"cannot derive a version for {obj!r}: no source and no code object")
    return encode(["bytecode", *_code_fingerprint(code)])


def _definition_tree(obj: Any) -> ast.AST | None:
    """The definition's syntax tree without docstring and decorators; None without source."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        module = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    if not module.body or not isinstance(module.body[0], definitions):
        return None  # a lambda: its line holds more than the function
    definition = module.body[0]
    definition.decorator_list = []
    _drop_docstrings(definition)
    return definition


def _drop_docstrings(tree: ast.AST) -> None:
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in ast.walk(tree):
        if isinstance(node, definitions) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]


def _code_fingerprint(code: types.CodeType) -> list[object]:
    constants: list[object] = []
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            constants.append(_code_fingerprint(constant))
        elif constant is not None and constant is not Ellipsis:
            try:
                encode(constant)
            except UnsupportedType:
                constants.append(repr(type(constant)))
            else:
                constants.append(constant)
    return [code.co_code, list(code.co_names), list(code.co_varnames), constants]


def _global_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _global_names(constant)


def _referenced_globals(func: Any, seen: set[int]) -> Iterator[tuple[str, object]]:
    """(name, fingerprint) of what ``func`` refers to in its module, followed recursively."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    namespace = getattr(func, "__globals__", None)
    if code is None or namespace is None:
        return
    module = func.__module__
    for name in sorted(set(_global_names(code))):
        if name not in namespace:
            continue
        value = inspect.unwrap(namespace[name]) if callable(namespace[name]) else namespace[name]
        if id(value) in seen:
            continue
        if isinstance(value, (types.FunctionType, type)):
            if getattr(value, "__module__", None) != module:
                continue
            seen.add(id(value))
            try:
                yield name, _normalized_code(value)
            except TypeError:
                continue  # a class whose source cannot be read
            if isinstance(value, types.FunctionType):
                yield from _referenced_globals(value, seen)
        elif isinstance(value, (int, float, str, bytes, bool, tuple, frozenset)) or value is None:
            try:
                yield name, encode(value)
            except UnsupportedType:
                continue
