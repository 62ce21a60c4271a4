"""Binding: one key per call, however the arguments were spelled."""

from __future__ import annotations

from typing import Any

import pytest

from persistmemo import Store, memo


def test_positional_keyword_and_default_spellings_are_one_key(store: Store) -> None:
    @memo(store=store)
    def f(x: int, y: int = 1) -> int:
        return x + y

    keys = {f.key(1), f.key(x=1), f.key(1, 1), f.key(1, y=1), f.key(y=1, x=1)}
    assert len(keys) == 1
    assert f.key(1, 2) not in keys


def test_keyword_only_and_positional_only_parameters_bind(store: Store) -> None:
    @memo(store=store)
    def f(a: int, /, b: int, *, c: int = 3) -> int:
        return a + b + c

    assert f.key(1, 2) == f.key(1, b=2) == f.key(1, 2, c=3)
    assert f.key(1, 2, c=4) != f.key(1, 2)


def test_ignored_parameters_are_dropped_by_position_and_by_keyword(store: Store) -> None:
    @memo(store=store, ignore=["verbose"])
    def fetch(url: str, verbose: bool = False) -> str:
        return url

    assert fetch.key("u", True) == fetch.key("u", verbose=False) == fetch.key("u")
    assert fetch.key("u") != fetch.key("v")


def test_var_args_and_var_kwargs_are_part_of_the_key(store: Store) -> None:
    @memo(store=store)
    def f(*args: int, **kwargs: int) -> int:
        return sum(args) + sum(kwargs.values())

    assert f.key(1, 2) != f.key(1, 2, 3)
    assert f.key(a=1) != f.key(a=1, b=2)
    assert f.key(a=1, b=2) == f.key(b=2, a=1)
    assert f.key(1) != f.key(a=1)


def test_ignore_names_inside_var_kwargs(store: Store) -> None:
    @memo(store=store, ignore=["progress"])
    def f(x: int, **options: Any) -> int:
        return x

    assert f.key(1, progress=True) == f.key(1) == f.key(1, progress="bar")
    assert f.key(1, other=True) != f.key(1)


def test_ignore_of_an_unknown_parameter_is_a_type_error(store: Store) -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"no such parameter.*\['x'\]"):
        memo(store=store, ignore=["verbos"])(f)


def test_ignore_given_as_a_bare_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"ignore=\['verbose'\]"):
        memo(ignore="verbose")


def test_a_call_that_does_not_fit_the_signature_raises_like_the_function(store: Store) -> None:
    @memo(store=store)
    def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="missing a required argument"):
        f()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        f(1, 2)  # type: ignore[call-arg]


def test_key_function_decides_what_is_keyed(store: Store) -> None:
    calls = []

    @memo(store=store, key=lambda path, session=None: path.lower())
    def load(path: str, session: object = None) -> str:
        calls.append(path)
        return path.upper()

    assert load("A", session=object()) == "A"
    assert load("a", session=object()) == "A"
    assert calls == ["A"]


def test_key_and_ignore_together_are_refused() -> None:
    with pytest.raises(TypeError, match="not both"):
        memo(key=lambda x: x, ignore=["x"])
