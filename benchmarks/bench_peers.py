"""The peers, measured on the running interpreter: what each does today, beside pyguts doing the same.

einspect (object views), numpy-allocator (NEP 49 handlers), pytest-forked (crash isolation in
pytest), pytest-leaks (refcount leaks in pytest) and raw ctypes/numpy (the recipes people paste).
Every check runs in a forked child (``pyguts.isolate``), so a peer that kills the interpreter
prints a signal instead of ending the run. Each prints one ``fact`` line: peer, interpreter,
what was tried, what happened. Where a time means something it is a ratio row as usual.
A peer that is not installed gets one line saying so, and its rows are skipped.
Each peer is used the way its own README tells its users to; another way seen in use (an older
README's recipe, an undocumented route) is a second row, labelled as such.

Not re-measured here: objgraph's and pyguts.leaks' verdicts on planted leaks on this release
build (bench_leaks), cffi call overhead (bench_native), multiprocessing (bench_isolate), raw
ctypes reads (bench_core).

Why pytest-forked 1.7.5 fails every test on pytest 9.2 (found while writing this): its child
``marshal.dumps`` the report's ``__dict__``, and pytest 9.2's TestReport carries ``_id``, a
NodeId that marshal cannot dump; the child's exception becomes exit status 3.
"""

from __future__ import annotations

import contextvars
import ctypes
import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

import pyguts
import pyguts.alloc as alloc
from pyguts.errors import AllocatorUnavailable
from pyguts.isolation import isolate

#: Seconds one probe child may run before it counts as hung.
CHILD_TIMEOUT_S = 30.0
#: Trivial tests in the file timed under pytest; the per-test overhead is the difference / this.
PYTEST_NTESTS = 60
#: 10**20 + 7: three 30-bit digits, made at run time so it is a fresh, private object.
BIG = "100000000000000000007"
REPO = pathlib.Path(__file__).resolve().parent.parent
#: The Makefile's venv for `make test-forked` (pytest pinned where pytest-forked still works).
FORKED_PYTHON = REPO / ".venvs" / "forked" / "bin" / "python"


