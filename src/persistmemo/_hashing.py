"""The hashes persistmemo uses, as cheaply loaded and run as they can be.

``blake2b`` is taken from hashlib's builtin module, without OpenSSL; ``hashing_threads``
says how many threads a BLAKE3 hash may use (one in a forked child).
"""

from __future__ import annotations

import os

# hashlib's own blake2b, from its builtin module: importing hashlib loads OpenSSL's
# _hashlib, which nothing on the hit path uses (docs/architecture.md#cold-start).
try:
    from _blake2 import blake2b
except ImportError:  # an interpreter without the builtin module: hashlib's
    from hashlib import blake2b

__all__ = ["MULTITHREADED_FROM", "blake2b", "hashing_threads"]

_forked = [False]

if hasattr(os, "register_at_fork"):  # no fork on Windows
    os.register_at_fork(after_in_child=lambda: _forked.__setitem__(0, True))

MULTITHREADED_FROM = 4 << 20
"""Inputs smaller than this are hashed on one thread: starting the others costs more."""


def hashing_threads(size: int | None = None) -> int:
    """``max_threads`` for a BLAKE3 hasher of ``size`` bytes (None: unknown, maybe large).

    All cores, except in a forked child. blake3 hashes large inputs on a thread pool of its
    own (Rust's rayon), and a fork copies only the forking thread: in a child forked after
    the parent hashed anything large (a ``multiprocessing`` pool started by fork,
    ``f.map(workers=N)``) the pool's threads are gone while its state says they exist, and
    the first multithreaded hash would wait for them forever. A spawned process, which
    starts afresh, uses every core.
    """
    if _forked[0] or (size is not None and size < MULTITHREADED_FROM):
        return 1
    import blake3  # the caller is about to hash with it

    return int(blake3.blake3.AUTO)
