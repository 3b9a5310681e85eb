"""Kernel families of ``gpu_kernels/``: declarations read from the ``.cu``, argument checks, CPU builds, PTX (private).

A family's kernels are its ``extern "C" __global__ void name(params)`` definitions; a comment
``// pyguts: lengths x=n out=1`` ties pointer parameters to a count parameter (or a fixed
minimum). The checks reuse pyguts.native's parameter model (dtype from the C type, const means
read-only), applied to ``__cuda_array_interface__`` for the GPU and done by pyguts.native
itself for the CPU build.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

import cffi
import numpy as np

from pyguts.device import gpu_kernels
from pyguts import native
from pyguts.device.cai import DevicePointer, pointer
from pyguts.device.probe import FIX_NVCC, nvcc_path
from pyguts.native.calls import Param, array_dtypes, check_dtype, argument_text, param_info, signature
from pyguts.errors import BuildError

#: Threads per block when the caller names none (a multiple of the warp size, <= REDUCE_MAX_BLOCK).
DEFAULT_BLOCK = 256
#: Blocks per launch when the device is unknown; grid-stride kernels cover any n with fewer.
DEFAULT_MAX_GRID = 1024
#: Threads per block CUDA allows on every architecture so far (sm_50 ... sm_120): a launch asking
#: for more fails on the device with "invalid configuration argument".
MAX_BLOCK = 1024
#: Architectures every kernel must compile for (CUDA 13 dropped sm_70).
ARCHES = ("sm_80", "sm_90")

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_LENGTHS = re.compile(r"//\s*pyguts:\s*lengths\s+(.*)")
_cpu_lock = threading.Lock()  # the CPU shim keeps the launch geometry in globals


@dataclass
class Kernel:
    """One kernel of a family: its C parameters (pyguts.native's model) and length ties."""

    family: str
    name: str
    decl: str
    params: list[Param]
    lengths: dict[str, str]                 # pointer param -> count param name or fixed minimum
    ffi: cffi.FFI = field(repr=False)
    raw: Any = field(default=None, repr=False)  # the CuPy RawKernel once loaded
    # Precomputed for plan(): count params fillable from arrays, the arrays tied to each, and
    # each scalar's numpy type with its integer range (None for floats).
    fillable: frozenset = field(default=frozenset(), repr=False)
    tied: dict[str, list[str]] = field(default_factory=dict, repr=False)
    scalars: dict[str, tuple[np.dtype, Any]] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        where = "on the device" if self.raw is not None else "not loaded"
        return f"<kernel {self.family}.{self.name}({self.decl}) {where}>"


def _lengths(text: str) -> dict[str, str]:
    ties: dict[str, str] = {}
    for match in _LENGTHS.finditer(text):
        for item in match.group(1).split():
            array, _, count = item.partition("=")
            ties[array] = count
    return ties


def kernels(name: str) -> dict[str, Kernel]:
    """The kernels of ``gpu_kernels/<name>.cu`` by name (read fresh if the file changed)."""
    text = gpu_kernels.source(name)
    return _parse(name, text)


@functools.lru_cache(maxsize=32)
def _parse(family: str, text: str) -> dict[str, Kernel]:
    ties = _lengths(text)
    found: dict[str, Kernel] = {}
    for kname, decl in _KERNEL.findall(text):
        decl = " ".join(decl.split())
        ffi = cffi.FFI()
        ctype = ffi.typeof(f"void(*)({decl})")
        info = param_info(f"void {kname}({decl});")[kname]
        sig = signature(ffi, kname, ctype, info, {a: n for a, n in ties.items() if not n.isdigit()})
        scalars = {}
        for p in sig.params:
            if p.kind == "scalar":
                dtype = array_dtypes(ffi, p.ctype)[0]
                scalars[p.name] = (dtype, np.iinfo(dtype) if dtype.kind in "iu" else None)
        tied = {p.name: [a for a, n in ties.items() if n == p.name] for p in sig.params if p.kind == "scalar"}
        fillable = frozenset(n for n in ties.values() if not n.isdigit())
        found[kname] = Kernel(family, kname, decl, sig.params, ties, ffi, None, fillable, tied, scalars)
    if not found:
        raise ValueError(f"gpu_kernels/{family}.cu must define kernels as extern \"C\" __global__ void "
                         f"name(...), got none; declare them with C linkage")
    return found


@dataclass
class Plan:
    """A checked launch: kernel arguments as CuPy wants them, the pointers read, grid and block."""

    args: tuple[Any, ...]
    pointers: list[DevicePointer]
    grid: int
    block: int


def plan(kernel: Kernel, args: tuple[Any, ...], *, grid: int | None = None, block: int | None = None,
         max_grid: int = DEFAULT_MAX_GRID, max_block: int = MAX_BLOCK, shared_nbytes: int = 0,
         max_shared: int | None = None) -> Plan:
    """Check ``args`` (device arrays, scalars) against the kernel's C parameters; pick grid and block.

    A count parameter tied by ``lengths`` may be None or left off the end: it is filled from the
    arrays tied to it, which must then be equally long. ``max_block`` and ``max_shared`` are the
    compiled kernel's limits (threads per block, bytes of dynamic shared memory), where known.
    """
    params = kernel.params
    fillable = kernel.fillable
    nargs = len(args)
    if nargs != len(params) and (nargs > len(params) or any(p.name not in fillable for p in params[nargs:])):
        raise TypeError(f"{kernel.name}() takes ({kernel.decl}), got {nargs} arguments; pass one "
                        f"per parameter (tied counts {sorted(fillable)} may be left off)")
    out: list[Any] = []
    pointers: list[DevicePointer] = []
    sizes: dict[str, int] = {}
    for i, p in enumerate(params):
        value = args[i] if i < nargs else None
        if p.kind == "array":
            dp = _device_array(kernel, p, value)
            pointers.append(dp)
            sizes[p.name] = dp.size
            out.append(np.uintp(dp.addr))  # a pointer parameter is passed as its 64-bit address
        elif p.kind == "scalar":
            out.append(value)
        else:
            raise TypeError(f"{argument_text(_Sig(kernel), p)} has C type '{p.ctype.cname}', which launch() "
                            f"cannot pass; kernels take arrays and numbers")
    counts: dict[str, int] = {}
    for i, p in enumerate(params):
        if p.kind != "scalar":
            continue
        tied = kernel.tied[p.name]
        if out[i] is None and tied:
            known = {a: sizes[a] for a in tied}
            if len(set(known.values())) > 1:
                raise ValueError(f"arrays tied to {p.name!r} of {kernel.name}() must have the same "
                                 f"length when {p.name} is omitted, got {known}; pass equal lengths "
                                 f"or {p.name}= explicitly")
            out[i] = next(iter(known.values()))
        out[i] = _scalar(kernel, p, out[i])
        counts[p.name] = int(out[i])
    for array, count in kernel.lengths.items():
        need = int(count) if count.isdigit() else counts.get(count)
        if array in sizes and need is not None and sizes[array] < need:
            raise ValueError(f"{argument_text(_Sig(kernel), _param(kernel, array))} must have at least "
                             f"{need} elements ({array}={count} in {kernel.family}.cu), got "
                             f"{sizes[array]}; pass a longer array or a smaller {count}")
    block = DEFAULT_BLOCK if block is None else int(block)
    work = max(counts.values(), default=0) or max(sizes.values(), default=1)
    if grid is None and block >= 1:
        grid = max(1, min(math.ceil(work / block), max_grid))
    grid = int(grid) if grid is not None else 0
    if grid < 1 or block < 1:
        raise ValueError(f"grid and block must be >= 1, got grid={grid}, block={block}; CUDA refuses "
                         f"empty launches")
    if block > MAX_BLOCK:
        raise ValueError(f"block must be at most {MAX_BLOCK} threads (CUDA's limit per block), got {block}; "
                         f"pass a smaller block (grid-stride kernels cover any n with more blocks)")
    if block > max_block:
        raise ValueError(f"block must be at most {max_block} threads for {kernel.name}() as compiled for this "
                         f"device (its registers allow no more), got {block}; pass a smaller block")
    if isinstance(shared_nbytes, bool) or not isinstance(shared_nbytes, (int, np.integer)) or shared_nbytes < 0:
        raise TypeError(f"shared_nbytes must be an int >= 0 (bytes of dynamic shared memory), got {shared_nbytes!r}")
    if max_shared is not None and shared_nbytes > max_shared:
        raise ValueError(f"shared_nbytes must be at most {max_shared} bytes for {kernel.name}() (its dynamic "
                         f"shared memory limit), got {shared_nbytes}; ask for less, or raise the limit with "
                         f"kernel.raw.max_dynamic_shared_size_bytes = n (up to the device's opt-in maximum)")
    return Plan(tuple(out), pointers, grid, block)


class _Sig:  # the sliver of pyguts.native's Signature that its message helpers read
    def __init__(self, kernel: Kernel) -> None:
        self.name, self.params = kernel.name, kernel.params


class _DtypeOf:  # what check_dtype reads from an array: its dtype
    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


def _param(kernel: Kernel, name: str) -> Param:
    return next(p for p in kernel.params if p.name == name)


def _device_array(kernel: Kernel, p: Param, value: Any) -> DevicePointer:
    if value is not None:
        try:
            dp = pointer(value)
        except TypeError as exc:
            raise TypeError(f"{argument_text(_Sig(kernel), p)} for '{_cname(p)}': {exc}") from None
        if dp.dtype in p.dtypes and dp.c_contiguous and not dp.addr % p.align and (p.const or not dp.readonly):
            return dp   # the usual case (parse() refused byte-swapped dtypes already)
    return _check_array(kernel, p, value, dp if value is not None else None)


def _cname(p: Param) -> str:
    return ("const " if p.const else "") + p.ctype.cname


def _check_array(kernel: Kernel, p: Param, value: Any, dp: DevicePointer | None) -> DevicePointer:
    """The whole array check, with its messages (for what _device_array's quick test did not pass)."""
    sig, cname = _Sig(kernel), _cname(p)
    if value is None:
        raise TypeError(f"{argument_text(sig, p)} must be a device array for '{cname}', got None")
    check_dtype(kernel.ffi, sig, p, _DtypeOf(dp.dtype))
    if not dp.c_contiguous:
        raise ValueError(f"{argument_text(sig, p)} must be C-contiguous to be passed as '{cname}', got "
                         f"strides {dp.strides} for shape {dp.shape}; pass cupy.ascontiguousarray({p.name})")
    if dp.addr % p.align:
        raise ValueError(f"{argument_text(sig, p)} must be aligned to {p.align} bytes for '{cname}', got "
                         f"address 0x{dp.addr:x}; pass {p.name}.copy()")
    if dp.readonly and not p.const:
        raise ValueError(f"{argument_text(sig, p)} must be writable: '{cname}' is not const, so the kernel "
                         f"writes to it, got a read-only device array; pass {p.name}.copy()")
    return dp


def _scalar(kernel: Kernel, p: Param, value: Any) -> Any:
    dtype, info = kernel.scalars[p.name]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{argument_text(_Sig(kernel), p)} must be a number for C '{p.ctype.cname}', got "
                        f"{type(value).__name__} {value!r}; pass an int or float")
    if dtype.kind in "iu":
        if not float(value).is_integer():
            raise TypeError(f"{argument_text(_Sig(kernel), p)} must be an integer for C '{p.ctype.cname}', "
                            f"got {value!r}; pass int({p.name})")
        if not info.min <= int(value) <= info.max:
            raise OverflowError(f"{argument_text(_Sig(kernel), p)} must lie in [{info.min}, {info.max}] for "
                                f"C '{p.ctype.cname}', got {value!r}")
        return dtype.type(int(value))
    return dtype.type(value)


