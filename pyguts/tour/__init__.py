"""The tour: every section of the teaching notebook pyguts grew from, as a step that works today.

C from Python, Python from C (GSL), ROOT's C++ one-liner, Cython, CUDA, numba, jemalloc-backed
arrays, then the interpreter itself: any memory as numpy, "immutable" bytes changed in place, and
the type swap that used to kill the kernel, now refused, then forced in a child whose crash is
shown as data. Each step prints what it did and what it found. A step whose tools are missing
says why and what to install, and the tour goes on.

>>> [step.name for step in STEPS][:3]
['c_kernel', 'gsl', 'cpp']
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable, Iterator

import numpy as np

from pyguts.errors import AllocatorUnavailable, BuildError, DeviceUnavailable

#: Elements in the arrays the kernels are timed on (the notebook's size).
N = 1_000_000


class StepUnavailable(Exception):
    """A step cannot run here: ``why`` it cannot and ``fix``, what to install or set."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(why)
        self.why, self.fix = why, fix


#: Errors that mean "a tool is missing here", not "pyguts is broken": the step is skipped with the text.
_MISSING = (AllocatorUnavailable, BuildError, DeviceUnavailable, ImportError, OSError)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[], None]


def _best_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _operands(n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    return x, y, np.sqrt(x * x + y * y)


# --- C, GSL, C++, Cython ---------------------------------------------------------------------------

MAGNITUDE_C = """
#include <math.h>
void magnitude(const double *x, const double *y, double *out, long n) {
    for (long i = 0; i < n; i++) out[i] = sqrt(x[i] * x[i] + y[i] * y[i]);
}
"""


def c_kernel() -> None:
    from pyguts import native

    lib = native.build("void magnitude(const double *x, const double *y, double *out, long n);", MAGNITUDE_C,
                       lengths={"x": "n", "y": "n", "out": "n"})
    x, y, expected = _operands()
    out = np.empty_like(x)
    c_ms = _best_ms(lambda: lib.magnitude(x, y, out))
    np_ms = _best_ms(lambda: np.sqrt(x * x + y * y))
    print(f"native.build: magnitude() compiled with {' '.join(native.DEFAULT_FLAGS)} "
          f"({'cached' if lib.cache_hit else 'built now'})")
    print(f"n={N:,} float64: C {c_ms:.2f} ms, numpy expression {np_ms:.2f} ms ({np_ms / c_ms:.1f}x), "
          f"max |C - numpy| = {np.abs(out - expected).max():.3g}")
    try:
        lib.magnitude(x, y.astype(np.float32), out)
    except TypeError as exc:
        print(f"a float32 argument is refused, not reinterpreted: {exc}")


GSL_CDEF = """
typedef struct { double (*function)(double x, void *params); void *params; } gsl_function;
int gsl_deriv_central(const gsl_function *f, double x, double h, double *result, double *abserr);
double gsl_sf_gamma(double x);
"""


def gsl() -> None:
    from pyguts import NativeError, native

    lib = native.load("gsl", GSL_CDEF)

    def derivative(fn, x: float = 2.0) -> tuple[float, float]:
        cb = native.callback("double(double, void *)", fn)
        f = lib.ffi.new("gsl_function *", {"function": cb.cdata, "params": lib.ffi.NULL})
        result, abserr = np.empty(1), np.empty(1)
        lib.gsl_deriv_central(f, x, 1e-3, result, abserr)
        return result[0], abserr[0]

    value, abserr = derivative(lambda x, params: 3 * x * x + 2 * x + 1)
    print(f"gsl_deriv_central of 3x^2 + 2x + 1 (a Python callback) at x=2: {value:.10f} "
          f"(exact 14, GSL's error estimate {abserr:.1e})")

    def broken(x, params):
        raise ValueError(f"callback refuses x={x}")

    try:
        derivative(broken)
    except ValueError as exc:
        print(f"an exception in the callback reaches the caller: ValueError: {exc}")
    try:
        lib.gsl_sf_gamma(1000.0)
    except NativeError as exc:
        print(f"gsl_sf_gamma(1000) overflows: NativeError({exc.reason!r}) instead of GSL's abort()")


CPP_SOURCE = """
#include <numeric>
extern "C" double dot(const double *a, const double *b, long n) {
    return std::inner_product(a, a + n, b, 0.0);
}
"""


def cpp() -> None:
    from pyguts import native

    lib = native.build("double dot(const double *a, const double *b, long n);", CPP_SOURCE, language="c++",
                       lengths={"a": "n", "b": "n"})
    x, y, _ = _operands(1000)
    print(f"C++ std::inner_product via native.build(language='c++'): dot = {lib.dot(x, y):.12f}, "
          f"numpy {np.dot(x, y):.12f}")
    try:
        import cppyy
    except ImportError:
        print("cppyy (ROOT's interpreter, for the literal one-liner) is optional and not installed: "
              "pip install cppyy")
        return
    if not hasattr(cppyy.gbl, "pyguts_twice"):  # a second run in one process must not redefine it
        cppyy.cppdef("double pyguts_twice(double x) { return 2 * x; }")
    print(f"cppyy one-liner: cppyy.cppdef(...); cppyy.gbl.pyguts_twice(21) = {cppyy.gbl.pyguts_twice(21)}")


CYTHON_SOURCE = """
cdef extern from "math.h":
    double sqrt(double x) nogil
cdef Py_ssize_t i
cdef double[::1] xv = x, yv = y, ov = out
for i in range(xv.shape[0]):
    ov[i] = sqrt(xv[i] * xv[i] + yv[i] * yv[i])
"""


#: Plain C loops: no per-element bounds or negative-index checks (the memoryviews are sized alike).
_CYTHON_DIRECTIVES = {"boundscheck": False, "wraparound": False}


@contextlib.contextmanager
def _compiler_output_kept() -> Iterator[None]:
    """Hold the C compiler's stderr chatter (fd 2) in a file; show it only if the build fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _cythonized(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    from Cython.Build.Inline import cython_inline

    cython_inline(CYTHON_SOURCE, x=x, y=y, out=out, quiet=True, locals={}, globals={},
                  cython_compiler_directives=_CYTHON_DIRECTIVES)


def cython() -> None:
    try:
        import Cython
    except ImportError as exc:
        raise StepUnavailable("Cython is not installed", "pip install cython") from exc
    x, y, expected = _operands()
    out = np.empty_like(x)
    start = time.perf_counter()
    with _compiler_output_kept():
        _cythonized(x, y, out)
    first_ms = (time.perf_counter() - start) * 1e3
    ms = _best_ms(lambda: _cythonized(x, y, out))
    print(f"Cython {Cython.__version__}, cython_inline: typed memoryviews calling C's sqrt: first call "
          f"{first_ms:.0f} ms (compiles or loads its cache), then {ms:.2f} ms for n={N:,}; "
          f"max |Cython - numpy| = {np.abs(out - expected).max():.3g}")


# --- GPU ------------------------------------------------------------------------------------------

def cuda() -> None:
    from pyguts.device import tour_summary

    print(tour_summary())


NUMBA_SIM_CHILD = """
import numpy as np
from pyguts import device
x, y = np.arange(13.0), np.ones(13)
out = device.numba_magnitude(x, y)
print(f"max |simulated kernel - numpy| = {np.abs(out - np.sqrt(x * x + y * y)).max():.3g}")
"""


def numba() -> None:
    import numba as nb

    from pyguts import device

    @nb.njit(fastmath=False, cache=False)
    def magnitude(x, y, out):
        for i in range(x.size):
            out[i] = np.sqrt(x[i] * x[i] + y[i] * y[i])

    x, y, expected = _operands()
    out = np.empty_like(x)
    magnitude(x, y, out)  # compiles
    ms = _best_ms(lambda: magnitude(x, y, out))
    print(f"numba {nb.__version__} @njit on the CPU: {ms:.2f} ms for n={N:,}, "
          f"max |numba - numpy| = {np.abs(out - expected).max():.3g}")
    if device.available():
        gpu_out = device.numba_magnitude(x, y)
        print(f"@numba.cuda.jit on the GPU: max |GPU - numpy| = {np.abs(gpu_out - expected).max():.3g}")
        return
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")  # read at numba's import: a fresh process
    done = subprocess.run([sys.executable, "-c", NUMBA_SIM_CHILD], capture_output=True, text=True, env=env,
                          timeout=300)
    if done.returncode:
        raise RuntimeError(f"numba's CUDA simulator run failed: {done.stderr.strip()[-2000:]}")
    print(f"@numba.cuda.jit, no GPU here: the same kernel in numba's CUDA simulator "
          f"(<<<{device.SIM_BLOCKS}, {device.SIM_THREADS}>>>, n=13): {done.stdout.strip()}")


# --- allocators -----------------------------------------------------------------------------------

def jemalloc() -> None:
    import pyguts.alloc as alloc

    before = alloc.stats("jemalloc")
    a = alloc.zeros((1000, 1000), allocator="jemalloc")
    a += 1.5
    after = alloc.stats("jemalloc")
    block = alloc.owner(a)
    print(f"pyguts.alloc.zeros((1000, 1000), allocator='jemalloc'): {a.nbytes:,} bytes at {block.addr:#x}, "
          f"aligned to {block.alignment}, owned by {block!r}")
    for key in ("allocated", "active", "resident", "mapped"):
        print(f"  jemalloc stats.{key:<10} {before[key]:>12,} -> {after[key]:>12,}")
    print(f"  process RSS              {before['rss']:>12,} -> {after['rss']:>12,}")
    with alloc.use("jemalloc"):
        b = np.sqrt(a)
    print(f"inside alloc.use('jemalloc'), numpy's own result array comes from {alloc.handler_name(b)!r}")


# --- the interpreter itself -------------------------------------------------------------------------

def raw_memory() -> None:
    import ctypes

    import pyguts

    b = bytes(b"Hello, ") + b"world!"
    print("pyguts.explain(b'Hello, world!'): the object's own memory, field by field")
    print(pyguts.explain(b))
    v = pyguts.view(b)
    print(f"pyguts.view(b): {v.dtype} array of {v.nbytes} bytes (== b.__sizeof__()), read-only "
          f"(writeable={v.flags.writeable}), its base keeps b alive")
    buf = ctypes.create_string_buffer(b"any memory at all")
    arr = pyguts.view_address(ctypes.addressof(buf), 17, owner=buf)
    print(f"pyguts.view_address over a ctypes buffer: {bytes(arr)!r}")
    try:
        pyguts.view_address(16, 8)
    except ValueError as exc:
        print(f"an address that is not mapped is refused, not read: {exc}")


def bytes_mutation() -> None:
    import pyguts
    from pyguts.errors import UnsafeOperationError

    b = bytes(b"Hello, ") + b"world!"
    h = hash(b)
    s = pyguts.struct_of(b)
    print(f"before: {b!r} refcount {pyguts.refcount(b)} (s = struct_of(b) holds one), "
          f"ob_shash {s.ob_shash} == hash(b): {s.ob_shash == h}")
    pyguts.mutate(b, 0, b"J")
    print(f"pyguts.mutate(b, 0, b'J') -> {b!r}: ob_shash reset to {s.ob_shash} so the hash is recomputed; "
          f"refcount still {pyguts.refcount(b)}")
    print(f"after: hash(b) == hash(b'Jello, world!'): {hash(b) == hash(b'Jello, world!')}, "
          f"b in {{b'Jello, world!'}}: {b in {b'Jello, world!'}}")
    try:
        pyguts.mutate(b"J", 0, b"H")
    except UnsafeOperationError as exc:
        print(f"a shared one-byte object is refused: {exc}")


class DifferentClass(bytes):
    """The notebook's subclass: its instances have a ``__dict__``, which bytes objects have no room for."""


def _forced_swap() -> str:
    import pyguts

    # The bogus __dict__ pointer is read from the next heap block: surround the victim with bytes
    # of our own so what it reads is garbage every time, and the crash deterministic.
    pool = [bytes(bytearray(b"Hello, world!")) for _ in range(512)]
    addrs = {id(x) for x in pool}
    ordered = sorted(addrs)   # pymalloc's block stride (debug builds pad blocks): the smallest gap
    block = min(b - a for a, b in zip(ordered, ordered[1:]))
    b = next(x for x in pool if id(x) - block in addrs and id(x) + block in addrs)
    pyguts.swap_type(b, DifferentClass, force=True)
    b.attr = "boom"
    return b.attr


def type_swap() -> None:
    import pyguts
    from pyguts.errors import UnsafeOperationError

    b = bytes(b"Hello, ") + b"world!"
    try:
        pyguts.swap_type(b, DifferentClass)
    except UnsafeOperationError as exc:
        print(f"pyguts.swap_type(b, DifferentClass) is refused: {exc}")
    print("forced inside pyguts.isolate (a forked child), then an attribute is set on it:")
    out = pyguts.isolate(_forced_swap, timeout=60)
    print(f"  outcome: status={out.status!r} signal={out.signal_name} after {out.duration_s * 1e3:.1f} ms; "
          f"this interpreter lives on")
    trace = [ln for ln in (out.fault_traceback or "").splitlines() if ln.strip()]
    for line in trace[:6]:
        print(f"  | {line}")


#: The tour's steps, in the notebook's order.
STEPS = (
    Step("c_kernel", "C from Python: a magnitude kernel against numpy", c_kernel),
    Step("gsl", "Python from C: GSL's derivative calls a Python function", gsl),
    Step("cpp", "ROOT's C++ one-liner", cpp),
    Step("cython", "Cython", cython),
    Step("cuda", "CUDA: gpu_kernels/magnitude.cu", cuda),
    Step("numba", "numba, on the CPU and as a CUDA kernel", numba),
    Step("jemalloc", "numpy arrays in jemalloc's memory", jemalloc),
    Step("raw_memory", "any memory as numpy: an object's bytes, field by field", raw_memory),
    Step("bytes_mutation", "changing 'immutable' bytes: refcounts and hashes before and after", bytes_mutation),
    Step("type_swap", "the type swap that killed the kernel", type_swap),
)


def run(names: list[str] | None = None) -> int:
    """Run the steps named (default: all, in order); 1 if a step failed for a reason other than a missing tool."""
    chosen = [s for s in STEPS if not names or s.name in names]
    results: dict[str, list[str]] = {"ok": [], "unavailable": [], "FAILED": []}
    for number, step in enumerate(chosen, 1):
        print(f"\n=== [{number}/{len(chosen)}] {step.name}: {step.title} ===", flush=True)
        start = time.perf_counter()
        try:
            step.run()
            status = "ok"
        except StepUnavailable as exc:
            print(f"unavailable: {exc.why}; to run this step: {exc.fix}")
            status = "unavailable"
        except _MISSING as exc:
            print(f"unavailable: {type(exc).__name__}: {exc}\n`pyguts doctor` says what to install for each part")
            status = "unavailable"
        except Exception:  # a bug: show it, keep touring, fail at the end
            print(f"FAILED:\n{traceback.format_exc()}")
            status = "FAILED"
        sys.stdout.flush()
        results[status].append(step.name)
        print(f"--- {step.name}: {status} ({time.perf_counter() - start:.1f} s)")
    summary = ", ".join(f"{len(v)} {k}" + (f" ({', '.join(v)})" if v and k != "ok" else "")
                        for k, v in results.items())
    print(f"\ntour: {len(chosen)} steps: {summary}")
    return 1 if results["FAILED"] else 0
