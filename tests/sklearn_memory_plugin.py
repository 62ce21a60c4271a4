"""A pytest plugin that runs scikit-learn's own tests with ``joblib.Memory`` replaced by
``persistmemo.Memory`` (tests/test_sklearn_own_memory_tests.py loads it with ``-p``)."""

from __future__ import annotations

from typing import Any

import joblib
import pytest

import persistmemo

_made: list[persistmemo.Memory] = []


class CountedMemory(persistmemo.Memory):
    """persistmemo.Memory, counted: the run reports how many stood in for joblib's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _made.append(self)


def pytest_configure(config: pytest.Config) -> None:
    # Tests and scikit-learn's check_memory both call joblib.Memory(...) through the module.
    joblib.Memory = CountedMemory


def pytest_terminal_summary(terminalreporter: Any) -> None:
    located = sum(memory.location is not None for memory in _made)
    hits = sum(
        function.memoized.cache_info().hits
        for memory in _made
        for function in memory._cached.values()
        if function.memoized is not None
    )
    terminalreporter.write_line(f"persistmemo.Memory stood in {located} times, {hits} hits")
