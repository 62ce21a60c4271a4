"""The environment variables persistmemo reads, read here and nowhere else.

``PERSISTMEMO_DIR``, ``PERSISTMEMO_URL``, ``PERSISTMEMO_SECRET`` and ``PERSISTMEMO_DISABLE``,
each read when asked, not at import. What each does: docs/options.md#environment-variables.
"""

from __future__ import annotations

import os

DIRECTORY = "PERSISTMEMO_DIR"
URL = "PERSISTMEMO_URL"
SECRET = "PERSISTMEMO_SECRET"
DISABLE = "PERSISTMEMO_DISABLE"


def directory() -> str | None:
    """``$PERSISTMEMO_DIR``, user-expanded, or None when unset or empty."""
    value = os.environ.get(DIRECTORY)
    return os.path.expanduser(value) if value else None


def url() -> str | None:
    """``$PERSISTMEMO_URL``, or None when unset or empty."""
    return os.environ.get(URL) or None


def secret() -> str | None:
    """``$PERSISTMEMO_SECRET``, or None when unset or empty."""
    return os.environ.get(SECRET) or None


def disabled() -> bool:
    """Whether ``$PERSISTMEMO_DISABLE`` turns caching off."""
    return os.environ.get(DISABLE, "").strip().lower() not in ("", "0", "false")
