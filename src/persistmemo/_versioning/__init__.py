"""The code that runs, made into a version: a function's code and the code it reaches.

``versions`` holds the entry points and ``basis`` the walk. The decorator imports
``source_stamps``, ``code_watch`` and ``closures`` (with ``origins``); the walk loads at the
first call that needs a version, so a disabled function derives none. Which module does what:
docs/architecture.md#a-version.
"""
