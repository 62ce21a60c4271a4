"""Types whose key encodings the golden vectors hold fixed (their module name is in the keys)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import NamedTuple


class Color(enum.Enum):
    RED = 1
    GREEN = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Pair(NamedTuple):
    left: int
    right: str


class Keyed:
    """Keyed through the hook on its `name` alone; `cache` is not part of its identity."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cache: dict[str, int] = {}

    def __persistmemo_key__(self) -> str:
        return self.name


class Celsius(float):
    """A plain Python subclass of a supported type: keyed by name, base value and __dict__."""


class Tagged(str):
    def __new__(cls, text: str, tag: str) -> Tagged:
        made = super().__new__(cls, text)
        made.tag = tag
        return made


class Stamp(datetime.datetime):
    """A plain Python datetime subclass (its __dict__ is keyed; it has no C-level state)."""


class Labelled(datetime.date):
    """A slotted subclass: its slot values are keyed too."""

    __slots__ = ("label",)

    def __new__(cls, year: int, month: int, day: int, label: str) -> Labelled:
        made = super().__new__(cls, year, month, day)
        made.label = label
        return made
