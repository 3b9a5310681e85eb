"""CPython struct layouts as data: one table, rows keyed by version range and build.

Each :class:`Row` gives one C struct for the interpreters in ``[since, until)`` built ``build``
("default", "freethreaded" or "any"), as its members in declaration order, and cites the header
it was read from. A member whose type names another row is flattened into the enclosing model
(its members keep their own names; their C path gets the member as prefix), exactly as C lays
out a nested struct. :mod:`pyguts.structs` turns the rows for one interpreter into ctypes
classes; ``tests/integration/test_layouts_probe.py`` checks every row against the C compiler's
``offsetof``/``sizeof`` on that interpreter's own headers.

Member types: ``Py_ssize_t``, ``Py_hash_t``, ``ptr`` (any pointer), ``char``, ``uint8``,
``uint16``, ``uint32``, ``uint64``, ``uintptr``, ``uint`` (unsigned int), ``ulong``
(unsigned long), ``double``, ``digit`` (one int digit), a row name, or any of these with
``[N]`` for an array.

>>> [f.name for f in rows_for((3, 12), "default")["PyLongObject"].fields]
['ob_base', 'long_value']
"""

from __future__ import annotations

from dataclasses import dataclass

#: Models pyguts exposes as ``pyguts.structs.<Name>``; other rows are building blocks.
PUBLIC_MODELS = (
    "PyObject", "PyVarObject", "PyBytesObject", "PyByteArrayObject", "PyLongObject",
    "PyFloatObject", "PyComplexObject", "PyTupleObject", "PyListObject", "PyDictObject",
    "PySetObject", "PyASCIIObject", "PyCompactUnicodeObject", "PyTypeObject",
)

#: Oldest and newest minor versions the table covers (newest inclusive).
OLDEST = (3, 10)
NEWEST = (3, 14)

BUILDS = ("default", "freethreaded")

#: (version, build) whose rows tests/integration/test_layouts_probe.py has checked against that
#: interpreter's own headers with the C compiler (pyenv's 3.10-3.13; 3.13t through
#: -DPy_GIL_DISABLED=1 on the 3.13 headers). The 3.14 rows were read from the headers, not compiled:
#: add them here once the probe has passed on a 3.14 (`pyguts doctor` reports the difference).
COMPILER_VERIFIED = frozenset({((3, 10), "default"), ((3, 11), "default"), ((3, 12), "default"),
                               ((3, 13), "default"), ((3, 13), "freethreaded")})


@dataclass(frozen=True)
class Member:
    name: str
    ctype: str


@dataclass(frozen=True)
class Row:
    model: str
    since: tuple[int, int]
    until: tuple[int, int] | None  # exclusive; None: still current
    build: str  # "default", "freethreaded" or "any"
    header: str
    fields: tuple[Member, ...]

    def applies(self, version: tuple[int, int], build: str) -> bool:
        return (self.since <= version and (self.until is None or version < self.until)
                and self.build in ("any", build))


def _m(spec: str) -> tuple[Member, ...]:
    """Parse ``"name:type name:type ..."`` into members."""
    return tuple(Member(*item.split(":")) for item in spec.split())


_TYPE_HEAD = (
    "ob_base:PyVarObject tp_name:ptr tp_basicsize:Py_ssize_t tp_itemsize:Py_ssize_t "
    "tp_dealloc:ptr tp_vectorcall_offset:Py_ssize_t tp_getattr:ptr tp_setattr:ptr "
    "tp_as_async:ptr tp_repr:ptr tp_as_number:ptr tp_as_sequence:ptr tp_as_mapping:ptr "
    "tp_hash:ptr tp_call:ptr tp_str:ptr tp_getattro:ptr tp_setattro:ptr tp_as_buffer:ptr "
    "tp_flags:ulong tp_doc:ptr tp_traverse:ptr tp_clear:ptr tp_richcompare:ptr "
    "tp_weaklistoffset:Py_ssize_t tp_iter:ptr tp_iternext:ptr tp_methods:ptr tp_members:ptr "
    "tp_getset:ptr tp_base:ptr tp_dict:ptr tp_descr_get:ptr tp_descr_set:ptr "
    "tp_dictoffset:Py_ssize_t tp_init:ptr tp_alloc:ptr tp_new:ptr tp_free:ptr tp_is_gc:ptr "
    "tp_bases:ptr tp_mro:ptr tp_cache:ptr tp_subclasses:ptr tp_weaklist:ptr tp_del:ptr "
    "tp_version_tag:uint tp_finalize:ptr tp_vectorcall:ptr"
)

