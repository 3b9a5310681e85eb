"""Views and payloads: exact bounds, read-only by default, owners kept alive, bad input refused."""

from __future__ import annotations

import ctypes
import gc
import mmap
import sys
import weakref

import numpy as np
import pytest

from refkit import total_growth

from pyguts import _compat, _ndarray
from pyguts.errors import BuildError
from pyguts.native.compiler import find_compiler
from pyguts.objects.memory import kept_alive, nbytes_of, payload, view, view_address
from pyguts.objects.structs import PyBytesObject

pytestmark = pytest.mark.every_python


def fresh_str(*parts: str) -> str:
    """A str built at run time: not interned, no cached UTF-8, hash not computed."""
    return "".join(parts)


SIZED = [
    bytes(range(13)), b"", (1, 2, 3), (), 0, 1, -5, 2**30, -(2**100), 10**50, 1.5, 2 + 3j, True,
    fresh_str("ab", "cd"), fresh_str("h", "é"), fresh_str("€", "uro"), fresh_str("\U0001F600", "x"),
]


@pytest.mark.parametrize("obj", SIZED, ids=lambda o: f"{type(o).__name__}-{o!r:.20}")
def test_view_covers_exactly_the_allocation(obj):
    v = view(obj)
    assert v.dtype == np.uint8 and v.nbytes == nbytes_of(obj) == obj.__sizeof__()
    assert int.from_bytes(v[8:16].tobytes(), sys.byteorder) == id(type(obj)) or _compat.GIL_DISABLED


def test_containers_view_only_their_struct():
    assert view([1, 2, 3]).nbytes == list.__basicsize__
    assert view({"a": 1}).nbytes == dict.__basicsize__
    assert view(bytearray(100)).nbytes == bytearray.__basicsize__


def test_static_type_objects_are_viewed_as_plain_type_structs():
    from pyguts.objects.structs import PyTypeObject

    assert view(int).nbytes == ctypes.sizeof(PyTypeObject)

    class Heap:
        pass

    assert view(Heap).nbytes >= type.__basicsize__


def test_view_is_read_only_and_cannot_be_made_writable():
    v = view(b"immutable!")
    with pytest.raises(ValueError):
        v[0] = 1
    with pytest.raises(ValueError):
        v.flags.writeable = True
    assert not np.asarray(v).flags.writeable


def test_view_keeps_its_owner_alive():
    v = view(bytes(range(40)) + b"!")
    gc.collect()
    assert v.base.owner == bytes(range(40)) + b"!"
    assert v[PyBytesObject.ob_sval.offset + 40] == ord("!")


def test_views_follow_live_changes():
    ba = bytearray(b"abc")
    p = payload(ba, writable=True)
    p[0] = ord("z")
    assert ba == b"zbc"


def test_bytearray_payload_locks_resizing_while_alive():
    ba = bytearray(b"abc")
    p = payload(ba)
    with pytest.raises(BufferError):
        ba.extend(b"more")
    del p
    ba.extend(b"more")
    assert ba == b"abcmore"


def test_writable_payload_writes_into_a_fresh_bytes_object():
    b = bytes([1, 2, 3]) + bytes([4])
    payload(b, writable=True)[0] = 9
    assert b == bytes([9, 2, 3, 4])


@pytest.mark.parametrize("s,dtype", [("ab", "uint8"), ("hé", "uint8"), ("€u", "uint16"), ("\U0001F600", "uint32")])
def test_str_payload_is_typed_by_kind(s, dtype):
    s = fresh_str(s)
    p = payload(s)
    assert p.dtype == np.dtype(dtype) and p.tolist() == [ord(c) for c in s]


def test_non_compact_str_is_refused_clearly():
    class S(str):
        pass

    with pytest.raises(TypeError, match="not compact"):
        payload(S("subclass strings keep data elsewhere"))


def test_tuple_and_list_payloads_are_item_pointers():
    a, b = object(), object()
    t = (a, b)
    assert payload(t).tolist() == [id(a), id(b)] and payload(t).dtype == np.uintp
    lst = [a, b]
    snap = payload(lst)
    assert snap.tolist() == [id(a), id(b)] and not snap.flags.writeable
    lst.extend(range(1000))  # the item array moves; the snapshot stays valid
    assert snap.tolist() == [id(a), id(b)]
    assert payload([]).size == 0


@pytest.mark.parametrize("n", [0, 7, -7, 2**30, 2**60 + 3, -(10**40)])
def test_int_payload_is_its_digits(n):
    digits = payload(n).tolist()
    assert sum(d << (_compat.DIGIT_BITS * i) for i, d in enumerate(digits)) == abs(n)


def test_float_and_complex_payloads():
    assert payload(2.5).tolist() == [2.5]
    assert payload(complex(1.25, -3)).tolist() == [1.25, -3.0]


@pytest.mark.parametrize("obj", [{}, set(), object(), None, memoryview(b"x")])
def test_payload_refuses_unsupported_types(obj):
    with pytest.raises(TypeError, match="payload\\(\\) supports"):
        payload(obj)


