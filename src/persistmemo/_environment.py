"""The environment variables persistmemo reads, read here and nowhere else.

- ``PERSISTMEMO_DIR``: the default disk store's directory.
- ``PERSISTMEMO_URL``: a ``redis://`` URL; the default store is Redis (tiered in front of
  it when ``PERSISTMEMO_DIR`` is set too).
- ``PERSISTMEMO_SECRET``: the passphrase that seals entries, instead of the key file.
- ``PERSISTMEMO_DISABLE``: anything but empty, ``0`` or ``false`` runs every memoized
  function uncached.

Each is read when asked, not at import: tests and notebooks set them after importing.
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
