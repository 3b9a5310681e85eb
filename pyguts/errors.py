"""The pyguts exception tree.

Every class derives from :class:`PygutsError` and from the builtin exception it refines, so
``except ValueError`` keeps working for callers who do not know pyguts.
"""

from __future__ import annotations


class PygutsError(Exception):
    """Base of every error pyguts raises on purpose."""


class LayoutMismatchError(PygutsError, RuntimeError):
    """The running interpreter's object layout is unknown or disagrees with the layout table."""


class UnsafeOperationError(PygutsError, ValueError):
    """The operation would corrupt the interpreter; pass ``force=True`` to do it anyway."""


class ChildCrashed(PygutsError, RuntimeError):
    """An isolated child did not return: a signal, an exit, a timeout, a stop, or a result it could
    not send or that could not be loaded safely (``.outcome`` says which)."""


class IsolationUnavailable(PygutsError, OSError):
    """Crash isolation needs ``os.fork``, which this platform lacks."""


class AllocatorUnavailable(PygutsError, OSError):
    """An allocator library cannot be loaded in this process."""


class BuildError(PygutsError, RuntimeError):
    """Compiling native code failed; carries the compiler's messages."""


class NativeError(PygutsError, RuntimeError):
    """A C library reported an error through its error hook (GSL's handler) during a checked call."""

    def __init__(self, message: str, *, reason: str = "", file: str = "", line: int = 0,
                 code: int = 0) -> None:
        super().__init__(message)
        self.reason, self.file, self.line, self.code = reason, file, line, code


class DeviceUnavailable(PygutsError, RuntimeError):
    """No usable CUDA device, driver or CuPy installation."""
