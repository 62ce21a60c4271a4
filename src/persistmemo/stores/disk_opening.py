"""Opening the disk store, where it lives, and what happens when it cannot be used.

The entry operations are ``Store``'s (stores/disk.py); ``StoreLifetime`` holds its lifetime:
the directory and its permissions, the secret, the SQLite reader and diskcache's Cache
(opened for the first write only), bounded waits, fault reports and forks. The rules:
docs/options.md#the-default-store, docs/security.md#who-may-write-a-store and
docs/guarantees.md#a-fault-never-breaks-the-call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable

from persistmemo import _environment as environment
from persistmemo._faults import FaultReporter
from persistmemo._sealing import Sealer
from persistmemo._secret import SECRET_FILE_NAME, untrusted_reason, user_secret
from persistmemo.errors import SecretUnavailable
from persistmemo.stores.base import SECRET_PREFIX
from persistmemo.stores.entry_reader import EntryReader
from persistmemo.stores.schema import DBNAME

# typing costs a cold start ~8 ms (it imports re): names for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Literal

DEFAULT_TIMEOUT = 5.0
"""Seconds an operation (or the opening) waits for a locked database before giving up."""

DEFAULT_LEASE = 10.0
"""Seconds a computing caller's claim on a key lasts unless renewed (see locking.py)."""

REOPEN_AFTER = 5.0
BYPASS_AFTER_TIMEOUT = 5.0

# What store operations may raise. diskcache's Timeout joins when the engine is first
# imported (a store opening): no diskcache call can raise before that.
IO_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
TIMEOUT: type[BaseException] = TimeoutError


def load_engine() -> types.ModuleType:
    """stores/engine.py, with diskcache, imported when the store is first written (or
    checked): a process that only hits reads with SQL alone (a seam of the cold-start budget,
    docs/architecture.md)."""
    from persistmemo.stores import engine

    return engine


def default_directory() -> tuple[Path, str]:
    """Where the default store lives, and why: ``(path, reason)``."""
    from pathlib import Path

    directory, reason = default_location()
    return Path(directory), reason


def default_location() -> tuple[str, str]:
    """``default_directory()`` with the path as a str (user-expanded, maybe relative).

    What the store itself uses: pathlib costs a cold start ~5-10 ms (it imports
    urllib.parse, ipaddress, fnmatch), and a script that only hits needs none of it.
    """
    configured = environment.directory()
    if configured:
        return configured, f"${environment.DIRECTORY}"
    found = user_directory("XDG_CACHE_HOME", ".cache")
    if found is None:
        import platformdirs  # other platforms, and unusual homes: platformdirs decides

        found = platformdirs.user_cache_dir("persistmemo", appauthor=False)
    return found, "platform default"


def user_directory(variable: str, fallback: str) -> str | None:
    """persistmemo's directory under the XDG base directory ``$variable`` (else
    ``~/fallback``) on Linux, as platformdirs names it; None where platformdirs must decide
    (other platforms, Android, a relative ``$variable`` or ``$HOME``).

    platformdirs costs ~10 ms to import (it imports tempfile, shutil, random): a script run
    again and again does not pay it for two paths that the XDG rules give directly.
    """
    if sys.platform != "linux" or hasattr(sys, "getandroidapilevel"):
        return None
    if os.environ.get("ANDROID_DATA") == "/data" and os.environ.get("ANDROID_ROOT") == "/system":
        return None
    base = os.environ.get(variable, "")
    if not base:
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):
            return None  # no $HOME, or a relative one: platformdirs' fallbacks apply
        base = os.path.expanduser(f"~/{fallback}")
    elif not os.path.isabs(base):
        return None  # platformdirs versions disagree about a relative $XDG_* value
    return os.path.join(base, "persistmemo")


def absolute_path(directory: str | os.PathLike[str]) -> str:
    """``directory`` user-expanded and made absolute (against the working directory of now),
    as a str: see ``default_location``."""
    return os.path.abspath(os.path.expanduser(os.fspath(directory)))