# --- the CPU build -------------------------------------------------------------------------------

_CPU_STATUS = {-1: "the OpenMP team was smaller than block (OMP_THREAD_LIMIT?); pass a smaller block",
               -2: "grid and block must be >= 1; CUDA refuses empty launches"}


class CpuFamily:
    """The kernels of one ``.cu`` built for the CPU: ``ref.<kernel>(*args, grid=, block=)``.

    Arrays are numpy arrays, checked by pyguts.native; a count tied by ``lengths`` may be left
    off. Blocks run in turn, each block's threads as an OpenMP team (``cpu_shim.h``).
    """

    def __init__(self, family: str, specs: dict[str, Kernel], library: native.Library) -> None:
        self.family, self.kernels, self.library = family, specs, library
        for kname in specs:
            setattr(self, kname, functools.partial(self._run, kname))

    def _run(self, kname: str, *args: Any, grid: int = 3, block: int = 4) -> None:
        spec = self.kernels[kname]
        for array, count in spec.lengths.items():
            if not count.isdigit():
                continue
            index = [p.name for p in spec.params].index(array)
            value = args[index] if index < len(args) else None
            if isinstance(value, np.ndarray) and value.size < int(count):
                raise ValueError(f"{argument_text(_Sig(spec), spec.params[index])} must have at least {count} "
                                 f"elements ({array}={count} in {self.family}.cu), got {value.size}; "
                                 f"pass a longer array")
        call = self.library.functions[f"pyguts_cpu_{kname}"]
        with _cpu_lock:
            status = call(grid, block, *args)
        if status:
            raise ValueError(f"CPU launch of {kname}<<<{grid}, {block}>>> refused: {_CPU_STATUS[status]}")

    def __repr__(self) -> str:
        return f"<CPU build of gpu_kernels/{self.family}.cu: {sorted(self.kernels)}>"


