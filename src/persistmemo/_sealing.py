"""Sealed entries: every stored value carries a keyed tag bound to its own key.

``Sealer`` frames an encoded value with its compute seconds, the time it was stored and a
16-byte MAC made with the user's secret over the entry's key and those bytes, and checks it
before anything is decoded; a value with an area (out_of_band.py) has a head tag and an area
tag. The frames: docs/architecture.md#sealed-frames; what they defend: docs/security.md.
"""

from __future__ import annotations

import os
import struct
import time

# What hmac.compare_digest is (a constant-time comparison), without hmac, which imports
# hashlib and so OpenSSL.
from _operator import _compare_digest as compare_digest
from collections.abc import Callable

from persistmemo._codec.out_of_band import FramedValue, OutOfBand, aligned
from persistmemo._hashing import blake2b, hashing_threads
from persistmemo.errors import CorruptEntry

# typing costs a cold start ~8 ms (it imports re): names for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, overload

FRAME_VERSION = b"\x01"
FRAME_OUT_OF_BAND = b"\x02"
"""A value with an area, as persistmemo wrote them before frame 3: its lengths are trusted
only once the head tag, over the whole document, verifies. Read, never written."""
FRAME_AREA = b"\x03"
"""A value with an area: frame 2's header, then a nonce and a header tag over the fixed
header, checked before its lengths size any read or buffer."""
AREA_FRAMES = frozenset((FRAME_OUT_OF_BAND[0], FRAME_AREA[0]))
TAG_SIZE = 16
NONCE_SIZE = 16
_METADATA = struct.Struct(">dd")
HEADER_SIZE = 1 + TAG_SIZE + _METADATA.size
_LENGTHS = struct.Struct(">IQ")
OUT_OF_BAND_HEADER_SIZE = 1 + 2 * TAG_SIZE + _METADATA.size + _LENGTHS.size
AREA_HEADER_SIZE = OUT_OF_BAND_HEADER_SIZE + NONCE_SIZE + TAG_SIZE
"""Frame 3's header: frame 2's, the nonce its area's one-time key is derived from, and the
header tag."""
HEADER_READ = 64
"""Bytes to read from an entry to find its metadata, whatever its frame."""

FAST_AREA_FROM = 1 << 20
"""Areas of at least this many bytes are tagged with Poly1305: about twice as fast as one
core's BLAKE3, so that checking runs within the time of reading the bytes. Smaller areas
keep keyed BLAKE3, which needs no import of ``cryptography``. The choice follows from the
area's length, read from a header whose tag has verified; both are full-strength MACs."""


WRITTEN_AREA_FRAME = FRAME_AREA
"""The frame new values with an area are written in (tests write frame 2, as before)."""


def area_header_size(frame: int) -> int | None:
    """The header size of an entry with an area whose first byte is ``frame``, else None."""
    if frame == FRAME_OUT_OF_BAND[0]:
        return OUT_OF_BAND_HEADER_SIZE
    if frame == FRAME_AREA[0]:
        return AREA_HEADER_SIZE
    return None


LARGE_BODY = 64 * 1024
"""Bodies of at least this many bytes are tagged with keyed BLAKE3, which is several times
faster on large inputs; smaller ones with keyed BLAKE2b, which is faster on small ones. The
choice follows from the length alone, both are full-strength MACs, so no stored byte can
pick a weaker check."""


