"""Facts the running interpreter states about its own objects, read back through candidate models.

Each fact reads one field of a model at a live object (or compares a field's offset or a model's
size) and compares it with what Python itself says: ``len``, ``hash``, ``id``, ``__basicsize__``,
``__sizeof__``, the address of an exported C function. Reads stay inside the object (its
``__sizeof__``); no pointer read from memory is followed.

:func:`verify` is used twice by :mod:`pyguts.objects.structs`: inside the layout table no fact may be wrong
(else LayoutMismatchError); past the table they decide which models are enabled: those whose every
field, and size, a fact or one of CPython's debug offsets confirms. A field no fact reads is still
confirmed when it alone fills the gap between two confirmed neighbours.

>>> from pyguts.objects import structs
>>> verify(structs.MODELS).wrong
[]
"""

from __future__ import annotations

import builtins
import ctypes
import gc
import sys
import threading
import weakref
from dataclasses import dataclass, field

from pyguts import _compat

#: Stands for "sizeof(model)" among a model's verified fields.
from pyguts.objects import layouts
SIZE = "sizeof"
_OUTSIDE = "<past the end of the object>"

# A private handle for the C functions whose addresses the type slots hold.
_api = ctypes.PyDLL(ctypes.pythonapi._name, handle=ctypes.pythonapi._handle)

_BUILD = "freethreaded" if _compat.GIL_DISABLED else "default"

#: Models whose fields continue another model's (PyFrozenDictObject embeds PyDictObject, ...).
_EMBEDS = {"PyVarObject": "PyObject", "PyFrozenDictObject": "PyDictObject",
           "PyCompactUnicodeObject": "PyASCIIObject"}


@dataclass
class Verdict:
    """Per model, the fields (and SIZE) confirmed; every fact that was wrong, as text."""

    confirmed: dict[str, set] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)

    def unconfirmed(self, model: type) -> list[str]:
        names = [name for name in model._c_paths_ if name not in self.confirmed.get(model.__name__, ())]
        return names + ([SIZE] if SIZE not in self.confirmed.get(model.__name__, ()) else [])


class _Facts:
    def __init__(self, models: dict[str, type]):
        self.models = models
        self.good: dict[str, set] = {name: set() for name in models}
        self.bad: dict[str, set] = {name: set() for name in models}
        self.wrong: list[str] = []

    def _has(self, model: str, name: str) -> bool:
        return model in self.models and (name == SIZE or name in self.models[model]._c_paths_)

    def _judge(self, model: str, name: str, ok: bool, text: str) -> None:
        (self.good if ok else self.bad)[model].add(name)
        if not ok:
            self.wrong.append(f"{model}.{name}: {text}")

    def read(self, model: str, name: str, obj: object):
        """The field read at ``id(obj)`` (a NULL pointer reads as None), or _OUTSIDE when it would
        reach past the object."""
        desc = getattr(self.models[model], name)
        if desc.offset + desc.size > type(obj).__sizeof__(obj):
            return _OUTSIDE
        value = getattr(self.models[model].from_address(id(obj)), name)
        return tuple(value) if isinstance(value, ctypes.Array) else value

    def eq(self, model: str, name: str, obj: object, want, what: str) -> None:
        """The field of ``obj`` equals ``want`` (or satisfies it, when callable)."""
        if self._has(model, name):
            got = self.read(model, name, obj)
            ok = got is not _OUTSIDE and (want(got) if callable(want) else got == want)
            self._judge(model, name, ok, f"{what}: read {got!r}")

    def grows(self, model: str, name: str, obj: object, grow, what: str) -> None:
        """The field of ``obj`` grows by exactly one when ``grow()`` runs."""
        if self._has(model, name):
            before = self.read(model, name, obj)
            grow()
            after = self.read(model, name, obj)
            ok = _OUTSIDE not in (before, after) and after - before == 1
            self._judge(model, name, ok, f"{what}: read {before!r}, then {after!r}")

    def raw(self, model: str, name: str, obj: object, want: bytes, what: str) -> None:
        """The bytes from the field's offset on equal ``want`` (an inline array's items)."""
        if self._has(model, name):
            offset = getattr(self.models[model], name).offset
            ok = offset + len(want) <= type(obj).__sizeof__(obj)
            got = ctypes.string_at(id(obj) + offset, len(want)) if ok else None
            self._judge(model, name, got == want, f"{what}: read {got!r}")

    def offset(self, model: str, name: str, want: int, what: str) -> None:
        if self._has(model, name):
            got = getattr(self.models[model], name).offset
            self._judge(model, name, got == want, f"offset {got}, but {what} is {want}")

    def size(self, model: str, want: int, what: str) -> None:
        if model in self.models:
            got = ctypes.sizeof(self.models[model])
            self._judge(model, SIZE, got == want, f"{got} bytes, but {what} is {want}")


