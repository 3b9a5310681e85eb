"""The kernels of ``gpu_kernels/magnitude.cu`` and ``momentum.cu`` as ``@numba.cuda.jit`` (private, imported lazily).

Its own module because numba's simulator (``NUMBA_ENABLE_CUDASIM=1``) swaps the ``cuda`` name in
the kernel's module globals for its fake one: ``cuda`` and ``math`` must be module globals here,
not names imported inside a function. Importing this module imports numba.cuda, so it is
imported only when a numba launch is asked for.
"""

from __future__ import annotations

import math

from numba import cuda


@cuda.jit
def magnitude(x, y, out):  # pragma: no cover - runs on the device or in the simulator
    """out[i] = sqrt(x[i]^2 + y[i]^2) for every i, with a grid-stride loop (any launch covers all)."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.shape[0], stride):
        out[i] = math.sqrt(x[i] * x[i] + y[i] * y[i])


@cuda.jit
def momentum(px, py, pz, p):  # pragma: no cover - runs on the device or in the simulator
    """p[i] = sqrt(px[i]^2 + py[i]^2 + pz[i]^2) for every i (the notebook's kernel), grid-stride."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        p[i] = math.sqrt(px[i] * px[i] + py[i] * py[i] + pz[i] * pz[i])