class Sealer:
    """Seals and opens entries with one secret; what does not depend on the entry is
    prepared once, so that checking a small hit costs one hasher copy and two updates."""

    __slots__ = ("_area_key", "_blake2b", "_blake3_key", "_one_time_key_root", "fingerprint")

    def __init__(self, secret: bytes) -> None:
        self._blake2b = blake2b(key=secret[:64], digest_size=TAG_SIZE)
        self._blake3_key = blake2b(secret, digest_size=32, person=b"pm-seal-b3").digest()
        self._area_key = blake2b(secret, digest_size=32, person=b"pm-seal-area").digest()
        self._one_time_key_root = blake2b(secret, digest_size=32, person=b"pm-seal-poly").digest()
        # Which secret this is, told without revealing it (a keyed digest of a constant):
        # a store records the fingerprints of the secrets that sealed it, so that `check`
        # tells "sealed with another secret" from "damaged".
        self.fingerprint = blake2b(
            b"which secret", key=secret[:64], digest_size=8, person=b"pm-secret-id"
        ).hexdigest()

    if TYPE_CHECKING:  # the variants, for the type checker: typing.overload is not imported

        @overload
        def seal(
            self, key: str, encoded: bytes, seconds: float = 0.0, stored_at: float | None = None
        ) -> bytes: ...

        @overload
        def seal(
            self,
            key: str,
            encoded: bytes | OutOfBand,
            seconds: float = 0.0,
            stored_at: float | None = None,
        ) -> bytes | SealedParts: ...

    def seal(
        self,
        key: str,
        encoded: bytes | OutOfBand,
        seconds: float = 0.0,
        stored_at: float | None = None,
    ) -> bytes | SealedParts:
        """Frame ``encoded`` (a codec output that took ``seconds`` to compute) for ``key``:
        bytes, or for a value with an area the parts to write one after the other."""
        metadata = _METADATA.pack(seconds, time.time() if stored_at is None else stored_at)
        if type(encoded) is OutOfBand:
            return self._seal_out_of_band(key, encoded, metadata)
        body = metadata + encoded  # type: ignore[operator]
        return FRAME_VERSION + self._tag(key, body) + body

    def _seal_out_of_band(self, key: str, encoded: OutOfBand, metadata: bytes) -> SealedParts:
        document = encoded.document
        area_parts: list[bytes | memoryview] = []
        position = 0
        for offset, view in encoded.segments:
            if offset > position:
                area_parts.append(bytes(offset - position))
            area_parts.append(view)
            position = offset + view.nbytes
        if encoded.area_size > position:
            area_parts.append(bytes(encoded.area_size - position))
        lengths = _LENGTHS.pack(len(document), encoded.area_size)
        frame = WRITTEN_AREA_FRAME
        header_size = area_header_size(frame[0]) or 0

        def header() -> bytes:
            # A fresh nonce at each call: a write retried (a locked database) seals the
            # arrays again, and they may have changed; a Poly1305 key tags one area only.
            nonce = os.urandom(NONCE_SIZE) if frame == FRAME_AREA else b""
            area_mac = self.area_mac(key, frame[0], nonce, encoded.area_size)
            for part in area_parts:
                area_mac.update(part)
            fixed = area_mac.digest() + metadata + lengths + nonce
            if frame == FRAME_AREA:
                fixed += self._header_tag(key, fixed)
            tag = self._head_tag(key, frame, fixed, document, padding)
            return bytes(frame + tag + fixed)

        start = aligned(header_size + len(document))
        padding = bytes(start - header_size - len(document))
        return SealedParts(
            [document, padding, *area_parts], start + encoded.area_size, header, header_size
        )

    def _header_tag(self, key: str, fixed: bytes | memoryview) -> bytes:
        """Frame 3's header tag: over the frame byte, the entry's key and the fixed header
        (area tag, times, lengths, nonce)."""
        hasher = self._blake2b.copy()
        hasher.update(FRAME_AREA + b"header" + _key_prefix(key))
        hasher.update(fixed)
        return hasher.digest()

    def check_header(self, key: str, head: bytes | memoryview) -> int:
        """Check an entry's fixed header (``head``: at least its first AREA_HEADER_SIZE
        bytes, frame 3) before its lengths are used; the header's size. Frame 2 has no
        header tag: its lengths are checked with the head tag, over the whole document.
        Raises CorruptEntry when the frame is not one with an area, or the tag fails."""
        header_size = area_header_size(head[0]) if len(head) else None
        if header_size is None or len(head) < header_size:
            raise CorruptEntry(f"entry {key} is not a sealed persistmemo value")
        if head[0] == FRAME_AREA[0]:
            fixed = head[_BODY : header_size - TAG_SIZE]
            if not compare_digest(
                head[header_size - TAG_SIZE : header_size], self._header_tag(key, fixed)
            ):
                raise CorruptEntry(_FAILED.format(key))
        return header_size

    def _head_tag(
        self,
        key: str,
        frame: bytes,
        head_body: bytes | memoryview,
        document: bytes | memoryview,
        padding: bytes | memoryview,
    ) -> bytes:
        # The document is small unless a pickle holds large in-band data (a column of
        # Python strings): keyed BLAKE3 then, as for large frame 1 bodies.
        prefix = frame + _key_prefix(key)
        if len(document) >= LARGE_BODY:
            import blake3

            threads = hashing_threads(len(document))
            large = blake3.blake3(prefix, key=self._blake3_key, max_threads=threads)
            large.update(head_body)
            large.update(document)
            large.update(padding)
            return bytes(large.digest(TAG_SIZE))
        hasher = self._blake2b.copy()
        hasher.update(prefix)
        hasher.update(head_body)
        hasher.update(document)
        hasher.update(padding)  # every byte of the file is under a tag
        return hasher.digest()

    def _unseal_out_of_band(
        self,
        key: str,
        stored: bytes | memoryview,
        mapped: bool,
        area_check: AreaCheck | None,
    ) -> FramedValue:
        view = memoryview(stored)
        header_size = self.check_header(key, view)
        document_size, area_size = _LENGTHS.unpack_from(view, _OUT_OF_BAND_LENGTHS)
        document_end = header_size + document_size
        start = aligned(document_end)
        if len(view) != start + area_size:
            raise CorruptEntry(f"entry {key} is truncated or has bytes past its end")
        self.check_head(key, view[:start])
        document = view[header_size:document_end]
        area = view[start:]
        if not mapped:
            if area_check is not None and area_check.hashed == (start, area_size):
                area_tag = area_check.digest()  # hashed while it was read
            else:
                nonce = _nonce_of(view)
                area_mac = self.area_mac(key, view[0], nonce, area_size)
                area_mac.update(area)
                area_tag = area_mac.digest()
            if not compare_digest(view[_BODY : _BODY + TAG_SIZE], area_tag):
                raise CorruptEntry(_FAILED.format(key))
        return FramedValue(document, area, mapped=mapped)

    def check_head(self, key: str, head: memoryview) -> None:
        """Check the tag over an entry's header and document (``head``: the entry up to its
        area); raises CorruptEntry when it fails. A store reading a large entry checks it
        before reading the area, so that a planted file costs no read of its bulk."""
        header_size = self.check_header(key, head)
        document_size, _ = _LENGTHS.unpack_from(head, _OUT_OF_BAND_LENGTHS)
        document_end = header_size + document_size
        head_body = head[_BODY:header_size]
        document = head[header_size:document_end]
        padding = head[document_end : aligned(document_end)]
        frame = bytes(head[:1])
        if not compare_digest(
            head[1:_BODY], self._head_tag(key, frame, head_body, document, padding)
        ):
            raise CorruptEntry(_FAILED.format(key))

    def area_mac(self, key: str, frame: int, nonce: bytes | memoryview, size: int) -> Any:
        """The MAC of ``key``'s area of ``size`` bytes for an entry of ``frame`` (with
        ``nonce``, frame 3), fed the area's bytes next with ``update``; ``digest()`` gives
        its tag. ``size`` must come from a checked header (frame 3) or be checked after."""
        if frame == FRAME_AREA[0] and size >= FAST_AREA_FROM:
            one_time_key = blake2b(
                _key_prefix(key) + bytes(nonce), key=self._one_time_key_root, digest_size=32
            ).digest()
            return _Poly1305(one_time_key)
        import blake3  # only values with an area need it

        prefix = _key_prefix(key) + bytes(nonce)
        return _Blake3Area(
            blake3.blake3(prefix, key=self._area_key, max_threads=hashing_threads(size))
        )

    def unseal(
        self,
        key: str,
        stored: bytes | memoryview,
        *,
        mapped: bool = False,
        area_check: AreaCheck | None = None,
    ) -> bytes | memoryview | FramedValue:
        """The encoded value inside ``stored``; raises CorruptEntry when a tag fails.

        ``mapped``: ``stored`` is a read-only map of the entry's file; a value with an area
        is checked up to its area's tag, not over the area (docs/architecture.md#sealed-frames).
        ``area_check``: the area was hashed while it was read into ``stored`` (the same
        buffer: what was hashed is what is decoded).
        """
        size = len(stored)
        if size <= HEADER_SIZE or stored[0] != FRAME_VERSION_BYTE:
            if size > 0 and stored[0] in AREA_FRAMES:
                return self._unseal_out_of_band(key, stored, mapped, area_check)
            raise CorruptEntry(f"entry {key} is not a sealed persistmemo value")
        if size < LARGE_BODY:
            # Small entries (every hit of a small value): _tag's BLAKE2b inlined; slicing
            # copies a few bytes, cheaper than memoryview objects.
            hasher = self._blake2b.copy()
            key_bytes = key.encode("utf-8", "surrogatepass")
            hasher.update(len(key_bytes).to_bytes(4, "big") + key_bytes)
            hasher.update(stored[_BODY:])
            if not compare_digest(stored[1:_BODY], hasher.digest()):
                raise CorruptEntry(_FAILED.format(key))
            return stored[HEADER_SIZE:]
        view = memoryview(stored)
        if not compare_digest(view[1:_BODY], self._tag(key, view[_BODY:])):
            raise CorruptEntry(_FAILED.format(key))
        return view[HEADER_SIZE:]

    def unseal_many(
        self, entries: list[tuple[str, bytes]], prefix: str = ""
    ) -> tuple[dict[str, bytes | memoryview | FramedValue], list[CorruptEntry]]:
        """``unseal`` of many entries read as bytes (f.map's hits), each checked as
        ``unseal`` checks it: the encoded values of those whose tags verify, by key, and the
        errors of the others. ``prefix`` goes before each key in its tag (a backend's
        ``seal_prefix``). A small entry's check is ``unseal``'s, in one loop."""
        copy = self._blake2b.copy
        found: dict[str, bytes | memoryview | FramedValue] = {}
        failed: list[CorruptEntry] = []
        for key, stored in entries:
            size = len(stored)
            if HEADER_SIZE < size < LARGE_BODY and stored[0] == FRAME_VERSION_BYTE:
                hasher = copy()
                key_bytes = (prefix + key).encode("utf-8", "surrogatepass")
                hasher.update(len(key_bytes).to_bytes(4, "big") + key_bytes)
                hasher.update(stored[_BODY:])
                if compare_digest(stored[1:_BODY], hasher.digest()):
                    found[key] = stored[HEADER_SIZE:]
                else:
                    failed.append(CorruptEntry(_FAILED.format(prefix + key)))
                continue
            try:
                found[key] = self.unseal(prefix + key, stored)
            except CorruptEntry as error:
                failed.append(error)
        return found, failed

    def _tag(self, key: str, body: bytes | memoryview) -> bytes:
        prefix = _key_prefix(key)
        if len(body) >= LARGE_BODY:
            import blake3  # only large entries need it

            large = blake3.blake3(
                prefix, key=self._blake3_key, max_threads=hashing_threads(len(body))
            )
            large.update(body)
            return large.digest(TAG_SIZE)
        hasher = self._blake2b.copy()
        hasher.update(prefix)
        hasher.update(body)
        return hasher.digest()