class StoreLifetime:
    """The disk store's state from opening to closing, and its faults.

    ``Store`` (stores/disk.py) sets the options in its ``__init__`` and adds the entry
    operations; everything here is about reaching the database and reporting faults.
    """

    # Directories are str inside (see default_location); ``directory`` is the public Path.
    _requested: str | None
    _resolved: tuple[str, str] | None
    shared: bool
    strict: bool
    timeout: float
    lease: float
    _given_secret: bytes | None
    _settings: dict[str, Any]
    _faults: FaultReporter
    _fork_lock: threading.RLock

    def _reset_state(self) -> None:
        self._cache: Any = None  # the diskcache Cache, once open
        self._engine: Any = None  # persistmemo.stores.engine, imported by the opening
        self._reader: EntryReader | None = None
        self._secret = b""
        self._sealer = Sealer(b"")
        self._pickle_trusted = False
        self.pickle_allowed = False
        self._opening: threading.Thread | None = None
        self._read_only = False
        self._foreign = False  # a directory others can write, not opened as shared
        self._others_write = False  # others can write the directory (shared or foreign)
        self._planted: str | None = None  # a database file someone else put there
        self.moved_aside: Path | None = None  # where a garbage cache.db went, if it did
        self._open_lock = threading.Lock()
        self._reopen_at = 0.0
        self._read_only_cause = ""
        self._bypass_until = 0.0
        self._broken = False

    # --- where ---------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The store's directory (for the default store, resolved on first use)."""
        from pathlib import Path  # made when asked for: the store itself works with a str

        return Path(self._location()[0])

    @property
    def _directory(self) -> str:
        """``directory`` as a str: what the store opens and reads with."""
        return self._location()[0]

    @property
    def location_reason(self) -> str:
        """Why the store lives where it does: ``argument``, ``$PERSISTMEMO_DIR`` or default."""
        return self._location()[1]

    def _location(self) -> tuple[str, str]:
        if self._resolved is None:
            if self._requested is not None:
                self._resolved = (self._requested, "argument")
            else:
                path, reason = default_location()
                self._resolved = (absolute_path(path), reason)
                self._faults = FaultReporter(self._resolved[0])
        return self._resolved

    # --- faults --------------------------------------------------------------------------

    def _may_map(self, mapped: bool) -> bool:
        """Whether a value may be returned as a map of its file: not where others can write
        the store, since a map's bytes are checked when written, not at each hit (a
        co-writer could choose them, or truncate the file and kill the reader). There the
        arrays are read and checked like any hit, with one warning."""
        if mapped and self._others_write:
            self._faults.report(
                "mapped results",
                f"{self._directory} can be written by others: memo(mmap=True) results are read "
                "and checked whole instead of mapped",
            )
            return False
        return mapped

    def report_fault(self, kind: str, error: BaseException) -> None:
        """Warn once per kind of fault; the caller carries on without the store."""
        self._faults.report(kind, f"{type(error).__name__}: {error}")

    def _io_fault(self, kind: str, error: BaseException) -> None:
        named = self._fault_words(kind, error)
        self._faults.report(*named)

    def _fault_words(self, kind: str, error: BaseException) -> tuple[str, str]:
        """The kind and message of a fault of the database; a corrupt one is bypassed for
        the rest of the process, a locked one for a while."""
        if _out_of_descriptors(error):
            # SQLite says "unable to open database file" (or "locked"): name the cause.
            return "too many open files", (
                f"{type(error).__name__}: {error}; the process is out of file descriptors "
                "(raise `ulimit -n`, or close files): calls run without the store meanwhile"
            )
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(
            error, sqlite3.OperationalError
        ):
            # Malformed pages: nothing this process reads from it can be relied on.
            self._broken = True
            return "corrupt database", (
                f"{error}; the store is bypassed for the rest of this process "
                "(run `persistmemo check`, or delete the store directory)"
            )
        if isinstance(error, TIMEOUT) or "locked" in str(error):
            self._bypass_until = time.monotonic() + BYPASS_AFTER_TIMEOUT
            kind = "database locked"
        return _fault_cause(error) or kind, f"{type(error).__name__}: {error}"

    # --- lifetime ------------------------------------------------------------------------

    def _ready_reader(self) -> EntryReader | None:
        self._await(self._reader_ready, self._open)
        return None if self._broken else self._reader

    def _reader_ready(self) -> bool:
        return self._reader is not None

    def _writer_ready(self) -> bool:
        return self._cache is not None or self._read_only

    def _writable_cache(self) -> Any:
        if self._reader is None:
            self._await(self._reader_ready, self._open)
        if self._broken or (self._bypass_until and time.monotonic() < self._bypass_until):
            return None
        if self._foreign:
            return None  # reported when opened: others could plant or replay entries here
        if self._cache is None and self._reader is not None and not self._read_only:
            self._await(self._writer_ready, self._open_writer)
        return self._cache

    def _await(self, ready: Callable[[], bool], opener: Callable[[], None]) -> None:
        """Run ``opener`` in a thread unless ``ready()``, waiting at most ``timeout``.

        diskcache retries a locked database for 60 s while opening: a caller waits no longer
        than an operation would, and the opening finishes in the background. An existing
        database that answers at once is opened in the calling thread instead: the thread
        (~1 ms of a cold start) is needed only when diskcache has to open it.
        """
        deadline = time.monotonic() + self.timeout
        with self._open_lock:
            if ready() or self._broken:
                return
            if self._bypass_until and time.monotonic() < self._bypass_until:
                return  # the last wait for an opening timed out: do not wait on every call
            opening = self._opening
            if opening is None:
                if time.monotonic() < self._reopen_at:
                    return
                if opener == self._open and self._open_in_place():
                    return
                opening = self._opening = threading.Thread(
                    target=self._run_opening, args=(opener,), name="persistmemo-open", daemon=True
                )
                opening.start()
        # What the attempt in place took counts against the same timeout.
        opening.join(max(0.0, deadline - time.monotonic()))
        if opening.is_alive():
            self._bypass_until = time.monotonic() + BYPASS_AFTER_TIMEOUT
            self._faults.report(
                "database locked",
                f"opening took longer than {self.timeout:g} s; calls run without the store "
                "until it opens",
            )

    def _open_in_place(self) -> bool:
        """Open the reader of an existing database in this thread; False when it needs the
        full opening (no database yet, a failed probe, anything unusual), which runs in a
        thread and reports what it meets."""
        try:
            if not os.path.exists(os.path.join(self._directory, DBNAME)):
                return False
            self._open_reader()
        except Exception:  # the opening in a thread meets it again and reports it
            return False
        return self._reader is not None

    def _run_opening(self, opener: Callable[[], None]) -> None:
        try:
            opener()
        except Exception as error:  # anything diskcache or SQLite raise, on any planted state
            self._reopen_at = time.monotonic() + REOPEN_AFTER
            self._faults.report(
                "too many open files" if _out_of_descriptors(error) else "cannot open",
                f"{type(error).__name__}: {error}; calls run without the store, which is "
                f"tried again in {REOPEN_AFTER:g} s",
            )
        finally:
            self._opening = None

    def _open(self) -> None:
        """Make the store readable: directory, secret, and a reader.

        An existing database that answers a query is read at once, and diskcache (an import
        and a schema check: ~10 ms) opens only for the first write, so a process that only
        hits starts faster. Anything else (no database yet, garbage, a read-only mount, a
        lock) goes through diskcache's opening, which handles each case.
        """
        failure = self._open_reader()
        if self._reader is not None:
            return
        directory = self._directory
        if self._foreign or self._planted is not None:
            # Nothing may be written here, and nothing can be read yet: typically its
            # write-ahead log's index is missing until the owner opens the store. Tried again.
            self._reopen_at = time.monotonic() + REOPEN_AFTER
            if failure is not None:
                self._faults.report(
                    "read-only store",
                    f"{directory} cannot be read yet ({failure}; it opens once its owner has "
                    f"it open): calls run without the store, which is tried again in "
                    f"{REOPEN_AFTER:g} s",
                )
            return
        self._open_writer()
        if self._reader is None and self._cache is not None:
            self._reader = EntryReader(
                directory,
                timeout=self.timeout,
                keep_rows=not self._others_write,
            )
        elif self._reader is None and self._read_only:
            self._reader = self._read_only_reader(directory)

    def _open_reader(self) -> str | None:
        """Directory, secret, and the reader of an existing database that answers a query;
        returns why the database did not answer (None: no database, or it did)."""
        directory = self._directory
        self._make_directory(directory)
        problem = untrusted_reason(directory)
        self._foreign = problem is not None and not self.shared
        self._others_write = problem is not None
        if self.shared and not self._foreign:
            stranger = strangers_directory(directory)
            if stranger is not None:
                self._foreign = True  # read (every entry is sealed), never written
                self._faults.report(
                    "shared store",
                    f"{directory} {stranger}: whoever made it could read every result and "
                    "plant entries, so nothing is stored here. Set up a team directory: "
                    "`mkdir DIR && chgrp TEAM DIR && chmod 2770 DIR`, made by a member",
                )
        self._secret, self._pickle_trusted = self._load_secret(directory, problem)
        self._sealer = Sealer(self._secret)
        # Whether pickle-fallback values may be written and read here: a plain
        # attribute, as the hit path reads it on every call.
        self.pickle_allowed = self._pickle_trusted and not self.strict
        self._planted = None
        if self._others_write:
            # Someone else could have put a link, a FIFO or a hard link to another file of
            # yours where the database goes: SQLite would follow it, or block on it.
            self._planted = planted_database_file(directory)
            if self._planted is not None:
                self._reopen_at = time.monotonic() + REOPEN_AFTER
                self._faults.report(
                    "planted database file",
                    f"{self._planted}: not a file the store made, so it is neither read nor "
                    "written (calls run without the store); remove it to use the store",
                )
                return None
        if not os.path.exists(os.path.join(directory, DBNAME)):
            return None  # no database yet: the untrusted directory was reported already
        reader = EntryReader(
            directory,
            timeout=self.timeout,
            mode="ro" if self._foreign else "normal",
            keep_rows=not self._others_write,
        )
        try:
            reader.probe()
        except sqlite3.Error as error:
            reader.close()
            return str(error)
        self._reader = reader
        return None

    def _make_directory(self, directory: str) -> None:
        if os.path.isdir(directory):
            return
        # The mode applies to the store's own directory; parents get the default, as mkdir -p
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if self.shared:
            # The group shares it: group members write, new files keep the group. Changed
            # through a descriptor opened without following a link: in a directory others
            # can write, the new store could be swapped for a link to a file of yours.
            flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
            descriptor = os.open(directory, flags)
            try:
                if os.fstat(descriptor).st_uid == os.getuid():
                    os.fchmod(descriptor, 0o2770)
            finally:
                os.close(descriptor)

    def _read_only_reader(self, directory: str) -> EntryReader | None:
        """A reader for a store this process cannot write, or None (reported) when it cannot
        be read without risking stale values."""
        modes: list[Literal["ro", "immutable"]] = ["ro"]
        wal = os.path.join(directory, f"{DBNAME}-wal")
        if _file_system_read_only(directory) and not os.path.exists(wal):
            # Nothing can write through this mount; the reader still checks on every read
            # that the database did not change through another (entry_reader.py).
            modes.append("immutable")
        error: sqlite3.Error | None = None
        for mode in modes:
            reader = EntryReader(directory, timeout=self.timeout, mode=mode)
            try:
                reader.probe()
            except sqlite3.Error as failure:
                reader.close()
                error = failure
                continue
            self._faults.report(
                "read-only store",
                f"{self._read_only_cause}; existing entries are served, new results are not saved",
            )
            return reader
        self._read_only = False
        self._reopen_at = time.monotonic() + REOPEN_AFTER
        self._faults.report(
            "read-only store",
            f"{self._read_only_cause}, and its write-ahead log cannot be read ({error}: "
            f"{DBNAME}-shm is missing and cannot be created): calls run without the store "
            f"rather than risk stale results; it is tried again in {REOPEN_AFTER:g} s "
            "(it opens once its owner has it open)",
        )
        return None

    def _open_writer(self) -> None:
        """Open diskcache's Cache (creating the database); a read-only store stays read-only,
        and so does one whose Settings table someone else changed (diskcache acts on it)."""
        directory = self.directory  # a Path, as the engine takes: diskcache is imported anyway
        engine = load_engine()

        tampered = engine.settings_problem(directory, self._settings, self.timeout)
        if tampered is not None:
            self._read_only = True
            self._faults.report(
                "tampered settings",
                f"{directory / DBNAME} has {tampered} in its Settings table, which persistmemo "
                "never writes: someone else changed it. Entries are still read, new results "
                "are not saved; `persistmemo check --fix` resets the settings (or delete the "
                "store directory)",
            )
            return
        if self.shared:
            share_database_files(str(directory))  # ours, made 0644 by an older release
        try:
            self._cache = self._open_cache(directory)
        except sqlite3.OperationalError as error:
            if not _is_read_only(directory, error):
                raise
            self._read_only = True
            self._read_only_cause = str(error)  # reported with how it is read, if it is
            if self._reader is not None:  # read already: say now that nothing is stored
                self._faults.report(
                    "read-only store",
                    f"{self._read_only_cause}; existing entries are served, new results are "
                    "not saved"
                    + (
                        " (in a team store, the member who owns cache.db and its -wal/-shm "
                        "files can make them group-writable by opening it shared once)"
                        if self.shared
                        else ""
                    ),
                )
            return
        if self.shared:
            share_database_files(str(directory))
        if self._sealer is not None:
            # Which secrets sealed this store, for `check` (see integrity.Sealer.fingerprint):
            # one read per process, and a write the first time a secret writes here.
            name = SECRET_PREFIX + self._sealer.fingerprint
            with contextlib.suppress(Exception):  # bookkeeping: the store works without it
                if self._cache.get(name) is None:
                    self._cache.add(name, 1)

    def _open_cache(self, directory: Path) -> Any:
        global IO_ERRORS, TIMEOUT
        engine = load_engine()

        IO_ERRORS, TIMEOUT = (sqlite3.Error, OSError, engine.Timeout), engine.Timeout
        self._engine = engine

        settings = self._settings
        if self._others_write:
            # Another member truncating a mapped database would crash this process.
            settings = {**settings, "sqlite_mmap_size": 0}

        def open_cache() -> Any:
            return engine.open_cache(
                directory, timeout=self.timeout, fork_lock=self._fork_lock, settings=settings
            )

        try:
            return open_cache()
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):
                raise
            aside = directory / f"{DBNAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                source = directory / f"{DBNAME}{suffix}"
                if source.exists():
                    source.rename(f"{aside}{suffix}")
            self.moved_aside = aside
            self._faults.report(
                "corrupt database",
                f"{error}; moved it aside to {aside.name} and started an empty store",
            )
            return open_cache()

    def _load_secret(self, directory: str, problem: str | None) -> tuple[bytes, bool]:
        """The sealing secret, and whether pickle-fallback values may be trusted here."""
        explicit = self._given_secret is not None or environment.secret() is not None
        if self._given_secret is not None:
            secret = self._given_secret
        else:
            try:
                secret = user_secret(_secret_path())
            except SecretUnavailable as error:
                # Entries sealed with a one-off secret are private to this process: misses
                # for everyone else, never a wrong value.
                self._faults.report("secret key unavailable", str(error))
                return os.urandom(32), False
        if problem and self.shared:
            if not explicit:
                self._faults.report(
                    "shared store",
                    f"{directory} {problem}; pickle-fallback results are neither stored nor "
                    "loaded: give every user the same secret "
                    f"(${environment.SECRET} or secret=) to allow them",
                )
            return secret, explicit
        if problem:
            self._faults.report(
                "untrusted store directory",
                f"{directory} {problem}, so others could plant or replay entries: results are "
                "read (each is sealed with your secret) but not stored here, and pickle-fallback "
                f"results are refused. If it is shared on purpose, open it as "
                f"Store({str(directory)!r}, shared=True); otherwise use a directory of your own",
            )
        return secret, problem is None

    def close(self) -> None:
        """Close this thread's database connections; the store reopens when used again."""
        if self._cache is not None:
            self._cache.close()
        if self._reader is not None:
            self._reader.close()

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held a lock or been opening at the fork: the
        # child starts from the settled state, or from scratch.
        self._fork_lock = threading.RLock()
        if self._reader is None:
            self._reset_state()
        else:
            self._open_lock = threading.Lock()
            self._opening = None
            if self._cache is not None:
                self._cache.fork_lock = self._fork_lock
        self._faults.after_fork()


