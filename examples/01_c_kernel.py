"""C from Python: a magnitude kernel sqrt(x² + y²) compiled now, called on numpy arrays, compared with numpy.

``pyguts.native.build`` compiles the C source with the real compiler (cffi API mode), caches the
module by content hash, and checks every numpy argument against the declared C types before C runs.

Run: python examples/01_c_kernel.py
"""

import time

import numpy as np

from pyguts import native

N = 1_000_000

SOURCE = """
#include <math.h>
void magnitude(const double *x, const double *y, double *out, long n) {
    for (long i = 0; i < n; i++) out[i] = sqrt(x[i] * x[i] + y[i] * y[i]);
}
"""
# lengths= ties each array to n: n may be left off, and a too-short array is refused.
lib = native.build("void magnitude(const double *x, const double *y, double *out, long n);", SOURCE,
                   lengths={"x": "n", "y": "n", "out": "n"})
print(f"built with {' '.join(native.DEFAULT_FLAGS)} ({'from the cache' if lib.cache_hit else 'compiled now'})")


def best_ms(fn, repeat=5):
    """The fastest of ``repeat`` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


rng = np.random.default_rng(0)
x, y = rng.standard_normal(N), rng.standard_normal(N)
out = np.empty_like(x)
lib.magnitude(x, y, out)  # n filled in from the arrays
expected = np.sqrt(x * x + y * y)
print(f"max |C - numpy| = {np.abs(out - expected).max():.3g} on n={N:,} float64")

c_ms = best_ms(lambda: lib.magnitude(x, y, out))
numpy_ms = best_ms(lambda: np.sqrt(x * x + y * y))
print(f"C kernel {c_ms:.2f} ms, numpy expression {numpy_ms:.2f} ms ({numpy_ms / c_ms:.1f}x)")

# The classic ctypes bug, a float32 array read as double *, is refused before C runs.
try:
    lib.magnitude(x, y.astype(np.float32), out)
except TypeError as exc:
    print(f"refused: {exc}")
