"""A planted value file costs a hit a small read, never its bulk: its header is checked
before anything is sized by it, on the single and the bulk (``f.map``) read paths alike."""

from __future__ import annotations

import os
import sqlite3
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persistmemo import PersistmemoWarning, Store, _sealing, memo
from persistmemo._sealing import FRAME_OUT_OF_BAND, OUT_OF_BAND_HEADER_SIZE

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts the bytes read in /proc/self/io"
)

HUGE = 1 << 30  # a sparse file: no disk used, but a GiB to read
LENGTHS_AT = OUT_OF_BAND_HEADER_SIZE - 12  # the document's and the area's, in frames 2 and 3


def bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def stored_large(store: Store) -> tuple[Any, list[int], Path]:
    calls: list[int] = []

    @memo(store=store)
    def noise(seed: int) -> np.ndarray:
        calls.append(seed)
        return np.random.default_rng(seed).random(300_000)  # 2.4 MB: an area, Poly1305

    noise(1)
    with sqlite3.connect(store.directory / "cache.db") as connection:
        ((filename,),) = connection.execute(
            "SELECT filename FROM Cache WHERE key = ?", (noise.key(1),)
        ).fetchall()
    return noise, calls, store.directory / filename


def plant(store: Store, path: Path, head: bytes, size: int) -> None:
    """Replace ``path`` with a sparse file of ``size`` bytes starting with ``head``, and make
    its row agree (a co-writer of a team store can do both)."""
    path.unlink()
    with open(path, "wb") as planted:
        planted.write(head)
        planted.truncate(size)
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute(
            "UPDATE Cache SET size = ? WHERE filename = ?",
            (size, str(path.relative_to(store.directory))),
        )


def original_head(path: Path) -> bytearray:
    return bytearray(path.read_bytes()[:4096])


def junk(path: Path) -> bytes:
    return b"\x00" * 4096


def frame_3_with_a_huge_document(path: Path) -> bytes:
    head = original_head(path)
    struct.pack_into(">I", head, LENGTHS_AT, 0xFFFF0000)  # the document's length
    return bytes(head)


def frame_2_with_a_huge_document(path: Path) -> bytes:
    head = original_head(path)
    head[0] = FRAME_OUT_OF_BAND[0]
    struct.pack_into(">IQ", head, LENGTHS_AT, HUGE - 4096, 0)
    return bytes(head)


PLANTS: dict[str, Callable[[Path], bytes]] = {
    "junk": junk,
    "frame 3, a huge document": frame_3_with_a_huge_document,
    "frame 2, a huge document": frame_2_with_a_huge_document,
}


@pytest.mark.parametrize("bulk", [False, True], ids=["single hit", "f.map"])
@pytest.mark.parametrize("planted", list(PLANTS))
def test_a_planted_huge_file_costs_a_small_read(store: Store, planted: str, bulk: bool) -> None:
    noise, calls, path = stored_large(store)
    plant(store, path, PLANTS[planted](path), HUGE)
    before = bytes_read()
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        result = noise.map([1])[0] if bulk else noise(1)
    assert bytes_read() - before < 64 << 20  # not the planted GiB
    assert np.array_equal(result, np.random.default_rng(1).random(300_000))
    assert calls == [1, 1]


def test_a_frame_3_header_is_checked_before_its_lengths_are_used(store: Store) -> None:
    noise, calls, path = stored_large(store)
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, LENGTHS_AT, 1 << 20)  # another document length
    path.write_bytes(bytes(data))
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        noise(1)
    assert calls == [1, 1]


def test_each_call_of_a_header_draws_a_fresh_nonce() -> None:
    # A write retried on a locked database seals the parts again: never under the same key.
    from persistmemo._codec.encoding import encode_result

    parts = _sealing.Sealer(b"k" * 32).seal(
        "pm2:f:v:00", encode_result(np.ones(300_000), out_of_band_from=0)
    )
    first, second = parts.header(), parts.header()  # type: ignore[union-attr]
    nonce = slice(OUT_OF_BAND_HEADER_SIZE, OUT_OF_BAND_HEADER_SIZE + 16)
    assert first[nonce] != second[nonce]


def test_legacy_frame_2_entries_with_a_small_document_stay_readable(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sealing, "WRITTEN_AREA_FRAME", FRAME_OUT_OF_BAND)
    noise, calls, path = stored_large(store)
    monkeypatch.undo()
    assert path.read_bytes()[:1] == FRAME_OUT_OF_BAND
    before = os.stat(path).st_size
    assert np.array_equal(noise(1), np.random.default_rng(1).random(300_000))
    assert calls == [1]
    assert before == os.stat(path).st_size