_BODY = 1 + TAG_SIZE
_OUT_OF_BAND_LENGTHS = 1 + 2 * TAG_SIZE + _METADATA.size
FRAME_VERSION_BYTE = FRAME_VERSION[0]
_FAILED = "entry {} fails its integrity check (changed, truncated or moved)"


def _nonce_of(head: bytes | memoryview) -> bytes | memoryview:
    """The nonce in an entry's header (frame 3; frame 2 has none)."""
    if head[0] != FRAME_AREA[0]:
        return b""
    return head[OUT_OF_BAND_HEADER_SIZE : OUT_OF_BAND_HEADER_SIZE + NONCE_SIZE]


def _key_prefix(key: str) -> bytes:
    key_bytes = key.encode("utf-8", "surrogatepass")
    return len(key_bytes).to_bytes(4, "big") + key_bytes


class AreaCheck:
    """Hashes an entry's area while a store reads it, so that the hashing of one part runs
    while the next is read; ``Sealer.unseal`` then compares the digest.

    The reader calls ``begin`` with the entry's first bytes (where the area starts, or None
    when the entry has no area), then ``update`` with the area's bytes in order, as they
    land in the buffer that will be decoded.
    """

    __slots__ = ("_hasher", "_key", "_sealer", "hashed")

    def __init__(self, sealer: Sealer, key: str) -> None:
        self._sealer = sealer
        self._key = key
        self._hasher: Any = None
        self.hashed: tuple[int, int] | None = None

    def begin(self, head: bytes | memoryview, size: int) -> int | None:
        """Where the area starts in an entry of ``size`` bytes beginning with ``head`` (None
        when it has no area); raises CorruptEntry when its lengths do not add up to ``size``."""
        if not len(head) or head[0] not in AREA_FRAMES:
            return None
        header_size = self._sealer.check_header(self._key, head)
        document_size, area_size = _LENGTHS.unpack_from(head, _OUT_OF_BAND_LENGTHS)
        start = aligned(header_size + document_size)
        if start + area_size != size:
            # Not a whole entry: refused before its bulk is read (a planted row may name a
            # huge sparse file).
            raise CorruptEntry(f"entry {self._key} is truncated or has bytes past its end")
        nonce = _nonce_of(head)
        self._hasher = self._sealer.area_mac(self._key, head[0], nonce, area_size)
        self.hashed = (start, area_size)
        return start

    def check_head(self, head: memoryview) -> None:
        """Check the entry's header and document (everything before the area) before the
        area is read: raises CorruptEntry when their tag fails."""
        self._sealer.check_head(self._key, head)

    def update(self, part: memoryview) -> None:
        """Hash the next bytes of the area."""
        self._hasher.update(part)

    def digest(self) -> bytes:
        """The area's tag."""
        return bytes(self._hasher.digest())


