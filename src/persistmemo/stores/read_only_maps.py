"""Read-only maps of value files that hold no file descriptor (``memo(mmap=True)``'s hits).

``mmap.mmap`` duplicates the descriptor it is given and keeps the copy until the map is
closed: every live mapped result would hold one, and about a thousand of them exhaust the
default limit (``ulimit -n`` 1024), after which every open fails and the store is bypassed.
A map does not need its descriptor once made (POSIX: closing it leaves the mapping), so:

- on Python 3.13+, ``mmap.mmap(..., trackfd=False)`` keeps none;
- before, on POSIX CPython, an anonymous read-only ``mmap.mmap(-1, size, ...)`` (which
  has no descriptor) reserves the addresses, and libc's ``mmap`` (through ctypes) puts the
  file's pages in their place (``MAP_FIXED``), read-only and shared, as ``ACCESS_READ``
  maps a file. The ``mmap.mmap`` object is then what it would have been: it exports
  read-only buffers, refuses writes, and unmaps the pages when the last view of it is gone.
  Only the mapping call (and reading the reserved address) goes through ctypes: a mapped
  hit of a 100 MB array took 0.175 ms instead of 0.155 with ``mmap.mmap`` of the file (two
  system calls instead of one, and ctypes'), and reading the array through the map takes
  the same time;
- elsewhere (Windows, no ctypes, a libc without ``mmap``), ``mmap.mmap`` as before.

The caller closes its descriptor right after: the map stays valid whatever happens to the
file's name (a rewrite makes a new file; removing it leaves the pages in place).
"""

from __future__ import annotations

import mmap
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_TRACKFD = sys.version_info >= (3, 13)
# The function mapping a file over a reserved range, made at the first map: [] not yet,
# [None] where it cannot be (then mmap.mmap keeps its descriptor, as before).
_overlay: list[Callable[[mmap.mmap, int, int, int], int] | None] = []
_HUGE_PAGE = 2 << 20


def map_read_only(descriptor: int, size: int) -> memoryview:
    """The first ``size`` (> 0) bytes of the open file ``descriptor`` as a read-only view of
    a shared map that holds no descriptor where the platform allows it (above)."""
    if _TRACKFD:
        options = {"trackfd": False}  # a keyword Python 3.13 added
        return memoryview(mmap.mmap(descriptor, size, access=mmap.ACCESS_READ, **options))
    if not _overlay:
        _overlay.append(_make_overlay())
    overlay = _overlay[0]
    if overlay is None:
        return memoryview(mmap.mmap(descriptor, size, access=mmap.ACCESS_READ))
    # A large file is mapped at a huge-page boundary, as the kernel places a map of it (its
    # page cache is then mapped in 2 MB pages: reading 100 MB through the map took 8 ms so,
    # 13 ms at another address): the reserve is that much longer, its ends left as zeros.
    spare = _HUGE_PAGE if size >= _HUGE_PAGE else 0
    # Private, not shared: a shared anonymous map is a shmem file, which costs ~25 us to
    # make and replace. PROT_READ alone makes the object ACCESS_READ (read-only buffers).
    reserved = mmap.mmap(-1, size + spare, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    try:
        start = overlay(reserved, descriptor, size, spare)
    except BaseException:
        reserved.close()  # zeros, never to be read as the file's bytes
        raise
    view = memoryview(reserved)
    return view[start : start + size] if spare else view


def _make_overlay() -> Callable[[mmap.mmap, int, int, int], int] | None:
    """The function that maps a file over an anonymous map's addresses, or None."""
    if os.name != "posix" or not hasattr(mmap, "MAP_SHARED"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        map_pages = libc.mmap
        get_buffer = ctypes.pythonapi.PyObject_GetBuffer
        release_buffer = ctypes.pythonapi.PyBuffer_Release
    except (ImportError, OSError, AttributeError):
        return None
    fixed = _map_fixed()
    if fixed is None:
        return None

    class Buffer(ctypes.Structure):
        # Py_buffer's first fields, and room for the rest (its full size is 80 bytes on
        # 64-bit builds): only ``buf`` is read, and the buffer is released at once.
        _fields_ = (("buf", ctypes.c_void_p), ("rest", ctypes.c_char * 256))

    get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(Buffer), ctypes.c_int)
    get_buffer.restype = ctypes.c_int
    release_buffer.argtypes = (ctypes.POINTER(Buffer),)
    release_buffer.restype = None
    # The plain symbol takes a C long for off_t on LP64 and on 32-bit systems alike (only
    # mmap64 takes 64 bits there); the offset is always 0.
    map_pages.restype = ctypes.c_void_p
    map_pages.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    failed = ctypes.c_void_p(-1).value
    flags = mmap.MAP_SHARED | fixed

    def overlay(reserved: mmap.mmap, descriptor: int, size: int, spare: int) -> int:
        """Map the file's ``size`` bytes over ``reserved``, at its first multiple of
        ``spare`` (when not 0); their offset in it."""
        view = Buffer()
        get_buffer(reserved, ctypes.byref(view), 0)  # PyBUF_SIMPLE; raises if refused
        try:
            start = view.buf
        finally:
            release_buffer(ctypes.byref(view))
        address = -(-start // spare) * spare if spare else start
        placed = map_pages(address, size, mmap.PROT_READ, flags, descriptor, 0)
        if placed != address:
            code = ctypes.get_errno() if placed == failed else 0
            raise OSError(code, f"mapping a value file failed: {os.strerror(code)}")
        return int(address - start)

    return overlay


def _map_fixed() -> int | None:
    """MAP_FIXED, which the mmap module names only from Python 3.13: 0x10 on Linux (but on
    Alpha and PA-RISC), macOS and the BSDs; None where it is not known."""
    if sys.platform.startswith(("darwin", "freebsd", "openbsd", "netbsd")):
        return 0x10
    if sys.platform.startswith("linux"):
        import platform

        machine = platform.machine().lower()
        return None if machine.startswith(("alpha", "parisc")) else 0x10
    return None