def cpu_source(name: str) -> tuple[str, str]:
    """(cdef, C++ source) of the CPU build of ``gpu_kernels/<name>.cu``: shim + the .cu + launchers."""
    specs = kernels(name)
    shim = gpu_kernels.SHIM.read_text()
    cdefs, launchers = [], []
    for kname, spec in specs.items():
        names = ", ".join(p.name for p in spec.params)
        head = f"int pyguts_cpu_{kname}(unsigned grid, unsigned block, {spec.decl})"
        cdefs.append(head + ";")
        launchers.append(f'extern "C" {head} {{\n'
                         f"    return pyguts_cpu_launch(grid, block, [&] {{ {kname}({names}); }});\n}}")
    source = (f'#line 1 "cpu_shim.h"\n{shim}\n#line 1 "{name}.cu"\n{gpu_kernels.source(name)}\n'
              f'#line 1 "pyguts_cpu_launchers"\n' + "\n".join(launchers) + "\n")
    return "\n".join(cdefs), source


def cpu_reference(name: str) -> CpuFamily:
    """Build ``gpu_kernels/<name>.cu`` for the CPU (g++ + OpenMP, cached by pyguts.native)."""
    return _cpu_reference(name, gpu_kernels.source(name), gpu_kernels.SHIM.read_text())


