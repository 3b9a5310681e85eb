"""Safe means safe (issue 14): every safe-mode entry point, fuzzed with hypothesis over awkward
objects and arguments, is refused or right, never crashes, and leaves the object unchanged when it
refuses. Safe mode: no ``force=True``, no ``writable=True``.

Each example runs in its own forked child (tests/unit/fuzzkit.py): the child builds the target from
its corpus name, snapshots its memory and refcount, makes the call, then either

- the call raised a refusal (a pyguts error, TypeError, ValueError, IndexError, OverflowError,
  BufferError, or the corpus's own hostile exception): the object must be byte-for-byte unchanged,
  with the same refcount (unless it is shared: then others move its count);
- or it returned: the result must be right (what can be checked independently of pyguts: the bytes
  a view shows are the bytes at that address, a mutation wrote exactly the data and hashes agree
  with a fresh equal object, a refcount matches the header), and a read-only call changed nothing.

Then a health check (gc, repr and hash of the target and of the whole corpus, allocations) runs.
The parent fails the example when the child was killed by a signal, hung, or found the property
broken, and prints the reproducer (hypothesis' falsifying example names the corpus entry and the
arguments; each kind of failure is its own exception class, so hypothesis reports each). Counts go
to the terminal summary and, when $PYGUTS_FUZZ_REPORT names a file, are appended there as one JSON
line per run, with every failing child's reproducer.

The default run is small and deterministic (``derandomize=True``, no example database): about 360
examples, 10-20 s for the module on a busy 2-core machine. ``PYGUTS_FUZZ_EXAMPLES=N`` allows N
examples per entry point for a long run (hypothesis stops early where it has tried every distinct
input: the one-argument read-only entry points have about 100); N=1300 gives over 10,000 in all.
Not ``crash_prone``: nothing here takes a force=True path or crashes on purpose; every call runs in
a forked child already (pytest-forked would only fork twice).
"""

from __future__ import annotations

import ctypes
import gc
import json
import operator
import os
import shutil
import struct
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import pyguts
from fuzzkit import (CLASSES, CORPUS, COUNTS, FAILURES, REFUSALS, Address, Boom, Fit, Gen, HugeLen, IndexOf, LongLenStr,
                     RaisingIndex, Shifty, Snapshot, SneakyStr, Target, Violation, health_check, instance_of,
                     own_nbytes, raw_refcnt, record, run_forked, summary, warm_caches)

pytestmark = pytest.mark.every_python

VERSION = sys.version_info[:2]
WORD = ctypes.sizeof(ctypes.c_void_p)
DIGIT_BITS = sys.int_info.bits_per_digit
#: Examples per entry point: small by default (the module runs on every interpreter of `make test`).
EXAMPLES = int(os.environ.get("PYGUTS_FUZZ_EXAMPLES", "0"))
#: Import every entry point here, in the parent: a child that imported it would pay the layout gate
#: on every example.
ENTRY_POINTS = {name: getattr(pyguts, name) for name in (
    "refcount", "is_immortal", "referrers", "view", "view_address", "payload", "nbytes_of", "struct_of", "explain",
    "diagram", "mutate", "swap_type")}


def fuzz(default_examples: int):
    return settings(max_examples=EXAMPLES or default_examples, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False,
                    suppress_health_check=list(HealthCheck))


class _SummaryLine:
    """Prints the module's counts in pytest's terminal summary (a plugin object registered here)."""

    def __init__(self):
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter):
        for line in self.lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary(request):
    start, before, failures_before = time.monotonic(), {k: v.copy() for k, v in COUNTS.items()}, len(FAILURES)
    printer = _SummaryLine()
    request.config.pluginmanager.register(printer)
    yield
    counts = {k: v - before.get(k, v.__class__()) for k, v in COUNTS.items()}
    seconds = time.monotonic() - start
    printer.lines.append(f"fuzz (CPython {sys.version.split()[0]}): {summary(counts)} in {seconds:.1f} s")
    path = os.environ.get("PYGUTS_FUZZ_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"python": sys.version.split()[0], "seconds": round(seconds, 1),
                                  "summary": printer.lines[-1],
                                  "per_entry_point": {k: dict(v) for k, v in counts.items()},
                                  "failures": sorted(set(FAILURES[failures_before:]))}) + "\n")


# --------------------------------------------------------------------------------------------------
# The property, run in a forked child