_UNICODE_H = "Include/cpython/unicodeobject.h"

ROWS: tuple[Row, ...] = (
    # --- the object header -------------------------------------------------------------
    # 3.12-3.13 wrap ob_refcnt in an anonymous union with uint32_t ob_refcnt_split[2]: same offsets.
    Row("PyObject", (3, 10), (3, 14), "default", "Include/object.h",
        _m("ob_refcnt:Py_ssize_t ob_type:ptr")),
    # 3.14: union { int64 ob_refcnt_full; struct { uint32 ob_refcnt; uint16 ob_overflow;
    # uint16 ob_flags; }; } (little-endian order; anonymous).
    Row("PyObject", (3, 14), None, "default", "Include/object.h",
        _m("ob_refcnt:uint32 ob_overflow:uint16 ob_flags:uint16 ob_type:ptr")),
    # Free-threaded (PEP 703): biased reference counting.
    Row("PyObject", (3, 13), (3, 14), "freethreaded", "Include/object.h",
        _m("ob_tid:uintptr _padding:uint16 ob_mutex:uint8 ob_gc_bits:uint8 "
           "ob_ref_local:uint32 ob_ref_shared:Py_ssize_t ob_type:ptr")),
    Row("PyObject", (3, 14), None, "freethreaded", "Include/object.h",
        _m("ob_tid:uintptr ob_flags:uint16 ob_mutex:uint8 ob_gc_bits:uint8 "
           "ob_ref_local:uint32 ob_ref_shared:Py_ssize_t ob_type:ptr")),
    Row("PyVarObject", OLDEST, None, "any", "Include/object.h",
        _m("ob_base:PyObject ob_size:Py_ssize_t")),
    # --- bytes, bytearray ----------------------------------------------------------------
    Row("PyBytesObject", OLDEST, None, "any", "Include/cpython/bytesobject.h",
        _m("ob_base:PyVarObject ob_shash:Py_hash_t ob_sval:char[1]")),
    Row("PyByteArrayObject", OLDEST, None, "any", "Include/cpython/bytearrayobject.h",
        _m("ob_base:PyVarObject ob_alloc:Py_ssize_t ob_bytes:ptr ob_start:ptr "
           "ob_exports:Py_ssize_t")),
    # --- int: ob_size carries sign and digit count before 3.12, lv_tag after -------------
    Row("PyLongObject", (3, 10), (3, 12), "any", "Include/longintrepr.h (3.11: Include/cpython/longintrepr.h)",
        _m("ob_base:PyVarObject ob_digit:digit[1]")),
    Row("_PyLongValue", (3, 12), None, "any", "Include/cpython/longintrepr.h",
        _m("lv_tag:uintptr ob_digit:digit[1]")),
    Row("PyLongObject", (3, 12), None, "any", "Include/cpython/longintrepr.h",
        _m("ob_base:PyObject long_value:_PyLongValue")),
    # --- float, complex ------------------------------------------------------------------
    Row("PyFloatObject", OLDEST, None, "any", "Include/cpython/floatobject.h (3.10: Include/floatobject.h)",
        _m("ob_base:PyObject ob_fval:double")),
    Row("Py_complex", OLDEST, None, "any", "Include/complexobject.h",
        _m("real:double imag:double")),
    Row("PyComplexObject", OLDEST, None, "any", "Include/complexobject.h (3.13: Include/cpython/complexobject.h)",
        _m("ob_base:PyObject cval:Py_complex")),
    # --- tuple, list, dict, set ----------------------------------------------------------
    Row("PyTupleObject", OLDEST, (3, 14), "any", "Include/cpython/tupleobject.h",
        _m("ob_base:PyVarObject ob_item:ptr[1]")),
    # 3.14 caches the tuple's hash in the object (-1 until computed).
    Row("PyTupleObject", (3, 14), None, "any", "Include/cpython/tupleobject.h",
        _m("ob_base:PyVarObject ob_hash:Py_hash_t ob_item:ptr[1]")),
    Row("PyListObject", OLDEST, None, "any", "Include/cpython/listobject.h",
        _m("ob_base:PyVarObject ob_item:ptr allocated:Py_ssize_t")),
    Row("PyDictObject", (3, 10), (3, 14), "any", "Include/cpython/dictobject.h",
        _m("ob_base:PyObject ma_used:Py_ssize_t ma_version_tag:uint64 ma_keys:ptr ma_values:ptr")),
    Row("PyDictObject", (3, 14), None, "any", "Include/cpython/dictobject.h",
        _m("ob_base:PyObject ma_used:Py_ssize_t _ma_watcher_tag:uint64 ma_keys:ptr ma_values:ptr")),
    Row("setentry", OLDEST, None, "any", "Include/setobject.h (3.13: Include/cpython/setobject.h)",
        _m("key:ptr hash:Py_hash_t")),
    Row("PySetObject", OLDEST, None, "any", "Include/setobject.h (3.13: Include/cpython/setobject.h)",
        _m("ob_base:PyObject fill:Py_ssize_t used:Py_ssize_t mask:Py_ssize_t table:ptr "
           "hash:Py_hash_t finger:Py_ssize_t smalltable:setentry[8] weakreflist:ptr")),
    # --- str (PEP 393 compact strings; `state` is a 32-bit word of bit fields, see STATE_BITS)
    Row("PyASCIIObject", (3, 10), (3, 12), "any", _UNICODE_H,
        _m("ob_base:PyObject length:Py_ssize_t hash:Py_hash_t state:uint32 wstr:ptr")),
    Row("PyASCIIObject", (3, 12), None, "any", _UNICODE_H,
        _m("ob_base:PyObject length:Py_ssize_t hash:Py_hash_t state:uint32")),
    Row("PyCompactUnicodeObject", (3, 10), (3, 12), "any", _UNICODE_H,
        _m("_base:PyASCIIObject utf8_length:Py_ssize_t utf8:ptr wstr_length:Py_ssize_t")),
    Row("PyCompactUnicodeObject", (3, 12), None, "any", _UNICODE_H,
        _m("_base:PyASCIIObject utf8_length:Py_ssize_t utf8:ptr")),
    # --- type objects --------------------------------------------------------------------
    Row("PyTypeObject", (3, 10), (3, 12), "any", "Include/cpython/object.h", _m(_TYPE_HEAD)),
    Row("PyTypeObject", (3, 12), (3, 13), "any", "Include/cpython/object.h",
        _m(_TYPE_HEAD + " tp_watched:uint8")),
    Row("PyTypeObject", (3, 13), None, "any", "Include/cpython/object.h",
        _m(_TYPE_HEAD + " tp_watched:uint8 tp_versions_used:uint16")),
)


