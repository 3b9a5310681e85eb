"""pyguts.objects.diagrams: the records (boxes, rows, arrows) and the SVG text, without rendering pixels."""

from __future__ import annotations

import gc
import sys
import weakref
import xml.etree.ElementTree as ET

import pytest

from pyguts import _compat
from pyguts.objects import refs, structs
from pyguts.objects.diagrams import NOTE, STATIC_REFCNT_311, TYPE_FIELDS, Arrow, Box, Diagram, Row, diagram
from pyguts.objects.explain import explain

_PTR = structs.PyObject.ob_type.size
_SVG = "{http://www.w3.org/2000/svg}"


def _texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(_SVG + "text")]


def _arrows_from(d: Diagram, src: int, kind: str | None = None) -> list[Arrow]:
    return [a for a in d.arrows if a.src == src and (kind is None or a.kind == kind)]


def _notes(box: Box) -> list[str]:
    return [r.value for r in box.rows if r.name == NOTE]


def _fields(box: Box) -> list[str]:
    return [r.name for r in box.rows if r.name != NOTE]


@pytest.mark.every_python
def test_bytes_box_has_every_field_at_its_offset_and_points_to_its_type():
    b = b"Hello, world!"
    d = diagram(b)
    box = d.box(id(b))
    assert [r.name for r in box.rows] == [*structs.PyObject._c_paths_, "ob_size", "ob_shash", "ob_sval"]
    assert [r.offset for r in box.rows] == [getattr(structs.PyBytesObject, r.name).offset for r in box.rows]
    assert box.title == f"bytes at {id(b):#x}" and box.kind == "object"
    assert box.row("ob_size").value.startswith("13 ") and box.row("ob_sval").value == "b'Hello, world!'"
    assert box.row("ob_type").target == id(bytes)
    assert Arrow(id(b), list(structs.PyObject._c_paths_).index("ob_type"), id(bytes), "type") in d.arrows
    tbox = d.box(id(bytes))
    assert tbox.kind == "type" and tbox.title == f"type bytes at {id(bytes):#x}"
    assert _fields(tbox)[:-1] == [n for n in structs.PyTypeObject._c_paths_ if n in TYPE_FIELDS]
    assert tbox.row("tp_name").value == "'bytes'" and tbox.row("tp_basicsize").value == str(bytes.__basicsize__)
    shown = len(_fields(tbox)) - 1
    assert tbox.rows[-1].name == "…" and tbox.rows[-1].value == f"{len(explain(bytes).fields) - shown} more fields"
    # bytes is a static type: immortal from 3.12, and the count says so right under it
    assert (_notes(tbox) == ["immortal (3.12+): its count never changes"]) == (_compat.VERSION >= (3, 12))


@pytest.mark.every_python
def test_tuple_items_point_to_their_objects_and_a_shared_object_gets_one_box():
    first, second = b"pyguts-diagram", 7
    t = (first, second, second)
    d = diagram(t)
    box = d.box(id(t))
    items = [r for r in box.rows if r.name.startswith("ob_item[")]
    base = structs.PyTupleObject.ob_item.offset
    assert [(r.name, r.offset, r.target) for r in items] == [
        ("ob_item[0]", base, id(first)), ("ob_item[1]", base + _PTR, id(second)),
        ("ob_item[2]", base + 2 * _PTR, id(second))]
    assert [a.dst for a in _arrows_from(d, id(t), "item")] == [id(first), id(second), id(second)]
    assert [b.addr for b in d.boxes].count(id(second)) == 1
    assert d.box(id(first)).depth == 1 and d.box(id(first)).row("ob_type").target is None  # types folded
    assert diagram(t, types="all").box(id(first)).row("ob_type").target == id(bytes)


