"""Memory diagrams: an object's fields as boxes, its pointers as arrows to their targets, as SVG.

``diagram(obj)`` walks ``ob_type``, tuple and list items and dict values breadth-first (capped by
depth, items per container and total boxes, each object drawn once: cycles and shared objects get
one box and several arrows) and returns a :class:`Diagram` of plain records: addresses and text,
never the objects themselves. ``Diagram.to_svg()`` renders it; Jupyter shows it via ``_repr_svg_``.

>>> shared = b"hi"
>>> d = diagram((shared, shared))
>>> [a.dst == id(shared) for a in d.arrows if a.kind == "item"]
[True, True]
"""

from __future__ import annotations

import itertools
import reprlib
import sys
from collections import deque
from dataclasses import dataclass
from html import escape

from pyguts.objects import refs
from pyguts.errors import LayoutMismatchError
from pyguts.objects.explain import FieldInfo, explain
from pyguts.objects.structs import MODELS

#: Fields of a PyTypeObject shown in a type's box; the rest are summarised in one row.
TYPE_FIELDS = ("ob_refcnt", "ob_ref_local", "ob_ref_shared", "ob_type", "tp_name", "tp_basicsize", "tp_itemsize",
               "tp_flags", "tp_base")
#: Arrow colours, one per kind of pointer (tests look for them in the rendered pixels).
ARROW_COLOURS = {"type": "#c0392b", "item": "#1f5fd1", "buffer": "#179c45"}
#: Box fills by kind: an object, a type object, a separately allocated part (a list's item array).
BOX_FILLS = {"object": "#fff6d5", "type": "#e3ecfa", "part": "#e6f4e6"}
TITLE_FILL = "#d8cfb0"
_MAX_TEXT = 40  # characters of a value column before it is cut with "…"
_CHAR_W, _ROW_H, _TITLE_H, _PAD = 7.3, 18, 22, 8  # px; 12px DejaVu Sans Mono is 7.22 px per character
_COL_GAP, _BOX_GAP, _MARGIN = 110, 26, 20
_PTR = MODELS["PyObject"].ob_type.size  # bytes per pointer
_PREFER_VALUE = ("ob_sval", "data", "ob_digit", "ob_fval")  # tails whose value says more than a meaning
_SIZE_FIELDS = ("ob_size", "ma_used", "length")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 24
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 3


@dataclass(frozen=True)
class Row:
    """One line of a box: a field (offset and size in bytes, None for a synthetic row)."""

    offset: int | None
    size: int | None
    name: str
    value: str  # decoded value text
    target: int | None = None  # address of the box this pointer is drawn to
    kind: str | None = None  # arrow kind when target is set: a key of ARROW_COLOURS


@dataclass(frozen=True)
class Box:
    """One block of memory: an object, a type (summarised) or a part such as a list's item array."""

    addr: int
    type_name: str
    title: str
    kind: str  # "object", "type" or "part"
    depth: int  # pointer hops from the root object (parts share their owner's)
    column: int
    refcnt: int | None  # the count as the caller of diagram() sees it; None for parts
    rows: tuple[Row, ...]

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"box {self.title!r} has no row {name!r}; rows: {[r.name for r in self.rows]}")


@dataclass(frozen=True)
class Arrow:
    """A pointer drawn from row ``row`` of box ``src`` to box ``dst`` (both addresses)."""

    src: int
    row: int
    dst: int
    kind: str


@dataclass(frozen=True)
class Diagram:
    """Boxes and arrows of one object's memory; plain data, renders as SVG (Jupyter: ``_repr_svg_``)."""

    root: int
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]

    def box(self, addr: int) -> Box:
        for b in self.boxes:
            if b.addr == addr:
                return b
        raise KeyError(f"no box at {addr:#x}; boxes: {[b.title for b in self.boxes]}")

    def to_svg(self) -> str:
        return _svg(self)

    def _repr_svg_(self) -> str:
        return self.to_svg()

    def save(self, path) -> None:
        """Write the SVG to ``path``."""
        with open(path, "w", encoding="utf-8") as out:
            out.write(self.to_svg())


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 1] + "…"


def _value_text(f: FieldInfo) -> str:
    if f.value is None:
        return "NULL"
    if f.name in _PREFER_VALUE:
        return _cut(_short.repr(f.value))
    if f.name in _SIZE_FIELDS:
        return _cut(f"{f.value} ({f.meaning})" if f.meaning else str(f.value))
    if f.name == "tp_flags":
        return f"{f.value:#x}"
    return _cut(f.meaning or repr(f.value))