def check(entry: str, target, call, oracle=None, *, mutating: bool = False, warm: bool = False,
          what: str = "") -> None:
    """Fork; in the child build the target (a corpus name, a factory of a Target, or None for calls
    with no target object) and call ``call(obj)``: refused and unchanged, or right."""

    def body() -> str:
        if target is None:
            made = Target(None, volatile=True)
        elif target == "frame_running":
            made = Target(sys._getframe(), volatile=True)
        else:
            made = CORPUS[target]() if isinstance(target, str) else target()
        obj, made.obj = made.obj, None  # only this frame holds it now (mutate refuses what others hold)
        if warm:
            warm_caches(obj)
        expect = oracle(obj) if oracle is not None else None  # computed before the call (it may hold obj)
        gc.collect()
        before = None if made.volatile else Snapshot.take(obj)
        try:
            result = call(obj)
        except REFUSALS as exc:
            refusal = f"{type(exc).__name__}: {exc}"
        else:
            refusal = None
        if refusal is not None:
            gc.collect()
            changed = [] if before is None else before.differences(Snapshot.take(obj))
            if changed:
                raise Violation(f"{entry} refused ({refusal[:300]}) but changed the object: {'; '.join(changed)}")
            made.obj = obj
            health_check(made)
            return "refused: " + refusal[:200]
        if expect is not None:
            expect(obj, result)
        if not mutating:
            del result
            gc.collect()
            changed = [] if before is None else before.differences(Snapshot.take(obj))
            if changed:
                raise Violation(f"read-only {entry} changed the object: {'; '.join(changed)}")
        made.obj = obj
        health_check(made)
        return "right: ok"

    name = target if isinstance(target, str) else "no target" if target is None else target.__doc__
    report = run_forked(body)
    record(entry, report, f"{entry}({name}{', ' + what if what else ''}) [warm caches: {warm}]")
    if report.status not in ("refused", "right"):
        # One exception class per kind of failure: hypothesis reports (and shrinks) each kind apart.
        raise FAILURE_KINDS[report.status](f"{entry}({name}{', ' + what if what else ''}) [warm caches: {warm}]: "
                                           f"{report.status}: {report.detail}")


class ChildCrashed(AssertionError):
    """The child died of a signal."""


class ChildHung(AssertionError):
    """The child did not answer in time."""


class WrongResult(AssertionError):
    """The call returned a wrong result, or changed the object it refused or only read."""


class UnexpectedError(AssertionError):
    """The call (or the health check after it) raised something that is not a refusal."""


FAILURE_KINDS = {"crashed": ChildCrashed, "hung": ChildHung, "violation": WrongResult, "error": UnexpectedError}


def _is_immortal(obj: object) -> bool:
    """The interpreter's own answer (3.14+), else the header rule (3.12/3.13: low 32 bits negative)."""
    if VERSION >= (3, 14):
        return sys._is_immortal(obj)
    if VERSION >= (3, 12):
        return ctypes.c_int32.from_address(id(obj)).value < 0
    return False


def _plausible_nbytes(obj: object) -> int:
    try:
        size = sys.getsizeof(obj)
    except (Boom, TypeError):
        size = 0
    return 4 * max(size, own_nbytes(obj)) + 4096


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise Violation(message)


def _same_float(a: float, b: float) -> bool:
    return struct.pack("d", a) == struct.pack("d", b)


# --------------------------------------------------------------------------------------------------
# Strategies

def _odd(values: list):
    """sampled_from over values hypothesis must not hash (it hashes sampled values; some raise ValueError)."""
    return st.sampled_from(range(len(values))).map(values.__getitem__)


TARGETS = st.sampled_from(sorted({*CORPUS, "frame_running"}))
STARTS = st.one_of(
    st.integers(-3, 20),
    st.sampled_from([-1, -(2 ** 63), 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, True, False]),
    st.sampled_from([np.int64(0), np.int64(1), np.int8(-1), np.uint64(2 ** 64 - 1), np.int32(2), np.uint8(0),
                     np.bool_(True), np.float64(1.0)]),
    st.sampled_from([Shifty(-1), Shifty(-2), Shifty(0), Shifty(10 ** 6), RaisingIndex(), IndexOf(1), IndexOf(-1),
                     1.0, None, "0"]),
)
_OBJECT_ITEMS = st.sampled_from([None, bytes, 5, 2 ** 70, "x", b"y", 1.5, object, (), [1], Boom])
DATA = st.one_of(
    st.builds(Fit, st.integers(0, 6), st.integers(0, 3)),
    st.builds(Fit, st.integers(0, 6), st.integers(0, 3)),
    st.binary(max_size=16),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=6),
    st.lists(st.integers(-2, 2 ** 31), max_size=4),
    st.lists(st.one_of(st.integers(-1, 2 ** 64), st.floats(allow_nan=True)), max_size=3),
    st.lists(_OBJECT_ITEMS, max_size=3),
    st.builds(Gen, st.tuples(_OBJECT_ITEMS, _OBJECT_ITEMS), st.sampled_from([None, 0, 1, 2])),
    _odd([None, 5, 1.5, 2 ** 64, np.arange(3), np.arange(6)[::2], np.array([1.5]), np.array([None], dtype=object),
          np.array([[1, 2], [3, 4]]), np.float64(2.0), np.int64(3), bytearray(b"ab"), memoryview(b"abcdef")[::2],
          memoryview(b"x" * 8).cast("d"), HugeLen(), SneakyStr("xy"), LongLenStr("abc"), complex(1, 2),
          [complex(1, 2)], [[1, 2]], (7,)]),
)
ADDRESSES = st.one_of(
    st.builds(Address, st.sampled_from(["id:" + n for n in ("bytes", "str_ascii", "tuple", "list", "int_big",
                                                           "float", "dict", "frame_finished")]),
              st.sampled_from([0, 8, -8, 24, 4096])),
    st.builds(Address, st.sampled_from(["[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]", "[stack]", "[heap]",
                                        "truncated_file", "prot_none", "gap", "mapping_end", "numpy_int"]),
              st.sampled_from([0, 8, -1, -8, -4096, 4095, 4096, 8192, 12288])),
    st.builds(Address, st.sampled_from(["0", "1", "8", "0x1000", "0x10000", "-8", "0xffff800000000000",
                                        "0xffffffffff600000", "0x7fffffffffff", "0xffffffffffffffff",
                                        "0x10000000000000000"]), st.just(0)),
)
NBYTES = st.one_of(st.integers(0, 64), st.integers(0, 64),
                   st.sampled_from([4096, 8192, 1 << 20, 2 ** 40, 2 ** 63, 2 ** 64, -1, -8]),
                   st.sampled_from([np.int64(8), np.uint64(16), np.int8(-1), True, 8.0, IndexOf(8), Shifty(8)]))
