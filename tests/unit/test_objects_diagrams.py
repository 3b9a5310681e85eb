"""pyguts.objects.diagrams: the records (boxes, rows, arrows) and the SVG text, without rendering pixels."""

from __future__ import annotations

import gc
import sys
import weakref
import xml.etree.ElementTree as ET

import pytest

from pyguts.objects import refs, structs
from pyguts.objects.diagrams import TYPE_FIELDS, Arrow, Box, Diagram, Row, diagram

_PTR = structs.PyObject.ob_type.size
_SVG = "{http://www.w3.org/2000/svg}"


def _texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(_SVG + "text")]


def _arrows_from(d: Diagram, src: int, kind: str | None = None) -> list[Arrow]:
    return [a for a in d.arrows if a.src == src and (kind is None or a.kind == kind)]


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
    assert [r.name for r in tbox.rows][:-1] == [n for n in structs.PyTypeObject._c_paths_ if n in TYPE_FIELDS]
    assert tbox.row("tp_name").value == "'bytes'" and tbox.row("tp_basicsize").value == str(bytes.__basicsize__)
    assert tbox.rows[-1].name == "…" and tbox.rows[-1].value.endswith("more fields")


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
    assert d.box(id(first)).depth == 1 and d.box(id(first)).row("ob_type").target == id(bytes)


@pytest.mark.every_python
def test_list_items_hang_off_the_item_array_and_a_self_containing_list_draws_one_box():
    a = [b"x"]
    a.append(a)
    d = diagram(a)
    ob_item = d.box(id(a)).row("ob_item")
    array = d.box(ob_item.target)
    assert array.kind == "part" and array.title.startswith("PyObject *[2] at ")
    assert Arrow(id(a), d.box(id(a)).rows.index(ob_item), array.addr, "buffer") in d.arrows
    assert [(r.name, r.offset, r.target) for r in array.rows] == [("[0]", 0, id(a[0])), ("[1]", _PTR, id(a))]
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
    formatters = pytest.importorskip("IPython.core.formatters", reason="needs IPython (pip install pyguts[test])")
    d = diagram(b"ab")
    data, _ = formatters.DisplayFormatter().format(d)
    assert data["image/svg+xml"] == d.to_svg()
