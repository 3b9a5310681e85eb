"""pyguts.native keeps its promise under odd arguments: lengths, NULL, object arrays, callback errors.

Issue 14 ("Safe means safe"), items 6 and 7. Each call that used to crash runs in a forked child
(``isolate``), so the old behaviour fails the test instead of killing pytest.
"""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np
import pytest

from pyguts import native
from pyguts.isolation import isolate

pytestmark = pytest.mark.every_python

CDEF = """
typedef struct { void *obj; double x; } slot;
void scale(float *x, size_t n);
double sum(const double *p, size_t n);
size_t poke(void *buf, size_t nbytes);
size_t peek(const void *buf, size_t nbytes);
size_t fill_slots(slot *s, size_t n);
int plain(int x);
int call(int (*f)(int), int x);
int in_thread(int (*f)(int), int x);
"""

SOURCE = r"""
#include <pthread.h>
#include <string.h>
typedef struct { void *obj; double x; } slot;
void scale(float *x, size_t n) { for (size_t i = 0; i < n; i++) x[i] *= 2.0f; }
double sum(const double *p, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += p[i]; return s; }
size_t poke(void *buf, size_t nbytes) { memset(buf, 0x41, nbytes); return nbytes; }
size_t peek(const void *buf, size_t nbytes) { (void)buf; return nbytes; }
size_t fill_slots(slot *s, size_t n) { memset(s, 0x41, n * sizeof *s); return n; }
int plain(int x) { return x; }
int call(int (*f)(int), int x) { return f(x); }
struct job { int (*f)(int); int x; int r; };
static void *run(void *p) { struct job *j = p; j->r = j->f(j->x); return 0; }
int in_thread(int (*f)(int), int x) {
    pthread_t t; struct job j = {f, x, 0};
    if (pthread_create(&t, 0, run, &j)) return -2;
    pthread_join(t, 0);
    return j.r;
}
"""

LENGTHS = {"x": "n", "p": "n", "buf": "nbytes", "s": "n"}

#: A length far past a 4-element array: C would write 4 MiB beyond it.
HUGE = 2**20


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PYGUTS_CACHE_DIR", str(tmp_path_factory.mktemp("native-safety-cache")))
    try:
        yield native.build(CDEF, SOURCE, lengths=LENGTHS, libraries=["pthread"])
    finally:
        mp.undo()


