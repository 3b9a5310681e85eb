"""NVRTC, the compiler CuPy's ``RawModule`` runs, called directly (ctypes): no GPU needed.

``pyguts doctor`` compiles a tiny kernel with it, and the tests compile every ``gpu_kernels/``
source with it exactly as :func:`pyguts.device.load` would on a GPU machine. The library comes
from the NVIDIA wheels (``nvidia-cuda-nvrtc``: CuPy's ``[ctk]`` extra, or pyguts' ``nvrtc`` extra),
a CUDA toolkit, or the loader's path. ``compile_ptx(source, name, options)`` returns NVRTC's
status (0: compiled), the PTX and the compiler's log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
import pathlib

#: What installs NVRTC beside pip-installed CuPy (its wheels leave the compiler out).
FIX_NVRTC = ("pip install 'cupy-cuda12x[ctk]' (or 'cupy-cuda13x[ctk]'), as the cpython-guts[gpu] and "
             "[gpu-cuda13] extras do, or install a CUDA toolkit")
#: The tiny kernel doctor compiles.
PROBE_SOURCE = 'extern "C" __global__ void pyguts_probe(float *x) { x[threadIdx.x] *= 2.0f; }'


def candidates() -> list[str]:
    """libnvrtc shared objects here, preferred first: NVIDIA wheels, $CUDA_HOME, the loader's path."""
    found: list[pathlib.Path] = []
    if importlib.util.find_spec("nvidia") is not None:   # namespace package of the nvidia-* wheels
        import nvidia
        for root in getattr(nvidia, "__path__", ()):
            found += sorted(pathlib.Path(root).glob("*/lib/libnvrtc.so.*"), reverse=True)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            found += sorted(pathlib.Path(home).glob("lib64/libnvrtc.so.*"), reverse=True)
    paths = [str(p) for p in found]
    system = ctypes.util.find_library("nvrtc")
    return list(dict.fromkeys(paths + ([system] if system else [])))


@functools.lru_cache(maxsize=1)
def library() -> tuple[ctypes.CDLL | None, str]:
    """(libnvrtc, its path) or (None, why none loads)."""
    errors = []
    for path in candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            errors.append(str(exc))
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib, path
    return None, ("no libnvrtc found (NVIDIA wheels, $CUDA_HOME, the loader's path)" if not errors
                  else "libnvrtc does not load: " + "; ".join(errors))


def version() -> tuple[int, int] | None:
    lib, _ = library()
    if lib is None:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


def compile_ptx(source: str, name: str, options: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """(status, PTX, log) of NVRTC compiling ``source``; status 0 is success. RuntimeError without NVRTC."""
    lib, where = library()
    if lib is None:
        raise RuntimeError(f"NVRTC is needed: {where}; {FIX_NVRTC}")
    prog = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    if status:
        return status, "", lib.nvrtcGetErrorString(status).decode()
    try:
        opts = (ctypes.c_char_p * max(len(options), 1))(*(o.encode() for o in options))
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = ""
        if status == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value.decode()
        return status, ptx, log.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
