"""pyguts: the guts of CPython, exact and safe by default."""

from pyguts.errors import (
    AllocatorUnavailable,
    BuildError,
    ChildCrashed,
    DeviceUnavailable,
    IsolationUnavailable,
    LayoutMismatchError,
    PygutsError,
    UnsafeOperationError,
)

__version__ = "0.1.0"

__all__ = [
    "AllocatorUnavailable",
    "BuildError",
    "ChildCrashed",
    "DeviceUnavailable",
    "IsolationUnavailable",
    "LayoutMismatchError",
    "PygutsError",
    "UnsafeOperationError",
]
