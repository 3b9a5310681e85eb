"""Python from C: GSL's numerical derivative ``gsl_deriv_central`` calls a Python function.

``pyguts.native.load("gsl", cdef)`` opens libgsl (libgslcblas first, RTLD_GLOBAL) with checked
calls; ``pyguts.native.callback`` makes a C function pointer whose exceptions reach the Python
caller; GSL's default error handler (``abort()``) is replaced by one that raises NativeError.
Needs libgsl (Debian: apt-get install libgsl-dev).

Run: python examples/02_gsl_callback.py
"""

import numpy as np

from pyguts import NativeError, native

CDEF = """
typedef struct { double (*function)(double x, void *params); void *params; } gsl_function;
int gsl_deriv_central(const gsl_function *f, double x, double h, double *result, double *abserr);
double gsl_sf_gamma(double x);
"""
gsl = native.load("gsl", CDEF)


def derivative(fn, x, h=1e-3):
    """d fn/dx at x by GSL, fn a Python function fn(x, params) -> float."""
    cb = native.callback("double(double, void *)", fn)  # keep cb alive while C may call it
    f = gsl.ffi.new("gsl_function *", {"function": cb.cdata, "params": gsl.ffi.NULL})
    result, abserr = np.empty(1), np.empty(1)
    gsl.gsl_deriv_central(f, x, h, result, abserr)
    return result[0], abserr[0]


calls = []


def poly(x, params):
    calls.append(x)  # GSL evaluates f a few times around x
    return 3 * x * x + 2 * x + 1


value, abserr = derivative(poly, 2.0)
print(f"d/dx (3x² + 2x + 1) at x=2 by gsl_deriv_central: {value:.12f} (exact: 14), "
      f"|error| {abs(value - 14):.1e}, GSL's estimate {abserr:.1e}, f called from C at {calls}")


def broken(x, params):
    raise ValueError(f"cannot evaluate at x={x}")


try:
    derivative(broken, 2.0)
except ValueError as exc:  # raised in the callback, re-raised here once C returned
    print(f"the callback's exception reaches the caller: ValueError: {exc}")

try:
    gsl.gsl_sf_gamma(1000.0)  # overflows: GSL's default handler would abort() the process
except NativeError as exc:
    print(f"gsl_sf_gamma(1000) raised NativeError (GSL code {exc.code}, {exc.reason!r}) instead of abort()")
print(f"and the process goes on: gsl_sf_gamma(5) = {gsl.gsl_sf_gamma(5.0)}")