@pytest.mark.every_python
def test_list_items_hang_off_the_item_array_and_a_self_containing_list_draws_one_box():
    a = [b"x"]
    a.append(a)
    d = diagram(a)
    ob_item = d.box(id(a)).row("ob_item")
    array = d.box(ob_item.target)
    capacity = explain(a).field("allocated").value
    assert capacity > 2  # append over-allocates: the array has spare slots
    assert array.kind == "part" and array.title == f"PyObject *[{capacity}] at {ob_item.target:#x}"
    assert Arrow(id(a), d.box(id(a)).rows.index(ob_item), array.addr, "buffer") in d.arrows
    assert [(r.name, r.offset, r.target) for r in array.rows] == [
        ("[0]", 0, id(a[0])), ("[1]", _PTR, id(a)), (f"[2:{capacity}]", 2 * _PTR, None)]
    assert array.rows[-1].value == f"{capacity - 2} spare slots (len 2, allocated {capacity})"
    assert [b.addr for b in d.boxes].count(id(a)) == 1
    assert "<svg" in d.to_svg()  # the back edge renders too


@pytest.mark.every_python
def test_depth_caps_the_walk():
    inner = (b"deep",)
    t = (inner,)
    assert [b.addr for b in diagram(t, depth=0).boxes] == [id(t)] and diagram(t, depth=0).arrows == ()
    one = diagram(t, depth=1)
    assert {b.addr for b in one.boxes} == {id(t), id(tuple), id(inner)}
    assert one.box(id(inner)).row("ob_item[0]").target is None  # b"deep" is two hops away
    two = diagram(t, depth=2)
    assert id(inner[0]) in {b.addr for b in two.boxes}
    assert max(b.depth for b in two.boxes) == 2


def test_max_items_and_max_boxes_cap_containers_and_the_picture():
    t = tuple(range(1000, 1020))
    d = diagram(t, max_items=3)
    rows = d.box(id(t)).rows
    assert [r.name for r in rows if r.name.startswith("ob_item")] == ["ob_item[0]", "ob_item[1]", "ob_item[2]"]
    assert rows[-1].name == "…" and rows[-1].value == "17 more"
    assert len(diagram(t, max_boxes=4).boxes) == 4


def test_dict_values_are_reached_through_an_entries_box():
    value = b"value"
    d = {"key": value}
    pic = diagram(d)
    entries = pic.box(pic.box(id(d)).row("ma_keys").target)
    assert entries.kind == "part" and [(r.name, r.target) for r in entries.rows] == [("'key'", id(value))]


@pytest.mark.every_python
@pytest.mark.parametrize("make", [lambda: b"Hello, world!", lambda: (b"Hello", 3.5, "x" * 50),
                                  lambda: [1.5, [2.5]], lambda: {"k": b"v"}])
def test_diagram_changes_no_count_and_reports_the_callers_count(make):
    obj = make()
    inner = list(obj.values()) if isinstance(obj, dict) else list(obj) if not isinstance(obj, bytes) else []
    before = [sys.getrefcount(x) for x in (obj, *inner)]
    d = diagram(obj)
    assert [sys.getrefcount(x) for x in (obj, *inner)] == before
    assert d.box(id(obj)).refcnt == refs.refcount(obj)
    for x in inner:
        if not refs.is_immortal(x):
            assert d.box(id(x)).refcnt == refs.refcount(x) - 1, x  # minus the reference `inner` holds


def test_the_diagram_keeps_nothing_alive():
    class Thing:
        pass

    thing = Thing()
    alive = weakref.ref(thing)
    d = diagram([thing, (thing,)])
    assert d.box(id(thing)).title.startswith("Thing at ")
    del thing
    gc.collect()
    assert alive() is None


def test_bad_caps_are_refused():
    with pytest.raises(ValueError, match="depth and max_items must be >= 0"):
        diagram(1, depth=-1)