def _pointers(*objs) -> bytes:
    return b"".join(id(o).to_bytes(_compat.POINTER_SIZE, sys.byteorder) for o in objs)


def _c_function(name: str) -> int:
    return ctypes.cast(getattr(_api, name), ctypes.c_void_p).value


def _header_facts(f: _Facts) -> None:
    obj = object()
    holders = [obj]
    f.eq("PyObject", "ob_type", obj, id(object), "id(object)")
    f.size("PyObject", object.__basicsize__, "object.__basicsize__")
    if _compat.GIL_DISABLED:
        f.grows("PyObject", "ob_ref_local", obj, lambda: holders.append(obj), "one more reference")
        f.eq("PyObject", "ob_ref_shared", obj, 0, "shared references of an unshared object")
        f.eq("PyObject", "ob_tid", obj, threading.get_ident(), "threading.get_ident() of its owner")
        f.eq("PyObject", "ob_mutex", obj, 0, "an unlocked object's mutex")
        f.eq("PyObject", "ob_gc_bits", holders, lambda v: v & 1, "a tracked list's _PyGC_BITS_TRACKED")
        f.eq("PyObject", "ob_flags", obj, 0, "a new object's flags")
        f.eq("PyObject", "_padding", obj, 0, "padding")
    else:
        f.grows("PyObject", "ob_refcnt", obj, lambda: holders.append(obj), "one more reference")
        f.eq("PyObject", "ob_overflow", obj, 0, "a small count's overflow")
        f.eq("PyObject", "ob_flags", obj, 0, "a new object's flags")
        f.eq("PyObject", "ob_flags", None, lambda v: v & 1, "None's _Py_IMMORTAL_FLAGS")
    if _compat.VERSION >= (3, 12):   # immortal objects: None's count must read as immortal by the rule
        rule = layouts.refcount_rule_for(min(_compat.VERSION, layouts.NEWEST), _BUILD)
        count = "ob_ref_local" if _compat.GIL_DISABLED else "ob_refcnt"
        f.eq("PyObject", count, None, rule.is_immortal, f"None is immortal ({rule.header} rule {rule.immortal!r})")
    t = tuple([obj] * 5)
    f.eq("PyVarObject", "ob_size", t, 5, "len of a 5-tuple")
    f.size("PyVarObject", object.__basicsize__ + _compat.POINTER_SIZE, "PyObject plus ob_size")


class _Instance:
    def __init__(self):
        self.x, self.y = 1, 2


