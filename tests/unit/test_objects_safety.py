"""Safe means safe (issue 14): what mutate, view and view_address refuse in safe mode.

Each hole the review found has a reproducer that runs in a forked child (``pyguts.isolate``): before
the fix it crashed or corrupted the child; now the child sees a refusal and stays healthy.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import re
import sys
import tempfile
import threading

import numpy as np
import pytest

import pyguts
from pyguts import UnsafeOperationError, _compat
from pyguts.isolation import isolate
from pyguts.objects import refs
from pyguts.objects.explain import explain
from pyguts.objects.memory import nbytes_of, view, view_address
from pyguts.objects.mutate import mutate
from pyguts.objects.structs import str_state, struct_of

from fuzzkit import Shifty  # an index whose comparisons lie (tests/unit/fuzzkit.py)

pytestmark = pytest.mark.every_python


def healthy(out) -> object:
    """The child returned (or raised) instead of dying; its value."""
    assert out.status in ("ok", "raised"), f"child {out.status} {out.signal_name}:\n{out.fault_traceback}{out.stderr}"
    return out.unwrap()


# --- 1. mutate never plants raw values in a pointer array -------------------------------------------

def _write_into_a_list():
    lst = [object(), object()]
    try:
        mutate(lst, 0, [0])
    except TypeError as exc:
        return f"refused: {exc}"
    return repr(lst[0])  # the planted "pointer" 0


@pytest.mark.crash_prone
def test_a_list_payload_is_never_written():
    assert healthy(isolate(_write_into_a_list, timeout=60)).startswith("refused: mutate() does not write lists")
    lst = [1, 2]
    with pytest.raises(TypeError, match="lists"):
        mutate(lst, 0, [3], force=True)  # there is nothing to force: the payload is pointers
    assert lst == [1, 2]


def _write_at_a_lying_index():
    t = tuple([1.5, 2.5])
    try:
        mutate(t, Shifty(10 ** 6), [3.5])
    except IndexError as exc:
        return f"refused: {exc}"
    return "written"


@pytest.mark.crash_prone
def test_start_is_one_index_checked_once():
    assert healthy(isolate(_write_at_a_lying_index, timeout=60)).startswith("refused: writing 1 item(s) at 1000000")


# --- 2. objects anything else holds (types, code objects, closures, containers) are refused ----------

class Base:
    pass


def _mro_of_a_class():
    class A(Base):
        pass

    try:
        mutate(A.__mro__, 1, [bytes])   # the review's reproducer
    except UnsafeOperationError as exc:
        refused = str(exc)
    else:
        refused = ""
    try:
        bytes.__repr__(A())             # with bytes in A's MRO this read an A as a bytes object
    except TypeError:
        pass
    return refused


@pytest.mark.crash_prone
def test_the_mro_of_a_class_is_refused():
    assert "held by something other than the variables" in healthy(isolate(_mro_of_a_class, timeout=60))


def _owned_targets():
    """name -> (target, what keeps its owner alive, a check that the owner still works)."""
    cls = type("Owner", (Base,), {"attr": 10 ** 20})
    namespace: dict = {}
    exec("def f(x):\n    return g(x, key=b'constant bytes')\n"
         "def g(x, key):\n    return (x, key, 12345678901234)\n"
         "def outer():\n    free = [1]\n    def inner():\n        return free\n    return inner\n", namespace)
    f, inner = namespace["f"], namespace["outer"]()
    kwnames = next(c for c in f.__code__.co_consts if isinstance(c, tuple) and "key" in c)
    named = type("N\xe9" + "x", (), {})   # tp_name points into the UTF-8 copy of this name
    table = {(10 ** 20, "key"): 1}
    zipped = zip([1.5], [2.5])
    code = f.__code__
    targets = {
        "type __mro__": (cls.__mro__, cls, lambda: isinstance(cls(), Base)),
        "type __bases__": (cls.__bases__, cls, lambda: cls.__base__),
        "code co_consts": (code.co_consts, f, lambda: f(1)),
        "code co_names": (code.co_names, f, lambda: f(1)),
        "keyword names constant": (kwnames, f, lambda: f(1)),
        "function __closure__": (inner.__closure__, inner, lambda: inner()),
        "function __defaults__": ((lambda a=10 ** 20: a).__defaults__, None, lambda: None),
        "type name str": (named.__name__, named, lambda: repr(named)),
        "class attribute int": (cls.attr, cls, lambda: cls.attr + 1),
        "code constant bytes": (f(1)[1], f, lambda: f(1)),
        "dict key tuple": (next(iter(table)), table, lambda: table.get((10 ** 20, "key"))),
        "zip's reused result tuple": (next(zipped), zipped, lambda: list(zipped)),
        "code linetable bytes": (code.co_linetable if hasattr(code, "co_linetable") else code.co_lnotab, f,
                                 lambda: f(1)),
    }
    if _compat.VERSION >= (3, 11):
        targets["code exception table bytes"] = (code.co_exceptiontable, f, lambda: f(1))
    else:
        targets["code co_code bytes (executed on 3.10)"] = (code.co_code, f, lambda: f(1))
    return targets


OWNED = sorted(_owned_targets())


def _fitting(obj):
    """One element of data that suits obj's type and would change it."""
    if isinstance(obj, str):
        return "y"
    if isinstance(obj, (bytes, bytearray)):
        return b"\xff"
    if isinstance(obj, tuple):
        return [0]
    if isinstance(obj, float):
        return [2.5]
    return [7]


