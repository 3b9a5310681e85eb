"""pyguts: the guts of CPython, exact and safe by default.

>>> import pyguts
>>> pyguts.refcount(object())
0
"""

from pyguts.errors import (
    AllocatorUnavailable,
    BuildError,
    ChildCrashed,
    DeviceUnavailable,
    IsolationUnavailable,
    LayoutMismatchError,
    NativeError,
    PygutsError,
    UnsafeOperationError,
)
from pyguts.diagrams import Diagram, diagram
from pyguts.explain import Explanation, FieldInfo, explain
from pyguts.isolate import Outcome, isolate, isolated
from pyguts.leaks import LeakReport
from pyguts.memory import nbytes_of, payload, view, view_address
from pyguts.mutate import mutate, swap_type
from pyguts.refs import is_immortal, refcount, referrers
from pyguts.structs import struct_of

__version__ = "0.1.0"

__all__ = [
    "AllocatorUnavailable",
    "BuildError",
    "ChildCrashed",
    "DeviceUnavailable",
    "Diagram",
    "Explanation",
    "FieldInfo",
    "IsolationUnavailable",
    "LayoutMismatchError",
    "LeakReport",
    "NativeError",
    "Outcome",
    "PygutsError",
    "UnsafeOperationError",
    "diagram",
    "explain",
    "is_immortal",
    "isolate",
    "isolated",
    "mutate",
    "nbytes_of",
    "payload",
    "refcount",
    "referrers",
    "struct_of",
    "swap_type",
    "view",
    "view_address",
]