def _refcnt(obj: object, hold: int) -> tuple[int, str]:
    """(count as the caller sees it, text) given how many references the walk itself holds."""
    if refs.is_immortal(obj):
        count = refs.refcount(obj)
        return count, f"immortal ({count:#x})"
    count = refs.refcount(obj) - refs.held_by_call(sys._getframe(), obj) - hold
    return count, f"{count} reference{'s' if count != 1 else ''}"


class _Walk:
    """Breadth-first walk; holds each object only while it waits in the queue or is drawn."""

    def __init__(self, depth: int, max_items: int, max_boxes: int, holds: tuple[int, int]):
        self.depth, self.max_items, self.max_boxes, self.holds = depth, max_items, max_boxes, holds
        self.boxes: dict[int, Box] = {}
        self.arrows: list[Arrow] = []
        self.queue: deque = deque()
        self.planned: dict[int, int] = {}  # address -> order found: boxed or queued (the visited set)

    def full(self) -> bool:
        return len(self.planned) >= self.max_boxes

    def point(self, src: int, rows: list[Row], row: Row, target: object, depth: int, column: int) -> Row:
        """``row`` with an arrow to ``target``'s box when it is (or will be) drawn."""
        addr = id(target)
        if addr not in self.planned:
            if depth > self.depth or self.full():
                return row
            self.planned[addr] = len(self.planned)
            self.queue.append((target, depth, column))
        self.arrows.append(Arrow(src, len(rows), addr, row.kind))
        return Row(row.offset, row.size, row.name, row.value, addr, row.kind)

    def run(self, root: object) -> None:
        self.planned[id(root)] = 0
        self.queue.append((root, 0, 0))
        del root
        while self.queue:
            obj, depth, column = self.queue.popleft()
            self.draw(obj, depth, column)
            del obj

    def draw(self, obj: object, depth: int, column: int) -> None:
        count, count_text = _refcnt(obj, self.holds[depth > 0])
        addr, tp, is_type = id(obj), type(obj), isinstance(obj, type)
        rows: list[Row] = []
        try:
            fields = explain(obj).fields
        # e.g. a non-compact str subclass instance, or (past the layout table) a refused model
        except (TypeError, LayoutMismatchError) as exc:
            if depth == 0:
                raise
            fields = ()
            rows.append(Row(None, None, "?", _cut(f"explain() refused: {exc}")))
        parts: list[tuple] = []
        for f in fields:
            if is_type and f.name not in TYPE_FIELDS:
                continue
            row = Row(f.offset, f.size, f.name, count_text if f.name == "ob_refcnt" else _value_text(f))
            if f.name == "ob_type":
                row = self.point(addr, rows, Row(f.offset, f.size, f.name, repr(tp), None, "type"),
                                 tp, depth + 1, column + 1)
            elif f.name == "ob_item" and isinstance(obj, tuple):
                rows.extend(self.items(addr, rows, f.offset, obj, tuple.__getitem__, depth, column + 1))
                continue
            elif f.name == "ob_item" and isinstance(obj, list) and f.value and len(obj):
                parts.append((len(rows), f.value, "list"))
            elif f.name == "ma_keys" and isinstance(obj, dict) and f.value and len(obj):
                parts.append((len(rows), f.value, "dict"))
            rows.append(row)
        if is_type and fields:
            rows.append(Row(None, None, "…", f"{len(fields) - len(rows)} more fields"))
        kind = "type" if is_type else "object"
        name = obj.__name__ if is_type else tp.__name__
        title = f"type {name} at {addr:#x}" if is_type else f"{name} at {addr:#x}"
        for index, part_addr, what in parts:
            if depth >= self.depth or part_addr in self.planned or self.full():
                continue  # items would not be drawn, or shared keys already drawn for another dict
            self.planned[part_addr] = len(self.planned)
            self.arrows.append(Arrow(addr, index, part_addr, "buffer"))
            old = rows[index]
            rows[index] = Row(old.offset, old.size, old.name, old.value, part_addr, "buffer")
            self.part(obj, part_addr, what, depth, column + 1)
        self.boxes[addr] = Box(addr, tp.__name__, title, kind, depth, column, count, tuple(rows))

    def items(self, src: int, rows: list[Row], offset: int, obj, getitem, depth: int, column: int) -> list[Row]:
        """Rows ``ob_item[i]`` (offset from ``src``) pointing to each item, capped at max_items."""
        out: list[Row] = []
        n = len(obj)
        for i in range(min(n, self.max_items)):
            if i >= len(obj):  # an item's repr() shrank the container
                break
            item = getitem(obj, i)
            row = Row(offset + _PTR * i, _PTR, f"ob_item[{i}]" if rows is not None else f"[{i}]",
                      _cut(_short.repr(item)), None, "item")
            out.append(self.point(src, (rows or []) + out, row, item, depth + 1, column))
            del item
        if n > self.max_items:
            out.append(Row(None, None, "…", f"{n - self.max_items} more"))
        return out

    def part(self, owner, addr: int, what: str, depth: int, column: int) -> None:
        """The box of a separately allocated block: a list's item array or a dict's entries."""
        if what == "list":
            rows = self.items(addr, None, 0, owner, list.__getitem__, depth, column + 1)
            title = f"PyObject *[{len(owner)}] at {addr:#x}"
        else:
            rows = []
            for key, value in list(itertools.islice(dict.items(owner), self.max_items)):
                row = Row(None, None, _cut(_short.repr(key)), _cut(_short.repr(value)), None, "item")
                rows.append(self.point(addr, rows, row, value, depth + 1, column + 1))
                del key, value
            if len(owner) > self.max_items:
                rows.append(Row(None, None, "…", f"{len(owner) - self.max_items} more"))
            title = f"entries (keys at {addr:#x})"
        self.boxes[addr] = Box(addr, "", title, "part", depth, column, None, tuple(rows))


