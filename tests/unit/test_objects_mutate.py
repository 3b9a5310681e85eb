"""mutate and swap_type: the notebook sequence, refusals for shared objects, forced paths isolated."""

from __future__ import annotations

import ctypes
import gc
import sys

import pytest

from pyguts import UnsafeOperationError, _compat
from pyguts.isolation import isolate
from pyguts.objects.mutate import mutate, shared_reason
from pyguts.objects.swap import layout_difference, swap_type

pytestmark = pytest.mark.every_python


def fresh(b: bytes) -> bytes:
    """A bytes object nobody else holds (a literal is shared with the code object's constants)."""
    return bytes(b[:1]) + b[1:]


def test_notebook_hello_world_becomes_hell_evil_orld():
    b = fresh(b"Hello, world!")
    old_hash = hash(b)  # cache the hash first: mutate must invalidate it
    mutate(b, 4, b"EVIL")
    assert b == b"HellEVILorld!"
    assert hash(b) == hash(b"HellEVILorld!") != old_hash
    assert {b"HellEVILorld!": "found"}[b] == "found"
    assert {b: 1}[b"HellEVILorld!"] == 1


@pytest.mark.parametrize("obj,data,match", [
    (5, [6], "small ints|immortal"), (True, [0], "singletons|immortal"), (b"", b"", "cached singletons|immortal"),
    (b"a", b"b", "cached singletons|immortal"), (sys.intern("".join(["pyguts", "_interned"])), "x", "interned"),
    ("", "", "cached singletons|immortal|interned"), (chr(233), "e", "cached singletons|immortal"),
    ((), [], "singleton|immortal"),
])
def test_shared_objects_are_refused(obj, data, match):
    with pytest.raises(UnsafeOperationError, match=match):
        mutate(obj, 0, data)
    assert shared_reason(obj)


@pytest.mark.skipif(_compat.VERSION < (3, 12), reason="immortal objects exist from 3.12")
def test_immortal_objects_are_refused_with_the_reason():
    with pytest.raises(UnsafeOperationError, match="immortal"):
        mutate(None, 0, b"")
    with pytest.raises(UnsafeOperationError, match="immortal"):
        swap_type(None, int)


def _force_small_int():
    mutate(int("250"), 0, [251], force=True)
    return int("250")  # every 250 in this process is the cached object, now worth 251


def _force_interned_str():
    mine = sys.intern("".join(["pyguts", "_victim"]))
    theirs = sys.intern("".join(["pyguts_", "victim"]))  # the same shared object
    mutate(mine, 0, "Q", force=True)
    return theirs


@pytest.mark.crash_prone
def test_forced_mutation_of_shared_objects_runs_in_a_child():
    out = isolate(_force_small_int)
    assert out.status == "ok" and out.value == 251
    assert int("250") == 250  # the parent is untouched
    out = isolate(_force_interned_str)
    assert out.status == "ok" and out.value == "Qyguts_victim"


@pytest.mark.parametrize("start,data", [(-1, b"x"), (13, b"x"), (10, b"toolong")])
def test_bounds_are_checked(start, data):
    b = fresh(b"Hello, world!")
    with pytest.raises(IndexError, match="payload's length"):
        mutate(b, start, data)
    assert b == b"Hello, world!"


def test_bytearray_and_wrong_data_types():
    ba = bytearray(b"abcd")
    mutate(ba, 1, b"XY")
    assert ba == b"aXYd"
    with pytest.raises(TypeError):
        mutate(fresh(b"abcd"), 0, "str is not bytes-like")
    with pytest.raises(TypeError, match="payload\\(\\) supports"):
        mutate({}, 0, b"")


def test_str_hash_and_utf8_cache_are_invalidated():
    s = "".join(["hé", "llo"])
    as_utf8 = ctypes.PyDLL(ctypes.pythonapi._name, handle=ctypes.pythonapi._handle).PyUnicode_AsUTF8
    as_utf8.restype, as_utf8.argtypes = ctypes.c_char_p, [ctypes.py_object]
    assert as_utf8(s) == "héllo".encode()  # builds the cached UTF-8 copy
    hash(s)
    mutate(s, 2, "LL")
    assert s == "héLLo" and hash(s) == hash("héLLo")
    assert as_utf8(s) == "héLLo".encode()


def test_freed_caches_go_back_to_the_allocator_that_made_them():
    # PYTHONMALLOC=debug checks every free against its allocator API (PyObject_ vs PyMem_), as a
    # debug build does: the UTF-8 copy is PyObject_Malloc'ed before 3.13, PyMem_Malloc'ed since.
    import subprocess

    code = (
        "import ctypes, pyguts\n"
        "s = ''.join(['h\\xe9', 'llo'])\n"
        "f = ctypes.PyDLL(ctypes.pythonapi._name, handle=ctypes.pythonapi._handle).PyUnicode_AsUTF8\n"
        "f.restype, f.argtypes = ctypes.c_char_p, [ctypes.py_object]\n"
        "f(s)\n"
        "pyguts.mutate(s, 2, 'LL')\n"
        "assert f(s) == 'h\\xe9LLo'.encode(), f(s)\n"
        "print('freed right')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONMALLOC": "debug"})
    assert done.returncode == 0 and "freed right" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("s,start,data,ok", [
    ("abc", 0, "é", False),        # ASCII cannot take a Latin-1 character
    ("aé", 1, "b", False),         # the only non-ASCII character gone: no longer canonical
    ("aéé", 1, "b", True),         # still one non-ASCII character left
    ("a€", 1, "\U0001F600", False),  # 2-byte kind cannot hold an astral character
    ("a€", 0, "✓", True),
])
def test_str_kind_and_ascii_form_are_kept(s, start, data, ok):
    s = "".join(["", s[0], s[1:]])
    if ok:
        mutate(s, start, data)
        assert s[start] == data and s == s.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    else:
        with pytest.raises(UnsafeOperationError, match="narrowest form"):
            mutate(s, start, data)


