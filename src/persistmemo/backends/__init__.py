"""Stores beyond the local disk: ``RedisStore`` (extra ``persistmemo[redis]``) and
``TieredStore``. Imported lazily: the core never needs redis-py."""