@functools.lru_cache(maxsize=32)
def _cpu_reference(name: str, text: str, shim: str) -> CpuFamily:  # keyed by the sources: edits rebuild
    specs = kernels(name)
    cdef, source = cpu_source(name)
    ties = {a: n for a, n in next(iter(specs.values())).lengths.items() if not n.isdigit()}
    library = native.build(cdef, source, language="c++", threads=True, lengths=ties, name=name)
    return CpuFamily(name, specs, library)


# --- PTX with nvcc ------------------------------------------------------------------------------

def ptx(name: str, arch: str = "sm_80") -> str:
    """The PTX nvcc makes of ``gpu_kernels/<name>.cu`` for ``arch`` (cached by content)."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise BuildError(f"compiling {name}.cu to PTX needs nvcc, which is not found; {FIX_NVCC}")
    text = gpu_kernels.source(name)
    key = hashlib.sha256(f"{nvcc}\0{arch}\0{text}".encode()).hexdigest()[:24]
    cached = native.cache_folder("ptx") / f"{name}-{arch}-{key}.ptx"
    if cached.exists():
        return cached.read_text()
    tmp = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    command = [nvcc, "-ptx", f"-arch={arch}", "-o", str(tmp), str(gpu_kernels.path(name))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"nvcc could not compile {name}.cu for {arch} (exit {done.returncode}):\n"
                         f"{done.stderr.strip()}\ncommand: {' '.join(command)}; fix the kernel source")
    tmp.replace(cached)
    return cached.read_text()
