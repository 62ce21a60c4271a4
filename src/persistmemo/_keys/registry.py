"""Key functions for types you do not own: ``register_key`` and the built-in entries.

A registered function turns a value into a keyable value that stands for it. A type is
looked up once, when first met: your registrations first (by class or by ``"module.Name"``
along the class's MRO, so a base class covers its subclasses), then the built-in entries
(scikit-learn estimators, scipy.sparse matrices), found through ``sys.modules``: no library
is imported for them. A type's own ``__persistmemo_key__`` wins over both. The key bytes
name the entry (a built-in one with its version, so changing it is a format change) and the
class: docs/keys.md#types-you-do-not-own.
"""

from __future__ import annotations

import functools
import sys
import threading
import types

from blake3 import blake3

from persistmemo._keys.encoders import ENCODERS, FIXED, encode_item, has_exact_encoding
from persistmemo._keys.estimators import (
    ESTIMATOR_ENTRY,
    estimator_base,
    function_state,
    represent_estimator,
)
from persistmemo._keys.framing import KeyExtension, ext, pack
from persistmemo._keys.sparse import SPARSE_ENTRY, represent_sparse, sparse_label, sparse_types
from persistmemo._naming import qualified_name
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_by_type: dict[type, Callable[[Any], object]] = {}
_by_name: dict[str, Callable[[Any], object]] = {}
_lock = threading.Lock()


def register_key(cls: type | str, function: Callable[[Any], object] | None) -> None:
    """Key instances of ``cls`` (a class, or its ``"module.QualName"`` without importing it)
    by what ``function(value)`` returns: any value persistmemo can key.

    The registration is global to the process and covers subclasses; a type's own
    ``__persistmemo_key__`` still wins, and types persistmemo keys exactly (builtins, numpy
    arrays, frames) keep their encoding. ``function=None`` removes the registration. The key
    holds the class's name too, so two types answering the same value never share a key.

    >>> class Celsius:
    ...     def __init__(self, degrees): self.degrees = degrees
    >>> register_key(Celsius, lambda value: value.degrees)
    >>> from persistmemo._keys.canonical import encode
    >>> encode(Celsius(20.5)) == encode(Celsius(20.5)) != encode(Celsius(21))
    True
    >>> register_key(Celsius, None)
    """
    if function is not None and not callable(function):
        raise TypeError(f"register_key() takes a callable or None; got {function!r}")
    if isinstance(cls, str):
        if "." not in cls.strip("."):
            raise ValueError(f"register_key() takes a class or 'module.QualName'; got {cls!r}")
        table: dict[Any, Callable[[Any], object]] = _by_name
    elif not isinstance(cls, type):
        raise TypeError(f"register_key() takes a class or 'module.QualName'; got {cls!r}")
    elif function is not None and has_exact_encoding(cls):
        raise ValueError(
            f"register_key(): {qualified_name(cls)} has a key encoding of persistmemo's own, "
            "which a registration would not replace; register a subclass of your own, or "
            "pass key= to memo() for other keys"
        )
    else:
        table = _by_type
    with _lock:
        if function is None:
            table.pop(cls, None)
        else:
            table[cls] = function
        # Types met before chose their encoder without this registration: they choose again.
        for met in list(ENCODERS):
            if met not in FIXED:
                ENCODERS.pop(met, None)


class RegisteredEncoder:
    """The encoder of a type found in the registry: ext 31 of the entry, the class's label
    and the encoding of what the entry's function returns."""

    __slots__ = ("entry", "function", "head", "label")

    def __init__(
        self,
        function: Callable[[Any], object],
        entry: str | None,
        label: str,
        code: bytes | None = None,
    ) -> None:
        self.function = function
        self.entry = entry
        self.label = label
        # A registration of yours is keyed by its function's code too: editing the function
        # (or registering another) stops the keys it made being served.
        self.head = pack(entry) + pack(label) + (b"" if code is None else pack(code))

    def represent(self, value: object) -> object:
        """What the entry's function says ``value`` is keyed by."""
        try:
            return self.function(value)
        except (UnsupportedType, RecursionError):
            raise
        except Exception as error:
            raise UnsupportedType(
                type(value), f" ({self._whose()} raised {type(error).__name__}: {error})"
            ) from error

    def __call__(self, value: object) -> bytes:
        represented = self.represent(value)
        try:
            return ext(KeyExtension.REGISTERED, self.head + encode_item(represented))
        except UnsupportedType as error:
            raise UnsupportedType(
                type(value), f" ({self._whose()} returned a value that cannot be keyed: {error})"
            ) from error

    def _whose(self) -> str:
        if self.entry is not None:
            return f"persistmemo's built-in key of {self.entry}"
        name = getattr(self.function, "__qualname__", None) or repr(self.function)
        return f"its registered key function {name}()"