class Index:
    """An integer-like object: only ``__index__`` (and a different ``__int__``, which must not count)."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __int__(self):
        return 1


class LyingInt(int):
    """An int whose comparisons claim it is small."""

    def __lt__(self, other):
        return False

    __le__ = __lt__

    def __gt__(self, other):
        return False

    __ge__ = __gt__


# Lengths C must never receive for a 4-element array, in the integer forms Python code produces.
TOO_LONG = {"int64": np.int64(HUGE), "uint64": np.uint64(HUGE), "int32": np.int32(HUGE),
            "intp": np.intp(HUGE), "__index__": Index(HUGE), "lying-int": LyingInt(HUGE)}


def _scale(lib, n):
    x = np.ones(4, np.float32)
    lib.scale(x, n)
    return x.tolist()


@pytest.mark.crash_prone
@pytest.mark.parametrize("n", TOO_LONG.values(), ids=list(TOO_LONG))
def test_length_of_any_integer_type_is_checked(lib, n):
    outcome = isolate(_scale, lib, n)  # C would write 4 MiB past the array
    assert outcome.status == "raised", outcome.describe()
    assert outcome.exc_type == "ValueError"
    assert "'x' of scale()" in outcome.exc_message and f"n={HUGE}" in outcome.exc_message


@pytest.mark.parametrize("n, want", [(np.int64(3), 3), (np.uint8(2), 2), (Index(1), 1), (True, 1),
                                     (False, 0), (LyingInt(4), 4)],
                         ids=["int64", "uint8", "__index__", "True", "False", "int-subclass"])
def test_length_of_any_integer_type_is_passed_as_checked(lib, n, want):
    x = np.ones(4, np.float32)
    lib.scale(x, n)
    assert x.tolist() == [2.0] * want + [1.0] * (4 - want)


@pytest.mark.parametrize("n", [2.0, np.float64(2.0), "2", 2 + 0j], ids=["float", "float64", "str", "complex"])
def test_length_that_is_not_an_integer_is_refused(lib, n):
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match=r"'n' of scale\(\).*integer.*__index__"):
        lib.scale(x, n)
    assert x.tolist() == [1.0] * 4


@pytest.mark.crash_prone
def test_none_for_a_pointer_with_a_length_is_refused(lib):
    outcome = isolate(lib.sum, None, 5)  # C would read 5 doubles at address 0
    assert outcome.status == "raised", outcome.describe()
    assert outcome.exc_type == "ValueError"
    assert "'p' of sum()" in outcome.exc_message and "None" in outcome.exc_message


def test_none_is_a_pointer_to_zero_elements(lib):
    assert lib.sum(None, 0) == 0.0
    assert lib.sum(None) == 0.0  # n filled from the zero-length NULL
    assert lib.sum(None, np.int64(0)) == 0.0


def _poke_then_collect(lib, make):
    arr = make()
    lib.poke(arr)  # C overwrites the object pointers with 0x4141...
    del arr
    gc.collect()
    return "survived"


def _object_array():
    return np.array([object(), object(), object()], dtype=object)


def _structured_object_array():
    return np.zeros(3, dtype=[("obj", "O"), ("x", "f8")])


OBJECT_HOLDERS = [_object_array, _structured_object_array,
                  lambda: native.pointer(_object_array()),
                  lambda: memoryview(_object_array())]
if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
    OBJECT_HOLDERS.append(lambda: np.array(["a", "bb" * 40], dtype=np.dtypes.StringDType()))


@pytest.mark.crash_prone
@pytest.mark.parametrize("make", OBJECT_HOLDERS, ids=["object", "structured", "Pointer", "memoryview",
                                                     "StringDType"][:len(OBJECT_HOLDERS)])
def test_arrays_holding_references_never_reach_void_pointers(lib, make):
    outcome = isolate(_poke_then_collect, lib, make)
    assert outcome.status == "raised", outcome.describe()
    assert outcome.exc_type == "TypeError"
    assert "'buf' of poke()" in outcome.exc_message and "plain data" in outcome.exc_message


def test_arrays_holding_references_refused_for_const_and_struct_pointers(lib):
    with pytest.raises(TypeError, match=r"'buf' of peek\(\).*plain data"):
        lib.peek(_object_array())
    slots = np.zeros(2, dtype=[("obj", "O"), ("x", "f8")])  # same itemsize as C's slot
    assert slots.dtype.itemsize == lib.ffi.sizeof("slot")
    with pytest.raises(TypeError, match=r"'s' of fill_slots\(\).*plain data"):
        lib.fill_slots(slots)
    plain = np.zeros(2, dtype=[("obj", "u8"), ("x", "f8")])
    assert lib.fill_slots(plain) == 2  # plain structured data still goes through


def test_plain_data_still_reaches_void_pointers(lib):
    assert lib.peek(np.zeros(3, "M8[s]")) == 24
    assert lib.peek(np.zeros(2, "U3")) == 24
    assert lib.poke(bytearray(5)) == 5


# --- callbacks (item 7) -------------------------------------------------------------------------------

def _raiser(x):
    raise KeyError(f"from C thread {x}")


@pytest.fixture
def unraisable(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


def test_callback_error_on_a_c_thread_never_reaches_another_call(lib, unraisable):
    cb = native.callback("int(int)", _raiser)
    stale = []
    for i in range(10):
        assert lib.in_thread(cb, i) == -1  # C got the documented error value
        results = []

        def unrelated():
            try:
                results.append(lib.plain(7))
            except BaseException as exc:  # noqa: BLE001 - the bug: another call's exception
                results.append(exc)

        # A new Python thread often gets the C thread's id (glibc reuses the stack).
        t = threading.Thread(target=unrelated)
        t.start()
        t.join()
        stale += [r for r in results if r != 7]
        assert lib.plain(8) == 8
    assert stale == []
    # Not lost silently either: each went to sys.unraisablehook.
    assert [str(u.exc_value) for u in unraisable] == [repr(f"from C thread {i}") for i in range(10)]


def test_callback_error_outside_a_checked_call_is_not_raised_by_the_next_one(lib, unraisable):
    cb = native.callback("int(int)", _raiser)
    assert lib.lib.call(cb.cdata, 3) == -1  # the raw cffi function: no checked call runs
    assert lib.plain(4) == 4
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, KeyError)


def test_callback_error_inside_a_checked_call_is_raised_by_it(lib, unraisable):
    calls = []

    def bad(x):
        calls.append(x)
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        lib.call(native.callback("int(int)", bad), 5)
    assert calls == [5] and unraisable == []
    assert lib.plain(1) == 1


def test_nested_checked_calls_each_raise_their_own(lib, unraisable):
    def inner(x):
        raise ValueError(f"inner {x}")

    inner_cb = native.callback("int(int)", inner)

    def outer(x):
        try:
            lib.call(inner_cb, x)
        except ValueError as exc:
            assert str(exc) == "inner 2"
        raise KeyError("outer")

    with pytest.raises(KeyError, match="outer"):
        lib.call(native.callback("int(int)", outer), 2)
    assert unraisable == [] and lib.plain(1) == 1


def test_exception_left_by_an_interrupted_call_is_reported_not_raised(lib, unraisable):
    from pyguts.native.pointers import PENDING

    def finished_frame():
        return sys._getframe()

    # What a checked call interrupted between C's return and its own raise (Ctrl-C) leaves behind.
    PENDING[threading.get_ident()] = (KeyError("stale"), finished_frame())
    assert lib.plain(3) == 3
    assert threading.get_ident() not in PENDING
    assert [str(u.exc_value) for u in unraisable] == ["'stale'"]