def _memory_past_the_count(obj) -> bytes:
    return bytes(view(obj)[8:])


def _helper(obj, data):
    mutate(obj, 0, data)  # 3.14 may pass obj borrowed: this frame's slot then owns no count


def _mutate_owned(name, via_helper):
    target, keep, check = _owned_targets()[name]
    before = _memory_past_the_count(target)
    try:
        if via_helper:
            _helper(target, _fitting(target))
        else:
            mutate(target, 0, _fitting(target))
    except UnsafeOperationError:
        check()
        return "refused" if _memory_past_the_count(target) == before else "refused, but changed"
    check()
    return "written"


@pytest.mark.crash_prone
@pytest.mark.parametrize("via_helper", [False, True], ids=["direct", "via a helper"])
@pytest.mark.parametrize("name", OWNED)
def test_objects_something_else_holds_are_refused(name, via_helper):
    assert healthy(isolate(_mutate_owned, name, via_helper, timeout=60)) == "refused"


def test_a_second_name_elsewhere_is_enough_to_refuse():
    class A(Base):
        pass

    mro = A.__mro__  # a local name, but the type holds it too
    with pytest.raises(UnsafeOperationError, match="1 of the 2 references to it is held by something other"):
        mutate(mro, 1, [bytes])
    assert A.__mro__[1] is Base


# --- what stays allowed: objects only the running code's variables (and pyguts views) hold -------

def _poke(x):
    mutate(x, 0, b"J")


GLOBAL_BYTES = bytes(bytearray(b"global"))


def test_private_objects_are_still_written_and_counts_stay_exact():
    b = bytes(bytearray(b"Hello"))
    other = object()
    counts = sys.getrefcount(b), sys.getrefcount(other)
    mutate(b, 0, b"Y")                       # a local
    _poke(b)                                 # a helper's argument: the caller's local explains the rest
    assert b == b"Jello" and (sys.getrefcount(b), sys.getrefcount(other)) == counts  # no locals dict was built
    mutate(GLOBAL_BYTES, 0, b"G")            # a name in the module namespace
    assert GLOBAL_BYTES == b"Global"
    t = tuple([object(), 2])
    mutate(t, 1, [3])
    assert t[1] == 3
    mutate(bytes(bytearray(b"temporary")), 0, b"T")  # only the call holds it


def test_pyguts_views_and_models_of_the_object_do_not_count_as_other_holders():
    b = bytes(bytearray(b"Hello, world!"))
    s = struct_of(b)                  # the README keeps this alive across mutate()
    v = view(b)
    header = v[:16].view(np.int64)    # a view of a view: one pyguts holder underneath
    mutate(b, 4, b"EVIL")
    assert b == b"HellEVILorld!" and s.ob_shash == -1 and int(header[0]) == refs.header_count(id(b))
    box = [v]                         # a pyguts view inside a container is a holder nobody can vouch for
    del v, header
    with pytest.raises(UnsafeOperationError):
        mutate(b, 0, b"h")
    del box


