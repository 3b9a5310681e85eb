"""Memory diagrams: an object's fields as boxes, its pointers as arrows to their targets, as SVG.

``diagram(obj)`` walks tuple and list items, dict values and ``ob_type`` breadth-first (capped by
depth, items per container and total boxes, each object drawn once: cycles and shared objects get
one box and several arrows) and returns a :class:`Diagram` of plain records: addresses and text,
never the objects themselves. ``Diagram.to_svg()`` renders it; Jupyter shows it via ``_repr_svg_``;
``print(d)`` writes it as text, while ``repr(d)`` stays one line.

Type boxes: by default only the root object's type gets a box (``types="root"``): the lesson that
``ob_type`` is a pointer to a type object is drawn once, and the other objects' types, which their
titles name already ("int at 0x…"), stay text in their ``ob_type`` rows instead of a box each with a
long arrow. ``types="all"`` draws every type, ``types="none"`` none.

Counts that need a word get one under ``ob_refcnt``: immortal objects (3.12+), interpreter-wide
shared objects (small ints, None, one-character strings, ...) and 3.11's static objects, whose count
starts near a billion.

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

from pyguts import _compat
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
_SIZE_FIELDS = ("ob_size", "ma_used", "length", "allocated")
#: ``types=`` values: which objects' ``ob_type`` gets a box and an arrow.
TYPE_CHOICES = ("root", "all", "none")
#: Name of a row that explains the count above it (no offset: it is not memory).
NOTE = "↳"
#: 3.11 gives statically allocated objects (small ints, one-character strings, the empty tuple ...)
#: this count at start-up, so that they are never freed (Include/internal/pycore_object.h,
#: _PyObject_IMMORTAL_INIT); 3.12 made them immortal instead (PEP 683).
STATIC_REFCNT_311 = 999_999_999
#: A count from which a plain object's count gets a note saying where to look.
_MANY_REFS = 10_000
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 24
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 3
_SINGLETONS = (None, True, False, Ellipsis, NotImplemented)


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

    def to_text(self) -> str:
        """Every box as lines of text: its title, then offset, field, value and where a pointer leads.

        >>> print(diagram(b"hi", depth=0).to_text().splitlines()[0].split(" at ")[0])
        bytes
        """
        titles = {b.addr: b.title for b in self.boxes}
        lines: list[str] = []
        for b in self.boxes:
            lines.append(b.title)
            width = max([len(r.name) for r in b.rows] + [0])
            for r in b.rows:
                offset = "" if r.offset is None else str(r.offset)
                to = f"  -> {titles[r.target]}" if r.target in titles else ""
                lines.append(f"  {offset:>4}  {r.name:<{width}}  {r.value}{to}".rstrip())
            lines.append("")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        """One line, whatever the size: a plain REPL must not print every box (``print(d)`` does)."""
        root = next((b.title for b in self.boxes if b.addr == self.root), f"{self.root:#x}")
        return (f"<Diagram of {root}: {len(self.boxes)} boxes, {len(self.arrows)} arrows; "
                "print() it for the text, .to_svg() for the picture>")

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


def _refcnt(obj: object, hold: int) -> tuple[int, str, list[str]]:
    """(count as the caller sees it, text, notes that explain it) given how many references the walk holds."""
    if refs.is_immortal(obj):
        count = refs.refcount(obj)
        return count, f"immortal ({count:#x})", _count_notes(obj, count, True)
    count = refs.refcount(obj) - refs.held_by_call(sys._getframe(), obj) - hold
    return count, f"{count} reference{'s' if count != 1 else ''}", _count_notes(obj, count, False)


def _shared_as(obj: object) -> str | None:
    """The kind of interpreter-wide shared object ``obj`` is (one object that every user of the value
    gets: "small int", "singleton", ...), or None. Checked by identity with the cached object, since
    an equal value can be a separate object (an int subclass, a str built in place)."""
    tp = type(obj)
    if any(obj is s for s in _SINGLETONS):
        return "singleton"
    if tp is int and obj in _compat.SMALL_INTS and obj is obj + 0:  # arithmetic returns the cached one
        return "small int"
    if tp is str and len(obj) == 1 and ord(obj) < 256 and obj is chr(ord(obj)):
        return "one-character str"
    if tp is bytes and len(obj) == 1 and obj is bytes([obj[0]]):  # (bytes((n,)) makes a new one)
        return "one-byte bytes"
    if tp in (str, bytes, tuple) and len(obj) == 0 and obj is tp():
        return f"empty {tp.__name__}"
    return None


def _count_notes(obj: object, count: int, immortal: bool) -> list[str]:
    """Why a count is what it is, where a reader would ask: immortal, shared, 3.11 static, many holders."""
    shared = _shared_as(obj)
    if immortal:
        return [f"immortal (3.12+): {f'shared {shared}, ' if shared else ''}its count never changes"]
    notes = [f"shared {shared}: counted by everything that uses it"] if shared else []
    if _compat.VERSION == (3, 11) and count >= STATIC_REFCNT_311:
        notes.append(f"3.11 static object: starts at {STATIC_REFCNT_311:,}, so {count - STATIC_REFCNT_311:,} "
                     "are real")
    elif not notes and count >= _MANY_REFS:
        notes.append("held by many: pyguts.referrers(obj) lists the containers")
    return notes


class _Walk:
    """Breadth-first walk; holds each object only while it waits in the queue or is drawn."""

    def __init__(self, depth: int, max_items: int, max_boxes: int, holds: tuple[int, int], types: str):
        self.depth, self.max_items, self.max_boxes, self.holds = depth, max_items, max_boxes, holds
        self.types = types
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
        count, count_text, notes = _refcnt(obj, self.holds[depth > 0])
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
            if f.name == "ob_type" and (self.types == "all" or self.types == "root" and depth == 0):
                row = self.point(addr, rows, Row(f.offset, f.size, f.name, repr(tp), None, "type"),
                                 tp, depth + 1, column + 1)
            elif f.name == "ob_type":  # folded: the title names the type; the row keeps the pointer
                row = Row(f.offset, f.size, f.name, _cut(f"type {tp.__name__} at {id(tp):#x}"))
            elif f.name == "ob_item" and isinstance(obj, tuple):
                rows.extend(self.items(addr, rows, f.offset, obj, tuple.__getitem__, depth, column + 1))
                continue
            elif f.name == "ob_item" and isinstance(obj, list) and f.value and len(obj):
                parts.append((len(rows), f.value, "list"))
            elif f.name == "allocated" and parts and parts[-1][2] == "list":
                parts[-1] = (*parts[-1][:3], f.value)  # the item array's capacity, for its box
            elif f.name == "ma_keys" and isinstance(obj, dict) and f.value and len(obj):
                parts.append((len(rows), f.value, "dict"))
            rows.append(row)
            if f.name in ("ob_refcnt", "ob_ref_shared"):
                rows.extend(Row(None, None, NOTE, note) for note in notes)
                notes = []
        if is_type and fields:
            shown = sum(r.offset is not None for r in rows)
            rows.append(Row(None, None, "…", f"{len(fields) - shown} more fields"))
        kind = "type" if is_type else "object"
        name = obj.__name__ if is_type else tp.__name__
        title = f"type {name} at {addr:#x}" if is_type else f"{name} at {addr:#x}"
        for index, part_addr, what, *capacity in parts:
            if depth >= self.depth or part_addr in self.planned or self.full():
                continue  # items would not be drawn, or shared keys already drawn for another dict
            self.planned[part_addr] = len(self.planned)
            self.arrows.append(Arrow(addr, index, part_addr, "buffer"))
            old = rows[index]
            rows[index] = Row(old.offset, old.size, old.name, old.value, part_addr, "buffer")
            self.part(obj, part_addr, what, depth, column + 1, *capacity)
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

    def part(self, owner, addr: int, what: str, depth: int, column: int, capacity: int | None = None) -> None:
        """The box of a separately allocated block: a list's item array (``capacity`` slots: the
        list's ``allocated``, of which ``len`` are used) or a dict's entries."""
        if what == "list":
            n = len(owner)
            rows = self.items(addr, None, 0, owner, list.__getitem__, depth, column + 1)
            capacity = n if capacity is None else capacity
            if capacity > n:  # over-allocated so that appends are amortised O(1)
                rows.append(Row(_PTR * n, _PTR * (capacity - n), f"[{n}:{capacity}]",
                                f"{capacity - n} spare slot{'s' if capacity - n != 1 else ''} (len {n}, "
                                f"allocated {capacity})"))
            title = f"PyObject *[{capacity}] at {addr:#x}"
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


def diagram(obj: object, *, depth: int = 2, max_items: int = 8, max_boxes: int = 40,
            types: str = "root") -> Diagram:
    """The memory of ``obj`` as boxes and arrows, following pointers up to ``depth`` hops.

    Each box holds its fields (offset, size, name, decoded value, via :func:`pyguts.explain`);
    tuple/list items and dict values point to their objects' boxes, ``ob_type`` to a summary box
    of the type: the root object's only by default, every object's with ``types="all"``, none with
    ``types="none"`` (a folded type is named in the object's title and its ``ob_type`` row).
    Containers show at most ``max_items`` items; at most ``max_boxes`` boxes. The diagram holds
    addresses and text only: it keeps nothing alive and changes no count.

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
    if types not in TYPE_CHOICES:
        raise ValueError(f"types must be one of {TYPE_CHOICES} (which objects' types get a box), got {types!r}")
    # The root is also held by this call's argument, when the caller passed an owned reference.
    walk = _Walk(depth, max_items, max_boxes, (_HOLDS[0] + refs.held_by_call(sys._getframe(), obj), _HOLDS[1]),
                 types)
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


__all__ = ["ARROW_COLOURS", "BOX_FILLS", "NOTE", "STATIC_REFCNT_311", "TITLE_FILL", "TYPE_CHOICES", "TYPE_FIELDS",
           "Arrow", "Box", "Diagram", "Row", "diagram"]