DTYPES = st.sampled_from(["u1", "f8", "i4", ">u2", "O", "V0", "V3", "U1", "S2", np.float64, object, None, 5])
SIZES = st.one_of(st.integers(-2, 12), st.sampled_from([2 ** 63, 10 ** 9, np.int64(2), np.uint8(1), True, 2.0,
                                                         None, IndexOf(3), Shifty(-1)]))
#: Each awkward argument strategy also draws plain valid values half the time, so that calls get past
#: one argument's check to the next one's and succeed often enough to check their results.
COUNTS_OR_AWKWARD = st.one_of(st.integers(0, 4), SIZES)
CLASS_NAMES = st.sampled_from(sorted(CLASSES))


# --------------------------------------------------------------------------------------------------
# Read-only entry points: refcount, is_immortal, referrers

@given(target=TARGETS)
@fuzz(15)
def test_refcount_is_the_header_count(target):
    def oracle(obj):
        def expect(obj, got):
            counted, header, getrefcount = got
            _require(isinstance(counted, int), f"refcount returned {type(counted).__name__}, not int")
            if _is_immortal(obj):
                _require(counted > 0, f"refcount of an immortal object is {counted}")
                return
            _require(counted == header, f"refcount says {counted}, the header (nothing of the call held) {header}")
            if VERSION < (3, 14):
                _require(counted == getrefcount, f"refcount says {counted}, sys.getrefcount(x) - 1 = {getrefcount}")
        return expect

    def call(obj):
        addr = id(obj)
        return pyguts.refcount(obj), raw_refcnt(addr), sys.getrefcount(obj) - 1

    check("refcount", target, call, oracle)


@given(target=TARGETS)
@fuzz(10)
def test_is_immortal_agrees_with_the_interpreter(target):
    def oracle(obj):
        def expect(obj, got):
            _require(got is _is_immortal(obj), f"is_immortal says {got!r}, the interpreter {_is_immortal(obj)}")
        return expect

    check("is_immortal", target, lambda obj: pyguts.is_immortal(obj), oracle)


@given(target=TARGETS)
@fuzz(10)
def test_referrers_are_real_referrers(target):
    def oracle(obj):
        def expect(obj, got):
            _require(isinstance(got, list), f"referrers returned {type(got).__name__}")
            real = {id(r) for r in gc.get_referrers(obj)}
            extra = [type(r).__name__ for r in got if id(r) not in real]
            _require(not extra, f"referrers lists objects that do not refer to the target: {extra}")
        return expect

    check("referrers", target, lambda obj: pyguts.referrers(obj), oracle)


# --------------------------------------------------------------------------------------------------
# Memory: view, nbytes_of, payload, struct_of, view_address

def _expect_view(obj):
    def expect(obj, arr):
        _require(isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.ndim == 1,
                 f"view gave {type(arr).__name__} {getattr(arr, 'dtype', '')}")
        _require(not arr.flags.writeable, "view(obj) without writable=True is writable")
        _require(arr.ctypes.data == id(obj), f"view starts at {arr.ctypes.data:#x}, not id(obj) = {id(obj):#x}")
        _require(own_nbytes(obj) <= arr.nbytes <= _plausible_nbytes(obj),
                 f"view covers {arr.nbytes} bytes; the object has at least {own_nbytes(obj)} and at most "
                 f"{_plausible_nbytes(obj)} is plausible")
        _require(arr.tobytes()[WORD:] == ctypes.string_at(id(obj) + WORD, arr.nbytes - WORD),
                 "the view's bytes differ from the memory at id(obj)")
    return expect


@given(target=TARGETS, warm=st.booleans())
@example(target="frame_finished", warm=False)   # issue 14, hole 4: a finished frame's length misread
@example(target="frame_traceback", warm=False)
@fuzz(20)
def test_view_shows_the_objects_own_bytes(target, warm):
    check("view", target, lambda obj: pyguts.view(obj), _expect_view, warm=warm)


@given(target=TARGETS)
@fuzz(12)
def test_nbytes_of_is_the_objects_size(target):
    def oracle(obj):
        def expect(obj, n):
            _require(isinstance(n, int) and own_nbytes(obj) <= n <= _plausible_nbytes(obj),
                     f"nbytes_of gave {n!r}; the object has at least {own_nbytes(obj)} bytes, at most "
                     f"{_plausible_nbytes(obj)} is plausible")
            if type(obj) in (bytes, tuple, float, complex, str):
                _require(n == own_nbytes(obj), f"nbytes_of gave {n}, {type(obj).__name__}.__sizeof__ says "
                                               f"{own_nbytes(obj)}")
            ctypes.string_at(id(obj), n)  # readable
        return expect

    check("nbytes_of", target, lambda obj: pyguts.nbytes_of(obj), oracle)


