"""typing's run-time helpers made without importing typing (the cold-start budget).

Modules on a re-run's path import typing's names under ``if TYPE_CHECKING:`` only
(docs/architecture.md#cold-start) and take from here the few that must exist at run time:
``cast``, ``Generic``, ``NamedTuple`` (a namedtuple with the class's other attributes) and
``Protocol`` (an ``isinstance`` that checks every declared member).
"""

from __future__ import annotations

import collections
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def cast(_type: object, value: object) -> Any:
    """typing.cast without typing: the value itself."""
    return value


class Generic:
    """typing.Generic without typing: ``Class["P", "R"]`` is a generic alias."""

    __class_getitem__ = classmethod(types.GenericAlias)  # type: ignore[var-annotated]


class _NamedTupleMeta(type):
    def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        fields = namespace.get("__annotations__", {})
        defaults = [namespace[field] for field in fields if field in namespace]
        make: Any = collections.namedtuple  # called with names known at run time only
        made = make(name, fields, defaults=defaults, module=namespace["__module__"])
        for attribute, value in namespace.items():
            if attribute not in fields and attribute not in ("__module__", "__annotations__"):
                setattr(made, attribute, value)
        return made


NamedTuple: Any = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})


class _ProtocolMeta(type):
    def __instancecheck__(cls, instance: object) -> bool:
        # A class deriving from a protocol declares no members: checked as any class.
        members = cls.__dict__.get("_protocol_members")
        return type.__instancecheck__(cls, instance) or (
            members is not None and all(hasattr(instance, name) for name in members)
        )


class Protocol(metaclass=_ProtocolMeta):
    """typing.Protocol without typing, checked at run time as ``@runtime_checkable``."""

    def __init_subclass__(cls) -> None:
        if Protocol in cls.__bases__:
            declared = vars(cls)
            cls._protocol_members = (  # type: ignore[attr-defined]
                *declared.get("__annotations__", ()),
                *(n for n, v in declared.items() if not n.startswith("__") or callable(v)),
            )


def runtime_checkable(protocol: type) -> type:
    """A stand-in ``Protocol`` is checked at run time already."""
    return protocol
