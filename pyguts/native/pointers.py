"""Raw pointers with their owners, and Python callbacks whose exceptions reach the caller (private).

``Pointer`` holds a buffer export of its owner (cffi ``from_buffer``), so the owner can neither be
freed nor resized (a ``bytearray`` or ``ndarray.resize`` raises ``BufferError``) while the pointer
lives. ``Callback`` keeps the cffi callback alive. An exception raised inside it belongs to the
checked call running on that thread, found by its frame on the stack (the per-call token: a
thread id alone is reused by the next thread); it is parked in ``PENDING`` and re-raised by that
call only. With no checked call on the stack (a raw ``lib.lib`` call, a thread C started) it goes
to :func:`sys.unraisablehook` at once, as CPython does with exceptions it cannot raise.
"""

from __future__ import annotations

import math
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import cffi
import numpy as np

#: The FFI used for callbacks and casts when no library's FFI is given (types are shared across FFIs).
FFI = cffi.FFI()

#: Start of the file name of every generated checked call's code: how park() finds the call.
CHECKED_CALL = "<pyguts.native checked call"

#: Exceptions raised inside callbacks (or recorded by library error handlers) during a checked
#: call, by thread id: (exception, the checked call's frame). Only that call pops its entry, when
#: C returns. Mutated in place, never rebound.
PENDING: dict[int, tuple[BaseException, Any]] = {}

_get_ident = threading.get_ident


def _checked_call(frame: Any) -> Any:
    """The innermost checked call's frame at or above ``frame``, or None."""
    while frame is not None and not frame.f_code.co_filename.startswith(CHECKED_CALL):
        frame = frame.f_back
    return frame


def _on_stack(target: Any, frame: Any) -> bool:
    while frame is not None and frame is not target:
        frame = frame.f_back
    return frame is not None


def raise_pending() -> None:
    """Re-raise the exception a callback parked for the checked call that calls this; every one does.

    An exception parked for another checked call (an outer one on this thread) is left for it.

    >>> raise_pending()  # nothing parked: returns None
    """
    entry = PENDING.get(_get_ident())
    if entry is None:
        return
    exc, call = entry
    caller = sys._getframe(1)
    if call is caller:
        del PENDING[_get_ident()]
        raise exc
    if not _on_stack(call, caller):  # its call ended without popping it (interrupted): never raise it
        del PENDING[_get_ident()]
        report_unraisable(exc)


def park(exc: BaseException) -> None:
    """Park ``exc`` for the checked call running on this thread (the first one wins), else report it."""
    call = _checked_call(sys._getframe(1))
    if call is None:
        report_unraisable(exc)
        return
    entry = PENDING.setdefault(_get_ident(), (exc, call))
    if entry[1] is not call:  # an outer call's exception waits here: this one cannot be raised
        report_unraisable(exc)


def report_unraisable(exc: BaseException) -> None:
    """Hand ``exc`` to :func:`sys.unraisablehook` (which prints it by default).

    Python has no public way to call the hook with its own argument type, so a weakref callback
    raises ``exc`` while its referent dies: CPython reports that through the hook.
    """
    def pyguts_native_callback_error_outside_a_checked_call(ref: Any) -> None:
        raise exc

    anchor = _Anchor()
    ref = weakref.ref(anchor, pyguts_native_callback_error_outside_a_checked_call)
    del anchor  # the callback runs now (reference counting) and its exception goes to the hook
    del ref


class _Anchor:
    __slots__ = ("__weakref__",)


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
    callback on that thread during the same C call return ``error`` without running ``fn``, and
    the checked call (see :func:`pyguts.native.build`) re-raises the exception once C returns.
    An exception raised while no checked call runs on that thread (C called through ``lib.lib``,
    or a thread C started itself) is never raised by any call: it goes to
    :func:`sys.unraisablehook`, which prints it. Pass ``lib=`` to use type names declared in that
    library's cdef.

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
