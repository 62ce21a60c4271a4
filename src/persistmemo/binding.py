"""Binding a call to its function's signature: the argument values that make up its key.

``f(1)``, ``f(x=1)``, ``f(1, 1)`` and ``f(1, y=1)`` (with ``y=1`` the default) bind to the
same values, in parameter order. Ignored parameters are dropped whether they were passed by
position or by keyword; ``*args`` becomes a tuple and ``**kwargs`` a dict, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


class CallBinder:
    """Turns ``(args, kwargs)`` of one function into the tuple of values its key is built on."""

    __slots__ = (
        "_defaults",
        "_fast_arity",
        "_fast_required",
        "_ignored_extra_keywords",
        "_kept",
        "_parameters",
        "_signature",
        "parameter_names",
    )

    def __init__(self, func: Callable[..., Any], ignore: Iterable[str] = ()) -> None:
        import inspect  # at decoration, not at `import persistmemo`

        self._signature = inspect.signature(func)
        parameters = list(self._signature.parameters.values())
        self._parameters = parameters
        self.parameter_names = tuple(p.name for p in parameters)
        ignored = set(ignore)
        accepts_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        unknown = ignored.difference(self.parameter_names)
        if unknown and not accepts_any_keyword:
            raise TypeError(
                f"ignore= names {sorted(unknown)} but {func.__qualname__}() has no such "
                f"parameter; its parameters are {list(self.parameter_names)}"
            )
        # Names not in the signature can only arrive through **kwargs: drop them there.
        self._ignored_extra_keywords = frozenset(unknown)
        self._kept = tuple(i for i, p in enumerate(parameters) if p.name not in ignored)

        # Fast path: a call with positional arguments only, to a function whose parameters
        # are all plain positional ones, binds by slicing and padding with the defaults.
        positional_kinds = (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        if all(p.kind in positional_kinds for p in parameters):
            self._fast_arity = len(parameters)
            self._fast_required = sum(p.default is inspect.Parameter.empty for p in parameters)
            self._defaults = tuple(p.default for p in parameters)
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

    def _select(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple([values[i] for i in self._kept])

    def _bind_slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        values = []
        for index in self._kept:
            parameter = self._parameters[index]
            value = arguments[parameter.name]
            if parameter.kind is parameter.VAR_KEYWORD:
                value = {
                    name: item
                    for name, item in value.items()
                    if name not in self._ignored_extra_keywords
                }
            values.append(value)
        return tuple(values)

    def kept_names(self) -> tuple[str, ...]:
        """The parameter names behind the key values, in order."""
        return tuple(self._parameters[index].name for index in self._kept)

    def parameter_of(self, position: int) -> str:
        """The name of the parameter behind the ``position``-th key value."""
        return self._parameters[self._kept[position]].name