def _value_facts(f: _Facts) -> None:
    b = bytes(bytearray(b"pyguts layout check"))
    f.eq("PyBytesObject", "ob_size", b, len(b), "len")
    f.eq("PyBytesObject", "ob_shash", b, -1, "an unhashed bytes' cached hash")
    f.eq("PyBytesObject", "ob_shash", b, hash(b), "hash() once computed")
    f.raw("PyBytesObject", "ob_sval", b, b + b"\0", "the bytes and a NUL")
    f.offset("PyBytesObject", "ob_sval", bytes.__basicsize__ - 1, "bytes.__basicsize__ - 1")

    ba = bytearray(b"0123456789")
    f.eq("PyByteArrayObject", "ob_size", ba, len(ba), "len")
    # 3.15: the buffer is a bytes object, and __alloc__() counts its header too.
    header = bytes.__basicsize__ if _compat.VERSION >= (3, 15) else 0
    f.eq("PyByteArrayObject", "ob_alloc", ba, ba.__alloc__() - header, "__alloc__() (3.15+: less a bytes header)")
    f.eq("PyByteArrayObject", "ob_exports", ba, 0, "exports with no buffer taken")
    with memoryview(ba):
        f.eq("PyByteArrayObject", "ob_exports", ba, 1, "exports while one memoryview lives")
    start = ctypes.addressof(ctypes.c_char.from_buffer(ba))
    f.eq("PyByteArrayObject", "ob_start", ba, start, "the buffer's address")
    f.eq("PyByteArrayObject", "ob_bytes", ba, start, "the buffer's address (nothing deleted at the front)")
    if "PyBytesObject" in f.models:
        f.eq("PyByteArrayObject", "ob_bytes_object", ba, start - f.models["PyBytesObject"].ob_sval.offset,
             "the bytes object whose ob_sval is the buffer")
    f.size("PyByteArrayObject", bytearray.__basicsize__, "bytearray.__basicsize__")

    n = (1 << (2 * _compat.DIGIT_BITS)) + 5   # three digits: 5, 0, 1
    digits = (5, 0, 1)
    if _compat.VERSION >= (3, 12):
        f.eq("PyLongObject", "lv_tag", n, len(digits) << 3, "ndigits << 3 for a positive int")
        f.eq("PyLongObject", "lv_tag", -n, len(digits) << 3 | 2, "ndigits << 3 | 2 for a negative int")
    else:
        f.eq("PyLongObject", "ob_size", -n, -len(digits), "-ndigits for a negative int")
    f.raw("PyLongObject", "ob_digit", n, b"".join(d.to_bytes(_compat.DIGIT_SIZE, sys.byteorder) for d in digits),
          "the digits")
    f.offset("PyLongObject", "ob_digit", int.__basicsize__, "int.__basicsize__")

    x = float("2.5")
    f.eq("PyFloatObject", "ob_fval", x, 2.5, "the value")
    f.size("PyFloatObject", float.__basicsize__, "float.__basicsize__")
    z = complex(1.5, -2.0)
    f.eq("PyComplexObject", "real", z, 1.5, "the real part")
    f.eq("PyComplexObject", "imag", z, -2.0, "the imaginary part")
    f.size("PyComplexObject", complex.__basicsize__, "complex.__basicsize__")

    items = [object(), object(), object()]
    t = tuple(items)
    f.eq("PyTupleObject", "ob_size", t, 3, "len")
    f.raw("PyTupleObject", "ob_item", t, _pointers(*items), "the items' ids")
    f.offset("PyTupleObject", "ob_item", tuple.__basicsize__, "tuple.__basicsize__")
    f.eq("PyTupleObject", "ob_hash", t, -1, "an unhashed tuple's cached hash")
    f.eq("PyTupleObject", "ob_hash", t, hash(t), "hash() once computed")

    lst = []
    for item in items:
        lst.append(item)
    f.eq("PyListObject", "ob_size", lst, 3, "len")
    f.eq("PyListObject", "allocated", lst, (lst.__sizeof__() - list.__basicsize__) // _compat.POINTER_SIZE,
         "capacity from __sizeof__")
    f.size("PyListObject", list.__basicsize__, "list.__basicsize__")

    d = dict.fromkeys(items)
    f.eq("PyDictObject", "ma_used", d, 3, "len")
    f.eq("PyDictObject", "ma_values", d, None, "a plain dict's split values (none)")
    f.eq("PyDictObject", "_ma_watcher_tag", d, 0, "an unwatched dict's watcher bits")
    # Two instances' __dict__ share their class's keys (and have values of their own); a plain
    # dict has keys of its own.
    first, second = _Instance(), _Instance()
    shared = [f.read("PyDictObject", "ma_keys", o.__dict__) if f._has("PyDictObject", "ma_keys") else None
              for o in (first, second)]
    f.eq("PyDictObject", "ma_keys", d, lambda keys: keys not in shared and shared[0] == shared[1] and
         isinstance(keys, int) and isinstance(shared[0], int), "the same keys for two instances' __dict__ only")
    f.eq("PyDictObject", "ma_values", first.__dict__, lambda values: values is not None, "an instance's split values")
    f.size("PyDictObject", dict.__basicsize__, "dict.__basicsize__")
    frozendict = getattr(builtins, "frozendict", None)   # 3.15+
    if frozendict is not None:
        fd = frozendict.fromkeys(items)
        f.eq("PyFrozenDictObject", "ma_used", fd, 3, "len")
        f.eq("PyFrozenDictObject", "ma_hash", fd, -1, "an unhashed frozendict's cached hash")
        f.eq("PyFrozenDictObject", "ma_hash", fd, hash(fd), "hash() once computed")
        f.size("PyFrozenDictObject", frozendict.__basicsize__, "frozendict.__basicsize__")

    s = set(items)
    f.eq("PySetObject", "used", s, 3, "len")
    f.eq("PySetObject", "fill", s, 3, "slots filled (no deletions)")
    f.eq("PySetObject", "mask", s, 7, "the small table's mask")
    f.eq("PySetObject", "hash", s, -1, "a set's hash (never computed)")
    f.eq("PySetObject", "weakreflist", s, None, "no weak reference yet")
    ref = weakref.ref(s)
    f.eq("PySetObject", "weakreflist", s, id(ref), "id of its weak reference")
    if "PySetObject" in f.models and "smalltable" in f.models["PySetObject"]._c_paths_:
        f.eq("PySetObject", "table", s, id(s) + f.models["PySetObject"].smalltable.offset, "its small table")
        f.eq("PySetObject", "smalltable", s, lambda entries: {e.key for e in entries if e.key} == set(map(id, items)),
             "keys of the small table")
    f.size("PySetObject", set.__basicsize__, "set.__basicsize__")


