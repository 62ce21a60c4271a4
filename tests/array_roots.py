"""What keeps an array's memory alive, for the tests of bounded results and their children."""

from __future__ import annotations

from typing import Any


def memory_root(array: Any) -> Any:
    """The object at the end of an array's ``.base`` chain: what keeps its memory alive."""
    found = array
    while True:
        if isinstance(found, memoryview):
            found = found.obj
        elif getattr(found, "base", None) is not None:
            found = found.base
        else:
            return found
