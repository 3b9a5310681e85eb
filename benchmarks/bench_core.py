"""Core rows: exact refcount, object views and payloads against the plain ways of reading them.

Goals (issue 17): refcount within 2x sys.getrefcount, view within 3x a ctypes from_address read.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

import pyguts


def run(h) -> None:
    x = object()
    h.compare("core: refcount", ("sys.getrefcount(x)", lambda: sys.getrefcount(x)),
              {"pyguts.refcount(x)": lambda: pyguts.refcount(x)}, goal=2.0)
    b = b"Hello, world!"
    addr = id(b)
    h.compare("core: view", ("ctypes.c_char.from_address(id(b))", lambda: ctypes.c_char.from_address(addr).value),
              {"pyguts.view(b)": lambda: pyguts.view(b),
               "pyguts.struct_of(b)": lambda: pyguts.struct_of(b)}, goal={"pyguts.view(b)": 3.0})
    h.compare("core: payload", ("np.frombuffer(b, np.uint8)", lambda: np.frombuffer(b, np.uint8)),
              {"pyguts.payload(b)": lambda: pyguts.payload(b)})
