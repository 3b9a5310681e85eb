"""numpy arrays whose data lives in a chosen allocator.

The memory is owned by a :class:`Block`: it exposes ``__array_interface__``, and its memory goes back
exactly once, through the allocator that made it, when the last array or view whose ``.base`` chain
reaches the block dies (a C object the block holds frees it: no Python ``__del__`` runs). Requests
are planned once; a repeated one is looked up in C. A block cannot be re-pointed at another allocator,
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
from typing import NamedTuple

import numpy as np

from pyguts import _ndarray
from pyguts.alloc import registry, shim
from pyguts.errors import BuildError, UnsafeOperationError

#: The least alignment handed to an allocator: what malloc guarantees on x86-64 / aarch64.
MIN_ALIGNMENT = 16


class Block:
    """One allocation from a pyguts allocator: the ``.base`` of the arrays over it.

    Attributes (read-only): ``allocator`` (name), ``addr``, ``nbytes``, ``alignment``, ``freed``.
    The memory goes back to its allocator when the block dies (a C object it holds frees it, so
    no Python code runs then); numpy can view a live block again through ``__array_interface__``.
    """

    # Made and filled in C (pyguts._ndarray's owned()): _plan, the _Plan it was made by, and _mem,
    # the C object that owns the memory.
    __slots__ = ("_plan", "_mem", "__weakref__")

    allocator = property(lambda self: self._plan.allocator.name, doc="Name of the allocator that owns the memory.")
    addr = property(lambda self: self._mem.addr, doc="Start address of the data.")
    nbytes = property(lambda self: self._plan.nbytes, doc="Bytes requested from the allocator.")
    alignment = property(lambda self: self._plan.alignment, doc="Guaranteed alignment of addr, in bytes.")
    freed = property(lambda self: False, doc="False: the memory goes back only when the block itself dies.")

    @property
    def __array_interface__(self) -> dict:
        plan = self._plan
        interface = {"version": 3, "shape": plan.shape, "typestr": plan.dtype.str, "data": (self.addr, False)}
        if plan.dtype.fields is not None:  # typestr alone ("|V12") loses the fields
            interface["descr"] = plan.dtype.descr
        return interface

    def __new__(cls, *args, **kwargs):
        raise TypeError("pyguts Blocks are made by pyguts.alloc.empty and zeros, not called")

    def __setattr__(self, name, value):
        raise AttributeError(f"pyguts Block attributes are read-only (got an assignment to {name!r}): "
                             "memory is always freed by the allocator that made it")

    def __delattr__(self, name):
        self.__setattr__(name, None)

    def __reduce__(self):
        raise TypeError("a pyguts Block (raw memory) cannot be pickled; pickle the array instead, "
                        "which copies the data into an ordinary numpy array")

    def __repr__(self) -> str:
        return f"<pyguts Block {self.nbytes} bytes from {self.allocator!r} at 0x{self.addr:x}>"


class _Plan(NamedTuple):
    """What one (shape, dtype, allocator, alignment) request resolves to, checked once.

    pyguts._ndarray's owned() reads the first seven fields by position."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int
    alignment: int
    ctx: int         # the allocator's shim context
    alloc: int       # address of the shim's pg_owned_alloc(ctx, nbytes, align, zero)
    free: int        # address of pg_owned_free(ctx, addr, nbytes, align)
    request: object  # the dtype argument as given
    allocator: registry.Allocator


#: Plans of the latest requests (a few hundred at most), so that a repeated request costs a dict lookup.
_PLANS: dict[tuple, _Plan] = {}
_PLANS_MAX = 256


def _shape_of(shape) -> tuple[int, ...]:
    if isinstance(shape, (tuple, list)):
        dims = tuple(operator.index(n) for n in shape)
    else:
        dims = (operator.index(shape),)
    if any(n < 0 for n in dims):
        raise ValueError(f"array dimensions must be >= 0, got shape {dims}")
    return dims