def test_svg_of_a_hand_made_record_escapes_text_and_draws_each_arrow():
    hand = Diagram(1, (
        Box(1, "thing", "<thing> & co at 0x1", "object", 0, 0, 2,
            (Row(0, 8, "ob_refcnt", "2 references"), Row(8, 8, "ob_type", "<class 'thing'>", 2, "type"))),
        Box(2, "type", "type thing at 0x2", "type", 1, 1, 5, (Row(0, 8, "ob_refcnt", "5 references"),))),
        (Arrow(1, 1, 2, "type"),))
    svg = hand.to_svg()
    assert hand._repr_svg_() == svg
    root = ET.fromstring(svg)  # well-formed despite the < & in the text
    texts = _texts(svg)
    assert "<thing> & co at 0x1" in texts and "<class 'thing'>" in texts and "type thing at 0x2" in texts
    assert len(root.findall(f".//{_SVG}polygon")) == 1
    assert root.get("width").isdigit() and int(root.get("width")) > 200


def test_svg_names_every_field_and_target(tmp_path):
    b = b"Hello, world!"
    d = diagram((b, 1))
    d.save(tmp_path / "d.svg")
    texts = _texts((tmp_path / "d.svg").read_text(encoding="utf-8"))
    for name in ("ob_refcnt", "ob_type", "ob_size", "ob_shash", "ob_sval", "ob_item[0]", "ob_item[1]"):
        assert name in texts
    assert f"bytes at {id(b):#x}" in texts and f"type bytes at {id(bytes):#x}" in texts
    assert f"int at {id(1):#x}" in texts


def test_jupyter_displays_the_svg():
    formatters = pytest.importorskip("IPython.core.formatters", reason="needs IPython (pip install 'cpython-guts[test]')")
    d = diagram(b"ab")
    data, _ = formatters.DisplayFormatter().format(d)
    assert data["image/svg+xml"] == d.to_svg()


@pytest.mark.every_python
def test_a_lists_capacity_is_a_number_and_its_array_is_that_long():
    grown = []
    for i in range(5):
        grown.append(i * 1000)
    exact = [1, 2]
    for lst in (grown, exact):
        allocated = explain(lst).field("allocated").value
        assert allocated >= len(lst)
        d = diagram(lst)
        assert d.box(id(lst)).row("allocated").value == f"{allocated} (capacity of the item array)"
        array = d.box(d.box(id(lst)).row("ob_item").target)
        assert array.title.startswith(f"PyObject *[{allocated}] at ")
        spare = [r for r in array.rows if r.target is None and r.name.startswith("[")]
        assert len(spare) == (allocated > len(lst))
    assert explain(grown).field("allocated").value > len(grown)  # 5 appends leave spare slots on every CPython


def test_types_root_draws_only_the_roots_type_and_folds_the_rest():
    x = [1, "two", 3.0, [4]]
    full, root, none = (diagram(x, types=t) for t in ("all", "root", "none"))
    kinds = {name: [b.kind for b in d.boxes] for name, d in (("all", full), ("root", root), ("none", none))}
    assert kinds["all"].count("type") >= 5 and kinds["root"].count("type") == 1 and kinds["none"].count("type") == 0
    assert len(root.boxes) == len(full.boxes) - (kinds["all"].count("type") - 1)
    assert [a.dst for a in root.arrows if a.kind == "type"] == [id(list)]
    assert not [a for a in none.arrows if a.kind == "type"]
    for item in (x[0], x[1], x[2], x[3]):  # folded: the title names the type, the row keeps the pointer
        box = root.box(id(item))
        assert box.title == f"{type(item).__name__} at {id(item):#x}"
        assert box.row("ob_type").value == f"type {type(item).__name__} at {id(type(item)):#x}"
        assert box.row("ob_type").target is None
    assert none.box(id(x)).row("ob_type").value == f"type list at {id(list):#x}"
    with pytest.raises(ValueError, match=r"types must be one of \('root', 'all', 'none'\).*got 'some'"):
        diagram(x, types="some")


