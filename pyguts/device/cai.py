"""Device pointers in and out: ``__cuda_array_interface__`` v3 read and checked, foreign pointers wrapped (private).

The interface (https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html, v3) is a
dict with ``shape``, ``typestr``, ``data`` = (address, read-only flag), ``version``, and optional
``strides`` (None: C-contiguous), ``descr``, ``mask`` (must be None here) and, from v3,
``stream``: None (no synchronisation needed), 1 (legacy default stream), 2 (per-thread default
stream) or another integer, a ``cudaStream_t``; 0 is invalid because it is ambiguous between 1
and 2. The consumer must make its work wait on that stream before touching the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyguts.device.probe import require_cupy

#: CAI v3 ``stream`` values with a fixed meaning.
LEGACY_DEFAULT_STREAM, PER_THREAD_DEFAULT_STREAM = 1, 2
#: Versions of the interface whose fields this module understands.
SUPPORTED_VERSIONS = (0, 1, 2, 3)


@dataclass(frozen=True, eq=False)
class DevicePointer:
    """A device address read from ``__cuda_array_interface__``, with its owner kept alive.

    Not a host address: pyguts.native refuses it, and reading it from the CPU would crash.

    >>> class Fake:
    ...     __cuda_array_interface__ = {"shape": (4,), "typestr": "<f8", "data": (0x7000, False),
    ...                                 "version": 3, "strides": None, "stream": None}
    >>> p = pointer(Fake())
    >>> hex(p.addr), p.nbytes, p.dtype, p.c_contiguous
    ('0x7000', 32, dtype('float64'), True)
    """

    addr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    strides: tuple[int, ...]      # in bytes, always filled in (C order when the interface says None)
    readonly: bool
    stream: int | None
    owner: Any
    c_contiguous: bool = True

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __int__(self) -> int:
        return self.addr

    def __repr__(self) -> str:
        return (f"DevicePointer(addr=0x{self.addr:x}, shape={self.shape}, dtype={self.dtype}, "
                f"readonly={self.readonly}, stream={self.stream}, owner=<{type(self.owner).__name__}>)")


_DTYPES: dict[Any, np.dtype] = {}  # typestr -> dtype: np.dtype() costs ~1 µs per call
_REQUIRED_KEYS = ("shape", "typestr", "data", "version")
_REQUIRED = frozenset(_REQUIRED_KEYS)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    if len(shape) == 1:
        return (itemsize,)
    strides, step = [], itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


def _bad(what: str, got: Any, fix: str) -> ValueError:
    return ValueError(f"__cuda_array_interface__ {what}, got {got!r}; {fix}")


def pointer(obj: Any) -> DevicePointer:
    """Read and check ``obj.__cuda_array_interface__`` (CuPy, numba, PyTorch, hand-made); keeps ``obj``.

    Raises ``TypeError`` if ``obj`` has no interface (a numpy array is host memory: use
    ``pyguts.native.pointer``) and ``ValueError`` naming the first field that breaks v3.

    >>> class Bad:
    ...     __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0x7000, False),
    ...                                 "version": 3, "stream": 0}
    >>> pointer(Bad())
    Traceback (most recent call last):
    ...
    ValueError: __cuda_array_interface__ stream must be None, 1 (legacy default), 2 (per-thread default) or a cudaStream_t address; 0 is invalid in v3 (ambiguous), got 0; the exporter must say which default stream it means
    """
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        host = " (a numpy array is host memory: use pyguts.native.pointer)" if isinstance(obj, np.ndarray) else ""
        raise TypeError(f"a device array must have __cuda_array_interface__, got "
                        f"{type(obj).__name__}{host}; pass a CuPy or numba device array") from None
    return parse(cai, obj)


def parse(cai: Any, owner: Any) -> DevicePointer:
    """Check one ``__cuda_array_interface__`` dict against v3 and return its pointer."""
    if not isinstance(cai, dict):
        raise _bad("must be a dict", type(cai).__name__, "the exporter must return a dict")
    if not cai.keys() >= _REQUIRED:
        missing = [k for k in _REQUIRED_KEYS if k not in cai]
        raise _bad(f"must have keys shape, typestr, data and version; {missing} missing", sorted(cai),
                   "the exporter must fill every required key")
    version = cai["version"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise _bad(f"version must be one of {SUPPORTED_VERSIONS}", version, "upgrade pyguts or the exporter")
    shape = cai["shape"]
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad("shape must be a tuple of non-negative ints", shape, "export shape as a tuple")
    typestr = cai["typestr"]
    try:
        dtype = _DTYPES.get(typestr) or _DTYPES.setdefault(typestr, np.dtype(typestr))
    except TypeError:
        raise _bad("typestr must be a numpy type string such as '<f8'", typestr,
                   "export typestr as numpy's dtype.str") from None
    if not dtype.isnative:
        raise _bad("typestr must be native-endian (GPUs are little-endian)", typestr,
                   "export a little-endian array")
    data = cai["data"]
    if (not isinstance(data, tuple) or len(data) != 2 or type(data[0]) is not int or type(data[1]) is not bool
            or data[0] < 0):
        raise _bad("data must be a tuple (address: int >= 0, read-only: bool)", data,
                   "export data as (ptr, readonly)")
    addr, readonly = data
    size = math.prod(shape)
    if addr == 0 and size != 0:
        raise _bad(f"data address may be 0 only for an empty array; shape {shape} has {size} elements",
                   data, "export the real device address")
    strides = cai.get("strides")
    c_strides = _c_strides(shape, dtype.itemsize)
    if strides is None:
        strides, contiguous = c_strides, True
    elif (not isinstance(strides, tuple) or len(strides) != len(shape)
          or not all(type(s) is int for s in strides)):
        raise _bad(f"strides must be None or a tuple of {len(shape)} ints (bytes), one per dimension",
                   strides, "export strides in bytes, or None for C order")
    else:
        contiguous = size <= 1 or all(s == c or extent == 1 for s, c, extent in zip(strides, c_strides, shape))
    if cai.get("mask") is not None:
        raise _bad("mask must be None (masked device arrays are not supported)", type(cai["mask"]).__name__,
                   "pass the array without its mask")
    stream = cai.get("stream")
    if stream is not None:
        stream = _stream(cai, version)
    return DevicePointer(addr, shape, dtype, strides, readonly, stream, owner, contiguous)


def _stream(cai: dict, version: int) -> int | None:
    stream = cai.get("stream")
    if stream is None:
        return None
    if version < 3:
        raise _bad(f"stream is defined from version 3 on, but version is {version}", stream,
                   "the exporter must say version 3 or drop stream")
    if not isinstance(stream, int) or isinstance(stream, bool) or stream < 0:
        raise _bad("stream must be None or a non-negative int", stream, "export a cudaStream_t address")
    if stream == 0:
        raise _bad("stream must be None, 1 (legacy default), 2 (per-thread default) or a cudaStream_t "
                   "address; 0 is invalid in v3 (ambiguous)", stream,
                   "the exporter must say which default stream it means")
    return stream


def wait_for(p: DevicePointer, cupy: Any) -> None:
    """Make CuPy's current stream wait for the producer's stream named by the interface (v3)."""
    if p.stream is None:
        return
    if p.stream == LEGACY_DEFAULT_STREAM:
        producer = cupy.cuda.Stream.null
    elif p.stream == PER_THREAD_DEFAULT_STREAM:
        producer = cupy.cuda.Stream.ptds
    else:
        producer = cupy.cuda.ExternalStream(p.stream)
    consumer = cupy.cuda.get_current_stream()
    if producer.ptr != consumer.ptr:
        consumer.wait_event(producer.record())


def check_foreign(ptr: Any, shape: Any, dtype: Any, strides: Any) -> tuple[int, tuple[int, ...], np.dtype,
                                                                            tuple[int, ...] | None, int]:
    """Validate :func:`from_pointer`'s arguments before any device is touched; returns them normalised."""
    addr = ptr.addr if isinstance(ptr, DevicePointer) else ptr
    if not isinstance(addr, int) or isinstance(addr, bool) or addr < 0:
        raise TypeError(f"ptr must be a device address (int >= 0) or a DevicePointer, got {ptr!r}; "
                        f"pass int(...) of the address")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"shape must be non-negative ints, got {shape!r}; pass e.g. (n,)")
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError(f"dtype must be plain data, got {dtype}; device memory cannot hold Python objects")
    size = math.prod(shape)
    if strides is None:
        extent = size * dtype.itemsize
    else:
        strides = tuple(strides)
        if len(strides) != len(shape):
            raise ValueError(f"strides must have one entry per dimension ({len(shape)}), got {strides!r}")
        if any(s < 0 for s in strides):
            raise ValueError(f"strides must be non-negative here, got {strides!r}; pass a base pointer "
                             f"and non-negative strides")
        extent = 0 if size == 0 else sum((d - 1) * s for d, s in zip(shape, strides)) + dtype.itemsize
    if addr == 0 and size:
        raise ValueError(f"ptr is NULL but shape {shape} has {size} elements; pass the real device address")
    return addr, shape, dtype, strides, extent