def _payload_truth(obj) -> tuple[str, list] | None:
    """(dtype kind, values) the payload of obj must show; None when payload must refuse."""
    if isinstance(obj, (bytes, bytearray)):
        return "u", list(memoryview(obj).tobytes())
    if isinstance(obj, str):
        return ("u", [ord(c) for c in str.__str__(obj)]) if type(obj) is str else None
    if isinstance(obj, tuple):
        return "u", [id(x) for x in tuple.__iter__(obj)]
    if isinstance(obj, list):
        return "u", [id(x) for x in list.__iter__(obj)]
    if isinstance(obj, int):
        value, digits = abs(int.__int__(obj)), []
        while value:
            digits.append(value & ((1 << DIGIT_BITS) - 1))
            value >>= DIGIT_BITS
        return "u", digits
    if isinstance(obj, float):
        return "f", [float.__float__(obj)]
    if isinstance(obj, complex):
        return "f", [complex.real.__get__(obj), complex.imag.__get__(obj)]
    return None


@given(target=TARGETS, warm=st.booleans())
@fuzz(20)
def test_payload_is_the_data_read_only(target, warm):
    def oracle(obj):
        truth = _payload_truth(obj)

        def expect(obj, arr):
            _require(truth is not None, f"payload returned data for {type(obj).__name__}, which it cannot read")
            _require(isinstance(arr, np.ndarray) and not arr.flags.writeable, "payload without writable=True is "
                                                                              "writable")
            kind, values = truth
            got = arr.tolist()
            same = (len(got) == len(values) and all(_same_float(a, b) for a, b in zip(got, values))
                    if kind == "f" else got == values)
            _require(same and arr.dtype.kind == kind, f"payload shows {arr.dtype} {got[:8]}, the object holds "
                                                      f"{values[:8]}")
        return expect

    check("payload", target, lambda obj: pyguts.payload(obj), oracle, warm=warm)


@given(target=TARGETS)
@fuzz(12)
def test_struct_of_reads_the_object_read_only(target):
    def oracle(obj):
        def expect(obj, s):
            _require(ctypes.addressof(s) == id(obj), f"struct_of is at {ctypes.addressof(s):#x}, not id(obj)")
            fields = next(k._fields_ for k in type(s).__mro__ if "_fields_" in k.__dict__)
            values = {name: getattr(s, name) for name, *_ in fields}
            if "ob_type" in values:
                _require(values["ob_type"] == id(type(obj)), "struct_of(obj).ob_type is not id(type(obj))")
            name = fields[-1][0]
            try:
                setattr(s, name, values[name])
            except AttributeError:
                pass
            else:
                raise Violation(f"struct_of(obj).{name} can be written without writable=True")
        return expect

    check("struct_of", target, lambda obj: pyguts.struct_of(obj), oracle)


@given(target=TARGETS)
@fuzz(15)
def test_explain_fields_are_the_memory(target):
    def oracle(obj):
        def expect(obj, e):
            _require(e.addr == id(obj), f"explain's address {e.addr:#x} is not id(obj)")
            str(e), e._repr_html_()
            for f in e.fields:
                if f.offset >= WORD and f.name not in ("ob_refcnt", "ob_ref_local", "ob_ref_shared"):
                    _require(f.raw == ctypes.string_at(id(obj) + f.offset, f.size),
                             f"explain's raw bytes of {f.name} (offset {f.offset}) are not the memory there")
        return expect

    check("explain", target, lambda obj: pyguts.explain(obj), oracle)


@given(target=TARGETS, depth=COUNTS_OR_AWKWARD, max_items=COUNTS_OR_AWKWARD,
       max_boxes=st.one_of(st.integers(1, 12), SIZES))
@fuzz(15)
def test_diagram_and_its_svg(target, depth, max_items, max_boxes):
    def oracle(obj):
        def expect(obj, d):
            _require(d.root == id(obj), "the diagram's root is not id(obj)")
            d.box(d.root)
            if isinstance(max_boxes, (int, np.integer)):
                _require(len(d.boxes) <= max_boxes, f"{len(d.boxes)} boxes drawn, max_boxes={max_boxes}")
            svg = d.to_svg()
            _require(svg == d._repr_svg_(), "to_svg and _repr_svg_ differ")
            ElementTree.fromstring(svg)  # well-formed XML (a ParseError is a wrong result)
            repr(d)
        return expect

    def call(obj):
        return pyguts.diagram(obj, depth=depth, max_items=max_items, max_boxes=max_boxes)

    check("diagram", target, call, oracle, what=f"depth={depth!r}, max_items={max_items!r}, max_boxes={max_boxes!r}")


@given(addr=ADDRESSES, nbytes=NBYTES, dtype=DTYPES)
@example(addr=Address("[vvar]", 4096), nbytes=8, dtype="u1")  # issue 14, hole 5 (the pages after the first
                                                              # SIGBUS on Linux 6.x)
