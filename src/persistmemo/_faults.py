"""How store faults reach the user: one warning per store and kind of fault, never an error.

A fault (a read-only or full disk, a locked or corrupt database, an undecodable entry) must
not break the decorated call: the function runs and its result is returned. The user hears of
it once, as a ``PersistmemoWarning`` through ``warnings`` and a record on the ``persistmemo``
logger, so a loop of a million calls against a broken store prints one line, not a million.
"""

from __future__ import annotations

import sys
import threading

from persistmemo.errors import PersistmemoWarning

# typing costs a cold start ~8 ms (it imports re): names for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

LOGGER_NAME = "persistmemo"


class FaultReporter:
    """Reports each kind of fault of one store once per process."""

    __slots__ = ("_lock", "_reported", "_where")

    def __init__(self, where: str) -> None:
        self._where = where
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def report(self, kind: str, detail: str) -> None:
        """Warn about a fault of ``kind`` unless one was already reported for this store.

        Never raises: reporting a fault must not become a fault of the call. (A warning
        that the warnings filters turn into an error is the caller's choice, and passes.)
        """
        with self._lock:
            again = kind in self._reported
            self._reported.add(kind)
        logger = _logger()
        message = f"persistmemo store {self._where}: {kind}: {detail}"
        try:
            if again:
                if logger is not None:
                    logger.debug("persistmemo store %s: %s (again): %s", self._where, kind, detail)
                return
            if logger is not None:
                logger.warning(message)
        except Exception:  # a broken handler (a full disk under a log file): the call goes on
            pass
        import warnings  # at the first fault: a process without one never loads it

        warnings.warn(message, PersistmemoWarning, stacklevel=4)

    def reset(self) -> None:
        """Forget what was reported (the next fault of each kind warns again)."""
        with self._lock:
            self._reported.clear()

    def after_fork(self) -> None:
        """Replace the lock, which a parent's thread may have held at the fork."""
        self._lock = threading.Lock()


def _logger() -> logging.Logger | None:
    """The ``persistmemo`` logger, imported at the first fault (``logging`` costs ~15 ms,
    which every cold start would pay). An import that fails (a fault may be that the process
    is out of file descriptors) leaves the warning alone: reporting never raises."""
    module: Any = sys.modules.get("logging")
    if module is None:
        try:
            import logging as module
        except Exception:  # out of descriptors, half an import: the warning still goes
            return None
    try:
        found: logging.Logger = module.getLogger(LOGGER_NAME)
    except Exception:
        return None
    return found