def test_closures_and_frames_up_the_stack_explain_references():
    s = "".join(["h\xe9", "llo"])

    def inner():
        mutate(s, 0, "J")           # s is a free variable: the cell holds it

    inner()
    assert s == "J\xe9llo" and hash(s) == hash("J\xe9llo")


# --- 3. a str another thread may intern ---------------------------------------------------------

_RACED = None


def _intern_race(rounds: int) -> tuple[int, int, bool]:
    """Thread B interns whatever string _RACED names while this thread mutates it; returns
    (written, corrupted, whether check and write were one step): a string written after it was
    interned is filed under its old hash."""
    from pyguts.objects.mutate import _atomic_here

    global _RACED
    sys.setswitchinterval(1e-6)
    stop = threading.Event()

    def interner():
        while not stop.is_set():
            s = _RACED
            if s is not None:
                sys.intern(s)

    thread = threading.Thread(target=interner)
    thread.start()
    written = corrupted = 0
    try:
        for i in range(rounds):
            _RACED = "".join(["pyguts-race-", str(i)])
            try:
                mutate(_RACED, 0, "Q")
            except UnsafeOperationError:
                continue
            written += 1
            s = _RACED
            if str_state(s)["interned"] and sys.intern("".join(list(s))) is not s:
                corrupted += 1
        atomic = _atomic_here()
    finally:
        stop.set()
        thread.join()
    return written, corrupted, atomic


@pytest.mark.crash_prone
@pytest.mark.skipif(not hasattr(sys, "setswitchinterval"), reason="needs thread switching")
def test_a_string_interned_by_another_thread_is_never_written_after_the_check():
    written, corrupted, atomic = healthy(isolate(_intern_race, 4000, timeout=300))
    assert corrupted == 0
    assert not atomic or (_compat.VERSION >= (3, 11) and not _compat.GIL_DISABLED)
    if atomic:
        assert written > 0  # the check and the write run as one step: most rounds win the race
    else:
        assert written == 0  # no such step: a string other threads can reach is refused


def test_a_string_nothing_else_can_reach_is_written_while_threads_run():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        s = "".join(["lo", "cal"])  # a function's local: no other thread can reach it
        mutate(s, 0, "L")
        assert s == "Local"
    finally:
        stop.set()
        thread.join()


# --- 4. view sizes only what a model or the type's own allocation rule sizes -----------------------

def _finished_frame():
    return sys._getframe()


def _generator():
    yield 1


async def _coroutine():
    return 1


def _view_finished_frame():
    try:
        v = view(_finished_frame())
    except TypeError as exc:
        return f"refused: {exc}"
    return int(v.sum())  # the review: ~1.1e15 bytes, SIGSEGV


@pytest.mark.crash_prone
def test_a_finished_frame_is_not_viewed_by_a_field_misread_as_its_length():
    if not type(sys._getframe()).__itemsize__:
        pytest.skip("frames are fixed-size objects here")
    assert healthy(isolate(_view_finished_frame, timeout=60)).startswith("refused: the size of a frame object")


def _unmodelled():
    coro = _coroutine()
    out = [_finished_frame(), sys._getframe(), _generator(), coro, memoryview(b"abc"), re.compile("a+"),
           _finished_frame.__code__]
    coro.close()
    return out


@pytest.mark.parametrize("obj", _unmodelled(), ids=lambda o: type(o).__name__)
def test_variable_size_types_without_a_model_are_refused_not_guessed(obj):
    if type(obj).__itemsize__:
        with pytest.raises(TypeError, match="size of a .* object is unknown"):
            view(obj)
        assert explain(obj).nbytes is None and "size unknown" in str(explain(obj))
    else:
        assert view(obj).nbytes == nbytes_of(obj) == type(obj).__basicsize__


