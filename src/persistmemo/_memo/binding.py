"""Binding a call to its function's signature: the argument values that make up its key.

``f(1)``, ``f(x=1)``, ``f(1, 1)`` and ``f(1, y=1)`` (with ``y=1`` the default) bind to the
same values, in parameter order. Ignored parameters are dropped whether they were passed by
position or by keyword; ``*args`` becomes a tuple and ``**kwargs`` a dict, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import FunctionType

# No typing at run time (the cold-start budget, docs/architecture.md): for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Parameter kinds, as inspect names them, without importing inspect (~9 ms with ast, dis
# and tokenize) for the plain functions that most scripts memoize.
_POSITIONAL, _VAR_POSITIONAL, _KEYWORD_ONLY, _VAR_KEYWORD = range(4)
_KIND_NAMES = {
    "POSITIONAL_ONLY": _POSITIONAL,
    "POSITIONAL_OR_KEYWORD": _POSITIONAL,
    "VAR_POSITIONAL": _VAR_POSITIONAL,
    "KEYWORD_ONLY": _KEYWORD_ONLY,
    "VAR_KEYWORD": _VAR_KEYWORD,
}
_NO_DEFAULT = object()
_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08


class CallBinder:
    """Turns ``(args, kwargs)`` of one function into the tuple of values its key is built on."""

    __slots__ = (
        "_defaults",
        "_fast_arity",
        "_fast_required",
        "_func",
        "_ignored_extra_keywords",
        "_kept",
        "_kinds",
        "_signature",
        "parameter_names",
    )

    def __init__(self, func: Callable[..., Any], ignore: Iterable[str] = ()) -> None:
        self._func = func
        self._signature: Any = None
        plain = _plain_parameters(func)
        if plain is None:
            import inspect  # at decoration, and only for what the code object cannot tell

            self._signature = _signature_of(func)
            parameters = list(self._signature.parameters.values())
            names: tuple[str, ...] = tuple(p.name for p in parameters)
            kinds = tuple(_KIND_NAMES[p.kind.name] for p in parameters)
            defaults = tuple(
                _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default
                for p in parameters
            )
        else:
            names, kinds, defaults = plain
        self.parameter_names = names
        self._kinds = kinds
        ignored = set(ignore)
        accepts_any_keyword = _VAR_KEYWORD in kinds
        unknown = ignored.difference(names)
        if unknown and not accepts_any_keyword:
            raise TypeError(
                f"ignore= names {sorted(unknown)} but {func.__qualname__}() has no such "
                f"parameter; its parameters are {list(names)}"
            )
        # Names not in the signature can only arrive through **kwargs: drop them there.
        self._ignored_extra_keywords = frozenset(unknown)
        self._kept = tuple(i for i, name in enumerate(names) if name not in ignored)

        # Fast path: a call with positional arguments only, to a function whose parameters
        # are all plain positional ones, binds by slicing and padding with the defaults.
        if all(kind == _POSITIONAL for kind in kinds):
            self._fast_arity = len(names)
            self._fast_required = sum(default is _NO_DEFAULT for default in defaults)
            self._defaults = defaults
        else:
            self._fast_arity = -1
            self._fast_required = 0
            self._defaults = ()

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Return the key values of a call, in parameter order, ignored ones left out.

        Raises TypeError, as the function itself would, for a call that does not fit the
        signature (a missing or unexpected argument).
        """
        arity = self._fast_arity
        # Parameters with defaults always follow those without, so enough positional
        # arguments for the required ones means every other value is a default.
        if not kwargs and self._fast_required <= len(args) <= arity:
            values = args + self._defaults[len(args) :]
            return values if len(self._kept) == arity else self._select(values)
        return self._bind_slow(args, kwargs)

    def binds_as_given(self, calls: list[tuple[Any, ...]]) -> bool:
        """Whether ``bind(args, {})`` is ``args`` itself for every call of ``calls`` (each
        gives every parameter by position, and none is ignored): f.map then skips it."""
        arity = self._fast_arity
        if arity < 0 or len(self._kept) != arity:
            return False
        return set(map(len, calls)) <= {arity}

    def _select(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple([values[i] for i in self._kept])

    def _bind_slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        signature = self._signature
        if signature is None:
            signature = self._signature = _signature_of(self._func)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        values = []
        for index in self._kept:
            value = arguments[self.parameter_names[index]]
            if self._kinds[index] == _VAR_KEYWORD:
                value = {
                    name: item
                    for name, item in value.items()
                    if name not in self._ignored_extra_keywords
                }
            values.append(value)
        return tuple(values)

    def kept_names(self) -> tuple[str, ...]:
        """The parameter names behind the key values, in order."""
        return tuple(self.parameter_names[index] for index in self._kept)

    def parameter_of(self, position: int) -> str:
        """The name of the parameter behind the ``position``-th key value."""
        return self.parameter_names[self._kept[position]]


def _plain_parameters(
    func: Callable[..., Any],
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[Any, ...]] | None:
    """(names, kinds, defaults) of a plain function's parameters, read from its code object
    as inspect.signature would; None for anything else (a wrapper with ``__wrapped__``, a
    ``__signature__``, a partial, a method, a callable object), which inspect handles."""
    if type(func) is not FunctionType:
        return None
    attributes = getattr(func, "__dict__", {})
    if "__wrapped__" in attributes or "__signature__" in attributes:
        return None
    code = func.__code__
    positional = code.co_argcount
    keyword_only = code.co_kwonlyargcount
    names = list(code.co_varnames[: positional + keyword_only])
    kinds = [_POSITIONAL] * positional + [_KEYWORD_ONLY] * keyword_only
    defaults: list[Any] = [_NO_DEFAULT] * positional
    given = func.__defaults__ or ()
    if given:
        defaults[positional - len(given) :] = given
    keyword_defaults = func.__kwdefaults__ or {}
    defaults += [keyword_defaults.get(name, _NO_DEFAULT) for name in names[positional:]]
    extra = positional + keyword_only
    if code.co_flags & _CO_VARARGS:
        names.insert(positional, code.co_varnames[extra])
        kinds.insert(positional, _VAR_POSITIONAL)
        defaults.insert(positional, _NO_DEFAULT)
        extra += 1
    if code.co_flags & _CO_VARKEYWORDS:
        names.append(code.co_varnames[extra])
        kinds.append(_VAR_KEYWORD)
        defaults.append(_NO_DEFAULT)
    return tuple(names), tuple(kinds), tuple(defaults)


def _signature_of(func: Callable[..., Any]) -> Any:
    """``inspect.signature(func)``; a callable that has none (a numpy ufunc on some releases,
    a builtin written in C) binds as ``(*args, **kwargs)``: its calls are keyed as given."""
    import inspect  # at decoration, or at the first call with keywords

    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        kinds = inspect.Parameter
        return inspect.Signature(
            [kinds("args", kinds.VAR_POSITIONAL), kinds("kwargs", kinds.VAR_KEYWORD)]
        )