@example(addr=Address("truncated_file", 0), nbytes=8, dtype="u1")  # hole 5: past a truncated file's end
@fuzz(35)
def test_view_address_is_refused_or_readable(addr, nbytes, dtype):
    def call(_):
        where, keep = addr.resolve()
        arr = pyguts.view_address(where, nbytes, dtype=dtype, owner=keep)
        n = operator.index(nbytes)
        _require(n >= 0, f"view_address accepted nbytes={n}")
        _require(not arr.flags.writeable, "view_address without writable=True is writable")
        _require(arr.nbytes == n and arr.ctypes.data == operator.index(where),
                 f"asked for {n} bytes at {operator.index(where):#x}, got {arr.nbytes} at {arr.ctypes.data:#x}")
        arr.tobytes(), ctypes.string_at(operator.index(where), n)  # readable (heap bytes move: not compared)
        return None

    check("view_address", None, call, mutating=True, what=f"addr={addr!r}, nbytes={nbytes!r}, dtype={dtype!r}")


# --------------------------------------------------------------------------------------------------
# mutate (force=False)

def _fit(obj, fit: Fit):
    """Data of the target's own kind: n elements."""
    n, seed = fit.n, fit.seed
    if isinstance(obj, (bytes, bytearray)):
        return bytes((seed * 37 + i * 11) % 256 for i in range(n))
    if isinstance(obj, str):
        top = max(map(ord, obj), default=0)
        base = 0x61 if top < 0x80 else 0xe0 if top < 0x100 else 0x3b1 if top < 0x10000 else 0x1f600
        return "".join(chr(base + (seed + i) % 20) for i in range(n))
    if isinstance(obj, (tuple, list)):
        return [(seed, i) if seed % 2 else [seed, i] for i in range(n)]
    if isinstance(obj, int):
        return [(seed * 1234567 + i * 7654321 + 1) % (1 << DIGIT_BITS) for i in range(n)]
    if isinstance(obj, (float, complex)):
        return [seed + i / 4 for i in range(n)]
    return [seed] * n


def _resolve_data(obj, data):
    """(data to pass, data for the oracle): a Gen is passed as a fresh generator over the same items."""
    if isinstance(data, Fit):
        data = _fit(obj, data)
    if isinstance(data, Gen):
        return data.fresh(), data
    return data, data


def _expect_mutation(obj, start, data):
    """A check of a successful mutate(obj, start, data), from an independent reading of its contract."""
    name = type(obj).__name__
    if isinstance(data, Gen):
        if data.fail_at is not None:
            return lambda o: _fail(f"mutate succeeded although iterating the data raised ({data!r})")
        data = list(data.items)
    try:
        i = operator.index(start)
    except Exception:  # noqa: BLE001 (any failure means: not an index)
        return lambda o: _fail(f"mutate accepted start={start!r}, which is not an integer index")
    if isinstance(obj, str):
        if not isinstance(data, str):
            return lambda o: _fail(f"mutate wrote {type(data).__name__} data into a str")
        old, new = str.__str__(obj), str.__str__(data)
        return _expect_sequence(obj, old, new, i, str.__str__, lambda xs: "".join(xs), _check_str)
    if isinstance(obj, (bytes, bytearray)):
        try:
            new = memoryview(data).cast("B").tobytes()
        except (TypeError, ValueError):
            return lambda o: _fail(f"mutate wrote {type(data).__name__} data (not bytes-like) into {name}")
        old = memoryview(obj).tobytes()
        return _expect_sequence(obj, old, new, i, lambda o: memoryview(o).tobytes(), b"".join, _check_bytes)
    if isinstance(obj, (tuple, list)):
        try:
            new = list(data)
        except Exception:  # noqa: BLE001
            return lambda o: _fail(f"mutate wrote {type(data).__name__} data (not iterable) into {name}")
        base = tuple if isinstance(obj, tuple) else list
        old = list(base.__iter__(obj))
        return _expect_items(obj, old, new, i, base)
    if isinstance(obj, (int, float, complex)):
        return _expect_number(obj, i, data)
    return lambda o: _fail(f"mutate succeeded on {name}, which has no payload it may write")


def _fail(message: str):
    raise Violation(message)


def _expect_sequence(obj, old, new, i, read, join, extra):
    if not new:  # writing nothing anywhere is harmless: the object must stay as it is
        i = 0
    if not (0 <= i and i + len(new) <= len(old)):
        return lambda o: _fail(f"mutate wrote {len(new)} elements at {i} into {len(old)}: out of bounds")
    want = join([old[:i], new, old[i + len(new):]])

    def expect(o):
        got = read(o)
        _require(got == want, f"after mutate the {type(o).__name__} holds {got[:40]!r}, expected {want[:40]!r}")
        extra(o, want)
    return expect


def _check_bytes(o, want: bytes) -> None:
    if isinstance(o, bytes):
        fresh = bytes(bytearray(want))
        _require(bytes.__hash__(o) == hash(fresh), "hash(b) after mutate differs from hash of an equal fresh bytes")
        _require(bytes.__eq__(o, fresh) and {fresh: 1}.get(o) == 1, "the mutated bytes is no dict key for its value")


def _check_str(o, want: str) -> None:
    fresh = want.encode("utf-32-le", "surrogatepass").decode("utf-32-le", "surrogatepass")
    _require(str.__hash__(o) == hash(fresh), "hash(s) after mutate differs from hash of an equal fresh str")
    _require(str.isascii(o) == fresh.isascii(), f"str.isascii() says {str.isascii(o)} for {want!r}")
    _require(_state_word(o) >> 2 & 0x3F == _state_word(fresh) >> 2 & 0x3F,
             f"the mutated str's kind/compact/ascii bits ({_state_word(o):#x}) differ from an equal fresh str's "
             f"({_state_word(fresh):#x}): it is no longer in its canonical (narrowest) form")
    try:
        round_trip = o.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    except UnicodeError as exc:
        raise Violation(f"the mutated str no longer encodes: {exc}") from None
    _require(round_trip == fresh, "the mutated str's UTF-8 is not its value (a stale or invalid UTF-8 copy)")