def test_modelled_variable_size_types_are_still_sized():
    class Heap:
        __slots__ = ("a", "b")

    assert view(Heap).nbytes == type.__basicsize__ + 2 * type.__itemsize__
    assert view(sys.version_info).nbytes >= tuple.__basicsize__ + 8 * len(sys.version_info)
    assert view(bytes(3)).nbytes == bytes(3).__sizeof__()


# --- 5. view_address proves every page readable -----------------------------------------------------

def _special_regions() -> list[tuple[int, int]]:
    with open("/proc/self/maps") as maps:
        return [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps
                if line.rstrip().endswith(("[vvar]", "[vvar_vclock]"))]


def _view_special_regions():
    refused = []
    for start, end in _special_regions():
        try:
            int(view_address(start, end - start).sum())
        except ValueError as exc:
            refused.append(str(exc))
    return refused


@pytest.mark.crash_prone
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_vvar_pages_listed_readable_are_refused():
    regions = _special_regions()
    if not regions:
        pytest.skip("no [vvar] mapping in this process")
    refused = healthy(isolate(_view_special_regions, timeout=60))
    assert len(refused) == len(regions) and all("cannot be read" in r for r in refused)


def _view_past_a_truncated_file():
    fd, path = tempfile.mkstemp(prefix="pyguts-safety-")
    os.unlink(path)
    os.ftruncate(fd, 2 * mmap.PAGESIZE)
    m = mmap.mmap(fd, 2 * mmap.PAGESIZE)
    os.ftruncate(fd, 100)  # the second page now lies past the file's end: reading it is SIGBUS
    os.close(fd)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert bytes(view_address(base, 100, owner=m)) == bytes(100)  # the first page is still fine
    try:
        return int(view_address(base + mmap.PAGESIZE, 64, owner=m).sum())
    except ValueError as exc:
        return f"refused: {exc}"


@pytest.mark.crash_prone
@pytest.mark.skipif(not hasattr(os, "ftruncate"), reason="needs ftruncate")
def test_a_file_mapping_past_its_files_end_is_refused():
    assert healthy(isolate(_view_past_a_truncated_file, timeout=60)).startswith("refused: memory at 0x")


def test_the_kernel_probe_and_the_proc_fallback_agree():
    from pyguts.objects import memory

    buf = np.zeros(5 * mmap.PAGESIZE, dtype=np.uint8)
    probes = memory._probe_addresses(buf.ctypes.data + 1, buf.nbytes - 1)
    assert len(probes) in (5, 6) and int(probes[0]) == buf.ctypes.data + 1
    assert memory._first_unreadable_vm(probes) is None and memory._first_unreadable_mem(probes) is None
    for start, _ in _special_regions()[:1]:
        special = memory._probe_addresses(start, 1)
        assert memory._first_unreadable_vm(special) == memory._first_unreadable_mem(special) == start


# --- the frame reader mutate relies on ---------------------------------------------------------------

def test_frame_variables_are_read_without_a_locals_dict():
    def outer(arg, other):
        local = [arg]
        captured = "cell"

        def inner():
            return captured

        return refs.frame_variables(sys._getframe()), local, inner

    a, b = object(), object()
    found, local, inner = outer(a, b)
    assert any(x is b for x in found) and any(x is local for x in found) and any(x is inner for x in found)
    assert any(type(x).__name__ == "cell" and x.cell_contents == "cell" for x in found)
    del found
    assert refs.refcount(a) == 2  # a and the `local` list: no locals dict kept a reference


def test_the_slot_count_matches_the_frames_own_size():
    # frame.__sizeof__() counts the frame's variable slots and its stack (Objects/frameobject.c).
    def slots(frame) -> int:
        return refs._nlocalsplus(frame.f_code) + frame.f_code.co_stacksize

    def nothing():
        return sys._getframe()

    def many(a, b, *args, **kw):
        c = 1

        def use():
            return a, c

        return sys._getframe(), use

    class Body:
        frame = sys._getframe()

        def method(self):
            return __class__

    empty = nothing()
    for frame in (many(1, 2)[0], Body.frame, sys._getframe()):
        assert (frame.__sizeof__() - empty.__sizeof__()) // 8 == slots(frame) - slots(empty), frame.f_code.co_name
