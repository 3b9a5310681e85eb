"""Every version and build fact pyguts branches on, detected once.

Nothing else in pyguts reads ``sys.version_info`` or ``sysconfig``: it imports these names.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig

#: (major, minor) of the running interpreter.
VERSION: tuple[int, int] = sys.version_info[:2]

#: True on a free-threaded ("t") build: objects carry ob_tid/ob_ref_local/ob_ref_shared.
GIL_DISABLED: bool = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

#: Py_TRACE_REFS builds put two extra pointers in front of every object (sys.getobjects exists).
TRACE_REFS: bool = hasattr(sys, "getobjects")

#: Py_DEBUG builds (sys.gettotalrefcount exists); same object layout unless TRACE_REFS.
DEBUG_BUILD: bool = hasattr(sys, "gettotalrefcount")

#: Size of a C pointer in bytes.
POINTER_SIZE: int = ctypes.sizeof(ctypes.c_void_p)

#: True where os.fork exists (crash isolation depends on it).
HAS_FORK: bool = hasattr(os, "fork")

#: Size of one int digit in bytes (4 for 30-bit digits, 2 for 15-bit).
DIGIT_SIZE: int = sys.int_info.sizeof_digit

#: Digits CPython allocates for an int at least (3.11+: one, even for zero; int.__sizeof__ agrees).
INT_MIN_DIGITS: int = 1 if VERSION >= (3, 11) else 0

#: The cached small ints, one shared object per value (Include/internal/pycore_runtime_structs.h:
#: _PY_NSMALLNEGINTS 5, _PY_NSMALLPOSINTS 257, 1025 from 3.15).
SMALL_INTS: range = range(-5, 1025 if VERSION >= (3, 15) else 257)

#: Counts at or above this are immortal objects' (3.12+: 0xFFFFFFFF on 3.12/3.13, 3 << 30 from 3.14).
IMMORTAL_REFCNT_MIN: int = 1 << 30


def is_immortal(obj: object) -> bool:
    """Whether CPython never changes ``obj``'s count (3.12+), asked of the interpreter itself
    (``sys._is_immortal`` from 3.14, else the count it reports): for code that reads no object memory.
    :func:`pyguts.is_immortal` reads the header by the layout table's rule; tests keep the two equal.

    >>> is_immortal(None) == (VERSION >= (3, 12)), is_immortal(object())
    (True, False)
    """
    if VERSION < (3, 12):
        return False
    probe = getattr(sys, "_is_immortal", None)
    return probe(obj) if probe is not None else sys.getrefcount(obj) >= IMMORTAL_REFCNT_MIN


#: How to free a str's cached UTF-8 copy (Objects/unicodeobject.c allocates it with PyObject_Malloc
#: before 3.13, PyMem_Malloc since): the other one aborts debug builds and PYTHONMALLOC=debug.
UTF8_CACHE_FREE: str = "PyMem_Free" if VERSION >= (3, 13) else "PyObject_Free"

#: Bits per int digit.
DIGIT_BITS: int = sys.int_info.bits_per_digit

#: A short name of the build: "3.12", "3.13t".
BUILD_NAME: str = "%d.%d%s" % (*VERSION, "t" if GIL_DISABLED else "")

#: The interpreter's C headers and extension-module suffix (native builds).
PY_INCLUDE: str = sysconfig.get_paths()["include"]
EXT_SUFFIX: str = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