def _cut(text: object, nchars: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= nchars else text[: nchars - 1] + "…"


def _probe(fn, *args) -> str:
    """Run ``fn`` in a forked child; its returned string, or what killed it, in a few words."""
    out = isolate(fn, *args, timeout=CHILD_TIMEOUT_S)
    if out.status == "ok":
        return str(out.value)
    if out.status == "raised":
        return f"raises {out.exc_type}: {_cut(out.exc_message, 60)}"
    if out.status == "crashed":
        return f"CRASH {out.signal_name}"
    if out.status == "timeout":
        return f"hung (killed after {CHILD_TIMEOUT_S:g} s)"
    return f"child exited with code {out.exit_code}"


def _missing(h, peer: str, dist: str, module: str) -> bool:
    if importlib.util.find_spec(module) is not None:
        return False
    h.fact(peer, "installed?", f"no: its rows are skipped (pip install {dist})")
    return True


def _big_repr(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}… ({len(text)} digits)"


# --- einspect ---------------------------------------------------------------------------------

def _einspect_int() -> str:
    from einspect import view
    for x in (int("5"), int("-5"), int(BIG)):
        got = view(x).value
        if got != x:
            return f"WRONG: view({x}).value = {_big_repr(got)}"
    return "right (view(x).value)"


def _pyguts_int() -> str:
    x = int(BIG)
    got = sum(int(d) << (sys.int_info.bits_per_digit * i) for i, d in enumerate(pyguts.payload(x)))
    return "right (payload(x) digits)" if got == x else f"WRONG: {_big_repr(got)}"


def _einspect_str() -> str:
    from einspect import view
    s = "".join(["hello", " world"])
    got = bytes(view(s).buffer)
    return "right (view(s).buffer)" if got == s.encode() else f"WRONG: view(s).buffer = {got[:8]!r}"


def _pyguts_str() -> str:
    s = "".join(["hello", " world"])
    got = pyguts.payload(s).tobytes()
    return "right (payload(s))" if got == s.encode() else f"WRONG: {got[:8]!r}"


def _after_write(s: str) -> str:
    if s != "xbcd":
        return f"WRONG: wrote elsewhere, s is still {s!r}"
    if hash(s) != hash("".join(["xb", "cd"])):
        return "stale hash: hash(s) != hash('xbcd'), dict lookups miss"
    return "right (text and hash)"


def _einspect_str_write() -> str:
    """Its README's recipe: ``v = view(text); v[1] = "3"`` (a new string moved over the old one)."""
    from einspect import view
    s = "".join(["ab", "cd"])
    hash(s)  # cache it, as any dict use does
    view(s)[0] = "x"
    return _after_write(s)


def _einspect_str_buffer_write() -> str:
    """The other way in: the view's ``buffer`` (its data bytes), written inside ``unsafe()``."""
    from einspect import view
    s = "".join(["ab", "cd"])
    hash(s)
    v = view(s)
    with v.unsafe():
        v.buffer[0] = b"x" if isinstance(v.buffer[0], bytes) else ord("x")
    return _after_write(s)


def _pyguts_str_write() -> str:
    s = "".join(["ab", "cd"])
    hash(s)
    pyguts.mutate(s, 0, "x")
    return _after_write(s)


class _BytesWithDict(bytes):
    """A bytes subclass whose instances carry a __dict__ slot that plain bytes objects lack."""


def _einspect_swap(unsafe: bool) -> str:
    from einspect import view
    b = bytes([104, 105, 33, 33])
    v = view(b)
    if unsafe:
        with v.unsafe():
            v.type = _BytesWithDict
    else:
        v.type = _BytesWithDict
    b.note = 1  # the first attribute access uses the __dict__ slot
    return "allowed, and survived an attribute write"


def _pyguts_swap() -> str:
    pyguts.swap_type(bytes([104, 105, 33, 33]), _BytesWithDict)
    return "allowed"


def _einspect_bytes() -> str:
    from einspect import view
    v = view(b"hello world!")
    fields = [name for name, _ in type(v._pyobject)._fields_]
    return f"{type(v).__name__} of {type(v._pyobject).__name__}: fields {', '.join(fields)} only"


def _pyguts_bytes() -> str:
    b = bytes(b"hello world!")
    st = pyguts.struct_of(b)
    ok = st.ob_size == len(b) and st.ob_shash == hash(b)
    return f"{type(st).__name__}: ob_size, ob_shash, ob_sval {'right' if ok else 'WRONG'}"


def _einspect_refcount() -> str:
    from einspect import view
    o = object()
    got, want = view(o, ref=False).ref_count, sys.getrefcount(o) - 1
    line = "right" if got == want else f"WRONG: {got} vs {want}"
    if pyguts.is_immortal(None):
        line += f"; None reads {view(None, ref=False).ref_count} (immortal, not flagged)"
    return line


def _einspect(h) -> None:
    if _missing(h, "einspect", "einspect", "einspect"):
        return
    requires = importlib.metadata.metadata("einspect").get("Requires-Python") or "any"
    h.fact("einspect", f"import einspect {importlib.metadata.version('einspect')}",
           _probe(lambda: "imports") + f" (it declares Requires-Python {requires})")
    for checked, peer_fn, ours_fn in (
            ("int 5, -5, 10**20+7: value", _einspect_int, _pyguts_int),
            ("compact ASCII str: data", _einspect_str, _pyguts_str),
            ("bytes: fields", _einspect_bytes, _pyguts_bytes),
            ("write s[0] of a str, then hash(s)", _einspect_str_write, _pyguts_str_write)):
        h.fact("einspect", checked, _probe(peer_fn))
        h.fact("pyguts", checked, _probe(ours_fn))
    h.fact("einspect", "same, through view(s).buffer in unsafe()", _probe(_einspect_str_buffer_write))
    h.fact("einspect", "ref_count of a fresh object", _probe(_einspect_refcount))
    h.fact("einspect", "bytes -> subclass w/ __dict__: view.type =", _probe(_einspect_swap, False))
    h.fact("einspect", "bytes -> subclass w/ __dict__: in unsafe()", _probe(_einspect_swap, True))
    h.fact("pyguts", "bytes -> subclass w/ __dict__: swap_type", _probe(_pyguts_swap))
    from einspect import view
    b = b"hello world!"
    h.compare("peers: read ob_refcnt of b", ("einspect view(b).ref_count", lambda: view(b).ref_count), {
        "pyguts.refcount(b)": lambda: pyguts.refcount(b),
        "pyguts.struct_of(b).ob_refcnt": lambda: pyguts.struct_of(b).ob_refcnt,
        "pyguts.explain(b) (every field, text)": lambda: pyguts.explain(b),
    }, repeat=11)


# --- numpy-allocator --------------------------------------------------------------------------
# What its README tells users to do (numpy-allocator 1.2.1, the version pip installs; PyPI shows that
# README): put the C functions' *addresses* in the class, ``_malloc_ = ctypes.addressof(my.malloc_func)``
# (``my = ctypes.CDLL(ctypes.util.find_library('my'))``); its C handler then calls them directly.
# Its GitHub README still shows an older recipe, the ctypes function objects themselves
# (``_malloc_ = my.malloc_func``): 1.2.1 accepts "an integer address or a callable" and calls a
# callable through Python on every allocation, with ctypes' default restype (a C int).
#: The recipes measured: its README's, and the older one without and with the restype set.
RECIPES = ("README: ctypes.addressof", "function objects", "function objects, restype=c_void_p")


def _recipe_fields(lib, recipe: str) -> dict:
    """numpy-allocator's four fields for ``lib``'s malloc/calloc/realloc/free, by recipe (see RECIPES)."""
    vp, size = ctypes.c_void_p, ctypes.c_size_t
    fields = {"_library_": lib}  # the class keeps the library (and its function objects) alive
    for name, restype, argtypes in (("malloc", vp, [size]), ("calloc", vp, [size, size]),
                                    ("realloc", vp, [vp, size]), ("free", None, [vp, size])):
        fn = getattr(lib, name)
        if recipe == "README: ctypes.addressof":
            fields[f"_{name}_"] = ctypes.addressof(fn)
            continue
        if recipe == "function objects, restype=c_void_p":
            fn.restype, fn.argtypes = restype, argtypes
        fields[f"_{name}_"] = fn
    return fields


def _np_allocator_class(library: str, recipe: str):
    """A numpy_allocator class over ``library`` (a name for ``ctypes.util.find_library``) by ``recipe``."""
    import ctypes.util
    import numpy_allocator

    # A fresh CDLL each time: the recipes set different restypes on the same functions.
    lib = ctypes.CDLL(ctypes.util.find_library(library) or f"lib{library}.so")
    return numpy_allocator.type(f"{library}_allocator", (), _recipe_fields(lib, recipe))


#: Arrays a probe child keeps on purpose: freeing them is the crash measured separately.
_KEPT: list = []


def _np_allocator_untyped_address() -> str:
    with _np_allocator_class("c", "function objects"):
        _KEPT.append(np.empty(64))
    addr, usual = _KEPT[-1].ctypes.data, np.empty(64).ctypes.data
    cut = addr >> 31 in (0, (1 << 33) - 1)  # a C int, zero- or sign-extended to 64 bits
    what = "a C int, not a pointer" if cut else "looks like a pointer"
    return f"data pointer {addr:#x} ({what}; numpy's own: {usual:#x})"


def _np_allocator_untyped_free() -> str:
    with _np_allocator_class("c", "function objects"):
        a = np.empty(64)
    del a
    return "allocate + free: no crash"


def _np_allocator_names() -> str:
    import numpy_allocator
    names = sorted(n for n in vars(numpy_allocator) if not n.startswith("_"))
    return f"imports; no allocators of its own (module has {', '.join(names)})"


def _np_allocator_works(library: str, recipe: str) -> str:
    handler = _np_allocator_class(library, recipe)
    with handler:
        a = np.arange(1000.0)
        z = np.zeros(1 << 17)
        a.resize(4000, refcheck=False)
    ok = handler.handles(a) and handler.handles(z) and a[:1000].sum() == 499500.0 and not z.any()
    del a, z
    return "works (arange, zeros, resize, free; handles() True)" if ok else "WRONG values"


#: (what numpy makes, element count, arrays per timed call): a small and a mid-size np.empty, the
#: calloc path, and a big array whose pages are touched (numpy's own handler advises huge pages there).
ALLOCATIONS = (("np.empty", "128 B", 16, 256), ("np.empty", "64 KiB", 8192, 64),
               ("np.zeros", "64 KiB", 8192, 64), ("np.ones", "8 MiB", 1 << 20, 2))


def _numpy_allocator(h) -> None:
    if _missing(h, "numpy-allocator", "numpy-allocator", "numpy_allocator"):
        return
    peer = "numpy-allocator"
    h.fact(peer, f"import {importlib.metadata.version('numpy-allocator')} with numpy {np.__version__}",
           _probe(_np_allocator_names))
    h.fact(peer, "function objects (default restype int): allocate", _probe(_np_allocator_untyped_address))
    h.fact(peer, "function objects (default restype int): free it", _probe(_np_allocator_untyped_free))
    h.fact(peer, "function objects, restype=c_void_p, libc", _probe(_np_allocator_works, "c", RECIPES[2]))
    contexts = {"numpy default handler": contextvars.copy_context()}
    for library, ours in (("c", "libc"), ("jemalloc", "jemalloc")):
        try:
            alloc.load(ours)
        except AllocatorUnavailable as exc:
            h.fact(peer, f"{ours} rows", f"skipped: {_cut(exc, 80)}")
            continue
        h.fact(peer, f"README recipe (addressof), {ours}", _probe(_np_allocator_works, library, RECIPES[0]))
        with _np_allocator_class(library, RECIPES[0]):
            contexts[f"numpy-allocator README recipe, {ours}"] = contextvars.copy_context()
        with alloc.use(ours):
            contexts[f"pyguts.alloc.use({ours!r})"] = contextvars.copy_context()
        if ours == "libc":  # the older recipe, Python called per allocation: libc is enough to show it
            with _np_allocator_class(library, RECIPES[2]):
                contexts["numpy-allocator fn objs c_void_p, libc"] = contextvars.copy_context()
    (base, default), *candidates = contexts.items()
    for maker_name, size_name, count, repeat in ALLOCATIONS:
        maker = getattr(np, maker_name.removeprefix("np."))

        def batch(ctx, maker=maker, count=count, repeat=repeat):
            return lambda: ctx.run(_allocate, maker, count, repeat)
        h.compare(f"peers: {maker_name} {size_name} x{repeat}", (base, batch(default)),
                  {label: batch(ctx) for label, ctx in candidates}, repeat=11)


def _allocate(maker, count: int, repeat: int) -> None:
    for _ in range(repeat):
        maker(count)


# --- pytest-forked and pytest-leaks -----------------------------------------------------------

_CRASH_TESTS = """
import ctypes

def test_ok():
    assert 1 + 1 == 2

def test_segfault():
    ctypes.string_at(0)
"""


def _pytest(python: pathlib.Path | str, args: list[str], cwd: str) -> tuple[str, float]:
    start = time.perf_counter()
    env = {**os.environ, "COLUMNS": "400"}  # the short summary keeps whole messages
    done = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    return done.stdout + done.stderr, time.perf_counter() - start


def _outcomes(text: str) -> str:
    found = []
    for name in ("test_ok", "test_segfault"):
        m = re.search(rf"^(PASSED|FAILED|ERROR) \S*::{name}(?: - (.*))?$", text, re.M)
        if m is None:
            found.append(f"{name}: no result")
            continue
        why = m.group(2) or ""
        if "running the test " in why:  # pytest-forked: "<path>:<line>: running the test CRASHED ..."
            why = why[why.find("running the test ") + len("running the test "):]
        elif "killed by " in why:  # pyguts: "the isolated child (pid N) was killed by SIGSEGV ..."
            why = re.sub(r" after [\d.]+s.*", "", why[why.find("killed by "):])
        found.append(f"{name} {m.group(1).lower()}" + (f" ({_cut(why, 32)})" if why else ""))
    return "; ".join(found)


def _plugin_args(python) -> list[str]:
    """``-p pyguts.pytest_plugin`` where pyguts runs from a checkout without its pytest11 entry point."""
    if python != sys.executable:  # .venvs/forked has pyguts installed (`pip install -e .`)
        return []
    registered = any(ep.value == "pyguts.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if registered else ["-p", "pyguts.pytest_plugin"]


def _pytest_verdicts(h, python, label: str, tmp: str) -> bool:
    """Print both plugins' verdicts on test_crash.py; True when pytest-forked passed test_ok."""
    forked, _ = _pytest(python, ["--forked", "test_crash.py"], tmp)
    ours, _ = _pytest(python, [*_plugin_args(python), "--pyguts-isolate", "test_crash.py"], tmp)
    h.fact("pytest-forked", f"--forked ({label})", _outcomes(forked))
    trace = "in test_segfault" in ours
    h.fact("pyguts", f"--pyguts-isolate ({label})",
           _outcomes(ours) + ("; with the child's faulthandler trace" if trace else ""))
    return re.search(r"^PASSED \S*::test_ok", forked, re.M) is not None


def _pytest_overhead(h, python, label: str, tmp: str) -> None:
    runs: dict[str, list[float]] = {"plain": [], "--forked": [], "--pyguts-isolate": []}
    for _ in range(2):
        for mode in runs:
            flags = {"plain": [], "--forked": [mode]}.get(mode, [*_plugin_args(python), mode])
            _, elapsed = _pytest(python, [*flags, "test_many.py"], tmp)
            runs[mode].append(elapsed)
    per_test = {mode: (min(t) - min(runs["plain"])) / PYTEST_NTESTS * 1e3 for mode, t in runs.items()}
    ratio = per_test["--pyguts-isolate"] / per_test["--forked"] if per_test["--forked"] > 0 else float("nan")
    h.fact("pytest-forked", f"ms added per test ({label})",
           f"--forked {per_test['--forked']:.2f} ms, --pyguts-isolate {per_test['--pyguts-isolate']:.2f} ms "
           f"(pyguts/forked {ratio:.2f}x)")


def _pytest_peers(h) -> None:
    try:
        import pytest
    except ImportError:
        h.fact("pytest-forked", "installed?", "no pytest here: the pytest rows are skipped (pip install pytest)")
        return
    have_forked = not _missing(h, "pytest-forked", "pytest-forked", "pytest_forked")
    with tempfile.TemporaryDirectory(prefix="pyguts-bench-peers-") as tmp:
        pathlib.Path(tmp, "test_crash.py").write_text(_CRASH_TESTS)
        pathlib.Path(tmp, "test_many.py").write_text("".join(
            f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n" for i in range(PYTEST_NTESTS)))
        pythons = [(sys.executable, f"pytest {pytest.__version__}")] if have_forked else []
        if FORKED_PYTHON.exists():  # `make test-forked`'s venv: the pins where pytest-forked works
            found = subprocess.run([str(FORKED_PYTHON), "-c", "import platform, pytest; "
                                    "print(platform.python_version(), pytest.__version__)"],
                                   capture_output=True, text=True).stdout.split()
            if found[:1] == [platform.python_version()]:  # facts are tagged with this interpreter
                pythons.append((FORKED_PYTHON, f"pytest {found[1]}, .venvs/forked"))
        for python, label in pythons:
            if _pytest_verdicts(h, python, label, tmp):
                _pytest_overhead(h, python, label, tmp)
            else:
                h.fact("pytest-forked", f"ms added per test ({label})", "not timed: its passing test fails here")
        _pytest_leaks(h, tmp)


def _pytest_leaks(h, tmp: str) -> None:
    build = "debug build" if hasattr(sys, "gettotalrefcount") else "release build (no sys.gettotalrefcount)"
    if importlib.util.find_spec("pytest_leaks") is None:
        h.fact("pytest-leaks", f"-R on this {build}",
               "not installed; its -R reads sys.gettotalrefcount, which only debug builds have")
    else:
        text, _ = _pytest(sys.executable, ["-R", ":", "test_crash.py", "-k", "test_ok"], tmp)
        last = [line for line in text.splitlines() if line.strip()][-1:]
        h.fact("pytest-leaks", f"-R : on this {build}", _cut(last[0] if last else "no output", 90))


# --- ctypes and numpy as people use them --------------------------------------------------------

def _raw_refcount() -> str:
    o = object()
    got = ctypes.c_ssize_t.from_address(id(o)).value
    line = "fresh object: " + ("right" if got == sys.getrefcount(o) - 1 else f"WRONG {got}")
    line += f"; None: {ctypes.c_ssize_t.from_address(id(None)).value}"
    return line + (" (immortal, not flagged)" if pyguts.is_immortal(None) else "")


def _raw_int_size() -> str:
    from pyguts.objects import memory  # a submodule: pyguts.objects.memory exists once imported

    x = int(BIG)
    word = ctypes.c_ssize_t.from_address(id(x) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    want = memory.ndigits(x)
    return f"word after the header = {word}, digits = {want}" + ("" if word == want else " (not ob_size)")


def _raw_str_48() -> str:
    s = "".join(["hello", " world"])
    got = ctypes.string_at(id(s) + 48, len(s))  # sizeof(PyASCIIObject) on 3.10/3.11
    return "right" if got == s.encode() else f"WRONG: {got[:8]!r}"


def _frombuffer_writeable() -> str:
    a = np.frombuffer(bytes(range(8)), np.uint8)
    a.flags.writeable = True
    return "allowed"


def _array_of_struct() -> str:
    class Header(ctypes.Structure):
        _fields_ = [("ob_refcnt", ctypes.c_ssize_t), ("ob_type", ctypes.c_void_p)]
    o = object()
    a = np.array(Header.from_address(id(o)), copy=False)
    return f"allowed: {a.dtype}"


def _pyguts_writable_payload() -> str:
    b = bytes(range(8))
    pyguts.payload(b, writable=True)[0] = 7
    return "works" if b[0] == 7 else "WRONG"


def _raw(h) -> None:
    h.fact("ctypes", "c_ssize_t.from_address(id(x)) as refcount", _probe(_raw_refcount))
    h.fact("ctypes", "c_ssize_t at id(10**20+7)+16 as ob_size", _probe(_raw_int_size))
    h.fact("ctypes", "string_at(id(s)+48) as compact ASCII data", _probe(_raw_str_48))
    h.fact("numpy", f"frombuffer(bytes).flags.writeable=True, {np.__version__}", _probe(_frombuffer_writeable))
    h.fact("numpy", f"np.array(ctypes struct, copy=False), {np.__version__}", _probe(_array_of_struct))
    h.fact("pyguts", "payload(b, writable=True)[0] = 7", _probe(_pyguts_writable_payload))


def run(h) -> None:
    for part in (_einspect, _numpy_allocator, _pytest_peers, _raw):
        part(h)