def _expect_items(obj, old, new, i, base):
    if not new:
        i = 0
    if not (0 <= i and i + len(new) <= len(old)):
        return lambda o: _fail(f"mutate wrote {len(new)} items at {i} into {len(old)}: out of bounds")
    want = old[:i] + new + old[i + len(new):]

    def expect(o):
        _require(base.__len__(o) == len(want), f"after mutate len is {base.__len__(o)}, expected {len(want)}")
        for k, w in enumerate(want):
            got = base.__getitem__(o, k)
            # Iterating some data makes new equal objects each time (numpy scalars): same type and value
            _require(got is w or (type(got) is type(w) and _tolerant_equal(got, w)),
                     f"after mutate item {k} is {got!r:.60}, not the object written there ({w!r:.60})")
        if base is tuple:
            try:
                fresh_hash = hash(tuple(want))
            except (TypeError, Boom):
                return
            _require(tuple.__hash__(o) == fresh_hash, "hash(t) after mutate differs from an equal fresh tuple's")
    return expect


def _tolerant_equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 (a hostile __eq__: no evidence either way)
        return True


def _expect_number(obj, i, data):
    try:
        values = np.asarray(data, dtype=np.float64 if isinstance(obj, (float, complex)) else np.int64).ravel()
    except Exception:  # noqa: BLE001
        return lambda o: _fail(f"mutate wrote {data!r} (not numbers) into {type(obj).__name__}")
    if isinstance(obj, int):
        value = int.__int__(obj)
        digits, rest = [], abs(value)
        while rest:
            digits.append(rest & ((1 << DIGIT_BITS) - 1))
            rest >>= DIGIT_BITS
        if not values.size:
            i = 0
        if not (0 <= i and i + values.size <= len(digits)):
            return lambda o: _fail(f"mutate wrote {values.size} digits at {i} into {len(digits)}: out of bounds")
        new = digits[:i] + [int(v) for v in values] + digits[i + values.size:]
        if any(not 0 <= d < 1 << DIGIT_BITS for d in new) or (new and new[-1] == 0):
            return lambda o: _fail(f"mutate wrote digits {values.tolist()}: out of range or unnormalized")
        want = sum(d << (DIGIT_BITS * k) for k, d in enumerate(new)) * (-1 if value < 0 else 1)

        def expect(o):
            _require(int.__int__(o) == want, f"after mutate the int is {int.__int__(o)}, expected {want}")
            _require(int.__hash__(o) == hash(want), "hash(n) after mutate differs from an equal fresh int's")
        return expect
    parts = ([float.__float__(obj)] if isinstance(obj, float)
             else [complex.real.__get__(obj), complex.imag.__get__(obj)])
    if values.size and not (0 <= i and i + values.size <= len(parts)):
        return lambda o: _fail(f"mutate wrote {values.size} floats at {i} into {len(parts)}: out of bounds")
    want = parts[:i] + [float(v) for v in values] + parts[i + values.size:] if values.size else parts

    def expect(o):
        got = [float.__float__(o)] if isinstance(o, float) else [complex.real.__get__(o), complex.imag.__get__(o)]
        _require(all(_same_float(a, b) for a, b in zip(got, want)), f"after mutate the number holds {got}, "
                                                                     f"expected {want}")
    return expect


def _mutate_test(target, start, data, warm):
    def oracle(obj):
        passed, for_oracle = _resolve_data(obj, data)
        expect = _expect_mutation(obj, start, for_oracle)
        state["data"] = passed
        return lambda o, result: (_require(result is None, f"mutate returned {result!r}"), expect(o))

    state: dict = {}
    check("mutate", target, lambda obj: pyguts.mutate(obj, start, state["data"]), oracle, mutating=True, warm=warm,
          what=f"start={start!r}, data={data!r}")


_PAYLOAD_TARGETS = st.sampled_from(sorted(n for n in CORPUS if n.split("_")[0] in (
    "bytes", "bytearray", "str", "tuple", "int", "float", "complex", "list", "bool")))


@given(target=st.one_of(_PAYLOAD_TARGETS, TARGETS), start=STARTS, data=DATA, warm=st.booleans())
@example(target="list", start=0, data=[5], warm=False)                 # issue 14, hole 1: ints as item pointers
@example(target="tuple_type_mro", start=1, data=[bytes], warm=False)   # hole 2: a type's own __mro__
@example(target="tuple_type_mro_slots", start=1, data=[bytes], warm=False)
@example(target="tuple", start=Shifty(-1), data=["x"], warm=False)     # an index that passes the bounds check
@example(target="str_ascii", start=0, data=SneakyStr("xy"), warm=False)  # data whose __iter__ lies
@fuzz(70)
def test_mutate_is_refused_or_right(target, start, data, warm):
    _mutate_test(target, start, data, warm)


