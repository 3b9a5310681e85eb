"""numpy arrays over checked memory, made in C: ~10x cheaper than ``__array_interface__``.

``_ndarray.c`` is built on first use through :func:`pyguts.native.build` (cached on disk like
every pyguts build) against this interpreter's and numpy's headers. :func:`functions` gives
:class:`Helpers`, or None where it cannot be built (no compiler, no headers, no cffi): callers
then make the same arrays through ``__array_interface__``, and :func:`why_not` says why.

>>> import numpy as np
>>> f = functions()
>>> if f is not None:
...     b = b"abc"
...     v = f.held(b, id(b), 8, np.dtype(np.uint8), False)
...     assert type(v.base) is f.Holder and v.base.owner is b and not v.flags.writeable
"""

from __future__ import annotations

import ctypes
import pathlib
from typing import Any, Callable, NamedTuple

#: The C source, a real file shipped beside this module.
SOURCE_PATH = pathlib.Path(__file__).with_name("_ndarray.c")

_CDEF = "uintptr_t pg_nd_functions(void);"


class Helpers(NamedTuple):
    """What the C module hands out (in the order of its tuple)."""

    Holder: type                             # an array's .base that keeps a viewed object alive
    held: Callable[..., Any]                 # held(owner, addr, count, dtype, writable) -> 1-D array
    blocks: Callable[[type, dict], None]     # blocks(Block, plans): the class owned() makes, cached()'s dict
    owned: Callable[[tuple, bool], Any]      # owned(plan, zero) -> array over new memory, or None
    cached: Callable[..., Any]               # cached(shape, dtype, allocator, alignment, zero) -> owned()
                                             # of the plan in plans, or NotImplemented


_functions: Helpers | None = None
_why_not: str | None = None


def functions() -> Helpers | None:
    """The built module's :class:`Helpers`, or None (see :func:`why_not`)."""
    global _functions, _why_not
    if _functions is None and _why_not is None:
        try:
            import numpy as np

            from pyguts import native  # imported on first use: importing pyguts compiles nothing

            # The full C API (numpy's headers need it), not the limited one cffi defaults to.
            library = native.build(_CDEF, SOURCE_PATH.read_text(), name="pyguts_ndarray",
                                   flags=(f"-I{np.get_include()}", "-D_CFFI_NO_LIMITED_API"))
            addr = library.lib.pg_nd_functions()
            if not addr:
                raise RuntimeError("its set-up failed (the Python error was printed to stderr)")
            _functions = Helpers(*ctypes.cast(addr, ctypes.py_object).value)
        except Exception as exc:  # noqa: BLE001 - any failure means: use the pure-Python way
            _why_not = f"{type(exc).__name__}: {exc}"
    return _functions


def holder_type() -> type | None:
    """The C ``Holder`` class if :func:`functions` built it already (never builds)."""
    return _functions.Holder if _functions else None


def why_not() -> str | None:
    """Why :func:`functions` gives None (after it was called), else None."""
    return _why_not
