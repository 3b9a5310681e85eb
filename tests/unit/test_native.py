"""pyguts.native: checked calls, pointers, callbacks (one small real build shared by the module)."""

from __future__ import annotations

import gc
import math
import sys
import threading
import weakref

import numpy as np
import pytest

from pyguts import native

CDEF = """
void magnitude(const double *a, const double *b, const double *c, double *out, size_t n);
double first(const double *p, size_t n);
int fill(int *dst, size_t n, int value);
double apply(double (*f)(double), double x);
int spin_until_set(volatile int *flag, long max_spins);
size_t count_bytes(const void *buf, size_t nbytes);
"""

SOURCE = r"""
#include <math.h>
void magnitude(const double *a, const double *b, const double *c, double *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sqrt(a[i] * a[i] + b[i] * b[i] + c[i] * c[i]);
}
double first(const double *p, size_t n) { return n ? p[0] : -1.0; }
int fill(int *dst, size_t n, int value) { for (size_t i = 0; i < n; i++) dst[i] = value; return (int)n; }
double apply(double (*f)(double), double x) { return f(x) + f(x + 1.0); }
int spin_until_set(volatile int *flag, long max_spins) {
    for (long i = 0; i < max_spins; i++) { if (*flag) return 1; }
    return 0;
}
size_t count_bytes(const void *buf, size_t nbytes) { (void)buf; return nbytes; }
"""

pytestmark = pytest.mark.every_python

LENGTHS = {"a": "n", "b": "n", "c": "n", "out": "n", "p": "n", "dst": "n", "buf": "nbytes"}


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PYGUTS_CACHE_DIR", str(tmp_path_factory.mktemp("native-cache")))
    try:
        yield native.build(CDEF, SOURCE, lengths=LENGTHS)
    finally:
        mp.undo()


def _abc(n=1000):
    rng = np.random.default_rng(5)
    return rng.standard_normal((3, n))


def test_magnitude_equals_numpy(lib):
    a, b, c = _abc()
    out = np.empty_like(a)
    lib.magnitude(a, b, c, out)
    np.testing.assert_allclose(out, np.sqrt(a * a + b * b + c * c), rtol=1e-15)


def test_length_filled_or_explicit_prefix(lib):
    a, b, c = _abc(10)
    out = np.zeros(10)
    lib.magnitude(a, b, c, out, 4)  # explicit n: only a prefix is written
    assert np.all(out[4:] == 0) and np.all(out[:4] > 0)
    assert lib.fill(np.zeros(7, np.int32), value=3) == 7


# Each refused argument for 'out': (value, exception, words the message must contain).
REFUSED = [
    (np.zeros(1000, np.float32), TypeError, ["'out'", "float64", "float32", "astype"]),
    (np.zeros(2000)[::2], ValueError, ["'out'", "C-contiguous", "ascontiguousarray"]),
    (np.zeros(999), ValueError, ["out: 999", "same length", "n= explicitly"]),
    ([0.0] * 1000, TypeError, ["'out'", "numpy array", "list"]),
    (np.zeros(1000).astype(">f8"), TypeError, ["native-endian", ">f8"]),
]


@pytest.mark.parametrize("bad, exc, words", REFUSED, ids=["float32", "strided", "short", "list", "big-endian"])
def test_refused_arguments_never_reach_c(lib, bad, exc, words):
    a, b, c = _abc()
    sentinel = np.array(bad, copy=True) if isinstance(bad, np.ndarray) else None
    with pytest.raises(exc) as info:
        lib.magnitude(a, b, c, bad)
    for word in words:
        assert word in str(info.value)
    if sentinel is not None:
        np.testing.assert_array_equal(bad, sentinel)  # C never wrote


def test_read_only_output_refused_but_const_input_accepted(lib):
    a, b, c = _abc()
    frozen = np.zeros(1000)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"'out'.*writable.*not const"):
        lib.magnitude(a, b, c, frozen)
    assert not frozen.any()
    a.flags.writeable = False  # const double *a: fine
    out = np.empty(1000)
    lib.magnitude(a, b, c, out)


def test_too_short_for_explicit_length_refused(lib):
    out = np.zeros(5, np.int32)
    with pytest.raises(ValueError, match=r"'dst'.*at least n=6.*got 5"):
        lib.fill(out, 6, 1)
    assert not out.any()


