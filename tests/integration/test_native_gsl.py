"""GSL through pyguts.native.load: the notebook's derivative, callback exceptions, no abort()."""

from __future__ import annotations

import subprocess
import sys

import needs  # tests/needs.py
import numpy as np
import pytest

from pyguts import native
from pyguts.isolation import isolate

pytestmark = [pytest.mark.every_python, needs.library("gsl")]

GSL_CDEF = """
typedef struct { double (*function)(double x, void *params); void *params; } gsl_function;
int gsl_deriv_central(const gsl_function *f, double x, double h, double *result, double *abserr);
double gsl_sf_gamma(double x);
typedef void gsl_error_handler_t(const char *reason, const char *file, int line, int gsl_errno);
gsl_error_handler_t *gsl_set_error_handler(gsl_error_handler_t *new_handler);
"""


def _derivative(gsl, fn, x=2.0, h=1e-3):
    cb = native.callback("double(double, void *)", fn)
    F = gsl.ffi.new("gsl_function *", {"function": cb.cdata, "params": gsl.ffi.NULL})
    result, abserr = np.empty(1), np.empty(1)
    status = gsl.gsl_deriv_central(F, x, h, result, abserr)
    return status, result[0], abserr[0]


def test_derivative_of_notebook_polynomial():
    gsl = native.load("gsl", GSL_CDEF)
    status, value, abserr = _derivative(gsl, lambda x, params: 3 * x * x + 2 * x + 1)
    assert status == 0
    assert abs(value - 14.0) < 1e-8 and 0 <= abserr < 1e-6


def test_exception_in_callback_reaches_caller():
    gsl = native.load("gsl", GSL_CDEF)
    seen = []

    def f(x, params):
        seen.append(x)
        raise ValueError(f"f cannot take {x}")

    with pytest.raises(ValueError, match="f cannot take") as info:
        _derivative(gsl, f)
    assert len(seen) == 1  # later evaluations by GSL got NaN without running f again
    assert any(entry.name == "f" for entry in info.traceback)  # the callback's own frame
    status, value, _ = _derivative(gsl, lambda x, p: x)  # nothing left over for the next call
    assert status == 0 and abs(value - 1.0) < 1e-9


def _gamma_overflow():
    gsl = native.load("gsl", GSL_CDEF)
    with pytest.raises(native.NativeError, match="overflow") as info:
        gsl.gsl_sf_gamma(1000.0)
    assert info.value.code == 16 and info.value.file.endswith(".c")  # GSL_EOVRFLW
    assert gsl.gsl_sf_gamma(5.0) == 24.0  # the process goes on


@pytest.mark.crash_prone
def test_gsl_error_raises_instead_of_abort():
    out = isolate(_gamma_overflow, timeout=60)  # in a child: if GSL aborted, only the child dies
    assert out.status == "ok", out


def _gamma_overflow_with_default_handler():
    gsl = native.load("gsl", GSL_CDEF)
    gsl.gsl_set_error_handler(gsl.ffi.NULL)  # GSL's default handler: abort()
    gsl.gsl_sf_gamma(1000.0)


@pytest.mark.crash_prone
def test_default_gsl_handler_would_abort():
    # The control for the test above: without pyguts' handler the same call kills the process.
    out = isolate(_gamma_overflow_with_default_handler, timeout=60)
    assert out.status == "crashed" and out.signal_name == "SIGABRT", out


def test_dependency_opened_rtld_global(tmp_path):
    # A library that, like a libgsl built without its CBLAS, leaves cblas_ddot undefined: the
    # notebook's "libgslcblas.so not found" situation, reproduced with a real shared object, in a
    # fresh interpreter (this one may already hold libgslcblas RTLD_GLOBAL from other tests).
    src, so = tmp_path / "needs_cblas.c", tmp_path / "libneeds_cblas.so"
    src.write_text("double cblas_ddot(int n, const double *x, int incx, const double *y, int incy);\n"
                   "double dot3(const double *x, const double *y) { return cblas_ddot(3, x, 1, y, 1); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    script = f"""
import numpy as np, pytest
from pyguts import native
from pyguts.isolation import isolate
cdef = "double dot3(const double *x, const double *y);"
with pytest.raises(OSError, match="cblas_ddot.*dependencies="):
    native.load({str(so)!r}, cdef, dependencies=())
lib = native.load({str(so)!r}, cdef, dependencies=["gslcblas"])
print(lib.dot3(np.arange(3.0), np.ones(3)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3.0"
