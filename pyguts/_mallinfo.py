"""glibc's own heap figures (``mallinfo2``, else ``mallinfo``), for pyguts.leaks and pyguts.alloc.

>>> info = read()
>>> info is None or info.uordblks + info.hblkhd > 0
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Callable


class MallInfo2(ctypes.Structure):
    """``struct mallinfo2`` from glibc's <malloc.h> (glibc >= 2.33): every field a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class MallInfo(ctypes.Structure):
    """``struct mallinfo`` (older glibc): the same fields as int, wrapping past 2 GiB."""

    _fields_ = [(name, ctypes.c_int) for name, _ in MallInfo2._fields_]


@functools.lru_cache(maxsize=None)
def _function() -> Callable[[], ctypes.Structure] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    for symbol, restype in (("mallinfo2", MallInfo2), ("mallinfo", MallInfo)):
        fn = getattr(libc, symbol, None)
        if fn is not None:
            fn.argtypes = []
            fn.restype = restype
            return fn
    return None


def read() -> ctypes.Structure | None:
    """The process's glibc heap figures now (``uordblks``: in use, ``hblkhd``: mmapped, ``arena``…),
    or None where the C library has neither function (looked up on first use)."""
    fn = _function()
    return None if fn is None else fn()
