"""Native frames in isolate's crash reports: real crashes in ctypes, in C built with and without -g,
C asserts and non-main threads, symbolized in the parent; nothing for a clean run."""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import subprocess
import sys
import threading

import numpy
import pytest

from pyguts.errors import BuildError
from pyguts.isolation import isolate, native
from pyguts.native.compiler import find_compiler

pytestmark = [pytest.mark.every_python, pytest.mark.crash_prone]

# Line numbers below are the lines of SOURCE (native.build maps its file back to "<name>.c").
SOURCE = """\
#include <assert.h>
#include <pthread.h>
#include <stddef.h>
int pg_crash_here(int depth) {
    volatile int *p = NULL;
    return depth > 0 ? *p + depth : 0;
}
void pg_assert_fails(int x) {
    assert(x == 42);
}
static void *pg_worker(void *arg) {
    volatile int *p = arg;
    *p = 1;
    return NULL;
}
int pg_crash_in_thread(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, pg_worker, NULL) != 0)
        return -1;
    pthread_join(t, NULL);
    return 0;
}
"""
CDEF = "int pg_crash_here(int depth); void pg_assert_fails(int x); int pg_crash_in_thread(void);"
CRASH_LINE, ASSERT_LINE, WORKER_LINE = 6, 9, 13


def _library(debug: bool):
    from pyguts import native as pg_native

    name = "crashy_g" if debug else "crashy"
    flags = ("-g", "-pthread") if debug else ("-pthread",)
    return pg_native.build(CDEF, SOURCE, name=name, flags=flags, libraries=("pthread",))


def _frame(outcome, function):
    found = [f for f in outcome.native_frames if f.name == function]
    assert found, "no frame in %s among:\n%s" % (function, native.describe(outcome.native_frames))
    return found[0]


def test_a_null_read_through_ctypes_names_libc_and_ctypes_and_the_null_address():
    outcome = isolate(ctypes.string_at, 0)
    assert (outcome.status, outcome.signal) == ("crashed", signal.SIGSEGV), outcome.describe()
    assert (outcome.fault_address, outcome.fault_region) == (0, "NULL")
    frames = outcome.native_frames
    assert os.path.basename(frames[0].object).startswith("libc.so"), native.describe(frames)
    at = _frame(outcome, "string_at")   # ctypes' C function, one frame up
    assert os.path.basename(at.object).startswith("_ctypes") and frames.index(at) <= 2
    assert "fault address: 0x0, NULL" in outcome.describe()
    assert "C stack" not in outcome.fault_traceback   # 3.14+'s own dump is off: these frames replace it
    assert "string_at" in outcome.describe()   # the text report lists the frames too


def test_a_segfault_in_a_native_build_with_g_names_the_function_and_its_line():
    lib = _library(debug=True)
    outcome = isolate(lib.pg_crash_here, 1)
    assert outcome.signal == signal.SIGSEGV, outcome.describe()
    top = outcome.native_frames[0]
    assert (top.name, top.object) == ("pg_crash_here", lib.path), native.describe(outcome.native_frames)
    assert (os.path.basename(top.file), top.line) == ("crashy_g.c", CRASH_LINE)
    assert outcome.fault_region == "NULL"
    assert "pg_crash_here+0x" in outcome.describe() and "crashy_g.c:%d" % CRASH_LINE in outcome.describe()


def test_without_debug_info_the_function_still_comes_from_the_symbol_table():
    lib = _library(debug=False)
    outcome = isolate(lib.pg_crash_here, 1)
    assert outcome.signal == signal.SIGSEGV, outcome.describe()
    top = outcome.native_frames[0]
    assert (top.name, top.function, top.file, top.line) == ("pg_crash_here",) * 2 + (None, None), str(top)
    assert top.function_offset is not None and 0 <= top.function_offset < 256


