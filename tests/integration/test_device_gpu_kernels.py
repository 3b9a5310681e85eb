"""gpu_kernels/*.cu: nvcc builds them to PTX, g++ builds them for the CPU (equal to numpy), a GPU runs them (if any)."""

from __future__ import annotations

import gc
import re
import shutil
import subprocess
import weakref

import numpy as np
import pytest

from pyguts.device import gpu_kernels, nvrtc
from pyguts import device
from pyguts.device.probe import gpu_reason, nvcc_path

FAMILIES = gpu_kernels.names()
NVCC = nvcc_path()
GPU_REASON = gpu_reason()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (install the CUDA toolkit to check PTX builds)")
needs_gpu = pytest.mark.skipif(bool(GPU_REASON), reason=f"no GPU run possible: {GPU_REASON}")

#: Odd sizes (not multiples of any block), one tiny; launch shapes with 1 thread, odd grids, barriers.
SIZES = (1, 7, 1001, 4099)
LAUNCHES = ((1, 1), (3, 4), (5, 8))
DTYPES = (np.float32, np.float64)
SUFFIX = {np.float32: "f32", np.float64: "f64"}


@needs_nvcc
@pytest.mark.parametrize("arch", device.ARCHES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_compiles_to_ptx(family, arch, tmp_path):
    out = tmp_path / f"{family}.ptx"
    done = subprocess.run([NVCC, "-ptx", f"-arch={arch}", "-Werror", "all-warnings", "-o", str(out),
                           str(gpu_kernels.path(family))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert f".target {arch}" in text
    for name in device.kernels(family):
        assert f".visible .entry {name}(" in text
    assert device.ptx(family, arch) == text  # the cached helper gives what nvcc gives


@needs_nvcc
@pytest.mark.parametrize("arch", device.ARCHES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_compiles_to_machine_code_without_spills(family, arch, tmp_path):
    """ptxas's own report (-Xptxas -v) for each kernel: no stack frame, no spill stores or loads."""
    done = subprocess.run([NVCC, "-cubin", f"-arch={arch}", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"),
                           str(gpu_kernels.path(family))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    entries = re.findall(r"Compiling entry function '(\w+)' for '(\w+)'.*?(\d+) bytes stack frame, "
                         r"(\d+) bytes spill stores, (\d+) bytes spill loads", done.stdout + done.stderr, re.S)
    assert sorted(name for name, *_ in entries) == sorted(device.kernels(family)), done.stderr
    for name, target, *counts in entries:
        assert target == arch and counts == ["0", "0", "0"], (name, target, counts)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_compiles_alone_with_gxx(family, tmp_path):
    """The .cu itself (its own #include of cpu_shim.h), warnings as errors."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    done = subprocess.run([gxx, "-x", "c++", "-fopenmp", "-Wall", "-Wextra", "-Werror", "-c", "-o",
                           str(tmp_path / "k.o"), str(gpu_kernels.path(family))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _inputs(n, dtype, seed=1):
    rng = np.random.default_rng(seed + n)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


def _inputs3(n, dtype, seed=3):
    rng = np.random.default_rng(seed + n)
    return tuple(rng.standard_normal(n).astype(dtype) for _ in range(3))


@pytest.mark.parametrize("grid_block", LAUNCHES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_magnitude_equals_numpy(dtype, n, grid_block):
    ref = device.cpu_reference("magnitude")
    x, y = _inputs(n, dtype)
    out = np.full(n, np.nan, dtype)
    getattr(ref, f"magnitude_{SUFFIX[dtype]}")(x, y, out, grid=grid_block[0], block=grid_block[1])
    np.testing.assert_array_max_ulp(out, np.sqrt(x * x + y * y), maxulp=1)  # FMA contraction: 1 ulp


@pytest.mark.parametrize("grid_block", LAUNCHES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_sum_equals_numpy(dtype, n, grid_block):
    ref = device.cpu_reference("reduce")
    x, _ = _inputs(n, dtype)
    out = np.zeros(1, dtype)
    getattr(ref, f"sum_{SUFFIX[dtype]}")(x, out, grid=grid_block[0], block=grid_block[1])
    scale = np.abs(x.astype(np.float64)).sum()
    tol = 1e-5 if dtype is np.float32 else 1e-13
    assert abs(float(out[0]) - x.astype(np.float64).sum()) <= tol * scale


@pytest.mark.parametrize("grid_block", LAUNCHES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_momentum_equals_numpy(dtype, n, grid_block):
    """The CPU build rounds as numpy does (-ffp-contract=off: no FMA), so it is numpy's result exactly."""
    ref = device.cpu_reference("momentum")
    px, py, pz = _inputs3(n, dtype)
    p = np.full(n, np.nan, dtype)
    getattr(ref, f"momentum_{SUFFIX[dtype]}")(px, py, pz, p, grid=grid_block[0], block=grid_block[1])
    np.testing.assert_array_equal(p, np.sqrt(px * px + py * py + pz * pz))


#: The kernel families the CPU tests above compare with numpy; a new .cu needs its test here.
CPU_TESTED = {"magnitude": test_cpu_magnitude_equals_numpy, "momentum": test_cpu_momentum_equals_numpy,
              "reduce": test_cpu_sum_equals_numpy}


def test_every_family_has_a_numpy_comparison():
    assert sorted(CPU_TESTED) == FAMILIES, "add a CPU-vs-numpy test for the new gpu_kernels/*.cu"
    for family in FAMILIES:
        assert {k.rsplit("_", 1)[1] for k in device.kernels(family)} == {"f32", "f64"}, family


def test_cpu_sum_refuses_a_block_that_is_not_a_power_of_two():
    """The kernel's documented contract: such a launch leaves *out alone (on the GPU too)."""
    out = np.array([7.0])
    device.cpu_reference("reduce").sum_f64(np.ones(10), out, grid=2, block=6)
    assert out[0] == 7.0


def test_cpu_reference_checks_like_native():
    ref = device.cpu_reference("magnitude")
    x = np.ones(5)
    with pytest.raises(TypeError, match="must be float64 to match 'const double \\*'"):
        ref.magnitude_f64(x.astype(np.float32), x, x.copy())
    with pytest.raises(ValueError, match="must have at least n=9 elements"):
        ref.magnitude_f64(x, x, x.copy(), 9)
    with pytest.raises(ValueError, match="at least 1 elements"):
        device.cpu_reference("reduce").sum_f64(x, np.zeros(0))
    with pytest.raises(ValueError, match="grid and block must be >= 1"):
        ref.magnitude_f64(x, x, x.copy(), grid=0)


# --- on a GPU -----------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_kernels_equal_the_cpu_reference(dtype):
    import cupy

    n = 100_003
    x, y = _inputs(n, dtype)
    mag = device.load("magnitude")
    out = cupy.empty(n, dtype)
    device.launch(getattr(mag, f"magnitude_{SUFFIX[dtype]}"), cupy.asarray(x), cupy.asarray(y), out)
    expected = np.empty(n, dtype)
    getattr(device.cpu_reference("magnitude"), f"magnitude_{SUFFIX[dtype]}")(x, y, expected)
    np.testing.assert_array_max_ulp(cupy.asnumpy(out), expected, maxulp=2)
    total = cupy.zeros(1, dtype)
    device.launch(getattr(device.load("reduce"), f"sum_{SUFFIX[dtype]}"), cupy.asarray(x), total)
    tol = 1e-5 if dtype is np.float32 else 1e-12
    assert abs(float(total[0]) - x.astype(np.float64).sum()) <= tol * np.abs(x).sum()
    with pytest.raises(TypeError, match="must be"):
        device.launch(mag.magnitude_f64, cupy.asarray(x, np.float16), cupy.asarray(y), out)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_notebooks_kernel_agrees_on_every_gpu_path(dtype):
    """momentum.cu through CuPy RawModule (device.launch), a CuPy elementwise expression and numba-cuda,
    each within 2 ulp of the CPU build (= numpy): GPU compilers contract the sum into FMAs."""
    import cupy
    from numba import cuda

    n = 100_003
    host = _inputs3(n, dtype)
    expected = np.empty(n, dtype)
    getattr(device.cpu_reference("momentum"), f"momentum_{SUFFIX[dtype]}")(*host, expected)
    px, py, pz = (cupy.asarray(a) for a in host)
    p = cupy.full(n, cupy.nan, dtype)
    device.launch(getattr(device.load("momentum"), f"momentum_{SUFFIX[dtype]}"), px, py, pz, p)
    np.testing.assert_array_max_ulp(cupy.asnumpy(p), expected, maxulp=2)
    np.testing.assert_array_max_ulp(cupy.asnumpy(device.cupy_momentum()(px, py, pz)), expected, maxulp=2)
    p.fill(cupy.nan)
    device.numba_momentum_kernel()[256, device.DEFAULT_BLOCK](*(cuda.as_cuda_array(a) for a in (px, py, pz, p)))
    cuda.synchronize()
    np.testing.assert_array_max_ulp(cupy.asnumpy(p), expected, maxulp=2)


@pytest.mark.gpu
@needs_gpu
def test_numba_on_the_gpu_equals_the_cpu_reference():
    import cupy
    from numba import cuda

    x, y = _inputs(10_001, np.float64)
    expected = np.empty_like(x)
    device.cpu_reference("magnitude").magnitude_f64(x, y, expected)
    np.testing.assert_array_max_ulp(device.numba_magnitude(x, y), expected, maxulp=2)
    dx, dy = cuda.to_device(x), cuda.to_device(y)
    np.testing.assert_array_max_ulp(device.numba_magnitude(dx, dy).copy_to_host(), expected, maxulp=2)
    # numba's device arrays feed CuPy kernels through the interface, and back
    out = cupy.empty(x.size)
    device.launch(device.load("magnitude").magnitude_f64, dx, dy, out)
    np.testing.assert_array_max_ulp(cupy.asnumpy(out), expected, maxulp=2)


@pytest.mark.gpu
@needs_gpu
def test_foreign_pointer_round_trip_keeps_the_owner_alive():
    import cupy

    src = cupy.arange(12, dtype=cupy.float64)
    owner_ref = weakref.ref(src)
    p = device.pointer(src)
    assert p.addr == src.data.ptr and p.shape == (12,) and not p.readonly
    view = device.from_pointer(p, (3, 4), np.float64, owner=src)
    del src, p
    gc.collect()
    assert owner_ref() is not None  # held by the UnownedMemory under view
    assert cupy.asnumpy(view).tolist() == np.arange(12.0).reshape(3, 4).tolist()
    del view
    gc.collect()
    assert owner_ref() is None


#: A kernel that keeps one thread busy for ``cycles`` clock ticks (~50 ms for 1e8 on a recent GPU).
SPIN = r"""extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}"""


@pytest.mark.gpu
@needs_gpu
def test_launch_waits_for_the_producer_stream():
    """The producer's stream is still busy (a spinning kernel) when launch is called, and only then
    writes x and y: a launch that did not wait would read the zeros, as the control without the
    stream named does."""
    import cupy

    spin = cupy.RawKernel(SPIN, "spin")
    mag = device.load("magnitude").magnitude_f64
    stream = cupy.cuda.Stream(non_blocking=True)   # no implicit ordering with the default stream

    class OnStream:  # a producer saying "my data is ready once `stream` gets there" (CAI v3)
        def __init__(self, a):
            self.__cuda_array_interface__ = dict(a.__cuda_array_interface__, stream=stream.ptr)

    def produce():
        x, y = cupy.zeros(1 << 20), cupy.zeros(1 << 20)
        cupy.cuda.Device().synchronize()
        with stream:
            spin((1,), (1,), (cupy.int64(100_000_000),))
            x.fill(3.0)
            y.fill(4.0)
        return x, y

    x, y = produce()
    out = cupy.empty_like(x)
    device.launch(mag, OnStream(x), OnStream(y), out)
    assert float(out.min()) == float(out.max()) == 5.0
    stream.synchronize()
    x, y = produce()
    device.launch(mag, x, y, out)   # the control: no stream named, nothing to wait for
    early = float(out.max())
    stream.synchronize()
    assert early == 0.0, "the control read the producer's data: the test cannot tell a wait from none"


@pytest.mark.gpu
@needs_gpu
def test_launch_refuses_more_than_the_compiled_kernel_allows_before_cuda_does():
    """The kernel's own limits as CuPy reads them from the driver: threads per block (registers)
    and dynamic shared memory (48 KiB unless raised); at the limit the launch runs."""
    import cupy

    kernel = device.load("magnitude").magnitude_f64
    x = cupy.full(4096, 3.0)
    y, out = cupy.full(4096, 4.0), cupy.empty(4096)
    most = kernel.raw.max_dynamic_shared_size_bytes
    device.launch(kernel, x, y, out, block=kernel.raw.max_threads_per_block, shared_nbytes=most)
    assert float(out.min()) == float(out.max()) == 5.0
    with pytest.raises(ValueError, match=f"shared_nbytes must be at most {most} bytes"):
        device.launch(kernel, x, y, out, shared_nbytes=most + 1)


# --- NVRTC: the compiler CuPy's RawModule uses on a GPU machine, run here without one -------------

def _nvrtc_compile(source: str, name: str, options) -> tuple[int, str, str]:
    """(status, PTX, log) of NVRTC compiling ``source`` (pyguts.device.nvrtc, as doctor runs it)."""
    lib, why = nvrtc.library()
    if lib is None:
        pytest.skip(f"needs_nvrtc: {why} (pip install nvidia-cuda-nvrtc-cu12, the nvrtc extra)")
    return nvrtc.compile_ptx(source, name, tuple(options))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_compiles_under_nvrtc_as_cupy_rawmodule_does(family):
    """device.load() hands the source to NVRTC with these options: no system headers there."""
    status, ptx, log = _nvrtc_compile(gpu_kernels.source(family), f"{family}.cu",
                                      (*device.NVRTC_OPTIONS, "-arch=compute_80"))
    assert status == 0, log
    for name in device.kernels(family):
        assert f".visible .entry {name}(" in ptx


def test_nvrtc_really_refuses_what_a_host_compiler_takes():
    """The check above can fail: NVRTC has no <stddef.h>, which every host compiler finds."""
    status, _, log = _nvrtc_compile('#include <stddef.h>\nextern "C" __global__ void k(size_t n) {}\n',
                                    "bad.cu", (*device.NVRTC_OPTIONS, "-arch=compute_80"))
    assert status != 0 and "stddef.h" in log
