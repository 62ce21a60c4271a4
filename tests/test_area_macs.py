"""Large areas are checked with Poly1305 under a key drawn for each entry; small ones and
entries written before keep keyed BLAKE3. Either way, no changed byte is ever served."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persistmemo import PersistmemoWarning, Store, _sealing, memo
from persistmemo._sealing import (
    AREA_HEADER_SIZE,
    FAST_AREA_FROM,
    FRAME_AREA,
    FRAME_OUT_OF_BAND,
    OUT_OF_BAND_HEADER_SIZE,
    Sealer,
)
from persistmemo.errors import CorruptEntry

LARGE = FAST_AREA_FROM // 8 + 1000  # float64s: an area just over the threshold


def value_files(store: Store) -> list[Path]:
    return sorted(Path(store.directory).rglob("*.val"))


def large_function(store: Store) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @memo(store=store)
    def noise(seed: int) -> np.ndarray:
        calls.append(seed)
        return np.random.default_rng(seed).random(LARGE)

    return noise, calls


def test_a_large_area_is_written_with_frame_3_and_read_back_exactly(store: Store) -> None:
    noise, calls = large_function(store)
    first = noise(1)
    (path,) = value_files(store)
    assert path.read_bytes()[:1] == FRAME_AREA
    assert np.array_equal(noise(1), first)
    assert calls == [1]


def test_a_small_area_keeps_blake3_and_needs_no_cryptography(tmp_path: Path) -> None:
    code = f"""
import sys
import numpy as np
from persistmemo import Store, memo
small = memo(store=Store({str(tmp_path / "s")!r}))(lambda n: np.arange(n, dtype=np.float64))
small(20_000)  # 160 KB: an area, under 1 MB
assert np.array_equal(small(20_000), np.arange(20_000.0))
print("cryptography" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    "where",
    ["area start", "area end", "nonce", "area tag", "frame byte", "lengths", "header tag"],
)
def test_any_changed_byte_of_a_frame_3_entry_is_a_miss(store: Store, where: str) -> None:
    noise, calls = large_function(store)
    expected = noise(2)
    (path,) = value_files(store)
    data = bytearray(path.read_bytes())
    position = {
        "area start": len(data) - LARGE * 8,
        "area end": len(data) - 1,
        "nonce": OUT_OF_BAND_HEADER_SIZE + 3,
        "area tag": 1 + 16 + 5,
        "frame byte": 0,
        "lengths": 1 + 16 + 16 + 16 + 2,
        "header tag": AREA_HEADER_SIZE - 1,
    }[where]
    data[position] ^= 0x01  # the frame byte becomes 2: frame 2's layout, its tag fails
    path.write_bytes(bytes(data))
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        assert np.array_equal(noise(2), expected)
    assert calls == [2, 2]
    assert np.array_equal(noise(2), expected)  # rewritten: a clean hit
    assert calls == [2, 2]


def test_each_write_draws_its_own_nonce_and_one_time_key(store: Store) -> None:
    sealer = Sealer(b"k" * 32)
    array = np.random.default_rng(3).random(LARGE)
    from persistmemo._codec.encoding import encode_result

    encoded = encode_result(array, out_of_band_from=0)
    headers = [sealer.seal("pm1:tests.f:v:00", encoded).header() for _ in range(2)]  # type: ignore[union-attr]
    nonces = {h[OUT_OF_BAND_HEADER_SIZE : OUT_OF_BAND_HEADER_SIZE + 16] for h in headers}
    area_tags = {h[17:33] for h in headers}
    assert len(nonces) == 2  # the same bytes, sealed twice: two keys, two tags
    assert len(area_tags) == 2


def test_a_frame_3_entry_does_not_open_under_another_key_or_secret(store: Store) -> None:
    from persistmemo._codec.encoding import encode_result

    sealer = Sealer(b"k" * 32)
    parts = sealer.seal("pm1:a:v:00", encode_result(np.ones(LARGE), out_of_band_from=0))
    stored = parts.joined()  # type: ignore[union-attr]
    assert sealer.unseal("pm1:a:v:00", stored) is not None
    with pytest.raises(CorruptEntry):
        sealer.unseal("pm1:b:v:00", stored)
    with pytest.raises(CorruptEntry):
        Sealer(b"j" * 32).unseal("pm1:a:v:00", stored)


def test_large_entries_written_with_frame_2_stay_readable(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    noise, calls = large_function(store)
    # Written as an older persistmemo wrote every area: keyed BLAKE3, frame 2.
    monkeypatch.setattr(_sealing, "WRITTEN_AREA_FRAME", FRAME_OUT_OF_BAND)
    expected = noise(4)
    (path,) = value_files(store)
    assert path.read_bytes()[:1] == FRAME_OUT_OF_BAND
    monkeypatch.undo()
    assert np.array_equal(noise(4), expected)
    assert calls == [4]  # a hit, not a recomputation