@pytest.mark.every_python
def test_shared_and_immortal_counts_are_explained():
    one, none, empty, plain = 1, None, (), 10 ** 30
    d = diagram([one, none, empty, plain])
    for obj, kind in ((one, "small int"), (none, "singleton"), (empty, "empty tuple")):
        box = d.box(id(obj))
        count = box.refcnt
        notes = _notes(box)
        if refs.is_immortal(obj):  # 3.12+
            assert box.row("ob_refcnt").value == f"immortal ({count:#x})"
            assert notes == [f"immortal (3.12+): shared {kind}, its count never changes"], notes
            continue
        assert _compat.VERSION < (3, 12) and notes[0] == f"shared {kind}: counted by everything that uses it"
        statics = [n for n in notes if n.startswith("3.11 static object")]
        if _compat.VERSION == (3, 11) and count >= STATIC_REFCNT_311:  # 1 on 3.11: "1000003117 references"
            assert statics == [f"3.11 static object: starts at 999,999,999, so {count - STATIC_REFCNT_311:,} are real"]
        else:
            assert statics == []
    if _compat.VERSION == (3, 11):
        assert d.box(id(one)).refcnt >= STATIC_REFCNT_311, "3.11 allocates small ints statically"
    assert _notes(d.box(id(plain))) == [] and _notes(d.box(d.root)) == []  # plain objects: no word needed
    # the note sits right under the count it explains, and has no offset: it is not memory
    rows = d.box(id(one)).rows
    assert rows[0].name == "ob_refcnt" and rows[1].name == NOTE and rows[1].offset is None


@pytest.mark.every_python
def test_equal_values_that_are_separate_objects_are_not_called_shared():
    class Int(int):
        pass

    one = Int(1)  # equal to the shared 1, but an object of its own
    fresh = bytes(bytearray(b"x"))  # a new object up to 3.14; 3.15 hands out the cached one
    d = diagram((one, fresh, int("1" * 30)))
    assert one == 1 and not [n for n in _notes(d.box(id(one))) if "shared" in n]
    assert not [n for n in _notes(d.box(d.box(d.root).row("ob_item[2]").target)) if "shared" in n]
    cached = fresh is bytes([120])
    assert bool([n for n in _notes(d.box(id(fresh))) if "shared one-byte bytes" in n]) == cached
    assert [n for n in _notes(diagram(bytes([120])).box(id(bytes([120])))) if "shared one-byte bytes" in n]


def test_repr_is_one_short_line_and_str_is_the_whole_text():
    big = [tuple(range(i, i + 8)) for i in range(10 ** 6, 10 ** 6 + 8)]  # no cached small ints
    d = diagram(big, depth=3, max_boxes=40)
    assert len(d.boxes) == 40
    text = str(d)
    assert len(text) > 3000 and text == d.to_text()
    assert repr(d) == (f"<Diagram of list at {id(big):#x}: 40 boxes, {len(d.arrows)} arrows; "
                       "print() it for the text, .to_svg() for the picture>")
    assert len(repr(d)) < 120 and "\n" not in repr(d)
    for b in d.boxes:  # every box and every row is in the text, each pointer names its target
        assert b.title in text.splitlines()
        for r in b.rows:
            assert r.value in text
    first = d.box(d.box(id(big)).row("ob_item").target).rows[0]
    assert f"[0]  {first.value}  -> tuple at {id(big[0]):#x}" in text


def test_plain_repl_and_ipython_show_the_short_repr():
    pretty = pytest.importorskip("IPython.lib.pretty", reason="needs IPython (pip install 'cpython-guts[test]')")
    d = diagram(list(range(300, 340)))
    assert pretty.pretty(d) == repr(d)


def test_a_plain_object_with_many_holders_says_where_to_look():
    x = object()
    holders = [x] * 10_000
    d = diagram(x, depth=0)
    assert d.box(id(x)).refcnt == 10_001
    assert _notes(d.box(id(x))) == ["held by many: pyguts.referrers(obj) lists the containers"]
    del holders[1:]
    assert _notes(diagram(x, depth=0).box(id(x))) == []
