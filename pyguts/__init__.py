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

# The engines need no object layout: they work on any CPython version.
from pyguts.isolate import Outcome, isolate, isolated
from pyguts.leaks import LeakReport

try:  # everything below reads object memory through pyguts.structs, whose import checks the layouts
    from pyguts.diagrams import Diagram, diagram
    from pyguts.explain import Explanation, FieldInfo, explain
    from pyguts.memory import nbytes_of, payload, view, view_address
    from pyguts.mutate import mutate, swap_type
    from pyguts.refs import is_immortal, refcount, referrers
    from pyguts.structs import struct_of
except LayoutMismatchError as _exc:
    # This interpreter is outside the layout table or failed its live checks: nothing may read object
    # memory, but `import pyguts` still works (isolation and leak hunting included), and `pyguts
    # doctor` can say what is wrong.
    _LAYOUT_ERROR = _exc

    def __getattr__(name: str):
        if name in __all__:
            raise LayoutMismatchError(f"pyguts.{name} is unavailable: {_LAYOUT_ERROR}") from _LAYOUT_ERROR
        raise AttributeError(f"module 'pyguts' has no attribute {name!r}")

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
