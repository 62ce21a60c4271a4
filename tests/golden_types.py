"""Types whose key encodings the golden vectors hold fixed (their module name is in the keys)."""

from __future__ import annotations

import dataclasses
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
