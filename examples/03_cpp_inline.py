"""ROOT's C++ one-liner: C++ (templates, the standard library) compiled at run time and called from Python.

``pyguts.native.build(..., language="c++")`` compiles with g++; the functions Python calls need C
linkage (``extern "C"``), the rest of the source is ordinary C++. If cppyy (ROOT's C++
interpreter) is installed, the literal one-liner ``cppyy.cppdef`` is shown too; it is optional.

Run: python examples/03_cpp_inline.py
"""

import numpy as np

from pyguts import native

SOURCE = """
#include <cmath>
#include <numeric>

template <typename T> T norm2(const T *a, long n) {    // any element type
    return std::sqrt(std::inner_product(a, a + n, a, T(0)));
}
extern "C" double norm_f64(const double *a, long n) { return norm2(a, n); }
extern "C" float norm_f32(const float *a, long n) { return norm2(a, n); }
extern "C" double total(const double *a, long n) { return std::accumulate(a, a + n, 0.0); }
"""
CDEF = """
double norm_f64(const double *a, long n);
float norm_f32(const float *a, long n);
double total(const double *a, long n);
"""
lib = native.build(CDEF, SOURCE, language="c++", lengths={"a": "n"})

a = np.random.default_rng(0).standard_normal(10_000)
norm = lib.norm_f64(a)
print(f"template norm2<double>: {norm:.12f}, numpy.linalg.norm: {np.linalg.norm(a):.12f}, "
      f"agree to 1e-12: {abs(norm - np.linalg.norm(a)) <= 1e-12 * norm}")
print(f"template norm2<float>:  {lib.norm_f32(a.astype(np.float32)):.6f} (float32 accumulation)")
print(f"std::accumulate: {lib.total(a):.12f}, numpy sum: {a.sum():.12f}, "
      f"|difference| {abs(lib.total(a) - a.sum()):.1e}")

try:
    import cppyy
except ImportError:
    print("cppyy is optional and not installed (pip install cppyy) for the literal one-liner "
          "cppyy.cppdef('double twice(double x) { return 2 * x; }')")
else:
    if not hasattr(cppyy.gbl, "pyguts_twice"):  # once per process: a rerun must not redefine it
        cppyy.cppdef("double pyguts_twice(double x) { return 2 * x; }")
    print(f"cppyy one-liner: cppyy.cppdef(...); cppyy.gbl.pyguts_twice(21) = {cppyy.gbl.pyguts_twice(21)}")
