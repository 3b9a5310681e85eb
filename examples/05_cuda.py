"""CUDA: gpu_kernels/magnitude.cu on the GPU when there is one, else its CPU build and its PTX.

Each ``.cu`` in gpu_kernels/ runs three ways: on the GPU through CuPy (``pyguts.device.load`` +
``launch``, arrays checked like native calls), on the CPU from the *same source*
(``pyguts.device.cpu_reference``: g++ with a small CUDA shim, OpenMP threads as the block), and
compiled to PTX by nvcc (``pyguts.device.ptx``), which needs no GPU. It prints which path ran.

Run: python examples/05_cuda.py   (GPU path: pip install "cpython-guts[gpu]" on a machine with a GPU)
"""

import numpy as np

from pyguts import BuildError, DeviceUnavailable, device

N = 1_000_003  # not a multiple of any block size: the grid-stride loop covers the tail
rng = np.random.default_rng(0)
x, y = rng.standard_normal(N), rng.standard_normal(N)
expected = np.sqrt(x * x + y * y)

cpu = device.cpu_reference("magnitude")  # the .cu, compiled for the CPU
out = np.empty_like(x)
cpu.magnitude_f64(x, y, out, grid=8, block=2)  # <<<8, 2>>>; n filled in from the arrays
print(f"CPU build of magnitude.cu: max |CPU - numpy| = {np.abs(out - expected).max():.3g} on n={N:,}")

try:
    module = device.load("magnitude")  # CuPy compiles the .cu for this GPU (NVRTC)
except DeviceUnavailable as exc:
    module = None
    print(f"path: CPU build + PTX; the GPU path cannot run here: {exc}")

if module is not None:
    import cupy

    dx, dy = cupy.asarray(x), cupy.asarray(y)
    dout = cupy.empty_like(dx)
    device.launch(module.magnitude_f64, dx, dy, dout)  # dtypes, lengths, writability checked first
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"path: GPU ({name}): max |GPU - CPU build| = {np.abs(cupy.asnumpy(dout) - out).max():.3g}")
    print(f"device pointer of dout, read from __cuda_array_interface__: {device.pointer(dout)}")
else:
    try:
        text = device.ptx("magnitude", device.ARCHES[0])  # nvcc, no GPU needed
    except BuildError as exc:
        print(f"PTX not compiled either: {exc}")
    else:
        code = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("//")]
        entry = next(i for i, ln in enumerate(code) if ".entry magnitude_f64" in ln)
        sqrt = next(i for i, ln in enumerate(code) if i > entry and ln.startswith("sqrt.rn.f64"))
        print(f"PTX for {device.ARCHES[0]} by nvcc ({len(code)} lines), from magnitude_f64:")
        for line in code[entry:entry + 2] + ["..."] + code[sqrt - 2:sqrt + 2]:
            print("   ", line)