def strangers_directory(directory: str) -> str | None:
    """Why a shared store's directory is not a team's, or None: it must not be writable by
    everyone (a sticky bit does not help: anyone could still plant its subdirectories), and
    its owner must be this user, root (an administrator's ``root:team 2770``) or a member of
    its group."""
    if not hasattr(os, "getuid"):
        return None
    info = os.stat(directory)
    if info.st_mode & 0o002:
        return "is writable by every user"
    if info.st_uid in (os.getuid(), 0):
        return None  # ours, or the administrator's (who can read every store anyway)
    import grp
    import pwd

    try:
        owner = pwd.getpwuid(info.st_uid)
        group = grp.getgrgid(info.st_gid)
    except KeyError:
        return f"is owned by uid {info.st_uid}, who is not a known user"
    if owner.pw_gid != info.st_gid and owner.pw_name not in group.gr_mem:
        return f"is owned by {owner.pw_name}, who is not in its group {group.gr_name}"
    return None


def planted_database_file(directory: str) -> str | None:
    """The database file (``cache.db`` or its ``-wal``/``-shm``) that is not a regular file
    of its own (a symlink, a FIFO, a device, a file with other hard links), or None."""
    import stat

    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(directory, DBNAME + suffix)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError:
            return f"{path} cannot be examined"
        if not stat.S_ISREG(info.st_mode):
            return f"{path} is not a regular file"
        if info.st_nlink != 1:
            return f"{path} has {info.st_nlink} hard links"
    return None


