"""The code that runs, made into a version: a function's code and the code it reaches.

``versions`` holds the entry points (``code_version``, ``explain_version``, the watched
version and fingerprint); ``basis`` walks the code a version is made of, reading code
objects (``code_objects``), values (``constants``), the state the code keeps
(``kept_state``), imports inside bodies (``body_imports``), the source where it is the
running code (``running_source``, over ``sources``, which parses each file once per
process) and installed versions (``package_versions``); ``fingerprints`` and
``explanation`` digest and describe a walk. ``source_stamps`` and ``code_watch`` tell, at
each call, whether the code a version came from still runs; ``closures`` sorts captured
variables into inputs and state; ``origins`` says whose code a file holds. The decorator
imports those four; ``versions`` and the walk load at the first call that needs a version,
so a disabled function derives none.
"""
