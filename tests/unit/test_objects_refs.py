"""Exact refcounts and immortality on every interpreter."""

from __future__ import annotations

import sys

import pytest

from pyguts import _compat
from pyguts.objects import refs
from pyguts.errors import LayoutMismatchError
from pyguts.objects.refs import is_immortal, refcount, referrers

pytestmark = pytest.mark.every_python


def _raw(addr: int) -> int:
    """ob_refcnt of the object at ``addr``, read with nothing of a call holding it: the ground truth
    ``refcount`` must equal at the same call site (pass ``id(x)``: the id is taken before the read)."""
    return refs._count(refs._Header.from_address(addr))


def test_refcount_counts_every_reference_but_the_calls_own():
    x = object()
    assert refcount(x) == _raw(id(x)) == 1
    holders = [x, x, x]
    d = {"k": x}
    assert refcount(x) == _raw(id(x)) == 5
    del holders, d
    assert refcount(x) == 1


@pytest.mark.skipif(_compat.VERSION >= (3, 14), reason="3.14 borrows getrefcount's argument at some call sites")
def test_refcount_is_getrefcount_minus_one_before_314():
    x = object()
    holders = [x, x]
    assert refcount(x) == sys.getrefcount(x) - 1 == 3
    del holders


class _Probe:
    def method(self):
        return refcount(self), _raw(id(self))

    def method_of(self, other):
        return refcount(other), _raw(id(other))


def test_refcount_is_exact_at_every_kind_of_call_site():
    def inner(obj):
        return refcount(obj), _raw(id(obj))

    def outer(obj):
        return inner(obj)

    x = [1, 2]
    got, want = inner(x)
    assert got == want
    got, want = outer(x)
    assert got == want
    assert refcount(obj=x) == _raw(id(x)) == 1
    assert [refcount(x) for _ in range(3)] == [_raw(id(x))] * 3 == [1, 1, 1]
    assert {refcount(v) for v in [x]} == {3}   # x, the loop variable and the list literal
    p = _Probe()
    got, want = p.method()
    assert got == want
    got, want = p.method_of(x)
    assert got == want
    got, want = (lambda o: (refcount(o), _raw(id(o))))(x)
    assert got == want
    holder = {"x": x}
    got = refcount(holder["x"])   # outside the assert: pytest's rewriting would keep holder["x"]
    assert got == _raw(id(x)) == 2
    del holder


@pytest.mark.skipif(_compat.VERSION < (3, 11), reason="3.10's calibrated call references assume a Python caller")
def test_references_held_by_a_c_caller_count():
    x = object()
    # x, the list literal, and map's iterator, which holds the item while it calls
    assert list(map(refcount, [x])) == [3]


def test_a_frame_that_misreads_its_argument_is_refused():
    import sys as _sys

    if not refs._STACKREFS:
        pytest.skip("frames are read only on 3.14+")
    with pytest.raises(LayoutMismatchError, match="misreads frames"):
        refs.held_by_call(_sys._getframe(), object())   # this frame's first local is not that object


def test_refcount_does_not_perturb_the_count():
    x = object()
    before = sys.getrefcount(x)
    for _ in range(1000):
        refcount(x)
        is_immortal(x)
    assert sys.getrefcount(x) == before


@pytest.mark.parametrize("obj", [None, True, False, 0, 1, 255, (), Ellipsis])
def test_interpreter_singletons_are_immortal_from_312(obj):
    assert is_immortal(obj) == (_compat.VERSION >= (3, 12))


@pytest.mark.skipif(_compat.VERSION < (3, 12), reason="no immortal objects before 3.12")
def test_immortal_count_is_reported_raw():
    assert refcount(None) == sys.getrefcount(None) >= 2**31


@pytest.mark.parametrize("make", [object, lambda: 10**40, lambda: [1], lambda: "".join(["a", "b"])])
def test_new_objects_are_mortal(make):
    assert not is_immortal(make())


def test_referrers_show_containers_and_not_the_call_itself():
    import inspect

    x = object()
    box = [x]
    found = referrers(x)
    assert any(r is box for r in found)
    assert all(not (inspect.isframe(r) and r.f_code.co_name == "referrers") for r in found)


@pytest.mark.skipif(_compat.VERSION < (3, 14), reason="frames are read only on 3.14+")
def test_the_argument_slot_found_by_its_contents_is_where_the_debug_offsets_say():
    # Past the layout table (no debug offsets to trust), refs finds localsplus by its contents.
    from pyguts.objects import debug_offsets

    assert refs._find_localsplus() == debug_offsets.read().values["interpreter_frame.localsplus"] == refs._LOCALSPLUS


HEADER_CASES = [(v, "default") for v in ((3, 12), (3, 13), (3, 14), (3, 15))] + \
               [(v, "freethreaded") for v in ((3, 13), (3, 14), (3, 15))]


@pytest.mark.parametrize("version,build", HEADER_CASES, ids=["%d.%d%s" % (*v, "t" * (b != "default"))
                                                             for v, b in HEADER_CASES])
def test_counts_and_immortality_of_hand_built_headers(version, build):
    """The split (free-threaded) and immortal refcount logic on headers built in memory, whatever runs."""
    from pyguts.objects import layouts
    from pyguts.objects.structs import build_models

    rule = layouts.refcount_rule_for(version, build)
    h = build_models(version, build)["PyObject"]()   # zeroed
    if build == "freethreaded":
        h.ob_ref_local, h.ob_ref_shared = 3, (5 << layouts.REF_SHARED_SHIFT) | 0b01   # a flag bit below
        assert rule.count(h) == 8 and not rule.header_is_immortal(h)
        h.ob_ref_local = 0xFFFFFFFF   # _Py_IMMORTAL_REFCNT_LOCAL
        assert rule.header_is_immortal(h)
        assert bytes(h)[12:16] == b"\xff\xff\xff\xff"   # after ob_tid and 4 bytes of flags, mutex, gc bits
        return
    h.ob_refcnt = 7
    assert rule.count(h) == 7 and not rule.header_is_immortal(h)
    immortal = {(3, 12): 0xFFFFFFFF, (3, 13): 0xFFFFFFFF}.get(version, 3 << 30)   # 3.14+: initial 3 << 30
    h.ob_refcnt = immortal
    assert rule.header_is_immortal(h)
    if rule.immortal == "sign32":   # decremented below its start by old extensions: still immortal
        h.ob_refcnt = immortal - 1000
        assert rule.header_is_immortal(h)
    if version >= (3, 14):   # the count is 32 bits; the flags live in the upper half of the word
        h.ob_refcnt, h.ob_flags = 1, 1
        assert bytes(h)[:8] == b"\x01\x00\x00\x00\x00\x00\x01\x00"
        assert rule.count(h) == 1 and not rule.header_is_immortal(h)


@pytest.mark.parametrize("obj", [None, True, 0, 255, 256, 1000, 10**6, (), "", "x", "pyguts", b"", object(),
                                 int, [1], 10**40, Ellipsis])
def test_the_header_rule_and_the_interpreter_agree_on_immortality(obj):
    """refs.is_immortal reads the header by the table's rule; _compat.is_immortal asks the interpreter
    (sys._is_immortal on 3.14+, else the count it reports) for code that reads no memory."""
    assert is_immortal(obj) == _compat.is_immortal(obj)
