"""The diskcache constants persistmemo repeats (to read stores without importing diskcache)."""

from diskcache import core

from persistmemo.stores import schema


def test_schema_constants_match_diskcache() -> None:
    assert schema.DBNAME == core.DBNAME
    assert schema.MODE_RAW == core.MODE_RAW
    assert schema.MODE_BINARY == core.MODE_BINARY
    assert schema.MODE_PICKLE == core.MODE_PICKLE