def diagram(obj: object, *, depth: int = 2, max_items: int = 8, max_boxes: int = 40) -> Diagram:
    """The memory of ``obj`` as boxes and arrows, following pointers up to ``depth`` hops.

    Each box holds its fields (offset, size, name, decoded value, via :func:`pyguts.explain`);
    ``ob_type`` points to a summary box of the type, tuple/list items and dict values to their
    objects' boxes. Containers show at most ``max_items`` items; at most ``max_boxes`` boxes.
    The diagram holds addresses and text only: it keeps nothing alive and changes no count.

    >>> d = diagram(b"Hello, world!")
    >>> [r.name for r in d.box(d.root).rows][-4:]
    ['ob_type', 'ob_size', 'ob_shash', 'ob_sval']
    >>> d.box(d.root).row("ob_type").target == id(bytes), d.box(id(bytes)).title.startswith("type bytes")
    (True, True)
    >>> d.to_svg().startswith("<svg")
    True
    """
    if depth < 0 or max_items < 0 or max_boxes < 1:
        raise ValueError(f"depth and max_items must be >= 0 and max_boxes >= 1, got depth={depth}, "
                         f"max_items={max_items}, max_boxes={max_boxes}; pass e.g. depth=2, max_items=8")
    # The root is also held by this call's argument, when the caller passed an owned reference.
    walk = _Walk(depth, max_items, max_boxes, (_HOLDS[0] + refs.held_by_call(sys._getframe(), obj), _HOLDS[1]))
    walk.run(obj)
    boxes = tuple(sorted(walk.boxes.values(), key=lambda b: walk.planned[b.addr]))
    return Diagram(id(obj), boxes, tuple(walk.arrows))


def _box_size(box: Box) -> tuple[int, int, int, int]:
    """(width, height, name column x, value column x) of a box, from its text lengths."""
    name_w = max([len(r.name) for r in box.rows] + [5])
    value_w = max([len(r.value) for r in box.rows] + [5])
    name_x, value_x = _PAD + 6 * _CHAR_W, _PAD + (8 + name_w) * _CHAR_W
    width = max(value_x + value_w * _CHAR_W, len(box.title) * _CHAR_W + 2 * _PAD) + _PAD
    return round(width), _TITLE_H + _ROW_H * len(box.rows) + _PAD // 2, round(name_x), round(value_x)


