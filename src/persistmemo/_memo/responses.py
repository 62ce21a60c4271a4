"""HTTP responses, requests and sessions are refused as results: they carry credentials.

A ``requests.Response`` or an ``httpx.Response`` has no msgpack encoding, so it would be kept
through the pickle fallback, and with it the request it answers: the ``Authorization``
header, cookies, the URL's query. So would a request itself (``requests.PreparedRequest``,
``httpx.Request``) or a session or client holding default headers. They are refused instead
(an ``UnstorableValue``, so the call still returns the value and one warning says what to
return). Only a pickle can hold one, so only a result about to be stored as a pickle is
searched, by pickle's own traversal: whatever it would have kept is seen, in containers,
objects, object arrays and data frames' object columns alike (arrays of numbers are not
looked into: they hold none). The classes are known by their module and name: neither
library is imported to tell.
"""

from __future__ import annotations

from persistmemo.errors import UnstorableValue, type_label

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CLIENTS = frozenset({"requests", "httpx"})
_CARRIERS = frozenset(
    {"Response", "Request", "PreparedRequest", "Session", "Client", "AsyncClient"}
)
"""The classes of those libraries that hold a request's headers."""
_NOT_LOOKED_INTO = (int, ())


def is_response_type(cls: type) -> bool:
    """Whether ``cls`` is (or derives from) a response, request, session or client class of
    ``requests`` or ``httpx``."""
    return any(
        base.__name__ in _CARRIERS
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
            if getattr(getattr(obj, "dtype", None), "hasobject", True) is False:
                return _NOT_LOOKED_INTO  # an array (or column) of numbers: holds no object
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
        f"the result {what} a {type_label(cls)}, which keeps a request's headers (an "
        "Authorization header or cookies with them), so it is not stored. Return what you "
        "need from it instead: response.json(), response.content or response.text (with "
        "response.status_code if it matters)."
    )
