"""Exact refcounts and immortality on every interpreter."""

from __future__ import annotations

import sys

import pytest

from pyguts import _compat
from pyguts.refs import is_immortal, refcount, referrers

pytestmark = pytest.mark.every_python


def test_refcount_is_getrefcount_minus_one_at_the_same_call_site():
    x = object()
    assert refcount(x) == sys.getrefcount(x) - 1 == 1
    holders = [x, x, x]
    d = {"k": x}
    assert refcount(x) == sys.getrefcount(x) - 1 == 5
    del holders, d
    assert refcount(x) == 1


def test_refcount_inside_nested_calls_and_with_keyword():
    def inner(obj):
        return refcount(obj), sys.getrefcount(obj) - 1

    x = [1, 2]
    got, want = inner(x)
    assert got == want
    assert refcount(obj=x) == sys.getrefcount(x) - 1


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