def _arrow_path(x1: float, y1: float, target: tuple, src_gap: float, dst_gap: float | None) -> tuple[str, str]:
    """(path, arrowhead polygon points). A forward arrow (``dst_gap`` None) curves into the left
    end of the target's title bar. Others (cycles, shared objects drawn earlier) run in the gap
    right of their column, along the top lane when the target is in an earlier column, and
    enter the right end of the target's title bar."""
    tx, ty, tw, _ = target
    y2 = ty + _TITLE_H / 2
    if dst_gap is None:
        x2 = tx
        bend = (x2 - x1) / 2
        path = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend - 10:.1f},{y2:.1f} {x2 - 10:.1f},{y2:.1f}"
        return path, f"{x2 - 11:.1f},{y2 - 5:.1f} {x2:.1f},{y2:.1f} {x2 - 11:.1f},{y2 + 5:.1f}"
    x2 = tx + tw
    lane = "" if dst_gap == src_gap else f" V{_MARGIN + 20} H{dst_gap:.1f}"
    path = f"M{x1:.1f},{y1:.1f} H{src_gap:.1f}{lane} V{y2:.1f} H{x2 + 10:.1f}"
    return path, f"{x2 + 11:.1f},{y2 - 5:.1f} {x2:.1f},{y2:.1f} {x2 + 11:.1f},{y2 + 5:.1f}"


def _svg(d: Diagram) -> str:
    sizes = {b.addr: _box_size(b) for b in d.boxes}
    column = {b.addr: b.column for b in d.boxes}
    columns: dict[int, list[Box]] = {}
    for b in d.boxes:
        columns.setdefault(b.column, []).append(b)
    place: dict[int, tuple[int, int, int, int]] = {}  # addr -> x, y, width, height
    x, gap = _MARGIN, {}  # gap: column -> x of the lane right of it, for arrows that go back
    for col in sorted(columns):
        y = _MARGIN + 40  # the lane above the boxes, for arrows back to an earlier column
        for b in columns[col]:
            w, h = sizes[b.addr][:2]
            place[b.addr] = (x, y, w, h)
            y += h + _BOX_GAP
        x += max(sizes[b.addr][0] for b in columns[col]) + _COL_GAP
        gap[col] = x - _COL_GAP + 16
    width = x - _COL_GAP + _MARGIN + 20
    height = max(y + h for (_, y, _, h) in place.values()) + _MARGIN
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
           f'font-size="12">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for b in d.boxes:
        bx, by, bw, bh = place[b.addr]
        _, _, name_x, value_x = sizes[b.addr]
        out.append(f'<g id="box-{b.addr:x}">')
        out.append(f'<rect x="{bx}" y="{by}" width="{bw}" height="{bh}" fill="{BOX_FILLS[b.kind]}" '
                   'stroke="#5b5b5b" stroke-width="1"/>')
        out.append(f'<rect x="{bx}" y="{by}" width="{bw}" height="{_TITLE_H}" fill="{TITLE_FILL}" '
                   'stroke="#5b5b5b" stroke-width="1"/>')
        out.append(f'<text x="{bx + _PAD}" y="{by + 15}" font-weight="bold">{escape(b.title)}</text>')
        for i, r in enumerate(b.rows):
            ry = by + _TITLE_H + _ROW_H * i + 13
            if r.offset is not None:
                out.append(f'<text x="{bx + name_x - 12}" y="{ry}" text-anchor="end" fill="#777777">'
                           f'{r.offset}</text>')
            out.append(f'<text x="{bx + name_x}" y="{ry}">{escape(r.name)}</text>')
            out.append(f'<text x="{bx + value_x}" y="{ry}">{escape(r.value)}</text>')
        out.append("</g>")
    for a in d.arrows:
        sx, sy, sw, _ = place[a.src]
        y1 = sy + _TITLE_H + _ROW_H * a.row + _ROW_H / 2
        target = place[a.dst]
        forward = column[a.dst] > column[a.src]
        curve, head = _arrow_path(sx + sw, y1, target, gap[column[a.src]], None if forward else gap[column[a.dst]])
        colour = ARROW_COLOURS[a.kind]
        out.append(f'<g class="arrow {a.kind}"><circle cx="{sx + sw}" cy="{y1:.1f}" r="3" fill="{colour}"/>'
                   f'<path d="{curve}" fill="none" stroke="{colour}" stroke-width="2"/>'
                   f'<polygon points="{head}" fill="{colour}"/></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _calibrate() -> tuple[int, int]:
    """References the walk itself holds on the root (beyond diagram()'s own argument) and on other
    objects while it reads their counts: measured, since they depend on the calling convention."""
    probe = object()
    holder = [probe]  # the probe: this local and the list; the holder: this local
    d = diagram(holder, depth=1)
    return d.box(id(holder)).refcnt - 1, d.box(id(probe)).refcnt - 2


_HOLDS = (0, 0)
_HOLDS = _calibrate()


__all__ = ["ARROW_COLOURS", "BOX_FILLS", "TITLE_FILL", "TYPE_FIELDS", "Arrow", "Box", "Diagram", "Row", "diagram"]
