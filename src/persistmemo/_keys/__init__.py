"""Call arguments to canonical bytes, and those bytes to key strings (the spec: docs/keys.md).

From the bottom: ``framing`` (msgpack headers, extension frames, ``KeyExtension``),
``digests`` (large buffers), ``encoders`` (the table every encoder recurses through),
``packed`` (containers of plain scalars packed in one msgpack call); one module per family
of types (``standard_types``, ``classes``, ``arrays``, ``frames``, ``subclasses``,
``estimators``, ``sparse``); ``registry`` (``register_key`` and the built-in
entries for types persistmemo does not own); ``dispatch`` (which encoder a type gets),
``nesting`` (diagnosing RecursionError), ``canonical`` (``encode``, ``encode_arguments``),
``layout`` (key strings).
Nothing is imported here: the old ``keys`` module's names load on first mention, for
``persistmemo.KEY_FORMAT`` and the deprecated ``persistmemo.keys`` path.
"""

_HOMES = {
    "DIGEST_SIZE": "persistmemo._keys.digests",
    "HOOK_NAME": "persistmemo._keys.classes",
    "KEY_DIGEST_SIZE": "persistmemo._keys.layout",
    "KEY_FORMAT": "persistmemo._keys.layout",
    "KeyBuilder": "persistmemo._keys.layout",
    "KeyExtension": "persistmemo._keys.framing",
    "LARGE_BUFFER": "persistmemo._keys.digests",
    "MAX_NESTING": "persistmemo._keys.nesting",
    "RESULT_FORMATS": "persistmemo._keys.layout",
    "digest": "persistmemo._keys.digests",
    "encode": "persistmemo._keys.canonical",
    "encode_arguments": "persistmemo._keys.canonical",
    "identity_of": "persistmemo._keys.layout",
    "is_result_key": "persistmemo._keys.layout",
    "result_key_ranges": "persistmemo._keys.layout",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(home, fromlist=[name]), name)
    globals()[name] = value  # looked up once
    return value
