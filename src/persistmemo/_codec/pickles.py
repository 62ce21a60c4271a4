"""The pickle fallback: script-aware pickling, and unpickling that finds classes safely.

A value with no msgpack encoding is pickled (protocol 5, its large buffers kept in the
value's area), with the running script's classes and functions under the script's importable
name. Pickles are only ever unpickled where pickles are allowed, and the unpickler finds
classes under the rules of class_names.py. pickle itself is imported on the first pickle.
"""

from __future__ import annotations

import functools
import io
import sys
from types import FunctionType

from persistmemo._codec.class_names import MAIN_NAMES, find_module, resolve_global
from persistmemo._naming import module_name
from persistmemo.errors import CorruptEntry, UndecodableValue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

    from persistmemo._codec.out_of_band import BufferCollector


def pickle_into(
    buffer: io.BytesIO, value: object, collector: BufferCollector | None
) -> list[list[int]]:
    """Pickle ``value`` into ``buffer`` (protocol 5). With a ``collector``, its large
    contiguous buffers are placed in the area instead: returns their ``[offset, length]``."""
    pickler, _ = pickle_classes()
    references: list[list[int]] = []

    def keep_apart(pickle_buffer: Any) -> bool:
        # Protocol 5 hands over each contiguous buffer (array data, Arrow buffers): a false
        # answer keeps it out of the pickle stream, in the area.
        assert collector is not None
        try:
            raw = pickle_buffer.raw()
        except BufferError:  # not contiguous: pickled in band
            return True
        if raw.nbytes < collector.threshold:
            return True
        references.append(collector.add(raw))
        return False

    pickling = pickler(buffer, protocol=5, buffer_callback=keep_apart if collector else None)
    numpy = sys.modules.get("numpy")
    if collector is not None and numpy is not None:
        pickling.out_of_band = (numpy.ndarray, collector.threshold)
    pickling.dump(value)
    return references


def _script_global(module: str, qualname: str) -> object:
    """A class or function of a script, pickled under the script's importable name."""
    # Only reached from a pickle, which is only loaded where pickles are allowed.
    return resolve_global(module, qualname, allow_import=True, by_getattr=True)


# Stored pickles name it where it lived when the format was made: entries stay readable by
# every release, and this one writes what earlier ones read.
_script_global.__module__ = "persistmemo.codec"
_SCRIPT_GLOBAL_NAMES = {("persistmemo.codec", "_script_global")}


@functools.cache
def pickle_classes() -> tuple[Any, Any]:
    """The pickler and unpickler classes, made on the first pickle."""
    import pickle  # only the fallback needs it

    class ScriptAwarePickler(pickle.Pickler):
        """Pickles the classes and functions of the running script under its importable
        name (_naming.py), not as ``__main__``: another process, or the script imported as a
        module, then finds the same class."""

        # (numpy.ndarray, the area's threshold) when large buffers go to the area.
        out_of_band: tuple[type, int] | None = None

        def reducer_override(self, obj: Any) -> Any:
            if self.out_of_band is not None and type(obj) is self.out_of_band[0]:
                return _datetimes_out_of_band(obj, self.out_of_band[1])
            if not isinstance(obj, (type, FunctionType)):
                return NotImplemented
            module = getattr(obj, "__module__", None)
            if module not in MAIN_NAMES:
                return NotImplemented
            name = module_name(module)
            qualname = getattr(obj, "__qualname__", "")
            try:
                found = resolve_global(name, qualname, allow_import=False, by_getattr=True)
            except UndecodableValue:
                return NotImplemented  # a local class: pickle reports it
            if found is not obj:
                return NotImplemented
            return _script_global, (name, qualname)

    class SafeUnpickler(pickle.Unpickler):
        """Finds classes under the rules of class_names.py: never imports a script."""

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _SCRIPT_GLOBAL_NAMES:
                return _script_global
            if module not in sys.modules:
                found = _find_module_or_raise(module, name)
                if found is not sys.modules.get(module):
                    return resolve_global(module, name, allow_import=True, by_getattr=True)
            try:
                return super().find_class(module, name)
            except AttributeError as error:
                raise UndecodableValue(
                    f"class {module}.{name} is not importable here: {error}"
                ) from None

    return ScriptAwarePickler, SafeUnpickler


def _datetimes_out_of_band(array: Any, threshold: int) -> Any:
    """How numpy pickles an array with protocol 5, for a datetime64 or timedelta64 array too.

    numpy keeps such an array in the pickle stream (its dtype exports no buffer): a
    DataFrame's datetime column would make the document as large as the column, copied on
    every hit. Its bytes are handed over through an int64 view instead, with numpy's own
    reduction (``_frombuffer(buffer, dtype, shape, order)``) and the array's own dtype: it
    comes back a view of the area, as the other columns do. Other arrays: numpy's reduction.
    """
    if array.dtype.kind not in "mM" or array.nbytes < threshold or array.dtype.itemsize != 8:
        return NotImplemented
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        return NotImplemented  # numpy copies it into the stream: so do we
    numpy = sys.modules["numpy"]
    reduced = array.view(numpy.int64).__reduce_ex__(5)
    rebuild, arguments = reduced[0], reduced[1]
    if getattr(rebuild, "__name__", None) != "_frombuffer" or arguments[1] != numpy.int64:
        return NotImplemented  # another numpy's reduction: its own in-band one
    return (rebuild, (arguments[0], array.dtype, *arguments[2:]))


def _find_module_or_raise(module: str, name: str) -> ModuleType:
    try:
        return find_module(module, allow_import=True)
    except UndecodableValue as error:
        raise UndecodableValue(f"class {module}.{name} is not importable here: {error}") from None


def unpickle(payload: bytes | memoryview, buffers: list[memoryview] | None = None) -> object:
    """The value pickled as ``payload`` (its out-of-band ``buffers`` given), under the rules
    of class_names.py; raises CorruptEntry or UndecodableValue."""
    import pickle  # only the fallback needs it

    _, unpickler = pickle_classes()
    try:
        return unpickler(io.BytesIO(payload), buffers=buffers).load()
    except (CorruptEntry, pickle.UnpicklingError, EOFError):
        raise
    except RecursionError:
        raise CorruptEntry("stored value is nested too deeply to decode") from None
    except Exception as error:
        # The bytes are sealed, so a well-formed pickle: its classes changed or are gone.
        raise UndecodableValue(f"the pickled value cannot be rebuilt here: {error!r}") from None
