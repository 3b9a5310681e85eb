"""Device buffers: ``gpu_kernels/`` through CuPy, its kernels through numba.cuda, device pointers in and out.

Every kernel family in ``gpu_kernels/<name>.cu`` runs three ways: on the GPU through CuPy
(:func:`load` + :func:`launch`), on the CPU from the *same source* built by pyguts.native
(:func:`cpu_reference`, the reference the GPU is tested against), and as PTX from nvcc
(:func:`ptx`). The notebook's kernel (``momentum.cu``) also comes as a numba kernel
(:func:`numba_momentum_kernel`) and a CuPy elementwise expression (:func:`cupy_momentum`). Device pointers come out of any ``__cuda_array_interface__`` object with
:func:`pointer` (checked against v3) and go back in as CuPy arrays with :func:`from_pointer`.
Without a GPU, whatever needs one raises :class:`DeviceUnavailable` saying why (no driver, no
device, CuPy not installed) and what to do; nothing else here needs one.

>>> import numpy
>>> ref = cpu_reference("magnitude")
>>> x, y = numpy.array([3.0, 5.0]), numpy.array([4.0, 12.0])
>>> out = numpy.empty(2)
>>> ref.magnitude_f64(x, y, out)
>>> out
array([ 5., 13.])
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import numpy as np


from pyguts.device import gpu_kernels, nvrtc
from pyguts.device.cai import DevicePointer, from_pointer, pointer, wait_for
from pyguts.device.families import (ARCHES, DEFAULT_BLOCK, MAX_BLOCK, CpuFamily, Kernel, cpu_reference, kernels,
                                    plan, ptx)
from pyguts.device.probe import driver, gpu_reason, require_cupy
from pyguts.errors import BuildError, DeviceUnavailable

__all__ = ["ARCHES", "DEFAULT_BLOCK", "CpuFamily", "DeviceModule", "DevicePointer", "DeviceUnavailable",
           "Kernel", "available", "cpu_reference", "from_pointer", "kernels", "launch", "load",
           "cupy_momentum", "numba_magnitude", "numba_magnitude_kernel", "numba_momentum_kernel", "plan", "pointer", "ptx"]

#: NVRTC options for every gpu_kernels/ source (CuPy RawModule adds the device's -arch itself).
NVRTC_OPTIONS = ("--std=c++11",)
#: Blocks per streaming multiprocessor that :func:`launch` aims for with grid-stride kernels.
BLOCKS_PER_SM = 32
#: numba launch shape under the simulator: each simulated thread costs ~100 µs, so keep it tiny.
SIM_BLOCKS, SIM_THREADS = 2, 4

_modules: dict[tuple[str, str, int], DeviceModule] = {}
_sm_counts: dict[int, int] = {}  # device id -> multiprocessors
_block_limits: dict[tuple[int, int], int] = {}  # (id of a loaded RawKernel, device id) -> threads


def available() -> bool:
    """Whether the CuPy path can run here (a driver, a device and CuPy).

    >>> isinstance(available(), bool)
    True
    """
    return not gpu_reason()


class DeviceModule:
    """``gpu_kernels/<name>.cu`` compiled by CuPy (NVRTC) for the current device; kernels as attributes."""

    def __init__(self, name: str, raw: Any, specs: dict[str, Kernel]) -> None:
        self.name, self.raw, self.kernels = name, raw, specs
        self.__dict__.update(specs)

    def __repr__(self) -> str:
        return f"<DeviceModule gpu_kernels/{self.name}.cu kernels={sorted(self.kernels)}>"


def load(name: str) -> DeviceModule:
    """Compile ``gpu_kernels/<name>.cu`` with CuPy's ``RawModule`` (cached per source and device).

    Raises :class:`DeviceUnavailable` without a usable GPU, :class:`BuildError` if NVRTC refuses
    the source.
    """
    text = gpu_kernels.source(name)
    specs = kernels(name)
    cupy = require_cupy()
    key = (name, hashlib.sha256(text.encode()).hexdigest(), cupy.cuda.Device().id)
    if key in _modules:
        return _modules[key]
    try:
        raw = cupy.RawModule(code=text, options=NVRTC_OPTIONS)
        bound = {k: dataclasses.replace(spec, raw=raw.get_function(k)) for k, spec in specs.items()}
    except cupy.cuda.compiler.CompileException as exc:
        raise BuildError(f"NVRTC could not compile gpu_kernels/{name}.cu: {exc}; fix the kernel "
                         f"source (nvcc: pyguts.device.ptx({name!r}) shows the same errors)") from exc
    except Exception as exc:   # CuPy without its compiler: cuda-pathfinder's DynamicLibNotFoundError
        if "nvrtc" not in f"{type(exc).__name__} {exc}".lower():
            raise
        raise DeviceUnavailable(f"CuPy cannot compile gpu_kernels/{name}.cu: NVRTC is missing "
                                f"({type(exc).__name__}: {exc}); {nvrtc.FIX_NVRTC}") from exc
    _modules[key] = module = DeviceModule(name, raw, bound)
    return module


def launch(kernel: Kernel, *args: Any, grid: int | None = None, block: int | None = None,
           shared_nbytes: int = 0, synchronize: bool = True) -> None:
    """Launch ``kernel`` (from :func:`load`) on device arrays after checking them like pyguts.native does.

    Arrays are any ``__cuda_array_interface__`` objects: dtype must match the C pointer type,
    C-contiguous, writable unless the parameter is ``const``, long enough for the count they are
    tied to (which may be left off). Streams named by the arrays (CAI v3) are waited for first.
    ``block`` defaults to :data:`DEFAULT_BLOCK`; ``grid`` covers the work, capped at
    :data:`BLOCKS_PER_SM` blocks per multiprocessor (kernels here use grid-stride loops); the
    block may not exceed what the compiled kernel allows on the device (its registers), nor
    ``shared_nbytes`` its dynamic shared memory limit (48 KiB unless raised). With
    ``synchronize`` (the default) it returns once the kernel has finished, so the arrays may go;
    otherwise the caller keeps them alive until the stream is done.
    """
    if not isinstance(kernel, Kernel) or kernel.raw is None:
        raise TypeError(f"kernel must come from pyguts.device.load(name), got {kernel!r}; "
                        f"pass e.g. load('magnitude').magnitude_f64")
    cupy = require_cupy()
    device_id = cupy.cuda.Device().id
    if device_id not in _sm_counts:  # Device().attributes reads ~100 attributes: once per device
        _sm_counts[device_id] = cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]
    raw = kernel.raw   # CuPy's RawKernel: the compiled function's own limits on this device
    if (id(raw), device_id) not in _block_limits:   # its registers decide it: once per kernel and device
        _block_limits[id(raw), device_id] = getattr(raw, "max_threads_per_block", MAX_BLOCK)
    checked = plan(kernel, args, grid=grid, block=block, max_grid=BLOCKS_PER_SM * _sm_counts[device_id],
                   max_block=_block_limits[id(raw), device_id], shared_nbytes=shared_nbytes,
                   # the user may raise it (raw.max_dynamic_shared_size_bytes = n): read when asked for
                   max_shared=getattr(raw, "max_dynamic_shared_size_bytes", None) if shared_nbytes else None)
    for dp in checked.pointers:
        wait_for(dp, cupy)
    kernel.raw((checked.grid,), (checked.block,), checked.args, shared_mem=shared_nbytes)
    if synchronize:
        cupy.cuda.get_current_stream().synchronize()


# --- numba ---------------------------------------------------------------------------------------

def numba_magnitude_kernel() -> Any:
    """The magnitude kernel of ``gpu_kernels/magnitude.cu`` written with ``@numba.cuda.jit`` (grid-stride).

    Compiled lazily at the first launch, for whatever target numba has (GPU or simulator).
    """
    from pyguts.device.numba_kernel import magnitude

    return magnitude


def numba_momentum_kernel() -> Any:
    """The notebook's kernel of ``gpu_kernels/momentum.cu`` with ``@numba.cuda.jit``:
    ``kernel[blocks, threads](px, py, pz, p)`` (grid-stride: any launch covers all of ``p``).
    Compiled lazily at the first launch, for whatever target numba has (GPU or simulator)."""
    from pyguts.device.numba_kernel import momentum

    return momentum


#: The notebook's kernel as a CuPy elementwise expression (the body of gpu_kernels/momentum.cu's loop).
MOMENTUM_EXPRESSION = ("T px, T py, T pz", "T p", "p = sqrt(px * px + py * py + pz * pz)", "pyguts_momentum")
_elementwise: dict[str, Any] = {}


def cupy_momentum() -> Any:
    """The notebook's kernel as a ``cupy.ElementwiseKernel``: ``cupy_momentum()(px, py, pz[, p])``
    (any float dtype; CuPy broadcasts and allocates ``p``). DeviceUnavailable without CuPy."""
    if "momentum" not in _elementwise:
        _elementwise["momentum"] = require_cupy().ElementwiseKernel(*MOMENTUM_EXPRESSION)
    return _elementwise["momentum"]


def _numba_cuda() -> Any:
    import numba
    from numba import cuda

    if not numba.config.ENABLE_CUDASIM and not cuda.is_available():
        reason = driver().reason or "numba.cuda.is_available() is False (CUDA runtime bindings missing?)"
        raise DeviceUnavailable(f"numba's CUDA target needs a GPU, but {reason}; run on a GPU machine, "
                                f"or start Python with NUMBA_ENABLE_CUDASIM=1 for the simulator")
    return cuda


def _numba_view(cuda: Any, a: Any) -> Any:
    """A numba device array for ``a``: itself if it is one, else a view through its CAI (CuPy...)."""
    if hasattr(a, "copy_to_host"):
        return a
    pointer(a)  # checks the interface (v3, stream != 0) with pyguts' messages first
    return cuda.as_cuda_array(a)


def numba_magnitude(x: Any, y: Any, out: Any = None, *, blocks: int | None = None,
                    threads: int | None = None) -> Any:
    """``sqrt(x*x + y*y)`` by the numba kernel; device arrays stay on the device, numpy arrays round-trip.

    Returns ``out`` (allocated like ``x`` if None). Under ``NUMBA_ENABLE_CUDASIM=1`` it runs in
    numba's simulator with a tiny launch (:data:`SIM_BLOCKS` x :data:`SIM_THREADS`).
    """
    import numba

    cuda = _numba_cuda()
    host = isinstance(x, np.ndarray)
    arrays = {"x": x, "y": y} if out is None else {"x": x, "y": y, "out": out}
    for label, a in arrays.items():
        dtype = np.dtype(a.dtype) if hasattr(a, "dtype") else None
        if dtype not in (np.float32, np.float64) or dtype != np.dtype(x.dtype) or a.shape != x.shape:
            raise TypeError(f"{label} must be float32 or float64 with the dtype and shape of x "
                            f"({getattr(x, 'dtype', None)}, {getattr(x, 'shape', None)}), got {dtype}, "
                            f"{getattr(a, 'shape', type(a).__name__)}; pass arrays, converted with astype")
        if isinstance(a, np.ndarray) != host:
            raise TypeError(f"x, y and out must all be numpy arrays or all device arrays, got {label} "
                            f"as {type(a).__name__} and x as {type(x).__name__}; move them together")
    sim = numba.config.ENABLE_CUDASIM
    threads = threads or (SIM_THREADS if sim else DEFAULT_BLOCK)
    blocks = blocks or (SIM_BLOCKS if sim else max(1, min(math.ceil(x.size / threads), 1024)))
    if host:
        dx, dy = cuda.to_device(np.ascontiguousarray(x)), cuda.to_device(np.ascontiguousarray(y))
        dout = cuda.device_array(x.shape, x.dtype)
    else:
        dx, dy = _numba_view(cuda, x), _numba_view(cuda, y)
        dout = cuda.device_array(x.shape, x.dtype) if out is None else _numba_view(cuda, out)
    numba_magnitude_kernel()[blocks, threads](dx.ravel(), dy.ravel(), dout.ravel())
    cuda.synchronize()
    if not host:
        return dout if out is None else out
    result = dout.copy_to_host()
    if out is None:
        return result
    out[...] = result
    return out