@given(target=_PAYLOAD_TARGETS, start=st.one_of(st.just(0), st.integers(0, 4), STARTS),
       data=st.builds(Fit, st.integers(0, 3), st.integers(0, 3)), warm=st.booleans())
@fuzz(35)
def test_mutate_fitting_data_is_refused_or_right(target, start, data, warm):
    """The same property where mutate should mostly succeed: data of the target's own kind."""
    _mutate_test(target, start, data, warm)


def _state_word(s: str) -> int:
    # PyASCIIObject: ob_refcnt, ob_type, length, hash, then the state bit field (interned: low 2 bits)
    return ctypes.c_uint32.from_address(id(s) + 4 * WORD).value


#: Attempts per example of the interning race (each with a fresh string and a later intern).
RACE_TRIES = 16


@given(target=st.sampled_from(["str_ascii", "str_latin1", "str_ucs2", "str_ucs4"]),
       spins=st.integers(0, 2000), step=st.integers(1, 200), start=st.integers(0, 3))
@fuzz(10)
def test_mutate_str_while_another_thread_interns_it(target, spins, step, start):
    """A str another thread interns while mutate runs (issue 14, hole 3) must be refused and keep its
    value, or be changed and, if interned, be interned under its new value."""

    def attempt(obj, spins):
        old = obj.encode("utf-32-le", "surrogatepass").decode("utf-32-le", "surrogatepass")  # a copy

        def intern_later():
            for _ in range(spins):
                pass
            sys.intern(obj)

        thread = threading.Thread(target=intern_later)
        thread.start()
        try:
            pyguts.mutate(obj, start, _fit(obj, Fit(2, 1)))
        except REFUSALS:
            thread.join()
            _require(str.__eq__(obj, old), f"mutate refused but the str changed from {old!r} to {obj!r}")
            return
        thread.join()
        new = str.__str__(obj)
        if new != old and _state_word(obj) & 3:
            copy = new.encode("utf-32-le", "surrogatepass").decode("utf-32-le", "surrogatepass")
            _require(sys.intern(copy) is obj, f"the mutated str is interned but not under its new value {new!r} "
                                              f"(it was {old!r}, interned after {spins} spins): the interned "
                                              "table is corrupt")

    def call(_):
        sys.setswitchinterval(1e-6)  # let the other thread in between any two bytecodes
        for k in range(RACE_TRIES):
            attempt(CORPUS[target]().obj, spins + k * step)
        return None

    check("mutate", None, call, mutating=True,
          what=f"{target}, start={start}, another thread interns after {spins} + k*{step} spins, k < {RACE_TRIES}")


# --------------------------------------------------------------------------------------------------
# swap_type (force=False)

@given(old=CLASS_NAMES, new=st.one_of(CLASS_NAMES, st.sampled_from(["<5>", "<None>"])))
@fuzz(30)
def test_swap_type_is_refused_or_what_cpython_allows(old, new):
    new_type = {"<5>": 5, "<None>": None}.get(new, CLASSES.get(new))

    def call(obj):
        old_type = type(obj)
        got = pyguts.swap_type(obj, new_type)
        _require(got is old_type and type(obj) is new_type, f"swap_type returned {got!r}; type is now {type(obj)!r}")
        if new_type is not old_type:
            fresh = instance_of(old)
            try:
                fresh.__class__ = new_type
            except TypeError as exc:
                raise Violation(f"swap_type made a {old_type.__name__} a {new_type.__name__}, which CPython's "
                                f"__class__ assignment refuses: {exc}") from None
        for op in (repr, dir, lambda x: setattr(x, "attr", 1), lambda x: getattr(x, "attr", None)):
            try:
                op(obj)
            except (AttributeError, TypeError, Boom):
                pass
        return None

    def make():
        return Target(instance_of(old))
    make.__doc__ = f"a fresh {old} instance"
    check("swap_type", make, call, mutating=True, what=f"new_type={new}")


# --------------------------------------------------------------------------------------------------
# Native calls with wrong argument kinds (a tiny library built once per module)

NATIVE_CDEF = """
double sum_d(const double *p, size_t n);
void fill_d(double *out, size_t n, double v);
size_t poke(void *buf, size_t nbytes);
"""
NATIVE_SOURCE = r"""
#include <string.h>
double sum_d(const double *p, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += p[i]; return s; }
void fill_d(double *out, size_t n, double v) { for (size_t i = 0; i < n; i++) out[i] = v; }
size_t poke(void *buf, size_t nbytes) { memset(buf, 0x5a, nbytes); return nbytes; }
"""
NATIVE_LENGTHS = {"p": "n", "out": "n", "buf": "nbytes"}


@pytest.fixture(scope="module")
def native_lib(tmp_path_factory):
    if not any(shutil.which(c) for c in (os.environ.get("CC", "cc"), "gcc", "clang")):
        pytest.skip("needs_gcc: no C compiler to build the native fuzz library")
    mp = pytest.MonkeyPatch()
    mp.setenv("PYGUTS_CACHE_DIR", str(tmp_path_factory.mktemp("fuzz-native-cache")))
    try:
        yield pyguts.native.build(NATIVE_CDEF, NATIVE_SOURCE, lengths=NATIVE_LENGTHS)
    finally:
        mp.undo()


