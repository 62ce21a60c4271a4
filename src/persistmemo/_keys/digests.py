"""Large buffers keyed by a BLAKE3 digest rather than by their bytes.

str, bytes and bytearray of ``LARGE_BUFFER`` and more, array buffers and frame columns are
keyed by a 256-bit BLAKE3 digest, computed on as many threads as the buffer's size is worth.
blake3 is imported when the first large value is keyed: small arguments never load it.
"""

from __future__ import annotations

from persistmemo._hashing import hashing_threads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LARGE_BUFFER = 64 * 1024
"""bytes, bytearray and str of at least this many bytes/characters are keyed by digest."""

DIGEST_SIZE = 32


def digest(buffer: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of a buffer keyed by digest (str and bytes of 64 KiB and more, arrays).

    BLAKE3 hashes a 100 MB array in a few milliseconds on all cores (BLAKE2b takes ~70 ms,
    joblib.hash ~120 ms); the digest is the same however many threads computed it.
    """
    import blake3  # only large arguments need it

    size = buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)
    return blake3.blake3(buffer, max_threads=hashing_threads(size)).digest(DIGEST_SIZE)


def new_hasher() -> Any:
    """A BLAKE3 hasher to feed a column's buffers into, one after another."""
    import blake3  # only frames and columns need it

    return blake3.blake3(max_threads=hashing_threads())
