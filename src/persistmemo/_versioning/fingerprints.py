"""The fingerprint of a version: what it is derived from, told by stats and values alone.

A version remembered in the store under its fingerprint is served without deriving it again.
The fingerprint digests the light walk (basis.py: each source file by its stat, the runtime
values as the walk meets them), the Python that runs and the files of persistmemo's own code
that derives versions and keys (docs/guarantees.md#the-first-call-of-a-process).
"""

from __future__ import annotations

import functools
import os
import sys

from persistmemo._hashing import blake2b
from persistmemo._keys.canonical import encode
from persistmemo._versioning.source_stamps import file_identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from persistmemo._versioning.basis import VersionBasis

# Part of every fingerprint: a change to how versions are derived changes them all.
_FINGERPRINT_FORMAT = 1


def fingerprint(basis: VersionBasis) -> str:
    """The fingerprint of a light walk's ``basis``: equal fingerprints, equal versions."""
    deriving = [[os.path.basename(path), file_identity(path)] for path in _deriving_files()]
    canonical = [
        _FINGERPRINT_FORMAT,
        [sys.version, sys.implementation.cache_tag, sys.flags.optimize],
        basis.include_globals,
        deriving,
        [[layer["key"], layer["basis"], layer["digest"]] for layer in basis.layers],
        sorted([entry["key"], entry["digest"]] for entry in basis.helpers.values()),
        sorted([key, entry["digest"]] for key, entry in basis.constants.items()),
        sorted([path, list(stat)] for path, stat in basis.files.items()),
    ]
    return blake2b(encode(canonical), digest_size=16).hexdigest()


@functools.cache
def _deriving_files() -> tuple[str, ...]:
    """The files of the code that derives versions and keys (this package, ``_keys``,
    ``_naming``): a new release of persistmemo derives versions afresh."""
    root = os.path.dirname(os.path.abspath(sys.modules["persistmemo"].__file__ or ""))
    found = [os.path.join(root, "_naming.py")]
    for package in ("_versioning", "_keys"):
        directory = os.path.join(root, package)
        found += sorted(
            os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".py")
        )
    return tuple(found)
