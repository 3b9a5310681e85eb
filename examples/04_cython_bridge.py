"""Cython: a typed-memoryview loop calling C's sqrt, compiled at run time, compared with numpy.

``Cython.Build.Inline.cython_inline`` turns the snippet into a C extension (cached under
~/.cython/inline after the first build), passing the numpy arrays in as typed memoryviews.
Without Cython it says so and exits 0 (pip install cython).

Run: python examples/04_cython_bridge.py
"""

import time

import numpy as np

from pyguts.tour import skip

try:
    from Cython.Build.Inline import cython_inline
except ImportError:
    skip("Cython is not installed", "pip install cython")  # says why, ends the script with status 0

N = 1_000_000

SNIPPET = """
cdef extern from "math.h":
    double sqrt(double x) nogil
cdef Py_ssize_t i = 0  # set: else the C compiler warns it "may be used uninitialized"
cdef double[::1] xv = x, yv = y, ov = out
for i in range(xv.shape[0]):
    ov[i] = sqrt(xv[i] * xv[i] + yv[i] * yv[i])
"""
#: No per-element bounds or negative-index checks: a plain C loop (the arrays are sized alike).
DIRECTIVES = {"boundscheck": False, "wraparound": False}


def magnitude(x, y, out):
    cython_inline(SNIPPET, x=x, y=y, out=out, quiet=True, locals={}, globals={},
                  cython_compiler_directives=DIRECTIVES)


rng = np.random.default_rng(0)
x, y = rng.standard_normal(N), rng.standard_normal(N)
out = np.empty_like(x)
start = time.perf_counter()
magnitude(x, y, out)  # compiles now, or loads the module built by an earlier run
first_ms = (time.perf_counter() - start) * 1e3
print(f"max |Cython - numpy| = {np.abs(out - np.sqrt(x * x + y * y)).max():.3g} on n={N:,} float64")

times = []
for _ in range(5):
    start = time.perf_counter()
    magnitude(x, y, out)
    times.append(time.perf_counter() - start)
start = time.perf_counter()
np.sqrt(x * x + y * y)
numpy_ms = (time.perf_counter() - start) * 1e3
print(f"first call {first_ms:.0f} ms (build or cache load), then {min(times) * 1e3:.2f} ms per call; "
      f"numpy expression {numpy_ms:.2f} ms")