def _str_facts(f: _Facts) -> None:
    bits = {b.name: b for b in layouts.state_bits_for(min(_compat.VERSION, layouts.NEWEST), _BUILD)}
    s = "".join(["py", "guts"])
    f.eq("PyASCIIObject", "length", s, 6, "len")
    f.eq("PyASCIIObject", "hash", s, -1, "an unhashed str's cached hash")
    f.eq("PyASCIIObject", "hash", s, hash(s), "hash() once computed")
    f.eq("PyASCIIObject", "state", s,
         lambda w: (bits["kind"].get(w), bits["compact"].get(w), bits["ascii"].get(w), bits["interned"].get(w))
         == (1, 1, 1, 0), "kind 1, compact, ascii, not interned")
    f.size("PyASCIIObject", s.__sizeof__() - len(s) - 1, "__sizeof__ of a compact ASCII str less its data")
    u = "".join(["h", "\xe9", "llo"])   # compact, latin-1, not ASCII
    f.size("PyCompactUnicodeObject", u.__sizeof__() - len(u) - 1,
           "__sizeof__ of a compact latin-1 str less its data")
    f.eq("PyCompactUnicodeObject", "utf8_length", u, 0, "no UTF-8 form cached yet")
    f.eq("PyCompactUnicodeObject", "state", u,
         lambda w: (bits["kind"].get(w), bits["compact"].get(w), bits["ascii"].get(w)) == (1, 1, 0),
         "kind 1, compact, not ascii")
    size = ctypes.c_ssize_t()
    fn = _api.PyUnicode_AsUTF8AndSize
    fn.restype, fn.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.POINTER(ctypes.c_ssize_t)]
    fn(u, ctypes.byref(size))
    f.eq("PyCompactUnicodeObject", "utf8_length", u, len(u.encode()), "len(encode()) once cached")
    f.eq("PyCompactUnicodeObject", "utf8", u, lambda p: p is not None, "non-NULL once cached")


def _type_facts(f: _Facts) -> None:
    T = "PyTypeObject"
    f.size(T, type.__sizeof__(int), "type.__sizeof__(int) (a static type)")
    f.offset(T, "tp_dict", type.__dictoffset__, "type.__dictoffset__")
    f.offset(T, "tp_weaklist", type.__weakrefoffset__, "type.__weakrefoffset__")
    if f._has(T, "tp_vectorcall"):
        f.eq(T, "tp_vectorcall_offset", type, f.models[T].tp_vectorcall.offset,
             "type's own tp_vectorcall_offset, offsetof(PyTypeObject, tp_vectorcall)")
    for tp in (bytes, int, tuple, type, object, bool):
        for name, attr in (("tp_basicsize", "__basicsize__"), ("tp_itemsize", "__itemsize__"),
                           ("tp_flags", "__flags__"), ("tp_dictoffset", "__dictoffset__"),
                           ("tp_weaklistoffset", "__weakrefoffset__")):
            f.eq(T, name, tp, getattr(tp, attr), f"{tp.__name__}.{attr}")
        f.eq(T, "ob_type", tp, id(type), "id(type)")
        f.eq(T, "tp_getattr", tp, None, "the deprecated tp_getattr of a builtin type")
        f.eq(T, "tp_setattr", tp, None, "the deprecated tp_setattr of a builtin type")
    f.eq(T, "tp_base", bool, id(int), "bool's base")

    class Probe:
        """pyguts probe"""
        __slots__ = ("a", "b")

    f.eq(T, "ob_size", Probe, 2, "slots of a class with two __slots__")
    if f._has(T, "tp_as_async"):
        # A heap type's method tables follow its PyTypeObject in PyHeapTypeObject (Include/cpython/
        # object.h): as_async (4 slots), as_number (36), as_mapping (3), as_sequence (10), as_buffer.
        table = id(Probe) + ctypes.sizeof(f.models[T])
        for name, nslots in (("tp_as_async", 4), ("tp_as_number", 36), ("tp_as_mapping", 3),
                             ("tp_as_sequence", 10), ("tp_as_buffer", 2)):
            f.eq(T, name, Probe, table, f"its {name[3:]} table inside PyHeapTypeObject")
            table += nslots * _compat.POINTER_SIZE
    f.eq(T, "tp_base", Probe, id(object), "its base")
    f.eq(T, "tp_bases", Probe, id(Probe.__bases__), "id(__bases__)")
    f.eq(T, "tp_mro", Probe, id(Probe.__mro__), "id(__mro__)")
    f.eq(T, "tp_dict", Probe, id(gc.get_referents(type.__dict__["__dict__"].__get__(Probe))[0]), "its namespace")
    f.eq(T, "tp_getattro", object, _c_function("PyObject_GenericGetAttr"), "PyObject_GenericGetAttr")
    f.eq(T, "tp_setattro", object, _c_function("PyObject_GenericSetAttr"), "PyObject_GenericSetAttr")
    f.eq(T, "tp_alloc", object, _c_function("PyType_GenericAlloc"), "PyType_GenericAlloc")
    f.eq(T, "tp_free", object, _c_function("PyObject_Free"), "PyObject_Free")
    f.eq(T, "tp_free", list, _c_function("PyObject_GC_Del"), "PyObject_GC_Del")
    f.eq(T, "tp_hash", list, _c_function("PyObject_HashNotImplemented"), "PyObject_HashNotImplemented")
    f.eq(T, "tp_iter", type(iter([])), _c_function("PyObject_SelfIter"), "PyObject_SelfIter")
    f.eq(T, "tp_call", type(_fill_gaps), _c_function("PyVectorcall_Call"), "PyVectorcall_Call (functions)")


