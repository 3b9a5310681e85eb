"""The teaching view: every field of an object's memory, with offset, raw bytes and meaning.

>>> e = explain(b"Hello, world!")
>>> [(f.name, f.offset) for f in e.fields][-4:]
[('ob_type', 8), ('ob_size', 16), ('ob_shash', 24), ('ob_sval', 32)]
>>> e.field("ob_type").meaning
"<class 'bytes'>"
"""

from __future__ import annotations

import ctypes
import html
import sys
from dataclasses import dataclass

from pyguts import _compat
from pyguts.objects import refs
from pyguts.objects.memory import ndigits, nbytes_of, payload
from pyguts.objects.structs import STATE_BITS, model_for

#: Longest repr shown in a meaning column before it is cut with "…".
_MAX_REPR = 60
#: Raw bytes shown per field in the text table.
_MAX_RAW = 8
_HASH_FIELDS = ("ob_shash", "hash", "ob_hash")
_LEN_OWNERS = (bytes, bytearray, tuple, list)
_TYPE_NUMBERS = ("tp_basicsize", "tp_itemsize", "tp_vectorcall_offset", "tp_flags", "tp_weaklistoffset",
                 "tp_dictoffset", "tp_version_tag", "tp_watched", "tp_versions_used")


@dataclass(frozen=True)
class FieldInfo:
    """One field of an object's memory."""

    name: str
    offset: int  # bytes from id(obj)
    size: int  # bytes
    raw: bytes
    value: object
    meaning: str


@dataclass(frozen=True)
class Explanation:
    """Every field of one object, as plain data; prints as a table, renders as HTML in Jupyter."""

    type_name: str
    model: str
    header: str
    addr: int
    nbytes: int | None  # None: a variable-size type pyguts has no model for (see nbytes_of)
    fields: tuple[FieldInfo, ...]

    def field(self, name: str) -> FieldInfo:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.model} has no field {name!r}; fields: {[f.name for f in self.fields]}")

    def _size(self) -> str:
        return "size unknown" if self.nbytes is None else f"{self.nbytes} bytes"

    def _rows(self) -> list[tuple[str, str, str, str, str, str]]:
        return [(str(f.offset), str(f.size), f.name,
                 f.raw[:_MAX_RAW].hex(" ") + (" …" if len(f.raw) > _MAX_RAW else ""),
                 _cut(repr(f.value)), f.meaning) for f in self.fields]

    def __str__(self) -> str:
        head = ("offset", "size", "field", "raw bytes", "value", "meaning")
        rows = [head, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [f"{self.type_name} object at {self.addr:#x}: {self._size()}, "
                 f"model {self.model} ({self.header})"]
        for r in rows:
            lines.append("  ".join(c.rjust(w) if i < 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                         + "  " + r[5])
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self._rows())
        return (f"<p><b>{html.escape(self.type_name)}</b> object at <code>{self.addr:#x}</code>: "
                f"{self._size()}, model <code>{self.model}</code> ({html.escape(self.header)})</p>"
                "<table><tr><th>offset</th><th>size</th><th>field</th><th>raw bytes</th><th>value</th>"
                f"<th>meaning</th></tr>{cells}</table>")


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR - 1] + "…"


def _scalar(model: type, name: str, addr: int):
    """(offset, size, value) of a model field; arrays give a list."""
    field = getattr(model, name)
    value = getattr(model.from_address(addr), name)
    if isinstance(value, ctypes.Array):
        value = [tuple(getattr(v, f) for f, _ in v._fields_) if isinstance(v, ctypes.Structure) else v
                 for v in value]
    return field.offset, field.size, value


def _pointer_meaning(value) -> str:
    return "NULL" if not value else f"pointer {value:#x}"


