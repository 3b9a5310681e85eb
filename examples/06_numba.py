"""numba: the magnitude kernel with @njit on the CPU, and as a @cuda.jit kernel on the GPU or in numba's simulator.

``pyguts.device.numba_magnitude`` launches the grid-stride kernel of ``gpu_kernels/magnitude.cu``
written in numba. Without a GPU it runs in numba's CUDA simulator, which is read from
NUMBA_ENABLE_CUDASIM=1 when numba is imported: so it runs in a child interpreter, on a tiny array
(each simulated thread costs ~100 µs).

Run: python examples/06_numba.py
"""

import os
import subprocess
import sys
import time

import numba
import numpy as np
from numba import cuda

from pyguts import device

N = 1_000_000


@numba.njit
def magnitude(x, y, out):
    for i in range(x.size):
        out[i] = np.sqrt(x[i] * x[i] + y[i] * y[i])


rng = np.random.default_rng(0)
x, y = rng.standard_normal(N), rng.standard_normal(N)
expected = np.sqrt(x * x + y * y)
out = np.empty_like(x)
magnitude(x, y, out)  # the first call compiles
start = time.perf_counter()
magnitude(x, y, out)
print(f"numba {numba.__version__} @njit on the CPU: {(time.perf_counter() - start) * 1e3:.2f} ms, "
      f"max |numba - numpy| = {np.abs(out - expected).max():.3g} on n={N:,}")

if cuda.is_available():  # numba's own CUDA target: a GPU and its driver
    gpu_out = device.numba_magnitude(x, y)  # numpy in, numpy out; device arrays stay on the device
    # GPU compilers fuse x*x + y*y into one fused multiply-add, rounded once where numpy rounds the
    # product first: results may differ in the last bit or two, never more.
    ulps = int(np.abs(gpu_out.view(np.int64) - expected.view(np.int64)).max())
    if ulps > 2:
        raise RuntimeError(f"the GPU result differs from numpy's by {ulps} units in the last place")
    print(f"@cuda.jit on the GPU: max |GPU - numpy| = {np.abs(gpu_out - expected).max():.3g} "
          f"({ulps} ulp: the GPU fuses x*x + y*y into an FMA, rounding once)")
else:
    CHILD = """
import numpy as np
from numba import config
from pyguts import device
x, y = np.arange(13.0), np.full(13, 2.0)
out = device.numba_magnitude(x, y)
print(f"simulator={bool(config.ENABLE_CUDASIM)}, <<<{device.SIM_BLOCKS}, {device.SIM_THREADS}>>> on n=13: "
      f"max |kernel - numpy| = {np.abs(out - np.sqrt(x * x + y * y)).max():.3g}")
"""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"the simulator child failed:\n{done.stderr}")
    print(f"@cuda.jit, no GPU here, in numba's CUDA simulator: {done.stdout.strip()}")
