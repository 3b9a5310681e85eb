"""Raw pointers with their owners, and Python callbacks whose exceptions reach the caller (private).

``Pointer`` holds a buffer export of its owner (cffi ``from_buffer``), so the owner can neither be
freed nor resized (a ``bytearray`` or ``ndarray.resize`` raises ``BufferError``) while the pointer
lives. ``Callback`` keeps the cffi callback alive; an exception raised inside it is parked per
thread in ``PENDING`` and re-raised by the checked call that was running when C called back.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import cffi
import numpy as np

#: The FFI used for callbacks and casts when no library's FFI is given (types are shared across FFIs).
FFI = cffi.FFI()

#: Exceptions raised inside callbacks (or recorded by library error handlers), by thread id, waiting
#: for the checked call on that thread to return. Mutated in place, never rebound.
PENDING: dict[int, BaseException] = {}

_get_ident = threading.get_ident


def raise_pending() -> None:
    """Re-raise the exception parked by a callback on this thread, if any.

    >>> raise_pending()  # nothing parked: returns None
    """
    exc = PENDING.pop(_get_ident(), None)
    if exc is not None:
        raise exc


def park(exc: BaseException) -> None:
    """Park ``exc`` for this thread's running checked call; the first exception wins."""
    PENDING.setdefault(_get_ident(), exc)


@dataclass(frozen=True, eq=False)
class Pointer:
    """A raw address and the object that owns the memory behind it, kept alive (and unresizable).

    >>> import numpy
    >>> a = numpy.zeros(4)
    >>> p = pointer(a)
    >>> p.nbytes, p.owner is a, int(p) == a.ctypes.data
    (32, True, True)
    """

    addr: int
    nbytes: int
    owner: Any
    dtype: np.dtype | None = None
    readonly: bool = True
    #: The buffer export that pins the owner (None for address_of).
    _export: Any = None

    def __int__(self) -> int:
        return self.addr

    __index__ = __int__

    def __repr__(self) -> str:
        dtype = "" if self.dtype is None else f", dtype={self.dtype}"
        return (f"Pointer(addr=0x{self.addr:x}, nbytes={self.nbytes}{dtype}, readonly={self.readonly}, "
                f"owner=<{type(self.owner).__name__}>)")


def pointer(obj: Any) -> Pointer:
    """The address of the data of a C-contiguous array or buffer, with ``obj`` kept alive.

    >>> p = pointer(bytearray(b"abc"))
    >>> p.nbytes, p.readonly
    (3, False)
    """
    try:
        export = FFI.from_buffer(obj)
    except TypeError as exc:
        raise TypeError(f"pointer() needs an object exposing its memory (numpy array, bytearray, "
                        f"bytes, memoryview, mmap), got {type(obj).__name__}; pass numpy.asarray(obj)"
                        ) from exc
    except BufferError as exc:
        raise ValueError(f"pointer() needs C-contiguous memory, got {type(obj).__name__} that is "
                         f"not ({exc}); pass numpy.ascontiguousarray(obj)") from exc
    addr = int(FFI.cast("uintptr_t", export))
    if isinstance(obj, np.ndarray):
        return Pointer(addr, obj.nbytes, obj, obj.dtype, not obj.flags.writeable, export)
    view = memoryview(obj)
    return Pointer(addr, view.nbytes, obj, None, view.readonly, export)


def address_of(obj: Any) -> Pointer:
    """The address of the Python object itself (its ``PyObject`` header), with ``obj`` kept alive.

    ``nbytes`` is what ``type(obj).__sizeof__`` reports, which for containers includes memory
    allocated separately; treat only the object's fixed header as contiguous.

    >>> x = object()
    >>> address_of(x).addr == id(x)
    True
    """
    return Pointer(id(obj), type(obj).__sizeof__(obj), obj, None, True)


def default_error(ffi: cffi.FFI, result: Any) -> Any:
    """The documented value C receives from a callback that raised: NaN, -1, all bits, NULL, 0."""
    if result.kind == "void":
        return None
    if result.kind == "primitive":
        if result.cname in ("float", "double", "long double"):
            return math.nan
        if result.cname == "_Bool":
            return False
        if result.cname in ("char", "wchar_t", "char16_t", "char32_t") or "_Complex" in result.cname:
            return None  # zero
        return int(ffi.cast(result, -1))  # -1, or the all-bits value of an unsigned type
    return None  # pointers: NULL; structs: zeroed


class Callback:
    """A Python function callable from C through a function pointer; see :func:`callback`."""

    __slots__ = ("cdata", "fn", "error", "__weakref__")

    def __init__(self, cdata: Any, fn: Callable[..., Any], error: Any) -> None:
        self.cdata = cdata
        self.fn = fn
        self.error = error

    def __repr__(self) -> str:
        return f"Callback({FFI.typeof(self.cdata).cname!r}, {self.fn!r}, error={self.error!r})"


_DEFAULT = object()


def callback(cdecl: str, fn: Callable[..., Any], *, error: Any = _DEFAULT, lib: Any = None) -> Callback:
    """Wrap ``fn`` as a C function pointer of type ``cdecl``; keep the returned object alive.

    If ``fn`` raises, C receives ``error`` (default: NaN for floating results, -1 for signed and
    all bits set for unsigned integers, NULL for pointers, zero otherwise), later calls of the
    callback during the same C call return ``error`` without running ``fn``, and the checked call
    (see :func:`pyguts.native.build`) re-raises the exception once C returns. An exception
    raised while no checked call runs on that thread (C called through ``lib.lib`` or later)
    waits for the next checked call there, or for :func:`raise_pending`; one raised on a thread
    C started itself is never re-raised elsewhere. Pass ``lib=`` to use type names declared in
    that library's cdef.

    >>> cb = callback("double(double)", lambda x: 2 * x)
    >>> cb.cdata(3.0)
    6.0
    """
    ffi = lib.ffi if lib is not None else FFI
    try:
        try:
            ctype = ffi.typeof(cdecl)
        except cffi.CDefError:  # "double(double)" is a function type: cffi wants "double(*)(double)"
            ctype = ffi.typeof(cdecl.replace("(", "(*)(", 1))
    except (cffi.CDefError, cffi.FFIError, TypeError, ValueError) as exc:
        raise ValueError(f"callback() needs a C function type such as 'double(double, void *)', "
                         f"got {cdecl!r}: {exc}; pass lib= when it uses typedefs of a library") from exc
    if ctype.kind != "function":
        raise ValueError(f"callback() needs a C function type such as 'double(double, void *)', got "
                         f"{cdecl!r} ({ctype.kind}); write the return type and the parameter types")
    if error is _DEFAULT:
        error = default_error(ffi, ctype.result)

    def call_from_c(*args: Any) -> Any:
        if PENDING and _get_ident() in PENDING:
            return error  # an earlier call raised: do not run fn again during this C call
        return fn(*args)

    def onerror(exc_type: type, exc: BaseException | None, tb: Any) -> None:
        park(exc.with_traceback(tb) if exc is not None else exc_type())
        return None  # C gets `error`

    cdata = ffi.callback(ctype, call_from_c, error=error, onerror=onerror)
    return Callback(cdata, fn, error)