def _meaning(obj: object, name: str, value, caller_refs: int) -> str:
    if name in ("ob_refcnt", "ob_ref_local"):
        if refs.is_immortal(obj):
            return "immortal: CPython never changes this count"
        if name == "ob_refcnt":
            noun = "reference" if caller_refs == 1 else "references"
            return f"{caller_refs} {noun} (+{value - caller_refs} held by explain() itself)"
    if name == "ob_type":
        return repr(type(obj))
    if name == "ob_size":
        if isinstance(obj, int):
            return f"sign × number of {_compat.DIGIT_BITS}-bit digits ({ndigits(obj)})"
        if isinstance(obj, _LEN_OWNERS):
            return f"len = {len(obj)}"
        if isinstance(obj, type):
            return "number of items"
        return f"number of items, if {type(obj).__name__} objects keep one here (pyguts has no model of them)"
    if name in _HASH_FIELDS and isinstance(value, int):
        return "not computed yet (-1)" if value == -1 else f"cached hash: {value}"
    if name == "lv_tag":
        sign = {0: "positive", 1: "zero", 2: "negative"}.get(value & 3, "?")
        return f"ndigits = {value >> 3}, sign = {sign} (ndigits << 3 | sign)"
    if name == "state":
        return ", ".join(f"{n}={bits.get(value)}" for n, bits in STATE_BITS.items())
    if name in ("length", "ma_used", "used"):
        return f"len = {len(obj)}"
    if name == "tp_name":
        return repr(ctypes.string_at(value).decode()) if value else "NULL"
    if name == "tp_base":
        return repr(obj.__base__) if isinstance(obj, type) and obj.__base__ is not None else "NULL"
    if name == "ob_fval":
        return repr(obj)
    if name == "allocated":
        return "capacity of the item array"
    if isinstance(value, int) and name in ("ob_item", "ob_bytes", "ob_start", "ma_keys", "ma_values", "table",
                                           "utf8", "wstr", "tp_dict", "tp_mro", "tp_bases"):
        return _pointer_meaning(value)
    if name.startswith("tp_") and (value is None or isinstance(value, int)) and name not in _TYPE_NUMBERS:
        return "NULL" if not value else f"C pointer {value:#x}"
    return ""


def _tail(obj: object, model: type, addr: int) -> FieldInfo | None:
    """The variable-length part that a model declares as a one-element array, at its real size."""
    if isinstance(obj, bytes):
        offset = model.ob_sval.offset
        return FieldInfo("ob_sval", offset, len(obj) + 1, ctypes.string_at(addr + offset, len(obj) + 1), obj,
                         f"{len(obj)} bytes of data and a trailing NUL")
    if isinstance(obj, tuple):
        offset = model.ob_item.offset
        items = payload(obj).tolist()
        return FieldInfo("ob_item", offset, 8 * len(items), ctypes.string_at(addr + offset, 8 * len(items)), items,
                         "items: " + ", ".join(_cut(repr(x)) for x in obj[:4]) + (", …" if len(obj) > 4 else ""))
    if isinstance(obj, int):
        offset, digits = model.ob_digit.offset, payload(obj).tolist()
        nbytes = _compat.DIGIT_SIZE * len(digits)
        return FieldInfo("ob_digit", offset, nbytes, ctypes.string_at(addr + offset, nbytes), digits,
                         f"|value| = Σ digit[i]·2**({_compat.DIGIT_BITS}·i)")
    if isinstance(obj, str):
        offset = ctypes.sizeof(model)
        try:
            kind = payload(obj).itemsize
        except TypeError:  # a non-compact (subclass) str keeps its data elsewhere
            return None
        nbytes = (len(obj) + 1) * kind
        return FieldInfo("data", offset, nbytes, ctypes.string_at(addr + offset, nbytes), obj,
                         f"{len(obj)} characters, {kind} byte(s) each, then a NUL")
    return None


def explain(obj: object) -> Explanation:
    """Every field of ``obj``'s memory: name, offset, size, raw bytes, decoded value, meaning."""
    caller_refs = refs.refcount(obj) - refs.held_by_call(sys._getframe(), obj)
    model, addr = model_for(obj), id(obj)
    tail = _tail(obj, model, addr)
    fields = []
    for name in model._c_paths_:
        if tail is not None and name == tail.name:
            continue
        offset, size, value = _scalar(model, name, addr)
        fields.append(FieldInfo(name, offset, size, ctypes.string_at(addr + offset, size), value,
                                _meaning(obj, name, value, caller_refs)))
    if tail is not None:
        fields.append(tail)
    try:
        nbytes = nbytes_of(obj)
    except TypeError:  # a variable-size type with no model: its size is not known (nbytes_of says why)
        nbytes = None
    return Explanation(type(obj).__name__, model.__name__, model._header_, addr, nbytes, tuple(fields))


__all__ = ["Explanation", "FieldInfo", "explain"]