def test_tuple_items_are_replaced_with_correct_refcounts_and_gc_tracking():
    old, new = object(), object()
    t = tuple([1, old, 3])
    old_refs, new_refs = sys.getrefcount(old), sys.getrefcount(new)
    mutate(t, 1, [new])
    assert t[1] is new
    assert sys.getrefcount(old) == old_refs - 1 and sys.getrefcount(new) == new_refs + 1
    atomic = tuple([1, 2])
    gc.collect()
    if not gc.is_tracked(atomic):  # CPython untracked a tuple of atomic items
        mutate(atomic, 0, [[]])
        assert gc.is_tracked(atomic)


def test_int_digits_float_and_complex():
    n = int("1" + "0" * 20)  # several digits, not cached
    digits = list(__import__("pyguts").payload(n))
    mutate(n, 0, [digits[0] + 1])
    assert n == 10**20 + 1
    big = 2**30 + 0  # digits [0, 1]
    big = big * 1
    with pytest.raises(UnsafeOperationError, match="normalized"):
        mutate(big, 1, [0])
    with pytest.raises(ValueError, match="digits must be"):
        mutate(big, 0, [2**30])
    f = float("1.5")
    mutate(f, 0, [2.75])
    assert f == 2.75
    c = complex("1+2j")
    mutate(c, 0, [3.0, 4.0])
    assert c == 3 + 4j


# --- swap_type ---------------------------------------------------------------------------------

class A:
    pass


class B:
    pass


class Slotted:
    __slots__ = ("x",)


class SameSlots:
    __slots__ = ("x",)


class OtherSlots:
    __slots__ = ("y",)


class DifferentClass(bytes):
    pass


def test_compatible_heap_classes_swap_and_type_refcounts_balance():
    before = sys.getrefcount(A), sys.getrefcount(B)
    a = A()
    a.attr = "kept"
    assert swap_type(a, B) is A
    assert type(a) is B and a.attr == "kept"
    del a
    gc.collect()
    assert (sys.getrefcount(A), sys.getrefcount(B)) == before


def test_slots_must_match():
    s = Slotted()
    s.x = 1
    swap_type(s, SameSlots)
    assert type(s) is SameSlots and s.x == 1
    with pytest.raises(UnsafeOperationError, match="__slots__"):
        swap_type(s, OtherSlots)


def test_notebook_bytes_to_subclass_with_dict_is_refused_with_the_reason():
    b = fresh(b"Hello, world!")
    where = "in a pre-header before the object" if _compat.VERSION >= (3, 12) else "at offset -8"
    with pytest.raises(UnsafeOperationError,
                       match=f"instances of DifferentClass keep a __dict__ {where}.* that bytes objects lack"):
        swap_type(b, DifferentClass)
    assert type(b) is bytes
    assert "__dict__" in layout_difference(bytes, DifferentClass)


def _forced_notebook_swap():
    from pyguts.tour import surrounded_bytes

    b, pool = surrounded_bytes(b"Hello, world!")   # the pointer read next to it is always garbage
    swap_type(b, DifferentClass, force=True)
    b.attr = "boom"
    return b.attr


@pytest.mark.crash_prone
def test_forced_notebook_swap_crashes_with_sigsegv_inside_isolate():
    out = isolate(_forced_notebook_swap, timeout=60)
    assert out.status == "crashed" and out.signal_name == "SIGSEGV", out
    assert "_forced_notebook_swap" in out.fault_traceback


class TupleSub(tuple):
    __slots__ = ()


def test_static_type_with_compatible_layout_needs_force_and_balances_refcounts():
    t = tuple([1, 2, 3])
    assert layout_difference(tuple, TupleSub) is None
    with pytest.raises(UnsafeOperationError, match="static or immutable type"):
        swap_type(t, TupleSub)
    before = sys.getrefcount(TupleSub)
    assert swap_type(t, TupleSub, force=True) is tuple
    after = sys.getrefcount(TupleSub)
    assert after == before + 1
    assert type(t) is TupleSub and t == (1, 2, 3)
    del t
    gc.collect()
    assert sys.getrefcount(TupleSub) == before


def test_swap_type_bad_input():
    with pytest.raises(TypeError, match="must be a type"):
        swap_type(A(), "B")
    a = A()
    assert swap_type(a, A) is A


def test_importing_pyguts_leaves_ctypes_pythonapi_alone():
    # In a fresh interpreter: other libraries in this one (numba's CUDA driver) set argtypes themselves.
    import subprocess

    code = ("import ctypes, pyguts, pyguts.objects.mutate\n"
            "print([getattr(ctypes.pythonapi, n).argtypes for n in "
            "('Py_IncRef', 'Py_DecRef', 'PyObject_Free', 'PyObject_GC_Track')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[None, None, None, None]", done.stderr