@dataclass(frozen=True)
class Bits:
    """One bit field inside a word: ``(word >> shift) & ((1 << width) - 1)``."""

    name: str
    shift: int
    width: int

    def get(self, word: int) -> int:
        return (word >> self.shift) & ((1 << self.width) - 1)


@dataclass(frozen=True)
class BitsRow:
    since: tuple[int, int]
    until: tuple[int, int] | None
    build: str
    header: str
    bits: tuple[Bits, ...]

    applies = Row.applies


_STATE_312 = (Bits("interned", 0, 2), Bits("kind", 2, 3), Bits("compact", 5, 1),
              Bits("ascii", 6, 1), Bits("statically_allocated", 7, 1))

#: PyASCIIObject.state bit fields (GCC, little-endian: first declared = lowest bits).
STATE_BITS: tuple[BitsRow, ...] = (
    BitsRow((3, 10), (3, 12), "any", _UNICODE_H,
            (Bits("interned", 0, 2), Bits("kind", 2, 3), Bits("compact", 5, 1),
             Bits("ascii", 6, 1), Bits("ready", 7, 1))),
    BitsRow((3, 12), None, "default", _UNICODE_H, _STATE_312),
    BitsRow((3, 12), (3, 14), "freethreaded", _UNICODE_H, _STATE_312),
    # 3.14t: `unsigned char interned` (atomic access), the bit fields start in the next byte.
    BitsRow((3, 14), None, "freethreaded", _UNICODE_H,
            (Bits("interned", 0, 8), Bits("kind", 8, 3), Bits("compact", 11, 1),
             Bits("ascii", 12, 1), Bits("statically_allocated", 13, 1))),
)


