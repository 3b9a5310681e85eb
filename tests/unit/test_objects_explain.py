"""explain(): the fields of an object's memory as data, text and HTML."""

from __future__ import annotations

import sys

import pytest

from pyguts import _compat
from pyguts.objects.explain import explain

pytestmark = pytest.mark.every_python


@pytest.mark.skipif(_compat.GIL_DISABLED, reason="offsets quoted for the default build")
def test_bytes_fields_at_their_offsets():
    b = bytes(b"Hello, ") + b"world!"
    e = explain(b)
    # Include/object.h: 3.14 splits the count word into ob_refcnt, ob_overflow and ob_flags.
    header = ([("ob_refcnt", 0, 8)] if _compat.VERSION < (3, 14) else
              [("ob_refcnt", 0, 4), ("ob_overflow", 4, 2), ("ob_flags", 6, 2)])
    assert [(f.name, f.offset, f.size) for f in e.fields] == [
        *header, ("ob_type", 8, 8), ("ob_size", 16, 8), ("ob_shash", 24, 8), ("ob_sval", 32, 14)]
    assert e.field("ob_size").value == 13 and e.field("ob_size").meaning == "len = 13"
    assert e.field("ob_type").meaning == "<class 'bytes'>"
    assert e.field("ob_sval").value == b"Hello, world!" and e.field("ob_sval").raw == b"Hello, world!\0"
    assert e.nbytes == 46


def test_hash_cache_is_explained_before_and_after_hashing():
    b = bytes(b"not ") + b"hashed yet"
    assert explain(b).field("ob_shash").meaning == "not computed yet (-1)"
    h = hash(b)
    assert explain(b).field("ob_shash").value == h
    assert explain(b).field("ob_shash").meaning == f"cached hash: {h}"


def test_refcount_meaning_counts_the_callers_references():
    x = bytes(3)
    keep = [x, x]
    assert explain(x).field("ob_refcnt").meaning.startswith("3 references (+")   # x and the list twice
    assert explain(obj=x).field("ob_refcnt").meaning.startswith("3 references (+")
    del keep


def test_explain_does_not_change_the_refcount():
    x = [1, 2, 3]
    before = sys.getrefcount(x)
    explain(x)
    assert sys.getrefcount(x) == before


@pytest.mark.parametrize("obj,names", [
    (2**70, {"ob_digit"}), ("".join(["hé", "llo"]), {"length", "state", "data"}), ((1, "a"), {"ob_item"}),
    (1.5, {"ob_fval"}), (int, {"tp_name", "tp_basicsize", "tp_flags", "tp_base"}), ({1, 2}, {"smalltable"}),
    ([1], {"ob_item", "allocated"}), ({"a": 1}, {"ma_used", "ma_keys"}), (object(), {"ob_refcnt", "ob_type"}),
])
def test_explain_many_types(obj, names):
    e = explain(obj)
    assert names <= {f.name for f in e.fields}
    text = str(e)
    assert all(name in text for name in names)
    assert "<table>" in e._repr_html_()


def test_type_name_is_decoded():
    assert explain(int).field("tp_name").meaning == "'int'"
    assert explain(bool).field("tp_base").meaning == "<class 'int'>"


def test_str_state_and_data():
    s = "".join(["h", "é"])
    e = explain(s)
    assert "kind=1" in e.field("state").meaning and "ascii=0" in e.field("state").meaning
    assert e.field("data").raw == "hé".encode("latin-1") + b"\0"
