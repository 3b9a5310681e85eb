"""What GPU tooling this machine has: nvcc, the NVIDIA driver and devices, CuPy, numba's CUDA target (private).

Every probe returns a plain record and never raises: the driver is asked directly through
``libcuda.so.1`` (ctypes), so the answer does not depend on CuPy. :func:`require_cupy` turns the
records into one :class:`~pyguts.errors.DeviceUnavailable` naming the reason and the fix.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from pyguts.errors import DeviceUnavailable

#: libcuda's CUresult for "no CUDA-capable device is detected" (cuda.h, CUDA_ERROR_NO_DEVICE).
CUDA_ERROR_NO_DEVICE = 100
#: cuDeviceGetAttribute codes for the compute capability (cuda.h, CUdevice_attribute).
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76
#: Where CUDA toolkits install nvcc when it is not on PATH.
NVCC_FALLBACKS = ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc")

FIX_DRIVER = "install the NVIDIA driver (it provides libcuda.so.1) on a machine with an NVIDIA GPU"
FIX_CUPY = ("pip install 'cupy-cuda12x[ctk]' (CUDA 12) or 'cupy-cuda13x[ctk]' (CUDA 13; [ctk] brings NVRTC), what "
            "the extras cpython-guts[gpu] and cpython-guts[gpu-cuda13] install; the two CuPy wheels conflict, install one")
FIX_NVCC = "install the CUDA toolkit (nvcc) or put its bin/ on PATH"


@dataclass(frozen=True)
class Driver:
    """The NVIDIA driver as libcuda reports it; ``reason`` is empty when devices are usable."""

    version: int = 0                       # e.g. 12040 for 12.4
    devices: tuple[str, ...] = ()          # "NVIDIA H100 80GB HBM3 (sm_90)"
    reason: str = ""


@dataclass(frozen=True)
class Tool:
    """One piece of tooling: found or not, its version or detail, and what to do when missing."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def driver() -> Driver:
    """Ask libcuda for its version and devices (cuInit, cuDeviceGetCount, cuDeviceGetName)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return Driver(reason=f"no NVIDIA driver: libcuda.so.1 cannot be loaded ({exc})")
    version = ctypes.c_int(0)
    cuda.cuDriverGetVersion(ctypes.byref(version))
    status = cuda.cuInit(0)
    if status == CUDA_ERROR_NO_DEVICE:
        return Driver(version.value, reason="no CUDA device: the driver is loaded but sees no GPU")
    if status != 0:
        return Driver(version.value, reason=f"the NVIDIA driver failed to initialise: cuInit returned {status}")
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return Driver(version.value, reason="no CUDA device: cuDeviceGetCount found none")
    devices = []
    for ordinal in range(count.value):
        handle, name = ctypes.c_int(0), ctypes.create_string_buffer(256)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGet(ctypes.byref(handle), ordinal)
        cuda.cuDeviceGetName(name, len(name), handle)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), ATTR_CC_MAJOR, handle)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), ATTR_CC_MINOR, handle)
        devices.append(f"{name.value.decode(errors='replace')} (sm_{major.value}{minor.value})")
    return Driver(version.value, tuple(devices))


def nvcc_path() -> str | None:
    """The nvcc to use: ``$NVCC``, then PATH, then the usual install places; None if absent."""
    for candidate in (os.environ.get("NVCC"), shutil.which("nvcc"), *NVCC_FALLBACKS):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def nvcc() -> Tool:
    """nvcc's path and release line."""
    path = nvcc_path()
    if path is None:
        return Tool("nvcc", False, "not found on PATH or in /usr/local/cuda/bin", FIX_NVCC)
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Tool("nvcc", False, f"{path} does not run: {exc}", FIX_NVCC)
    release = next((ln.strip() for ln in done.stdout.splitlines() if "release" in ln), done.stdout.strip())
    return Tool("nvcc", done.returncode == 0, f"{path}: {release}", "" if done.returncode == 0 else FIX_NVCC)


def cupy_module() -> tuple[Any, str]:
    """(cupy, "") or (None, why it cannot be imported)."""
    try:
        import cupy
    except ImportError as exc:
        if exc.name == "cupy":
            return None, f"CuPy is not installed ({exc})"
        return None, f"CuPy fails to import: {exc} (an incomplete install: reinstall it with its dependencies)"
    except Exception as exc:  # a broken CuPy install raises anything at import (missing libs)
        return None, f"CuPy fails to import: {type(exc).__name__}: {exc}"
    return cupy, ""


def cupy_tool() -> Tool:
    """CuPy's version and whether it can reach a device."""
    cupy, why = cupy_module()
    if cupy is None:
        return Tool("CuPy", False, why, FIX_CUPY)
    reason = _cupy_device_reason(cupy)
    detail = f"cupy {cupy.__version__}" + (f"; {reason}" if reason else "; device usable")
    return Tool("CuPy", not reason, detail, _fix_for(reason))