@dataclass(frozen=True)
class RefcountRule:
    """How to read a reference count and recognise an immortal object (Include/refcount.h)."""

    since: tuple[int, int]
    until: tuple[int, int] | None
    build: str
    header: str
    #: "none" (no immortal objects), "sign32" (low 32 bits >= 2**31), "equal" (== value),
    #: "local_max" (free-threaded ob_ref_local == UINT32_MAX).
    immortal: str
    value: int = 0

    applies = Row.applies


REFCOUNT_RULES: tuple[RefcountRule, ...] = (
    RefcountRule((3, 10), (3, 12), "default", "Include/object.h", "none"),
    # 3.12: _Py_IsImmortal is `(int32_t)ob_refcnt < 0`; immortal objects start at UINT_MAX.
    RefcountRule((3, 12), (3, 13), "default", "Include/object.h", "sign32"),
    # 3.13: `ob_refcnt == _Py_IMMORTAL_REFCNT` (UINT_MAX on 64-bit).
    RefcountRule((3, 13), (3, 14), "default", "Include/object.h", "equal", 0xFFFFFFFF),
    # 3.14: back to the sign bit of the 32-bit count; initial value 3 << 30.
    RefcountRule((3, 14), None, "default", "Include/refcount.h", "sign32"),
    # Free-threaded: refcount = ob_ref_local + (ob_ref_shared >> 2); immortal: local == UINT32_MAX.
    RefcountRule((3, 13), None, "freethreaded", "Include/object.h (3.14: Include/refcount.h)",
                 "local_max", 0xFFFFFFFF),
)

#: Free-threaded ob_ref_shared keeps two flag bits below the count (_Py_REF_SHARED_SHIFT).
REF_SHARED_SHIFT = 2


def _pick(rows, version: tuple[int, int], build: str, what: str):
    found = [row for row in rows if row.applies(version, build)]
    if len(found) != 1:
        raise LookupError(f"{len(found)} {what} rows for CPython {version[0]}.{version[1]} ({build})")
    return found[0]


def rows_for(version: tuple[int, int], build: str) -> dict[str, Row]:
    """The struct rows that describe CPython ``version`` built ``build``, keyed by model name.

    Raises LookupError when the table does not cover that interpreter.
    """
    if build not in BUILDS:
        raise LookupError(f"unknown build {build!r}; expected one of {BUILDS}")
    if not (OLDEST <= version <= NEWEST):
        raise LookupError(f"CPython {version[0]}.{version[1]} is outside the layout table "
                          f"({OLDEST[0]}.{OLDEST[1]}-{NEWEST[0]}.{NEWEST[1]})")
    found: dict[str, Row] = {}
    for row in ROWS:
        if row.applies(version, build):
            if row.model in found:
                raise LookupError(f"two {row.model} rows for CPython {version[0]}.{version[1]} ({build})")
            found[row.model] = row
    missing = [name for name in PUBLIC_MODELS if name not in found]
    if missing:
        raise LookupError(f"no {', '.join(missing)} rows for CPython {version[0]}.{version[1]} ({build})")
    return found


def state_bits_for(version: tuple[int, int], build: str) -> tuple[Bits, ...]:
    return _pick(STATE_BITS, version, build, "PyASCIIObject.state").bits


def refcount_rule_for(version: tuple[int, int], build: str) -> RefcountRule:
    return _pick(REFCOUNT_RULES, version, build, "refcount")


#: Type flag bits pyguts reads (Include/object.h). A bit an older version does not define is 0
#: in every type there, so comparisons stay valid: MANAGED_DICT is 3.11+, MANAGED_WEAKREF
#: 3.12+, INLINE_VALUES 3.13+.
TPFLAGS_INLINE_VALUES = 1 << 2
TPFLAGS_MANAGED_WEAKREF = 1 << 3
TPFLAGS_MANAGED_DICT = 1 << 4
TPFLAGS_IMMUTABLETYPE = 1 << 8
TPFLAGS_HEAPTYPE = 1 << 9
TPFLAGS_HAVE_GC = 1 << 14
#: Flags that change where an instance's __dict__/__weakref__ live: must match for a type swap.
TPFLAGS_LAYOUT = TPFLAGS_INLINE_VALUES | TPFLAGS_MANAGED_WEAKREF | TPFLAGS_MANAGED_DICT
