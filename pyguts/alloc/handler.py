"""NEP 49: install a pyguts allocator as numpy's data-memory handler for a block of code.

numpy keeps the current handler in a context variable (``numpy/_core/src/multiarray/alloc.c``):
``use()`` changes it for the **current thread's current context only**. Threads started inside the
block begin with numpy's default handler; ``contextvars.copy_context()`` and asyncio tasks created
inside the block inherit it. Every array records the handler that allocated it and is freed through
that handler, whatever is current when it dies — so memory allocated inside the block and freed
outside goes back to the right allocator.

The handler is a C struct built by the shim (C function pointers, no Python on the allocation
path). Handler, capsule, shim and library are kept referenced for the life of the process.

>>> import numpy as np
>>> with use("libc"):
...     a = np.arange(10.0)
>>> handler_name(a)
'pyguts-libc'
>>> handler_name(np.arange(3.0))
'default_allocator'
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Iterator

from pyguts.alloc import registry, shim
from pyguts.alloc.registry import Allocator

#: Slots of numpy's ``_ARRAY_API`` table (``numpy/__multiarray_api.h``, NEP 49, numpy >= 1.22).
SET_HANDLER_SLOT = 304
GET_HANDLER_SLOT = 305
#: numpy requires handler capsules to carry this name.
CAPSULE_NAME = b"mem_handler"
#: Every pyguts handler name starts with this.
NAME_PREFIX = "pyguts-"

# A private PyDLL: setting argtypes on ctypes.pythonapi's shared function objects would leak into
# every other user of ctypes.pythonapi in the process.
_api = ctypes.PyDLL(ctypes.pythonapi._name, handle=ctypes.pythonapi._handle)
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
_api.PyCapsule_GetName.restype = ctypes.c_char_p
_api.PyCapsule_GetName.argtypes = [ctypes.py_object]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]

_CAPSULES: dict[str, object] = {}   # name -> capsule; never released (arrays may outlive use())
_LOCK = threading.Lock()
_set_handler = None
_get_handler = None


def _multiarray():
    try:
        from numpy._core import _multiarray_umath as m  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as m
    return m


def api_functions():
    """PyDataMem_SetHandler/GetHandler from numpy's C API table, checked before first use."""
    global _set_handler, _get_handler
    if _set_handler is None:
        table_capsule = _multiarray()._ARRAY_API
        table = _api.PyCapsule_GetPointer(table_capsule, _api.PyCapsule_GetName(table_capsule))
        slots = (ctypes.c_void_p * (GET_HANDLER_SLOT + 1)).from_address(table)
        # PYFUNCTYPE keeps the GIL held across the call; CFUNCTYPE would drop it and crash.
        getter = ctypes.PYFUNCTYPE(ctypes.py_object)(slots[GET_HANDLER_SLOT])
        current = getter()
        if not _api.PyCapsule_IsValid(current, CAPSULE_NAME):
            import numpy
            raise RuntimeError(f"numpy's C API slot {GET_HANDLER_SLOT} must be PyDataMem_GetHandler "
                               f"returning a 'mem_handler' capsule, got {current!r} on numpy "
                               f"{numpy.__version__}; this numpy's API table differs, report it")
        _get_handler = getter
        _set_handler = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(slots[SET_HANDLER_SLOT])
    return _set_handler, _get_handler


def capsule(allocator: str | Allocator):
    """The handler capsule for ``allocator`` (created once, kept forever).

    >>> import numpy as np
    >>> type(capsule("libc")).__name__
    'PyCapsule'
    """
    alloc = registry.load(allocator)
    with _LOCK:
        cap = _CAPSULES.get(alloc.name)
        if cap is None:
            lib = shim.shim()
            handler = lib.pg_handler_new((NAME_PREFIX + alloc.name).encode(), alloc.ctx)
            if not handler:
                raise MemoryError(f"allocating the NEP 49 handler for {alloc.name!r} failed")
            name_addr = lib.pg_capsule_name_addr()  # static in the shim: outlives every capsule
            cap = _CAPSULES[alloc.name] = _api.PyCapsule_New(handler, name_addr, None)
        return cap


def current_handler_name() -> str:
    """Name of numpy's handler in the current context ("default_allocator" unless changed).

    >>> current_handler_name()
    'default_allocator'
    """
    return _multiarray().get_handler_name()


def handler_name(array) -> str | None:
    """Name of the handler that allocated ``array``'s data (None when it does not own its data)."""
    return _multiarray().get_handler_name(array)


def _numpy_hugepage() -> bool:
    """numpy's switch for advising huge pages on blocks of 4 MiB and more (on unless turned off with
    ``numpy._core.multiarray._set_madvise_hugepage(False)``, or by numpy on old kernels)."""
    multiarray = _multiarray()
    get = getattr(multiarray, "_get_madvise_hugepage", None)
    return bool(get()) if get is not None else True


@contextlib.contextmanager
def use(allocator: str | Allocator) -> Iterator[Allocator]:
    """Make numpy allocate array data through ``allocator`` inside the block (this context only).

    The previous handler is restored on exit, also when the block raises.

    >>> import numpy as np
    >>> with use("mmap") as alloc:
    ...     b = np.zeros(4)
    >>> alloc.name, handler_name(b), current_handler_name()
    ('mmap', 'pyguts-mmap', 'default_allocator')
    """
    alloc = registry.load(allocator)
    cap = capsule(alloc)
    set_handler, _ = api_functions()
    shim.shim().pg_set_numpy_hugepage(_numpy_hugepage())   # blocks of 4 MiB+ get numpy's huge-page advice
    previous = set_handler(cap)
    try:
        yield alloc
    finally:
        set_handler(previous)
