"""The code that runs, made into a version: a function's code and the code it reaches.

``versions`` derives a function's version (``code_version``, ``explain_version``);
``sources`` parses each source file once per process; ``source_stamps`` and ``code_watch``
tell, at each call, whether the code a version came from still runs; ``closures`` sorts
captured variables into inputs and state; ``origins`` says whose code a file holds. Nothing
here is imported until a version is needed: a disabled function derives none.
"""