def share_database_files(directory: str) -> None:
    """Make the database files this user owns readable and writable by the store's group.

    SQLite creates ``cache.db`` 0644 whatever the umask, and gives the write-ahead log and
    its index the database's mode: without this, once another member merely reads, the
    ``-wal``/``-shm`` files it creates are its own and no one else can store. Opened without
    following links, so that a planted link makes nothing else group-writable.
    """
    # Closing any descriptor of a file drops every POSIX lock this process holds on it, and
    # SQLite's locks on cache.db and its -shm are POSIX locks: opened normally here, after a
    # connection, the file would be unlocked under SQLite (writes then fail, or corrupt).
    # Linux's O_PATH descriptors are not opened files: closing one drops no lock.
    # Elsewhere (the BSDs, macOS) the mode is set on the path, links not followed.
    by_path = hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd")
    if not by_path and os.chmod in os.supports_follow_symlinks:
        _share_by_name(directory)
        return
    if by_path:
        flags = os.O_PATH | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    else:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    for suffix in ("", "-wal", "-shm"):
        try:
            descriptor = os.open(os.path.join(directory, DBNAME + suffix), flags)
        except OSError:
            continue  # not there (yet), or a link
        try:
            info = os.fstat(descriptor)
            wanted = info.st_mode & 0o777 | 0o660
            if (
                stat.S_ISREG(info.st_mode)
                and info.st_uid == os.getuid()
                and info.st_mode & 0o777 != wanted
            ):
                if by_path:  # the file the descriptor names, not a link: O_NOFOLLOW
                    os.chmod(f"/proc/self/fd/{descriptor}", wanted)
                else:
                    os.fchmod(descriptor, wanted)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def _share_by_name(directory: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(directory, DBNAME + suffix)
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            wanted = info.st_mode & 0o777 | 0o660
            mine = stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
            if mine and info.st_mode & 0o777 != wanted:
                os.chmod(path, wanted, follow_symlinks=False)


def _secret_path() -> str | None:
    """The key file where integrity.default_secret_path puts it, without platformdirs where
    the XDG rules name it (None: integrity asks platformdirs)."""
    directory = user_directory("XDG_CONFIG_HOME", ".config")
    if directory is None:
        return None
    return os.path.join(directory, SECRET_FILE_NAME)


def _file_system_read_only(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): assume it can be written
        return False


def _fault_cause(error: BaseException) -> str | None:
    """Name a fault by its cause, so that one cause warns once whatever operation met it."""
    message = str(error).lower()
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or "disk is full" in message:
        return "disk full"
    if code == errno.EROFS or "readonly" in message or "read-only" in message:
        return "read-only store"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return None


def _out_of_descriptors(error: BaseException) -> bool:
    """Whether ``error`` came from the process running out of file descriptors."""
    exhausted = (errno.EMFILE, errno.ENFILE)
    if getattr(error, "errno", None) in exhausted or "too many open files" in str(error).lower():
        return True
    if not isinstance(error, (sqlite3.OperationalError, TIMEOUT)):
        return False
    # SQLite does not say why it could not open a file: try to open one.
    try:
        descriptor = os.open(os.devnull, os.O_RDONLY)
    except OSError as probe:
        return probe.errno in exhausted
    os.close(descriptor)
    return False


def _is_read_only(directory: str | Path, error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    if "readonly" in message or "read-only" in message:
        return True
    return "unable to open" in message and not os.access(directory, os.W_OK)


_live_stores: weakref.WeakSet[StoreLifetime] = weakref.WeakSet()


_held_for_fork: list[threading.RLock] = []


def _hold_writes_for_fork() -> None:
    for store in list(_live_stores):
        store._fork_lock.acquire()
        _held_for_fork.append(store._fork_lock)


def _resume_writes_after_fork() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _reinitialize_after_fork() -> None:
    _held_for_fork.clear()
    for store in list(_live_stores):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_hold_writes_for_fork,
        after_in_parent=_resume_writes_after_fork,
        after_in_child=_reinitialize_after_fork,
    )