def test_an_assert_failing_in_c_is_sigabrt_with_abort_and_the_asserting_line():
    lib = _library(debug=True)
    outcome = isolate(lib.pg_assert_fails, 7)
    assert (outcome.status, outcome.signal) == ("crashed", signal.SIGABRT), outcome.describe()
    assert outcome.fault_address is None and outcome.fault_region == ""   # not a memory fault
    assert "x == 42" in outcome.stderr                                     # glibc's assert message
    frames = outcome.native_frames
    frame = _frame(outcome, "pg_assert_fails")
    assert frames.index(_frame(outcome, "abort")) < frames.index(frame), native.describe(frames)
    assert (os.path.basename(frame.file), frame.line) == ("crashy_g.c", ASSERT_LINE)


def test_a_crash_in_a_non_main_thread_gives_that_threads_frames():
    lib = _library(debug=True)
    outcome = isolate(lib.pg_crash_in_thread)
    assert outcome.signal == signal.SIGSEGV, outcome.describe()
    top = outcome.native_frames[0]
    assert (os.path.basename(top.file), top.line) == ("crashy_g.c", WORKER_LINE), str(top)
    assert outcome.native_crash.thread != outcome.pid                      # not the main thread
    assert "pg_crash_in_thread" not in [f.name for f in outcome.native_frames]   # (it waits in join)


