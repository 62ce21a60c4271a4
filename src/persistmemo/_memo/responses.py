"""HTTP responses are refused as results: they carry the request, and its credentials.

A ``requests.Response`` or an ``httpx.Response`` has no msgpack encoding, so it would be kept
through the pickle fallback, and with it the request it answers: the ``Authorization``
header, cookies, the URL's query. It is refused instead (an ``UnstorableValue``, so the call
still returns it and one warning says what to return). Only a pickle can hold one, so only
a result about to be stored as a pickle is searched, by pickle's own traversal (whatever it
would have kept is seen, in containers and objects alike, except inside arrays and data
frames). The classes are known by their module and name: neither library is imported to
tell.
"""

from __future__ import annotations

from persistmemo.errors import UnstorableValue, type_label

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CLIENTS = frozenset({"requests", "httpx"})
# Their objects hold data, and pickling their text columns again would cost a miss as much
# as storing them: the search does not look inside.
_DATA_LIBRARIES = frozenset({"numpy", "pandas", "pyarrow", "polars"})
_NOT_LOOKED_INTO = (int, ())


def is_response_type(cls: type) -> bool:
    """Whether ``cls`` is (or derives from) ``requests.Response`` or ``httpx.Response``."""
    return any(
        base.__name__ == "Response"
        and str(getattr(base, "__module__", "")).partition(".")[0] in _CLIENTS
        for base in getattr(cls, "__mro__", ())
    )


class _Found(Exception):
    pass


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def response_in(value: object) -> type | None:
    """The class of the first HTTP response in ``value`` (itself, or anywhere pickle would
    reach), or None; a value that does not pickle is searched as far as pickle gets."""
    if is_response_type(type(value)):
        return type(value)
    import pickle  # not at import: pickle loads re, which a re-run never needs

    class ResponseFinder(pickle.Pickler):
        def reducer_override(self, obj: object) -> Any:
            cls = type(obj)
            if is_response_type(cls):
                raise _Found(cls)
            if str(getattr(cls, "__module__", "")).partition(".")[0] in _DATA_LIBRARIES:
                return _NOT_LOOKED_INTO  # an array or a frame: not searched
            return NotImplemented

    try:
        # Large buffers are handed over and dropped, not copied (protocol 5).
        ResponseFinder(_Discard(), protocol=5, buffer_callback=lambda _: False).dump(value)
    except _Found as found:
        cls: type = found.args[0]
        return cls
    except Exception:
        return None
    return None


def response_refusal(value: object) -> UnstorableValue | None:
    """The error refusing ``value`` if it holds an HTTP response, else None."""
    cls = response_in(value)
    if cls is None:
        return None
    what = "is" if type(value) is cls else "contains"
    return UnstorableValue(
        f"the result {what} a {type_label(cls)}, which keeps the request it answers "
        "(its headers, an Authorization header or cookies with them), so it is not stored. "
        "Return what you need from it instead: response.json(), response.content or "
        "response.text (with response.status_code if it matters)."
    )
