"""Results to bytes and back: msgpack with extension types, pickle only as a marked fallback.

From the bottom: ``formats`` (the format byte and the extension codes), ``out_of_band``
(large buffers kept out of the document), ``class_names`` (finding a class by name, under the
trust rules), ``pickles`` (the fallback), ``encoding`` (``encode_value``, ``encode_result``)
and ``decoding`` (``decode_value``). The kinds of class both sides check are in ``_kinds``.

Nothing is imported here, so that importing one module loads only what it needs. The names
of the old ``codec`` module load on first mention, for the deprecated ``persistmemo.codec``
path (its error classes included).
"""

_HOMES = {
    "CorruptEntry": "persistmemo.errors",
    "Encoded": "persistmemo._codec.decoding",
    "FORMAT_MSGPACK": "persistmemo._codec.formats",
    "FORMAT_PICKLE": "persistmemo._codec.formats",
    "FORMAT_PICKLE_OUT_OF_BAND": "persistmemo._codec.formats",
    "MAX_EXT_DEPTH": "persistmemo._codec.formats",
    "UndecodableValue": "persistmemo.errors",
    "UnstorableValue": "persistmemo.errors",
    "ValueExtension": "persistmemo._codec.formats",
    "decode_value": "persistmemo._codec.decoding",
    "encode_result": "persistmemo._codec.encoding",
    "encode_value": "persistmemo._codec.encoding",
    "is_pickled": "persistmemo._codec.decoding",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(home, fromlist=[name]), name)
    globals()[name] = value  # looked up once
    return value