def registered_encoder(cls: type) -> RegisteredEncoder | None:
    """The encoder of ``cls`` from the registry, or None when no entry covers it."""
    function = _registered_function(cls)
    if function is not None:
        return RegisteredEncoder(function, None, qualified_name(cls), _code_digest(function))
    estimator = estimator_base()
    if estimator is not None and issubclass(cls, estimator):
        represent = functools.partial(represent_estimator, keyable=_keyable)
        return RegisteredEncoder(represent, ESTIMATOR_ENTRY, qualified_name(cls))
    if cls.__name__ == "_NoValueType" and cls.__module__ == "numpy._globals":
        # numpy's "argument not given" default (np.sum's keepdims=np._NoValue): one value.
        return RegisteredEncoder(_no_value, NO_VALUE_ENTRY, qualified_name(cls))
    sparse = sparse_types()
    if sparse and issubclass(cls, sparse):
        label = sparse_label(cls)
        if label is None:
            return None  # a subclass from outside scipy: refused by the rules after this
        return RegisteredEncoder(represent_sparse, SPARSE_ENTRY, label)
    return None


def _code_digest(function: Callable[[Any], object]) -> bytes:
    """A digest of a key function: its name and code (with defaults and captured values
    where they can be keyed), and what a bound method or a partial carries with it."""
    parts: list[object] = []
    target: Any = function
    if isinstance(target, types.MethodType):
        parts.append(_keyed_or_named(target.__self__))
        target = target.__func__
    while isinstance(target, functools.partial):
        parts.append([_keyed_or_named(target.args), _keyed_or_named(target.keywords)])
        target = target.func
    try:
        parts.append(encode_item(function_state(target)))
    except Exception:  # no name, uncodable defaults: its type, and its code if it has some
        code = getattr(target, "__code__", None)
        parts.append([qualified_name(type(target)), None if code is None else code.co_code])
        try:
            parts.append(_keyed_or_named(target.__reduce__()))  # attrgetter('x'): its args
        except Exception:
            parts.append(None)
    return blake3(encode_item(parts)).digest(16)


def _keyed_or_named(value: object) -> object:
    """``value`` where it can be keyed, else its type's name with its attributes where those
    can be (a bound method's object), else its type's name."""
    if _keyable(value):
        return value
    attributes = getattr(value, "__dict__", None)
    if type(attributes) is dict and _keyable(attributes):
        return [qualified_name(type(value)), attributes]
    return qualified_name(type(value))


NO_VALUE_ENTRY = "numpy.NoValue/1"


def _no_value(value: object) -> None:
    return None


def _keyable(value: object) -> bool:
    try:
        encode_item(value)
    except (UnsupportedType, RecursionError):  # a value that holds itself: no key
        return False
    return True


def _registered_function(cls: type) -> Callable[[Any], object] | None:
    if not (_by_type or _by_name):
        return None
    loaded = _loaded_names()
    for base in cls.__mro__:
        function = (
            _by_type.get(base)
            or loaded.get(base)
            or _by_name.get(f"{base.__module__}.{base.__qualname__}")
        )
        if function is not None:
            return function
    return None


def _loaded_names() -> dict[type, Callable[[Any], object]]:
    """The classes registered by name whose module is loaded: a name may be the public path
    (``sklearn.svm.SVC``) of a class defined elsewhere (``sklearn.svm._classes``)."""
    found = {}
    for name, function in list(_by_name.items()):
        cls = _loaded_class(name)
        if cls is not None:
            found[cls] = function
    return found


def _loaded_class(name: str) -> type | None:
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        target: object = sys.modules.get(".".join(parts[:split]))
        if target is None:
            continue
        for part in parts[split:]:
            # A module's own namespace only: a module's __getattr__ may import (scipy's does).
            names = vars(target) if isinstance(target, types.ModuleType) else None
            target = names.get(part) if names is not None else getattr(target, part, None)
        return target if isinstance(target, type) else None
    return None
