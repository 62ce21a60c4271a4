"""Key strings: ``pm3:<function identity>:<version>:<digest>``, built and read back.

The digest is BLAKE2b-128 of the key format, the identity, the version and the call's
canonical arguments (canonical.py), so it alone separates functions, versions and calls;
the readable prefix lets a store list, count and clear one function's entries. Keys of the
formats before (``pm1``: BLAKE2b-256 in hex; ``pm2``: BLAKE2b-128 in hex; docs/keys.md) are
never built any more, but a store still counts, lists, clears and prunes them.
"""

from __future__ import annotations

from binascii import b2a_base64

from persistmemo._hashing import blake2b
from persistmemo._keys.canonical import encode_arguments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

KEY_FORMAT = "pm3"
"""Version of the argument encoding and key layout; part of every key. ``pm3`` keys end in
a 128-bit digest in 22 characters of URL-safe base64: a store keeps each key twice (its row
and its index), and ``pm2``'s 32 hex digits cost 20 bytes more per entry."""

RESULT_FORMATS = ("pm1", "pm2", KEY_FORMAT)
"""Key formats of stored results. Entries of an older format are never read again (their
keys are not built any more) but are still counted, listed, cleared and pruned."""

KEY_DIGEST_SIZE = 16

DIGEST_CHARACTERS = 22
"""Characters of a key's digest: 16 bytes in base64, without its padding."""

# base64's alphabet to the URL-safe one: no '/' or '+' in a key, which is shown, typed into
# a shell and used in Redis patterns.
_URL_SAFE = bytes.maketrans(b"+/", b"-_")


class KeyBuilder:
    """Builds the key strings of one function identity and version.

    What does not depend on the arguments (the prefix, the hasher's state after the
    identity and version) is computed once here, so a call pays only for its arguments.
    """

    __slots__ = ("_seeded", "prefix")

    def __init__(self, identity: str, version: str) -> None:
        self.prefix = f"{KEY_FORMAT}:{identity}:{version}:"
        self._seeded = blake2b(digest_size=KEY_DIGEST_SIZE)
        # Identity and version are hashed as a length-prefixed array, so the digest alone
        # separates functions and versions, whatever characters their names contain.
        self._seeded.update(encode_arguments([KEY_FORMAT, identity, version]))

    def key(self, canonical_arguments: bytes) -> str:
        """The key of a call whose arguments encode to ``canonical_arguments``."""
        hasher = self._seeded.copy()
        hasher.update(canonical_arguments)
        # The digest's text, inlined (every call pays): base64 without its padding.
        text = b2a_base64(hasher.digest(), newline=False)[:DIGEST_CHARACTERS]
        return self.prefix + text.translate(_URL_SAFE).decode()

    def keys(self, canonical_arguments: Iterable[bytes]) -> list[str]:
        """``key`` of many calls (f.map's), in one loop."""
        copy, prefix, url_safe = self._seeded.copy, self.prefix, _URL_SAFE
        found = []
        for canonical in canonical_arguments:
            hasher = copy()
            hasher.update(canonical)
            text = b2a_base64(hasher.digest(), newline=False)[:DIGEST_CHARACTERS]
            found.append(prefix + text.translate(url_safe).decode())
        return found


def result_key_ranges(function: str | None = None) -> list[tuple[str, str]]:
    """``[low, high)`` key ranges holding the stored results (of one function, if given),
    one per format in RESULT_FORMATS. A function's range also holds the functions whose
    identity extends it past a ':'; callers check each key's identity."""
    ranges = []
    for form in RESULT_FORMATS:
        prefix = f"{form}:" + (f"{function}:" if function else "")
        ranges.append((prefix, prefix[:-1] + ";"))
    return ranges


def is_result_key(key: object) -> bool:
    """Whether ``key`` is a stored result's key, of any format in RESULT_FORMATS."""
    return isinstance(key, str) and key[3:4] == ":" and key[:3] in RESULT_FORMATS


def identity_of(key: str) -> str:
    """The function identity inside a key (versions never contain ':', identities may)."""
    return key[len(KEY_FORMAT) + 1 :].rsplit(":", 2)[0]