ARRAYS = {  # built in the child
    "f8[8]": lambda: np.arange(8.0), "f8[0]": lambda: np.zeros(0), "f8[8][::2]": lambda: np.arange(8.0)[::2],
    "f8[2,4]": lambda: np.arange(8.0).reshape(2, 4), "f8[2,4].T": lambda: np.arange(8.0).reshape(2, 4).T,
    "i4[8]": lambda: np.arange(8, dtype=np.int32), "u1[64]": lambda: np.arange(64, dtype=np.uint8),
    ">f8[8]": lambda: np.arange(8.0).astype(">f8"), "O[4]": lambda: np.array([None, 1, "a", 2.5], dtype=object),
    "f8 read-only": lambda: _read_only(np.arange(8.0)),
    "f8 misaligned": lambda: np.zeros(72, np.uint8)[1:65].view(np.float64),
    "f8 scalar": lambda: np.float64(3.0), "f8[()]": lambda: np.array(3.0), "bytes": lambda: bytes(bytearray(64)),
    "bytearray": lambda: bytearray(64), "memoryview": lambda: memoryview(bytearray(64)),
    "memoryview[::2]": lambda: memoryview(bytearray(64))[::2], "None": lambda: None, "list": lambda: [1.0, 2.0],
    "str": lambda: "abc",
}


def _read_only(a):
    a.flags.writeable = False
    return a


def _raw(arg) -> bytes | None:
    if isinstance(arg, np.generic):
        return arg.tobytes()
    if isinstance(arg, np.ndarray):
        return arg.tobytes() if arg.flags.c_contiguous else np.ascontiguousarray(arg).tobytes()
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return memoryview(arg).tobytes()
    return None


def _native_bytes(arg) -> int | None:
    """Bytes C may touch through a pointer to arg: None when arg is no contiguous plain-data buffer."""
    if arg is None:
        return 0
    if isinstance(arg, np.generic):
        return arg.nbytes
    if isinstance(arg, np.ndarray):
        return arg.nbytes if arg.flags.c_contiguous and not arg.dtype.hasobject else None
    if isinstance(arg, (bytes, bytearray)):
        return len(arg)
    if isinstance(arg, memoryview):
        return arg.nbytes if arg.c_contiguous else None
    return None


@given(func=st.sampled_from(["sum_d", "fill_d", "poke"]),
       array=st.one_of(st.sampled_from(["f8[8]", "u1[64]", "bytearray"]), st.sampled_from(sorted(ARRAYS))),
       length=st.one_of(st.just("omitted"), st.integers(0, 9), SIZES,
                        st.sampled_from([8, 16, 64, 65, 1 << 20, np.int64(1 << 20), np.uint64(64), -1])))
@example(func="sum_d", array="f8[8]", length=np.int64(1 << 20))  # issue 14, hole 6: a numpy int length
@example(func="sum_d", array="None", length=1 << 20)             # hole 6: None for a pointer, with a length
@example(func="poke", array="O[4]", length="omitted")            # hole 6: an object array for void *
@fuzz(35)
def test_native_calls_refuse_wrong_arguments(native_lib, func, array, length):
    def call(_):
        arg = ARRAYS[array]()
        before = _raw(arg)
        given_length = not isinstance(length, str)
        args = (arg, length) if given_length else (arg,)
        kwargs = {"v": 2.5} if func == "fill_d" else {}
        try:
            result = getattr(native_lib, func)(*args, **kwargs)
        except REFUSALS:
            _require(_raw(arg) == before, f"{func} refused but changed its array argument")
            repr(arg)
            raise
        room = _native_bytes(arg)
        _require(room is not None, f"{func} accepted {array!r}, which C cannot use as a plain buffer")
        if func != "poke" and isinstance(arg, (np.ndarray, np.generic)):
            _require(arg.dtype == np.dtype(np.float64), f"{func} accepted dtype {arg.dtype} for 'double *'")
        unit = 1 if func == "poke" else 8
        try:
            n = operator.index(length) if given_length and length is not None else room // unit
        except TypeError:
            raise Violation(f"{func} ran with length {length!r}, which is not an integer") from None
        _require(0 <= n * unit <= room, f"{func} ran with n={n} over a buffer of {room} bytes")
        if func == "sum_d":
            want = 0.0
            for x in np.frombuffer(_raw(arg)[:8 * n], np.float64):
                want += x
            _require(_same_float(result, want), f"sum_d gave {result}, expected {want}")
        elif func == "fill_d":
            _require(np.all(np.frombuffer(_raw(arg)[:8 * n], np.float64) == 2.5), "fill_d did not fill")
        else:
            _require(result == n and _raw(arg)[:n] == b"\x5a" * n, "poke did not write its bytes")
        repr(arg)
        return None

    check("native", None, call, mutating=True, what=f"{func}, array={array}, length={length!r}")


def test_the_property_catches_a_crash_and_a_hang():
    """The harness itself: a child killed by a signal and a child that never answers are failures."""
    run = run_forked
    crashed = run(lambda: ctypes.string_at(8, 1) and "right: ")
    assert crashed.status == "crashed" and "SIGSEGV" in crashed.detail
    hung = run(lambda: time.sleep(60) or "right: ", timeout_s=0.5)
    assert hung.status == "hung"
    wrong = run(lambda: _fail("the object changed"))
    assert wrong.status == "violation" and "the object changed" in wrong.detail
    assert run(lambda: "refused: TypeError").status == "refused"
