"""The canonical bytes of a value, and of a call's arguments: where key encoding starts.

Every supported value maps to exactly one msgpack document (the spec is ``docs/keys.md``):
equal values give equal bytes in every process whatever ``PYTHONHASHSEED`` or insertion
order, and values of different types give different bytes. Keys are never built from
``hash()``, ``repr()`` of arbitrary objects or pickle. Changing anything that changes these
bytes is a format change: bump ``KEY_FORMAT`` and the golden vectors in
``tests/golden_keys.json`` together.
"""

from __future__ import annotations

from persistmemo._deferred import load_before_fork
from persistmemo._keys.encoders import ENCODERS, encode_item, encoder_for, install
from persistmemo._keys.framing import array_header
from persistmemo._keys.standard_types import BUILTIN_ENCODERS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from persistmemo._keys.encoders import Encoder
    from persistmemo.errors import UnsupportedNesting


# dispatch.py, and through it every family of types past the builtins (arrays, frames,
# classes, registrations, estimators), is imported when a type outside the builtins is first
# met: a re-run that keys builtins never reads them (a seam of the cold-start budget,
# docs/architecture.md).
def _choose_encoder(cls: type) -> Encoder:
    from persistmemo._keys.dispatch import choose_encoder

    return choose_encoder(cls)


def _has_exact_encoding(cls: type) -> bool:
    from persistmemo._keys.dispatch import has_exact_encoding

    return has_exact_encoding(cls)


def nesting_fault(value: object) -> UnsupportedNesting | None:
    """nesting.py's diagnosis of a RecursionError, imported when one is met."""
    from persistmemo._keys.nesting import nesting_fault

    return nesting_fault(value)


# The table starts with the builtins, and dispatch chooses every other type's encoder: wired
# here, where encoding starts, since the table sits below every encoder and dispatch above.
install(BUILTIN_ENCODERS, _choose_encoder, _has_exact_encoding)


def _load_deferred() -> None:
    from persistmemo._keys import dispatch, nesting  # noqa: F401  (loaded, not named)


load_before_fork(_load_deferred)

# ENCODERS.get bound once: CPython compiles a method call on an imported name to an attribute
# load, which would build a new bound method on every call.
_known_encoder = ENCODERS.get


def encode(value: object) -> bytes:
    """Return the canonical bytes of ``value``.

    Raises UnsupportedType for a value (or a value inside it) that has no key encoding, and
    UnsupportedNesting (a kind of UnsupportedType) for one that contains itself or is nested
    deeper than ``MAX_NESTING`` levels.

    >>> encode(1) != encode(1.0) != encode(True) != encode("1")
    True
    >>> encode({"a": 1, "b": 2}) == encode({"b": 2, "a": 1})
    True
    """
    try:
        encoder = _known_encoder(type(value))
        if encoder is None:
            encoder = encoder_for(type(value))
        return encoder(value)
    except RecursionError:
        # Diagnosed here, once, rather than by counting depth on every call: the common
        # path pays nothing (a try block costs nothing until it catches). Without a fault
        # in the value, the caller's own stack was exhausted: its RecursionError stands.
        fault = nesting_fault(value)
        if fault is None:
            raise
        raise fault from None


def encode_arguments(values: Sequence[object]) -> bytes:
    """Canonical bytes of a call's bound argument values (a msgpack array of them)."""
    try:
        if len(values) == 1:  # the commonest call, spared a list and a join
            value = values[0]
            encoder = _known_encoder(type(value)) or encoder_for(type(value))
            return b"\x91" + encoder(value)
        return array_header(len(values)) + b"".join([encode_item(value) for value in values])
    except RecursionError:
        fault = nesting_fault(values)
        if fault is None:
            raise
        raise fault from None


def encode_each(calls: Sequence[Sequence[object]]) -> list[bytes]:
    """``encode_arguments`` of each call's bound values (f.map's keys), in one loop."""
    known = _known_encoder
    encoded = []
    try:
        for values in calls:
            if len(values) == 1:  # encode_arguments' commonest call, inlined
                value = values[0]
                encoder = known(type(value)) or encoder_for(type(value))
                encoded.append(b"\x91" + encoder(value))
            else:
                encoded.append(encode_arguments(values))
    except RecursionError:
        encode_arguments(calls[len(encoded)])  # its diagnosis, for the call that raised
        raise
    return encoded