def _fill_gaps(model: type, confirmed: set) -> None:
    """Confirm a field that alone fills the space between two confirmed neighbours (or the end)."""
    fields = sorted(((getattr(model, n).offset, getattr(model, n).size, n) for n in model._c_paths_))
    for i, (offset, size, name) in enumerate(fields):
        if name in confirmed:
            continue
        before = i == 0 or (fields[i - 1][2] in confirmed and fields[i - 1][0] + fields[i - 1][1] <= offset)
        if i + 1 < len(fields):
            after = fields[i + 1][2] in confirmed and fields[i + 1][0] >= offset + size
            tight = fields[i + 1][0] - (fields[i - 1][0] + fields[i - 1][1] if i else 0) <= (size + 7) // 8 * 8
        else:
            after = SIZE in confirmed
            tight = ctypes.sizeof(model) - (fields[i - 1][0] + fields[i - 1][1] if i else 0) <= (size + 7) // 8 * 8
        if before and after and tight:
            confirmed.add(name)


def verify(models: dict[str, type], debug=None) -> Verdict:
    """Check ``models`` (name -> ctypes class, each model's fields flat) against the running
    interpreter, and against ``debug`` (a :class:`pyguts.objects.debug_offsets.DebugOffsets`) if given."""
    f = _Facts(models)
    for facts in (_header_facts, _value_facts, _str_facts, _type_facts):
        facts(f)
    if debug is not None:
        from pyguts.objects.debug_offsets import field_facts

        for model, name, published, mine in field_facts(debug, models):
            f._judge(model, name or SIZE, published == mine, f"{mine}, but _Py_DebugOffsets says {published}")
    confirmed = {name: f.good[name] - f.bad[name] for name in models}
    header = [m for m in ("PyVarObject", "PyObject") if m in models]
    for name, model in models.items():
        # Fields of an embedded struct (the object header, dict in frozendict) confirmed there.
        for base in [_EMBEDS.get(name), *header]:
            if base in models and base != name:
                base_model = models[base]
                for flat in base_model._c_paths_:
                    if flat in model._c_paths_ and flat in confirmed[base] and \
                            getattr(model, flat).offset == getattr(base_model, flat).offset:
                        confirmed[name].add(flat)
        # A struct ending in a one-element array (ob_sval, ob_item, ob_digit) is as big as that
        # array's offset says: its items are the variable part.
        last_name, last_type = model._fields_[-1]
        if getattr(last_type, "_length_", 0) == 1 and last_name in confirmed[name]:
            confirmed[name].add(SIZE)
        _fill_gaps(model, confirmed[name])
    return Verdict(confirmed, f.wrong)