def test_view_address_reads_memory_and_keeps_the_owner():
    buf = ctypes.create_string_buffer(b"pyguts", 8)
    arr = view_address(ctypes.addressof(buf), 8, owner=buf)
    del buf
    gc.collect()
    assert bytes(arr[:6]) == b"pyguts" and arr.base.owner is not None
    as_u32 = view_address(ctypes.addressof(arr.base.owner), 8, dtype=np.uint32)
    assert as_u32.shape == (2,)


def test_view_address_writable_writes():
    buf = ctypes.create_string_buffer(4)
    view_address(ctypes.addressof(buf), 4, writable=True, owner=buf)[:] = [1, 2, 3, 4]
    assert buf.raw == b"\x01\x02\x03\x04"


@pytest.mark.parametrize("addr,nbytes,match", [
    (0, 8, "NULL"), (-8, 8, "addr must be"), (2**64, 8, "addr must be"), (2**64 - 8, 16, "nbytes must be"),
    (4096, -1, "nbytes must be"), (4096, 7, "whole number"),
])
def test_view_address_refuses_bad_input(addr, nbytes, match):
    with pytest.raises(ValueError, match=match):
        view_address(addr, nbytes, dtype=np.uint16 if match == "whole number" else "u1")


def test_view_address_refuses_unmapped_memory_instead_of_crashing():
    m = mmap.mmap(-1, mmap.PAGESIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    m.close()  # unmapped now: reading would be SIGSEGV
    with pytest.raises(ValueError, match="not mapped"):
        view_address(addr, 16)
    with pytest.raises(ValueError):
        view_address(0x1000, 16)  # the zero page is never mapped


def test_view_address_refuses_writing_read_only_memory():
    libc_text = ctypes.cast(ctypes.CDLL(None).printf, ctypes.c_void_p).value
    assert view_address(libc_text, 4).size == 4  # code is readable
    with pytest.raises(ValueError, match="not readable and writable"):
        view_address(libc_text, 4, writable=True)


def test_view_address_refuses_object_dtypes():
    buf = ctypes.create_string_buffer(8)
    with pytest.raises(ValueError, match="object"):
        view_address(ctypes.addressof(buf), 8, dtype=object)


@pytest.fixture(params=["in C", "through __array_interface__"])
def array_path(request, monkeypatch):
    """Each view made both ways: by pyguts._ndarray's C, and by the pure-Python fallback."""
    if request.param == "in C":
        if _ndarray.functions() is None:
            pytest.skip(f"pyguts._ndarray cannot be built here: {_ndarray.why_not()}")
    else:
        monkeypatch.setattr(_ndarray, "functions", lambda: None)
    return request.param


def test_the_c_path_is_built_where_a_compiler_is():
    try:
        find_compiler("c")  # the compiler pyguts._ndarray is built with ($CC, cc, gcc, clang)
    except BuildError as exc:
        pytest.skip(f"no C compiler, views take the pure-Python path: {exc}")
    assert _ndarray.functions() is not None, _ndarray.why_not()


@pytest.mark.parametrize("obj", SIZED, ids=lambda o: f"{type(o).__name__}-{o!r:.20}")
def test_both_paths_make_the_same_view(obj, array_path):
    before = sys.getrefcount(obj)
    v, p = view(obj), (payload(obj) if not isinstance(obj, bool) else None)
    assert v.dtype == np.uint8 and v.shape == (nbytes_of(obj),) and v.ctypes.data == id(obj)
    assert not v.flags.writeable and not v.flags.owndata and v.flags.c_contiguous
    assert v.base.owner is obj and kept_alive(v) == (id(v.base), obj) and kept_alive(v[2:]) == (id(v.base), obj)
    assert f"{id(obj):x}" in repr(v.base) and "read-only" in repr(v.base)
    del v, p
    assert sys.getrefcount(obj) == before


def test_both_paths_write_only_when_asked(array_path):
    b = bytes([1, 2, 3])
    w = payload(b, writable=True)
    w[0] = 9
    assert b == bytes([9, 2, 3]) and w.flags.writeable and "writable" in repr(w.base)


def test_a_cycle_through_a_views_holder_is_collected(array_path):
    class Node:
        pass

    node = Node()
    node.holder = view(node).base  # node -> holder -> node (a cycle through the array is numpy's:
    # ndarrays take no part in garbage collection)
    gone = weakref.ref(node)
    del node
    gc.collect()
    assert gone() is None


def test_views_give_back_every_reference_they_take(array_path):
    """1000 views made and dropped: the owner's count is back; made in C, they move a debug build's
    total count no more than as many np.empty arrays."""
    b = bytes(range(20))
    before = sys.getrefcount(b)
    ours = total_growth(lambda: (view(b)[3:], payload(b, writable=True)))
    assert sys.getrefcount(b) == before
    if array_path == "in C":
        assert ours - total_growth(lambda: (np.empty(1)[3:], np.empty(1))) < 100