def test_misaligned_array_refused(lib):
    raw = np.zeros(8 * 11, np.uint8)
    shifted = raw[1:81].view(np.float64)  # 10 doubles starting at an odd address
    assert not shifted.flags.aligned
    with pytest.raises(ValueError, match=r"'p'.*aligned to 8 bytes"):
        lib.first(shifted)
    ints = raw[1:41].view(np.int32)
    with pytest.raises(ValueError, match=r"'dst' of fill\(\).*aligned to 4 bytes.*did not run"):
        lib.fill(ints, value=7)
    assert not raw.any()  # C's fill() never wrote
    assert lib.fill(np.zeros(2, np.int32), value=1) == 2  # nothing left pending


def test_scalar_errors_name_the_parameter(lib):
    with pytest.raises(OverflowError, match=r"'n' of fill\(\).*size_t"):
        lib.fill(np.zeros(3, np.int32), -1, 0)
    with pytest.raises(TypeError, match=r"'value' of fill\(\).*int"):
        lib.fill(np.zeros(3, np.int32), 3, "x")


def test_void_pointer_takes_any_dtype_and_counts_bytes(lib):
    assert lib.count_bytes(np.zeros(3, np.int16)) == 6
    assert lib.count_bytes(b"abcd") == 4


def test_callback_result_and_exception_propagates(lib):
    cb = native.callback("double(double)", lambda x: 10 * x)
    assert lib.apply(cb, 1.0) == 30.0
    calls = []

    def bad(x):
        calls.append(x)
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        lib.apply(native.callback("double(double)", bad), 1.0)
    assert calls == [1.0]  # the second call from C did not run Python again
    assert lib.apply(cb, 1.0) == 30.0  # nothing left pending


def test_callback_error_value_documented():
    assert math.isnan(native.callback("double(double)", lambda x: 1 / 0).error)
    assert native.callback("int(int)", int).error == -1
    assert native.callback("unsigned int(int)", int).error == 2**32 - 1
    assert native.callback("void *(int)", int).error is None


def test_plain_python_function_refused(lib):
    with pytest.raises(TypeError, match="pyguts.native.callback"):
        lib.apply(lambda x: x, 1.0)


def test_callback_kept_alive_by_returned_object():
    def f(x):
        return x

    cb = native.callback("double(double)", f)
    ref = weakref.ref(f)
    del f
    gc.collect()
    assert ref() is not None and cb.cdata(2.0) == 2.0
    del cb
    gc.collect()
    assert ref() is None


def test_gil_released_during_call(lib):
    flag = np.zeros(1, np.int32)
    setter = threading.Timer(0.05, lambda: flag.__setitem__(0, 1))
    setter.start()
    # If the GIL were held, the setter thread could not run and C would give up (returns 0).
    assert lib.spin_until_set(flag, 4_000_000_000) == 1
    setter.join()


def test_pointer_keeps_owner_alive_and_pinned():
    buf = bytearray(16)
    p = native.pointer(buf)
    assert (p.nbytes, p.readonly, p.owner is buf) == (16, False, True)
    with pytest.raises(BufferError):
        buf.extend(b"x")  # the address must stay valid while the pointer lives
    arr = np.arange(4.0)
    ref = sys.getrefcount(arr)
    q = native.pointer(arr)
    assert q.addr == arr.ctypes.data and q.dtype == np.float64 and sys.getrefcount(arr) > ref
    del q
    assert sys.getrefcount(arr) == ref
    with pytest.raises(ValueError, match="C-contiguous"):
        native.pointer(arr[::2])


def test_pointer_passed_to_checked_call(lib):
    arr = np.array([7.0, 8.0])
    assert lib.first(native.pointer(arr)) == 7.0
    with pytest.raises(TypeError, match="float64"):
        lib.first(native.pointer(np.zeros(2, np.float32)))


def test_address_of_is_object_address():
    x = object()
    p = native.address_of(x)
    assert p.addr == id(x) and p.owner is x and p.nbytes == type(x).__sizeof__(x)


def test_lengths_must_name_parameters(lib):
    with pytest.raises(ValueError, match=r"lengths=.*'nope'"):
        native.build(CDEF, SOURCE, lengths={"nope": "n"})  # same module, reused in-process


def test_load_existing_library_checked():
    m = native.load("m", "double cos(double x); double frexp(double x, int *exp);")
    assert m.cos(0.0) == 1.0
    exp = np.zeros(1, np.int32)
    assert m.frexp(8.0, exp) == 0.5 and exp[0] == 4
    with pytest.raises(TypeError, match="int32"):
        m.frexp(8.0, np.zeros(1, np.int64))


def test_load_missing_library_says_what_to_install():
    with pytest.raises(OSError, match="install"):
        native.load("pyguts_no_such_library", "int f(void);")