def from_pointer(ptr: Any, shape: Any, dtype: Any, owner: Any, *, strides: Any = None) -> Any:
    """Wrap foreign device memory at ``ptr`` as a CuPy array; ``owner`` is kept alive by it.

    The array's memory is a ``cupy.cuda.UnownedMemory`` holding ``owner`` (whoever frees the
    memory), so the memory lives as long as the array or any view of it. ``ptr`` may be a
    :class:`DevicePointer` (from :func:`pointer`): CuPy's current stream then waits for the
    stream its interface named. CuPy arrays are always writable, whatever the exporter said.
    Arguments are checked before any device is touched; then :class:`DeviceUnavailable` if
    there is no GPU.
    """
    addr, shape, dtype, strides, extent = check_foreign(ptr, shape, dtype, strides)
    if owner is None:
        raise ValueError("owner must be the object that keeps the device memory allocated, got None; "
                         "pass it (e.g. the exporting array) so the memory outlives the CuPy array")
    cupy = require_cupy()
    if isinstance(ptr, DevicePointer):
        wait_for(ptr, cupy)  # the exporter's stream (CAI v3) must be done before CuPy reads
    # An empty array may sit at address 0, where CuPy cannot ask the driver which device holds it
    # (it would raise): any device will do for no bytes, so the current one is named.
    device_id = cupy.cuda.runtime.getDevice() if addr == 0 else None
    memory = cupy.cuda.UnownedMemory(addr, extent, owner, device_id)
    return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0), strides=strides)
