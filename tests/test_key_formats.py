"""Key formats: the current one is short, and entries of the older one stay manageable.

``pm3`` keys end in a 128-bit digest (22 characters of URL-safe base64); ``pm1`` and ``pm2``
entries (hex digests) written before are never read again, but are still counted, listed and
removed.
"""

from __future__ import annotations

import base64

from persistmemo import Store, memo
from persistmemo._codec.encoding import encode_value
from persistmemo._keys.layout import KEY_FORMAT
from persistmemo.stores.base import MISSING


def test_keys_are_pm3_with_a_128_bit_digest_in_base64(store: Store) -> None:
    @memo(store=store, name="app.square")
    def square(x: int) -> int:
        return x * x

    word, identity, version, digest = square.key(3).split(":")
    assert (word, identity) == (KEY_FORMAT, "app.square") == ("pm3", "app.square")
    assert len(digest) == 22
    assert len(base64.urlsafe_b64decode(digest + "==")) == 16
    assert len(version) == 16


def _old_entry(store: Store, function: str, index: int) -> str:
    key = f"pm1:{function}:0123456789abcdef:{index:064x}"
    assert store.write(key, encode_value(index), ttl=None, tag=function)
    return key


def test_old_format_entries_are_counted_listed_and_cleared(store: Store) -> None:
    @memo(store=store, name="app.square")
    def square(x: int) -> int:
        return x * x

    square(2)
    old = [_old_entry(store, "app.square", index) for index in range(3)]
    other = _old_entry(store, "app.other", 9)
    assert len(store) == 5
    listed = {entry.key for entry in store.entries()}
    assert set(old) | {other} <= listed
    assert store.functions()["app.square"].entries == 4
    assert square.cache_clear() == 4  # the old entries of this function go with the new one
    assert {entry.key for entry in store.entries()} == {other}
    assert store.clear() == 1
    assert len(store) == 0


def test_prune_removes_entries_of_older_formats_which_are_never_read_again(
    store: Store,
) -> None:
    @memo(store=store, name="app.square")
    def square(x: int) -> int:
        return x * x

    square(2)
    for index in range(2):
        _old_entry(store, "app.square", index)
    older = f"pm2:app.square:{square.version}:" + "0" * 32  # the current version, pm2 key
    assert store.write(older, encode_value(4), ttl=None, tag="app.square")
    assert store.prune() == 3
    assert [entry.key for entry in store.entries()] == [square.key(2)]
    assert square(2) == 4
    assert square.cache_info().hits == 1


def test_results_are_stored_without_a_tag_and_cleared_by_their_keys(store: Store) -> None:
    import sqlite3

    @memo(store=store, name="app.load")
    def load(x: int) -> int:
        return x

    @memo(store=store, name="app.load:v2")  # a name that extends the other past a ':'
    def load_v2(x: int) -> int:
        return x

    for x in range(3):
        load(x)
        load_v2(x)
    with sqlite3.connect(store.directory / "cache.db") as connection:
        tags = connection.execute(
            "SELECT DISTINCT tag FROM Cache WHERE key LIKE 'pm3:%'"
        ).fetchall()
    assert tags == [(None,)]
    assert load.cache_clear() == 3
    assert sorted(entry.function for entry in store.entries()) == ["app.load:v2"] * 3


def test_cache_clear_removes_expired_entries_too(store: Store) -> None:
    import time

    @memo(store=store, name="app.brief", ttl=0.05)
    def brief(x: int) -> int:
        return x

    for x in range(3):
        brief(x)
    time.sleep(0.1)
    assert len(store) == 3  # expired, not yet removed
    assert brief.cache_clear() == 3
    assert len(store) == 0


def test_a_function_named_like_bookkeeping_clears_only_its_own_entries(store: Store) -> None:
    @memo(store=store, name="pm-file")
    def odd(x: int) -> int:
        return x

    store.write("pm-file:fingerprint", encode_value(1), ttl=None, tag="pm-file")
    odd(1)
    assert odd.cache_clear() == 1
    assert store.read("pm-file:fingerprint") is not MISSING
