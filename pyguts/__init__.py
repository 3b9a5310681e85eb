"""pyguts: the guts of CPython, exact and safe by default.

Importing pyguts costs nothing: each public name is imported from its sub-package on first use
(PEP 562). The names that read object memory pass the layout checks of :mod:`pyguts.objects` then;
on an interpreter where those fail, using one raises :class:`LayoutMismatchError`, while crash
isolation, the pytest markers and leak hunting keep working.

>>> import pyguts
>>> pyguts.refcount(object())
0
"""

from __future__ import annotations

import importlib

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

__version__ = "0.1.0"

#: Public name -> the module that defines it, imported on first use.
_HOMES = {
    **dict.fromkeys(("Outcome", "isolate", "isolated"), "pyguts.isolation"),
    "LeakReport": "pyguts.leaks",
    **dict.fromkeys(("Diagram", "diagram"), "pyguts.objects.diagrams"),
    **dict.fromkeys(("Explanation", "FieldInfo", "explain"), "pyguts.objects.explain"),
    **dict.fromkeys(("nbytes_of", "payload", "view", "view_address"), "pyguts.objects.memory"),
    "mutate": "pyguts.objects.mutate",
    "swap_type": "pyguts.objects.swap",
    **dict.fromkeys(("is_immortal", "refcount", "referrers"), "pyguts.objects.refs"),
    "struct_of": "pyguts.objects.structs",
}
#: Sub-packages reachable as attributes (``pyguts.native.build(...)``) without importing them first.
_SUBPACKAGES = ("alloc", "cli", "device", "doctor", "isolation", "leaks", "native", "objects", "tour")


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is not None:
        try:
            value = getattr(importlib.import_module(home), name)
        except LayoutMismatchError as exc:
            raise LayoutMismatchError(f"pyguts.{name} is unavailable: {exc}") from exc
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"pyguts.{name}")
    raise AttributeError(f"module 'pyguts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, *_SUBPACKAGES})


__all__ = [
    "AllocatorUnavailable",
    "BuildError",
    "ChildCrashed",
    "DeviceUnavailable",
    "IsolationUnavailable",
    "LayoutMismatchError",
    "NativeError",
    "PygutsError",
    "UnsafeOperationError",
    *_HOMES,
]
