"""The parts of diskcache's on-disk layout that persistmemo reads directly.

These are diskcache 5's constants, repeated here so that reading a store (the hit path, the
command line) does not import diskcache; ``tests/test_schema.py`` holds them equal to
diskcache's own.
"""

DBNAME = "cache.db"
MODE_RAW = 1
MODE_BINARY = 2
MODE_PICKLE = 4
