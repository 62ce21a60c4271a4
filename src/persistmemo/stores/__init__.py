"""The stores: the interface and shared words (``base``), and the stores side by side.

``disk`` (``Store``: SQLite through diskcache, with ``entry_reader``, ``engine``, ``schema`` and
``inspection`` beside it), ``redis`` (``RedisStore``, extra ``persistmemo[redis]``) and
``tiered`` (``TieredStore``). The Redis and tiered stores load when first named: the core
import never needs redis-py.
"""
