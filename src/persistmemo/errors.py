"""Every exception and warning persistmemo raises, in one tree.

Each error also keeps the builtin base it always had, so ``except TypeError`` and
``except OSError`` clauses written against earlier releases keep working::

    PersistmemoError(Exception)
    ├── UnsupportedType(TypeError)           a value with no key encoding
    │   ├── UnsupportedNesting               a value that contains itself, or nests too deep
    │   └── UnsupportedArgument              a call's argument that cannot be keyed, named
    ├── UnsupportedCapture(TypeError)        a captured variable that cannot be keyed
    ├── UnstorableValue(TypeError)           a result the store cannot keep
    ├── CorruptEntry(ValueError)             stored bytes that do not decode: a miss
    │   └── UndecodableValue                 well-formed bytes this process cannot rebuild
    ├── ComputationFailed(RuntimeError)      the computation waited for failed elsewhere
    ├── MissingInput                         a path named in ``files=`` does not exist
    ├── StoreUnreadable(OSError)             the store's database cannot be read
    ├── StoreRefused                         a backend refused a value (too large, full)
    ├── SecretUnavailable(OSError)           the secret key file cannot be read or made
    └── CommandLineError                     the ``persistmemo`` command could not do it
        ├── UsageError                       a command line that cannot be run (exit 2)
        └── CommandError                     a command that found a problem (exit 1)

    PersistmemoWarning(UserWarning)          a store fault; the call itself went on
"""

from __future__ import annotations

__all__ = [
    "CommandError",
    "CommandLineError",
    "ComputationFailed",
    "CorruptEntry",
    "MissingInput",
    "PersistmemoError",
    "PersistmemoWarning",
    "SecretUnavailable",
    "StoreRefused",
    "StoreUnreadable",
    "UndecodableValue",
    "UnstorableValue",
    "UnsupportedArgument",
    "UnsupportedCapture",
    "UnsupportedNesting",
    "UnsupportedType",
    "UsageError",
]


class PersistmemoError(Exception):
    """The base of every error persistmemo raises."""


class PersistmemoWarning(UserWarning):
    """A store fault or an entry that could not be kept; the call itself went on."""


def type_label(cls: type) -> str:
    """Name a type for error messages: ``sqlite3.Connection``, ``int``."""
    module = getattr(cls, "__module__", "")
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module == "builtins" else f"{module}.{name}"


class UnsupportedType(PersistmemoError, TypeError):
    """Raised when a value of a type with no defined key encoding is met."""

    def __init__(self, unsupported: type, reason: str = "") -> None:
        self.unsupported = unsupported
        self.reason = reason
        super().__init__(f"type {type_label(unsupported)} is not supported{reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.unsupported, self.reason)


class UnsupportedNesting(UnsupportedType):
    """Raised for a value that contains itself or is nested deeper than ``MAX_NESTING``.

    Its type is supported; this value of it has no finite (or no reachable) encoding.
    """

    def __init__(self, unsupported: type, reason: str) -> None:
        super().__init__(unsupported, reason)
        self.args = (f"a {type_label(unsupported)} value is not supported{reason}",)

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.unsupported, self.reason)


class UnsupportedCapture(PersistmemoError, TypeError):
    """A captured variable whose value cannot be keyed."""


class UnstorableValue(PersistmemoError, TypeError):
    """A result that the store cannot keep (strict store, or neither msgpack nor pickle)."""


class CorruptEntry(PersistmemoError, ValueError):
    """Stored bytes that do not decode to a value: the entry is treated as a miss."""


class UndecodableValue(CorruptEntry):
    """Well-formed stored bytes that cannot be rebuilt in this process: also a miss.

    The value names a class that is gone or not loaded here, a class that is not the kind
    its tag says (refused), fields that changed, or it is a pickle where pickles are
    refused. It is a ``CorruptEntry``, so code that catches that keeps working; catch it
    first to tell "written by other code" from "damaged bytes".
    """


class ComputationFailed(PersistmemoError, RuntimeError):
    """The computation this call waited for failed in another process.

    Raised where the original exception cannot be rebuilt (pickles are not allowed in this
    store); the message carries its type and text.
    """


class MissingInput(PersistmemoError):
    """A path named in ``files=`` does not exist: the call runs uncached."""


class UnsupportedArgument(UnsupportedType):
    """A call whose argument cannot be keyed: the message names the parameter, the
    function and the remedy (``unsupported`` is the type that has no key encoding)."""

    def __init__(self, message: str, unsupported: type = object) -> None:
        TypeError.__init__(self, message)
        self.unsupported = unsupported
        self.reason = message

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.reason, self.unsupported)


class StoreRefused(PersistmemoError):
    """A backend's refusal that is no fault of its connection (a value too large, a full
    server): reported once as ``kind``, and the operation counts as not done."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.kind, self.message)


class StoreUnreadable(PersistmemoError, OSError):
    """The store's database cannot be read (not a database, malformed, unreadable)."""


class SecretUnavailable(PersistmemoError, OSError):
    """The user's secret key file cannot be read or created safely."""


class CommandLineError(PersistmemoError):
    """The ``persistmemo`` command could not carry out what it was asked."""


class UsageError(CommandLineError):
    """A command line that cannot be carried out as written (exit code 2)."""


class CommandError(CommandLineError):
    """A command that ran and found nothing to act on, or a problem (exit code 1)."""