EXTENSION = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *poke(PyObject *self, PyObject *arg) {
    volatile long *p = (long *)PyLong_AsVoidPtr(arg);
    return PyLong_FromLong(*p);
}
static PyMethodDef methods[] = {{"poke", poke, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "%s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%s(void) { return PyModule_Create(&module); }
"""


@pytest.mark.parametrize("debug", [True, False], ids=["with -g", "without -g"])
def test_a_crash_in_a_plain_c_extension_names_its_function(tmp_path, debug):
    import importlib.util
    import sysconfig

    from pyguts import _compat

    name = "pg_crashext_g" if debug else "pg_crashext"
    (tmp_path / f"{name}.c").write_text(EXTENSION % (name, name))
    so = tmp_path / (name + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([*find_compiler("c"), "-shared", "-fPIC", "-O2", *(["-g"] if debug else []),
                    f"-I{_compat.PY_INCLUDE}", "-o", str(so), f"{name}.c"], check=True, cwd=tmp_path)
    spec = importlib.util.spec_from_file_location(name, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outcome = isolate(module.poke, 8)
    assert outcome.signal == signal.SIGSEGV and outcome.fault_address == 8, outcome.describe()
    top = outcome.native_frames[0]
    assert (top.name, top.object) == ("poke", str(so)), native.describe(outcome.native_frames)
    assert (top.file and os.path.basename(top.file), top.line) == ((f"{name}.c", 5) if debug else (None, None)), str(top)


def test_a_python_thread_crashing_reports_its_own_stack():
    def crash_in_a_thread():
        t = threading.Thread(target=ctypes.string_at, args=(0,))
        t.start()
        t.join()

    outcome = isolate(crash_in_a_thread)
    assert outcome.signal == signal.SIGSEGV, outcome.describe()
    assert outcome.native_crash.thread != outcome.pid
    assert _frame(outcome, "string_at")


@pytest.mark.parametrize("address, region", [
    (16, "near NULL"),
    (0x7E57 << 32, "not in any mapping"),
])
def test_the_fault_address_is_placed(address, region):
    outcome = isolate(ctypes.string_at, address, 1)
    assert outcome.signal == signal.SIGSEGV, outcome.describe()
    assert outcome.fault_address == address and outcome.fault_region.startswith(region), outcome.fault_region


def test_a_write_to_a_read_only_mapping_is_placed_inside_it():
    page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    base = numpy.frombuffer(page, numpy.uint8).__array_interface__["data"][0]
    outcome = isolate(ctypes.memset, base + 8, 1, 1)
    assert outcome.signal == signal.SIGSEGV, outcome.describe()
    assert outcome.fault_address == base + 8
    assert outcome.fault_region.startswith("inside anonymous memory (r--"), outcome.fault_region


def test_the_handler_brings_in_no_numpy_and_no_threads():
    # The process that forks must stay single-threaded: numpy's BLAS starts threads at import.
    code = ("import ctypes, os, sys\nimport pyguts.isolation as iso\n"
            "o = iso.isolate(ctypes.string_at, 0)\n"
            "print(o.fault_region, 'numpy' in sys.modules, len(os.listdir('/proc/self/task')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["NULL", "False", "1"], done.stdout + done.stderr


def test_clean_endings_have_no_native_record():
    for outcome in (isolate(pow, 2, 10), isolate(int, "x"), isolate(os._exit, 3)):
        assert outcome.native_crash is None and outcome.native_frames == () and outcome.fault_address is None
        assert "native frames" not in outcome.describe()


def test_a_timeout_dump_has_no_native_record():
    outcome = isolate(threading.Event().wait, timeout=0.3)
    assert outcome.status == "timeout" and outcome.native_frames == ()


def test_nested_isolates_each_report_their_own_crash():
    inner = isolate(lambda: [f.name for f in isolate(ctypes.string_at, 0).native_frames]).unwrap()
    assert "string_at" in inner


def test_without_the_handler_the_report_says_why(monkeypatch):
    monkeypatch.setattr(native, "_install", None)
    monkeypatch.setattr(native, "_why_not", "BuildError: no C compiler found")
    outcome = isolate(ctypes.string_at, 0)
    assert outcome.signal == signal.SIGSEGV and outcome.native_frames == ()
    assert "no native frames: the crash handler could not be built (BuildError: no C compiler found)" \
        in outcome.describe()
    assert "string_at" in outcome.fault_traceback   # faulthandler's Python frames as before
    if sys.version_info >= (3, 14):                   # and CPython's own C stack, as text
        assert "Current thread's C stack trace" in outcome.fault_traceback


def test_the_handler_looks_for_the_compiler_as_native_build_does(monkeypatch):
    """$CC honoured, and the same error (what was tried, how to install one) as native.build gives."""
    monkeypatch.setattr(native, "_install", None)
    monkeypatch.setattr(native, "_why_not", None)
    monkeypatch.setenv("CC", "no-such-cc --flag")
    assert native.installer() is None
    with pytest.raises(BuildError) as raised:
        find_compiler("c")
    assert native.why_not() == f"BuildError: {raised.value}"
    assert "$CC='no-such-cc --flag'" in native.why_not() and "apt-get install gcc" in native.why_not()


def test_the_record_parses_and_is_taken_out_of_the_fault_text():
    text = ("pyguts-native: signal 11 code 1 address 0x10 pc 0x1000 thread 7\n"
            "pyguts-native: frame 0x1000\n"
            "pyguts-native: map 1000-2000 r-xp 00000000 08:01 42 /no/such/lib.so\n"
            "pyguts-native: end\n"
            "Fatal Python error: Segmentation fault\n")
    crash, rest = native.split(text)
    assert rest == "Fatal Python error: Segmentation fault\n"
    assert (crash.signal, crash.address, crash.thread, crash.frames, crash.whole) == (11, 16, 7, (0x1000,), True)
    assert crash.maps == ((0x1000, 0x2000, "r-xp", 0, "/no/such/lib.so"),)
    assert native.symbolize(crash) == (native.NativeFrame(0x1000, "/no/such/lib.so"),)   # unreadable file
    assert native.split("no record here\n") == (None, "no record here\n")


def test_a_hostile_record_is_text_and_names_no_file_that_blocks(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    text = ("pyguts-native: signal 11 code 1 address 0x0 pc 0x1000 thread 7\n"
            "pyguts-native: frame 0x1000\n"
            f"pyguts-native: map 1000-2000 r-xp 00000000 08:01 42 {fifo}\n")
    crash, _ = native.split(text)
    assert native.symbolize(crash) == (native.NativeFrame(0x1000, str(fifo)),)   # returns: never opened
    for junk in ("pyguts-native: signal x\n", "pyguts-native: frame 0x1\n", "pyguts-native: map zz\n"):
        assert native.split(junk) == (None, junk)


@pytest.mark.parametrize("function, inlined, name", [
    ("string_at.lto_priv.0", None, "string_at"), ("f.cold", "f", "f"), ("PyDict_SetItem", "PyType_HasFeature",
     "PyDict_SetItem"), (None, None, None), ("abort", "__GI_abort", "abort"),
])
def test_a_frames_name_is_its_source_functions(function, inlined, name):
    assert native.NativeFrame(1, function=function, inlined=inlined).name == name