def _plan(shape, dtype, allocator, alignment) -> _Plan:
    dims = _shape_of(shape)
    dt = np.dtype(dtype)
    if dt.subdtype is not None:  # as numpy does: empty(3, ("f8", (2,))) has shape (3, 2)
        dt, sub = dt.subdtype
        dims += sub
    if dt.hasobject:
        raise UnsafeOperationError(f"dtype must not hold Python objects in foreign memory (numpy would "
                                   f"never release their references), got {dt}; use numpy.empty for it")
    alignment = operator.index(alignment)
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two in bytes, got {alignment!r}; e.g. 64")
    loaded = registry.load(allocator)
    lib, ffi = shim.shim(), shim.ffi()
    return _Plan(dims, dt, math.prod(dims) * dt.itemsize,  # elements -> bytes, never bytes-as-elements
                 max(alignment, MIN_ALIGNMENT, dt.alignment), loaded.ctx,
                 int(ffi.cast("uintptr_t", lib.pg_owned_alloc)), int(ffi.cast("uintptr_t", lib.pg_owned_free)),
                 dtype, loaded)


def _first_cached(shape, dtype, allocator, alignment, zero):
    """The first request of a process: sets up the C helper (BuildError when it cannot be built),
    whose cached() then takes every request."""
    global _cached, _owned
    made = _ndarray.functions()
    if made is None:
        raise BuildError(f"pyguts.alloc needs its C helper (pyguts/_ndarray.c) built against numpy's "
                         f"headers, which failed: {_ndarray.why_not()}")
    made.blocks(Block, _PLANS)
    _cached, _owned = made.cached, made.owned
    return _cached(shape, dtype, allocator, alignment, zero)


#: cached(shape, dtype, allocator, alignment, zero): the array of a request planned before (a dict
#: lookup in C), or NotImplemented where _alloc must plan it; owned(plan, zero): the array of a plan,
#: or None when the allocator is out of memory (see pyguts/_ndarray.c).
_cached = _first_cached
_owned = None


def _alloc(shape, dtype, allocator, alignment, zero: bool) -> np.ndarray:
    """A request cached() could not serve: plan it (keeping the plan where equal keys cannot
    confuse: int sizes, no fields (equal structs may differ in offsets or titles), no metadata)."""
    plan = _plan(shape, dtype, allocator, alignment)
    ints = type(alignment) is int and (type(shape) is int or (
        type(shape) is tuple and all(type(n) is int for n in shape)))
    if ints and plan.dtype.fields is None and plan.dtype.metadata is None:
        try:
            _PLANS[(shape, dtype, allocator, alignment)] = plan
        except TypeError:   # an unhashable dtype argument (a dict spec)
            pass
        if len(_PLANS) > _PLANS_MAX:   # the oldest plan goes (dicts keep insertion order)
            del _PLANS[next(iter(_PLANS))]
    array = _owned(plan, zero)   # (set: empty and zeros ask _cached first)
    if array is None:
        raise MemoryError(f"allocator {plan.allocator.name!r} could not provide {plan.nbytes} bytes aligned to "
                          f"{plan.alignment}; ask for less or another allocator")
    return array


def empty(shape, dtype=float, *, allocator: str = "jemalloc", alignment: int = 64) -> np.ndarray:
    """An uninitialised array of ``shape`` elements of ``dtype`` in ``allocator``'s memory.

    >>> a = empty(1000, allocator="mimalloc")
    >>> a.nbytes, a.ctypes.data % 64
    (8000, 0)
    """
    array = _cached(shape, dtype, allocator, alignment, False)
    return _alloc(shape, dtype, allocator, alignment, False) if array is NotImplemented else array


def zeros(shape, dtype=float, *, allocator: str = "jemalloc", alignment: int = 64) -> np.ndarray:
    """A zero-filled array of ``shape`` elements of ``dtype`` in ``allocator``'s memory.

    >>> float(zeros((3, 3), allocator="tcmalloc").sum())
    0.0
    """
    array = _cached(shape, dtype, allocator, alignment, True)
    return _alloc(shape, dtype, allocator, alignment, True) if array is NotImplemented else array


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
