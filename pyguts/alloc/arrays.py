"""numpy arrays whose data lives in a chosen allocator.

The memory is owned by a :class:`Block`: it exposes ``__array_interface__`` and frees its memory
exactly once, through the allocator that made it, in ``__del__`` — which runs when the last array or
view whose ``.base`` chain reaches the block dies. A block cannot be re-pointed at another allocator,
so a wrong-allocator free cannot be written with this API. Pickled arrays come back as ordinary
numpy arrays (numpy copies the data; the block itself refuses to be pickled).

>>> a = empty((2, 3), allocator="libc")
>>> a.shape, a.nbytes, owner(a).allocator
((2, 3), 48, 'libc')
>>> z = zeros(5, dtype="int32", allocator="mmap")
>>> int(z.sum()), z.ctypes.data % 4096
(0, 0)
"""

from __future__ import annotations

import math
import operator

import numpy as np

from pyguts.alloc import registry, shim
from pyguts.errors import UnsafeOperationError

#: The least alignment handed to an allocator: what malloc guarantees on x86-64 / aarch64.
MIN_ALIGNMENT = 16


class Block:
    """One allocation from a pyguts allocator, viewed by numpy through ``__array_interface__``.

    Attributes (read-only): ``allocator`` (name), ``addr``, ``nbytes``, ``alignment``, ``freed``.
    """

    __slots__ = ("_allocator", "_ctx", "_free", "_addr", "_nbytes", "_alignment", "_interface",
                 "__weakref__")

    def __init__(self, allocator: str, ctx: int, addr: int, nbytes: int, alignment: int,
                 shape: tuple[int, ...], dtype: np.dtype):
        setter = object.__setattr__
        setter(self, "_allocator", allocator)
        setter(self, "_ctx", ctx)
        setter(self, "_free", shim.shim().pg_owned_free)  # held: module globals vanish at exit
        setter(self, "_addr", addr)
        setter(self, "_nbytes", nbytes)
        setter(self, "_alignment", alignment)
        interface = {"version": 3, "shape": shape, "typestr": dtype.str, "data": (addr, False)}
        if dtype.fields is not None:  # typestr alone ("|V12") loses the fields
            interface["descr"] = dtype.descr
        setter(self, "_interface", interface)

    allocator = property(lambda self: self._allocator, doc="Name of the allocator that owns the memory.")
    addr = property(lambda self: self._addr, doc="Start address of the data (0 once freed).")
    nbytes = property(lambda self: self._nbytes, doc="Bytes requested from the allocator.")
    alignment = property(lambda self: self._alignment, doc="Guaranteed alignment of addr, in bytes.")
    freed = property(lambda self: self._addr == 0, doc="True once the memory went back.")

    @property
    def __array_interface__(self) -> dict:
        if self._addr == 0:
            raise ValueError("this pyguts Block was already freed; views must come from a live array")
        return self._interface

    def __setattr__(self, name, value):
        raise AttributeError(f"pyguts Block attributes are read-only (got an assignment to {name!r}): "
                             "memory is always freed by the allocator that made it")

    def __delattr__(self, name):
        self.__setattr__(name, None)

    def __reduce__(self):
        raise TypeError("a pyguts Block (raw memory) cannot be pickled; pickle the array instead, "
                        "which copies the data into an ordinary numpy array")

    def __repr__(self) -> str:
        state = "freed" if self._addr == 0 else f"0x{self._addr:x}"
        return f"<pyguts Block {self._nbytes} bytes from {self._allocator!r} at {state}>"

    def __del__(self):
        addr = self._addr
        if addr:
            object.__setattr__(self, "_addr", 0)
            self._free(self._ctx, addr, self._nbytes)


def _shape_of(shape) -> tuple[int, ...]:
    if isinstance(shape, (tuple, list)):
        dims = tuple(operator.index(n) for n in shape)
    else:
        dims = (operator.index(shape),)
    if any(n < 0 for n in dims):
        raise ValueError(f"array dimensions must be >= 0, got shape {dims}")
    return dims


def _alloc(shape, dtype, allocator, alignment, zero: bool) -> np.ndarray:
    dims = _shape_of(shape)
    dt = np.dtype(dtype)
    if dt.subdtype is not None:  # as numpy does: empty(3, ("f8", (2,))) has shape (3, 2)
        dt, sub = dt.subdtype
        dims += sub
    if dt.hasobject:
        raise UnsafeOperationError(f"dtype must not hold Python objects in foreign memory (numpy would "
                                   f"never release their references), got {dt}; use numpy.empty for it")
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two in bytes, got {alignment!r}; e.g. 64")
    nbytes = math.prod(dims) * dt.itemsize  # elements -> bytes, never bytes-as-elements
    alloc = registry.load(allocator)
    align = max(alignment, MIN_ALIGNMENT, dt.alignment)
    addr = shim.shim().pg_owned_alloc(alloc.ctx, nbytes, align, int(zero))
    if not addr:
        raise MemoryError(f"allocator {alloc.name!r} could not provide {nbytes} bytes aligned to {align}; "
                          "ask for less or another allocator")
    block = Block(alloc.name, alloc.ctx, addr, nbytes, align, dims, dt)
    array = np.asarray(block)
    assert array.base is block, "numpy must view the block itself: its .base keeps the memory alive"
    return array


def empty(shape, dtype=float, *, allocator: str = "jemalloc", alignment: int = 64) -> np.ndarray:
    """An uninitialised array of ``shape`` elements of ``dtype`` in ``allocator``'s memory.

    >>> a = empty(1000, allocator="mimalloc")
    >>> a.nbytes, a.ctypes.data % 64
    (8000, 0)
    """
    return _alloc(shape, dtype, allocator, alignment, zero=False)


def zeros(shape, dtype=float, *, allocator: str = "jemalloc", alignment: int = 64) -> np.ndarray:
    """A zero-filled array of ``shape`` elements of ``dtype`` in ``allocator``'s memory.

    >>> float(zeros((3, 3), allocator="tcmalloc").sum())
    0.0
    """
    return _alloc(shape, dtype, allocator, alignment, zero=True)


def owner(array) -> Block | None:
    """The pyguts :class:`Block` at the end of ``array``'s ``.base`` chain, or None.

    >>> v = empty(8, allocator="libc")[2:4]
    >>> owner(v).nbytes
    64
    """
    seen = 0
    base = array
    while base is not None and seen < 1000:  # cap: a .base chain is short; never loop forever
        if isinstance(base, Block):
            return base
        base = getattr(base, "base", None)
        seen += 1
    return None