def numba_tool() -> Tool:
    """numba's version and whether its CUDA target (or the simulator) can run kernels."""
    try:
        import numba
        from numba import cuda
    except Exception as exc:  # numba is a dependency; a broken install still must not crash doctor
        return Tool("numba CUDA target", False, f"numba does not import: {exc}", "pip install numba")
    if numba.config.ENABLE_CUDASIM:
        return Tool("numba CUDA target", True, f"numba {numba.__version__}: simulator (NUMBA_ENABLE_CUDASIM=1)")
    try:
        available = cuda.is_available()
    except Exception as exc:  # numba raises its own CudaSupportError subclasses on odd installs
        return Tool("numba CUDA target", False, f"numba {numba.__version__}: {exc}", FIX_DRIVER)
    if available:
        return Tool("numba CUDA target", True, f"numba {numba.__version__}: CUDA available")
    why = driver().reason or "numba.cuda.is_available() is False (numba-cuda bindings or CUDA runtime missing)"
    return Tool("numba CUDA target", False, f"numba {numba.__version__}: {why}",
                f"{_fix_for(why)}; without a GPU, set NUMBA_ENABLE_CUDASIM=1 before importing numba "
                f"to run kernels in the simulator")


def nvrtc_tool() -> Tool:
    """NVRTC (what CuPy's RawModule compiles with) compiling a tiny kernel to PTX: no GPU needed."""
    from pyguts.device import nvrtc
    lib, where = nvrtc.library()
    if lib is None:
        return Tool("NVRTC", False, where, nvrtc.FIX_NVRTC)
    major, minor = nvrtc.version()
    status, ptx, log = nvrtc.compile_ptx(nvrtc.PROBE_SOURCE, "pyguts_probe.cu", ("-arch=compute_80",))
    if status or ".entry pyguts_probe" not in ptx:
        return Tool("NVRTC", False, f"NVRTC {major}.{minor} ({where}) fails a tiny compile: status {status}, "
                                    f"{' '.join(log.split())[:200]}", nvrtc.FIX_NVRTC)
    return Tool("NVRTC", True, f"NVRTC {major}.{minor} compiles ({where})")


#: What brings NVVM for numba's CUDA target without a CUDA toolkit.
FIX_NVVM = ("pip install 'numba-cuda[cu12]' (or 'numba-cuda[cu13]'), as the cpython-guts[gpu] and [gpu-cuda13] "
            "extras do: it brings NVVM, which numba's deprecated built-in CUDA target finds only in a CUDA toolkit")


_NVVM = "NVVM (numba CUDA compiler)"


def nvvm_tool() -> Tool:
    """numba's CUDA compiler (NVVM) compiling a tiny kernel to PTX for sm_80: no GPU needed."""
    try:
        import numba
        from numba import cuda
    except Exception as exc:
        return Tool(_NVVM, False, f"numba does not import: {exc}", "pip install numba")
    if numba.config.ENABLE_CUDASIM:
        return Tool(_NVVM, True, "not used: the simulator runs kernels (NUMBA_ENABLE_CUDASIM=1)")
    which = "numba-cuda" if importlib.util.find_spec("numba_cuda") else f"numba {numba.__version__}'s built-in target"

    def probe(x):
        x[0] = 2.0 * x[0]
    try:
        ptx, _ = cuda.compile_ptx(probe, "void(float32[:])", cc=(8, 0))
    except Exception as exc:   # NvvmSupportError and friends when libNVVM is missing
        why = " ".join(str(exc).split())[:200]   # one line: numba's messages span several
        return Tool(_NVVM, False, f"{which}: {type(exc).__name__}: {why}", FIX_NVVM)
    ok = ".entry" in ptx
    return Tool(_NVVM, ok, f"{which} {'compiles' if ok else 'gives no kernel in'} PTX",
                "" if ok else FIX_NVVM)


def driver_tools() -> list[Tool]:
    """The driver and device lines of ``pyguts doctor``."""
    d = driver()
    if d.reason and not d.version:
        return [Tool("driver", False, d.reason, FIX_DRIVER), Tool("device", False, "no driver", FIX_DRIVER)]
    version = f"CUDA driver API {d.version // 1000}.{d.version % 1000 // 10}"
    if d.reason:
        return [Tool("driver", True, version), Tool("device", False, d.reason, _fix_for(d.reason))]
    return [Tool("driver", True, version), Tool("device", True, "; ".join(d.devices))]


def _fix_for(reason: str) -> str:
    if "CuPy is not installed" in reason or "CuPy fails" in reason:
        return FIX_CUPY
    if "no NVIDIA driver" in reason:
        return FIX_DRIVER
    if "no CUDA device" in reason:
        return "run on a machine with an NVIDIA GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    if "insufficient" in reason.lower() or "driver" in reason.lower():
        return (f"{FIX_DRIVER}; if it is there but older than CuPy's CUDA, update it or install the "
                f"CuPy wheel for its CUDA version")
    return ""


def _cupy_device_reason(cupy: Any) -> str:
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError (cudaErrorInsufficientDriver, NoDevice...)
        return f"CuPy cannot reach a device: {exc}"
    return "" if count else "no CUDA device: CuPy sees none"


def require_cupy() -> Any:
    """CuPy, ready for a device; else :class:`DeviceUnavailable` with the reason and the fix."""
    cupy, why = cupy_module()
    if cupy is None:
        raise DeviceUnavailable(f"a CUDA device through CuPy is needed, but {why}; {FIX_CUPY}")
    reason = driver().reason or _cupy_device_reason(cupy)
    if reason:
        raise DeviceUnavailable(f"a CUDA device is needed, but {reason}; {_fix_for(reason)}")
    return cupy


def gpu_reason() -> str:
    """Why the CuPy path cannot run here ("" when it can): the skip reason of GPU tests."""
    try:
        require_cupy()
    except DeviceUnavailable as exc:
        return str(exc)
    return ""
