"""Why encoding a value ran out of stack: it contains itself, or it is nested too deep.

Encoding recurses once per level of nesting and counts nothing: a RecursionError is diagnosed
here, after the fact, by walking the value without recursing. A value that contains itself,
or is nested deeper than ``MAX_NESTING`` levels, is refused with UnsupportedNesting; without
either, the caller's own stack was the deep one and its RecursionError stands.
"""

from __future__ import annotations

import sys

from persistmemo._keys.classes import (
    HOOK_NAME,
    encode_dataclass,
    encode_namedtuple,
    encode_with_hook,
)
from persistmemo._keys.encoders import ENCODERS, encoder_for
from persistmemo._keys.frames import encode_pandas_frame, encode_pandas_series
from persistmemo._keys.registry import RegisteredEncoder
from persistmemo._keys.subclasses import AS_BASE, SUBCLASS_ENCODERS
from persistmemo.errors import UnsupportedNesting

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_NESTING = 100
"""Nesting depth always keyed. A value nested deeper is keyed while Python's recursion limit
allows, and refused with UnsupportedNesting when encoding it runs out of stack."""


def nesting_fault(value: object) -> UnsupportedNesting | None:
    """Why encoding ``value`` recursed too deep: a value that contains itself, or one nested
    deeper than MAX_NESTING; None when neither (the caller's own stack was the deep one).

    An explicit stack of the containers on the current path, so the walk itself cannot
    recurse: a container met again on its own path is a cycle. Heights of containers
    already walked are remembered, so shared substructure is walked once.
    """
    heights: dict[int, int] = {}
    kept: list[object] = []  # ids stay valid while the objects live (hook results are new)
    root = _children(value)
    if root is None:
        return None
    path: list[list[Any]] = [[value, iter(root), 1]]
    on_path = {id(value)}
    kept.append(value)
    while path:
        frame = path[-1]
        for child in frame[1]:
            children = _children(child)
            if children is None:
                continue
            if id(child) in on_path:
                return UnsupportedNesting(type(child), " (it contains itself)")
            height = heights.get(id(child))
            if height is None and len(path) >= MAX_NESTING:
                return UnsupportedNesting(
                    type(child), f" (nested deeper than {MAX_NESTING} levels)"
                )
            if height is not None:
                if len(path) + height > MAX_NESTING:
                    return UnsupportedNesting(
                        type(child), f" (nested deeper than {MAX_NESTING} levels)"
                    )
                frame[2] = max(frame[2], height + 1)
                continue
            kept.append(child)
            on_path.add(id(child))
            path.append([child, iter(children), 1])
            break
        else:
            path.pop()
            on_path.discard(id(frame[0]))
            heights[id(frame[0])] = frame[2]
            if path:
                path[-1][2] = max(path[-1][2], frame[2] + 1)
    return None


def _children(value: Any) -> list[Any] | None:
    """What encoding ``value`` recurses into; None for a value whose encoding does not."""
    cls = type(value)
    if cls is list or cls is tuple or cls is set or cls is frozenset:
        return list(value)
    if cls is dict:
        return [*value.keys(), *value.values()]
    try:
        encoder = ENCODERS.get(cls) or encoder_for(cls)
        if encoder is encode_with_hook:
            return [getattr(value, HOOK_NAME)()]
        if isinstance(encoder, RegisteredEncoder):
            return [encoder.represent(value)]
        if encoder is encode_dataclass:
            fields = sys.modules["dataclasses"].fields(value)
            return [getattr(value, field.name) for field in fields]
        if encoder is encode_namedtuple:
            return list(value)
        if encoder is encode_pandas_frame or encoder is encode_pandas_series:
            # Only object columns recurse: their items are encoded one by one.
            columns = value.items() if encoder is encode_pandas_frame else [(None, value)]
            return [column.to_numpy().tolist() for _, column in columns if column.dtype == object]
        if encoder in SUBCLASS_ENCODERS:
            found: list[Any] = []
            for base in (list, tuple, set, frozenset):
                if isinstance(value, base):
                    found += AS_BASE[base](value)
            if isinstance(value, dict):
                found += [*dict.keys(value), *dict.values(value)]
            state = getattr(value, "__dict__", None)
            return [*found, state] if state else found
    except Exception:  # what encoding would have raised is not what is diagnosed here
        return None
    return None