class _Blake3Area:
    """The area MAC of frame 2, and of frame 3 under FAST_AREA_FROM: keyed BLAKE3, cut to
    TAG_SIZE."""

    __slots__ = ("_hasher", "update")

    def __init__(self, hasher: Any) -> None:
        self._hasher = hasher
        self.update = hasher.update

    def digest(self) -> bytes:
        return bytes(self._hasher.digest(TAG_SIZE))


class _Poly1305:
    """Frame 3's area MAC: Poly1305 (``cryptography``, imported with the first large area)
    under a key used for this one entry."""

    __slots__ = ("_mac", "update")

    def __init__(self, one_time_key: bytes) -> None:
        from cryptography.hazmat.primitives.poly1305 import Poly1305

        self._mac = Poly1305(one_time_key)
        self.update = self._mac.update

    def digest(self) -> bytes:
        return bytes(self._mac.finalize())


class SealedParts:
    """A sealed entry as the buffers to write one after the other (nothing joined): a
    header of ``header_size`` bytes, made by ``header()`` (which hashes the area: a store
    may run it while it writes the ``body`` parts, and write the header last), then
    ``body``."""

    __slots__ = ("body", "header", "header_size", "size")

    def __init__(
        self,
        body: list[bytes | memoryview],
        size: int,
        header: Callable[[], bytes],
        header_size: int,
    ) -> None:
        self.body = body
        self.size = size
        self.header = header
        self.header_size = header_size

    def __len__(self) -> int:
        return self.size

    def joined(self) -> bytes:
        """The entry as one bytes object (a store that cannot write parts)."""
        return b"".join([self.header(), *self.body])


