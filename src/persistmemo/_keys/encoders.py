"""The table of encoders by type, and the function every encoder recurses through.

``encode_item`` looks a value's exact type up in ``ENCODERS``; a type met for the first time
is given its encoder by the chooser (``dispatch.choose_encoder``), which is remembered. The
chooser sits above every encoder, and every container encoder recurses through here, so the
chooser is handed down once, by ``install`` (canonical.py), rather than imported: the
layers point one way, and the hit path pays one dict lookup per value.
"""

from __future__ import annotations

from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypeAlias

    Encoder: TypeAlias = Callable[[Any], bytes]

ENCODERS: dict[type, Encoder] = {}
"""The encoder of each type met so far, by exact type."""


def _not_installed(cls: type) -> Encoder:
    raise RuntimeError("persistmemo._keys.canonical installs the encoders: import it first")


_choose: Callable[[type], Encoder] = _not_installed
_exact: Callable[[type], bool] = lambda cls: False  # noqa: E731
FIXED: set[type] = set()
"""The types of the starting table, never chosen again."""


def install(
    known: Iterable[tuple[type, Encoder]],
    choose: Callable[[type], Encoder],
    exact: Callable[[type], bool],
) -> None:
    """Start the table with the ``known`` encoders; ``choose`` picks every other type's, and
    ``exact`` tells the types it encodes exactly, before any registration."""
    global _choose, _exact
    ENCODERS.update(known)
    FIXED.update(cls for cls, _ in ENCODERS.items())
    _choose = choose
    _exact = exact


def has_exact_encoding(cls: type) -> bool:
    """Whether ``cls`` is keyed by an encoding of persistmemo's own, which no registration
    replaces (builtins, numpy arrays, datetimes, frames)."""
    return cls in FIXED or _exact(cls)


def encode_item(value: object) -> bytes:
    """The canonical bytes of a value inside another (``encode`` without the RecursionError
    diagnosis, which is made once, at the top)."""
    encoder = ENCODERS.get(type(value))
    if encoder is None:
        encoder = encoder_for(type(value))
    return encoder(value)


def encoder_for(cls: type) -> Encoder:
    """Choose (and remember) the encoder of a type that is not in the table yet."""
    encoder = _choose(cls)
    ENCODERS[cls] = encoder
    return encoder


def concat(values: Iterable[object]) -> bytes:
    """Each element's encoding, back to back: msgpack documents delimit themselves."""
    return b"".join([encode_item(value) for value in values])


def refusal(cls: type, reason: str) -> Encoder:
    """An encoder that refuses every value of ``cls``, saying why."""

    def refuse(value: object) -> bytes:
        raise UnsupportedType(cls, reason)

    return refuse


def raise_unsupported(value: object) -> bytes:
    """The encoder of a type with no key encoding."""
    raise UnsupportedType(type(value))