def seal(secret: bytes, key: str, encoded: bytes, seconds: float = 0.0) -> bytes:
    """``Sealer(secret).seal(...)``, for one-off use."""
    return Sealer(secret).seal(key, encoded, seconds)


def unseal(secret: bytes, key: str, stored: bytes) -> bytes | memoryview | FramedValue:
    """``Sealer(secret).unseal(...)``, for one-off use."""
    return Sealer(secret).unseal(key, stored)


def entry_metadata(stored: bytes) -> tuple[float, float] | None:
    """``(compute seconds, stored at)`` from a sealed entry's header (not verified), or None
    (the first HEADER_READ bytes of the entry are enough)."""
    if stored[:1] == FRAME_VERSION and len(stored) >= HEADER_SIZE:
        seconds, stored_at = _METADATA.unpack_from(stored, 1 + TAG_SIZE)
    elif stored[:1] and stored[0] in AREA_FRAMES and len(stored) >= OUT_OF_BAND_HEADER_SIZE:
        seconds, stored_at = _METADATA.unpack_from(stored, 1 + 2 * TAG_SIZE)
    else:
        return None
    return float(seconds), float(stored_at)


def compute_seconds(stored: bytes) -> float | None:
    """The compute seconds recorded in a sealed entry's header (not verified), or None."""
    metadata = entry_metadata(stored)
    return None if metadata is None else metadata[0]
