"""CPython struct layouts as data: one table, rows keyed by version range and build.

Each :class:`Row` gives one C struct for the interpreters in ``[since, until)`` built ``build``
("default", "freethreaded" or "any"), as its members in declaration order, and cites the header
it was read from. A member whose type names another row is flattened into the enclosing model
(its members keep their own names; their C path gets the member as prefix), exactly as C lays
out a nested struct. :mod:`pyguts.objects.structs` turns the rows for one interpreter into ctypes
classes; ``tests/integration/test_objects_layouts_probe.py`` checks every row against the C compiler's
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

#: Models pyguts exposes as ``pyguts.objects.structs.<Name>``; other rows are building blocks.
PUBLIC_MODELS = (
    "PyObject", "PyVarObject", "PyBytesObject", "PyByteArrayObject", "PyLongObject",
    "PyFloatObject", "PyComplexObject", "PyTupleObject", "PyListObject", "PyDictObject",
    "PySetObject", "PyASCIIObject", "PyCompactUnicodeObject", "PyTypeObject",
)

#: Models that exist only on some versions (3.15's frozendict), exposed where a row applies.
OPTIONAL_MODELS = ("PyFrozenDictObject",)

#: Oldest and newest minor versions the table covers (newest inclusive). A newer interpreter gets
#: the newest rows as candidates, each model enabled only once checked live (see pyguts.objects.structs).
OLDEST = (3, 10)
NEWEST = (3, 15)

BUILDS = ("default", "freethreaded")

#: (version, build) whose rows tests/integration/test_objects_layouts_probe.py checks against that
#: interpreter's own headers with the C compiler: pyenv's 3.10-3.13 and Debian's 3.14 and 3.15
#: (`make test` provisions them); the free-threaded rows through -DPy_GIL_DISABLED=1 on the same
#: headers, since no free-threaded binary is available to run. `pyguts doctor` reports which applies.
COMPILER_VERIFIED = frozenset({((3, 10), "default"), ((3, 11), "default"), ((3, 12), "default"),
                               ((3, 13), "default"), ((3, 13), "freethreaded"),
                               ((3, 14), "default"), ((3, 14), "freethreaded"),
                               ((3, 15), "default"), ((3, 15), "freethreaded")})


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
    Row("PyByteArrayObject", OLDEST, (3, 15), "any", "Include/cpython/bytearrayobject.h",
        _m("ob_base:PyVarObject ob_alloc:Py_ssize_t ob_bytes:ptr ob_start:ptr "
           "ob_exports:Py_ssize_t")),
    # 3.15: the buffer is a bytes object (zero-copy bytes(bytearray)); ob_bytes points into it.
    Row("PyByteArrayObject", (3, 15), None, "any", "Include/cpython/bytearrayobject.h",
        _m("ob_base:PyVarObject ob_alloc:Py_ssize_t ob_bytes:ptr ob_start:ptr "
           "ob_exports:Py_ssize_t ob_bytes_object:ptr")),
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
    # 3.15's frozendict: a dict that caches its hash (-1 until computed).
    Row("PyFrozenDictObject", (3, 15), None, "any", "Include/internal/pycore_dict.h",
        _m("ob_base:PyDictObject ma_hash:Py_hash_t")),
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
    Row("PyTypeObject", (3, 13), (3, 15), "any", "Include/cpython/object.h",
        _m(_TYPE_HEAD + " tp_watched:uint8 tp_versions_used:uint16")),
    # 3.15: a virtual iterator-next slot for the VM.
    Row("PyTypeObject", (3, 15), None, "any", "Include/cpython/object.h",
        _m(_TYPE_HEAD + " tp_watched:uint8 tp_versions_used:uint16 _tp_iteritem:ptr")),
)


# --- _Py_DebugOffsets: the offsets CPython itself publishes for debuggers (3.13+) ---------------
# The struct is the first member of _PyRuntime and starts with the cookie "xdebugpy"; every entry
# after the cookie is a uint64_t. Its layout changes between minor versions (members are inserted
# mid-struct), so each version range has a row; the probe checks each against offsetof.

@dataclass(frozen=True)
class DebugOffsetsRow:
    since: tuple[int, int]
    until: tuple[int, int] | None
    header: str
    #: (section, member names) in declaration order; section "" holds the top-level members.
    sections: tuple[tuple[str, tuple[str, ...]], ...]

    def applies(self, version: tuple[int, int], build: str = "any") -> bool:
        return self.since <= version and (self.until is None or version < self.until)

    def names(self) -> list[str]:
        """Every uint64 entry as "section.member", in order (the cookie excluded)."""
        return [f"{sec}.{m}" if sec else m for sec, members in self.sections for m in members]


def _sections(spec: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Parse ``"version free_threaded | runtime_state: size finalizing | ..."``."""
    out = []
    for part in spec.split("|"):
        sec, _, members = part.rpartition(":")
        out.append((sec.strip(), tuple(members.split())))
    return tuple(out)


_DO_313 = {
    "": "version free_threaded",
    "runtime_state": "size finalizing interpreters_head",
    "interpreter_state": "size id next threads_head gc imports_modules sysdict builtins ceval_gil "
                         "gil_runtime_state gil_runtime_state_enabled gil_runtime_state_locked "
                         "gil_runtime_state_holder",
    "thread_state": "size prev next interp current_frame thread_id native_thread_id datastack_chunk status",
    "interpreter_frame": "size previous executable instr_ptr localsplus owner",
    "code_object": "size filename name qualname linetable firstlineno argcount localsplusnames "
                   "localspluskinds co_code_adaptive",
    "pyobject": "size ob_type",
    "type_object": "size tp_name tp_repr tp_flags",
    "tuple_object": "size ob_item ob_size",
    "list_object": "size ob_item ob_size",
    "dict_object": "size ma_keys ma_values",
    "float_object": "size ob_fval",
    "long_object": "size lv_tag ob_digit",
    "bytes_object": "size ob_size ob_sval",
    "unicode_object": "size state length asciiobject_size",
    "gc": "size collecting",
}


def _do_spec(base: dict[str, str], **changes: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A debug-offsets layout as ``base`` with sections replaced or inserted (``after_<sec>=``)."""
    out: list[str] = []
    for sec, members in base.items():
        out.append(f"{sec}: {changes.get(sec, members)}")
        extra = changes.get("after_" + sec)
        if extra:
            out.extend(extra.split(" || "))
    return _sections(" | ".join(out))


_DO_314 = dict(_DO_313)
_DO_314.update({
    "interpreter_state": _DO_313["interpreter_state"].replace("threads_head", "threads_head threads_main")
                         + " code_object_generation tlbc_generation",
    "interpreter_frame": _DO_313["interpreter_frame"] + " stackpointer tlbc_index",
    "code_object": _DO_313["code_object"] + " co_tlbc",
})

DEBUG_OFFSETS: tuple[DebugOffsetsRow, ...] = (
    DebugOffsetsRow((3, 13), (3, 14), "Include/internal/pycore_runtime.h", _do_spec(_DO_313)),
    DebugOffsetsRow((3, 14), (3, 15), "Include/internal/pycore_debug_offsets.h", _do_spec(
        _DO_314,
        after_list_object="set_object: size used table mask",
        after_gc="gen_object: size gi_name gi_iframe gi_frame_state || llist_node: next prev || "
                 "debugger_support: eval_breaker remote_debugger_support remote_debugging_enabled "
                 "debugger_pending_call debugger_script_path debugger_script_path_size")),
    DebugOffsetsRow((3, 15), None, "Include/internal/pycore_debug_offsets.h", _do_spec(
        _DO_314,
        thread_state="size prev next interp current_frame base_frame last_profiled_frame "
                     "last_profiled_frame_seq thread_id native_thread_id datastack_chunk status holds_gil "
                     "gil_requested current_exception exc_state",
        after_thread_state="err_stackitem: exc_value",
        type_object="size tp_name tp_repr tp_flags tp_basicsize tp_dictoffset",
        after_type_object="heap_type_object: size ht_cached_keys",
        after_list_object="set_object: size used table mask",
        unicode_object="size state length asciiobject_size compactunicodeobject_size",
        gc="size collecting frame generation_stats_size generation_stats",
        after_gc="gen_object: size gi_name gi_iframe gi_frame_state || llist_node: next prev || "
                 "debugger_support: eval_breaker remote_debugger_support remote_debugging_enabled "
                 "debugger_pending_call debugger_script_path debugger_script_path_size")),
)

#: What a debug offset says about a modelled field: "section.member" -> (model, flat field name),
#: a field of None meaning sizeof(model). Entries a row does not have are skipped.
DEBUG_OFFSET_FIELDS: dict[str, tuple[str, str | None]] = {
    "pyobject.size": ("PyObject", None), "pyobject.ob_type": ("PyObject", "ob_type"),
    "type_object.size": ("PyTypeObject", None), "type_object.tp_name": ("PyTypeObject", "tp_name"),
    "type_object.tp_repr": ("PyTypeObject", "tp_repr"), "type_object.tp_flags": ("PyTypeObject", "tp_flags"),
    "type_object.tp_basicsize": ("PyTypeObject", "tp_basicsize"),
    "type_object.tp_dictoffset": ("PyTypeObject", "tp_dictoffset"),
    "tuple_object.size": ("PyTupleObject", None), "tuple_object.ob_item": ("PyTupleObject", "ob_item"),
    "tuple_object.ob_size": ("PyTupleObject", "ob_size"),
    "list_object.size": ("PyListObject", None), "list_object.ob_item": ("PyListObject", "ob_item"),
    "list_object.ob_size": ("PyListObject", "ob_size"),
    "set_object.size": ("PySetObject", None), "set_object.used": ("PySetObject", "used"),
    "set_object.table": ("PySetObject", "table"), "set_object.mask": ("PySetObject", "mask"),
    "dict_object.size": ("PyDictObject", None), "dict_object.ma_keys": ("PyDictObject", "ma_keys"),
    "dict_object.ma_values": ("PyDictObject", "ma_values"),
    "float_object.size": ("PyFloatObject", None), "float_object.ob_fval": ("PyFloatObject", "ob_fval"),
    "long_object.size": ("PyLongObject", None), "long_object.lv_tag": ("PyLongObject", "lv_tag"),
    "long_object.ob_digit": ("PyLongObject", "ob_digit"),
    "bytes_object.size": ("PyBytesObject", None), "bytes_object.ob_size": ("PyBytesObject", "ob_size"),
    "bytes_object.ob_sval": ("PyBytesObject", "ob_sval"),
    "unicode_object.state": ("PyASCIIObject", "state"), "unicode_object.length": ("PyASCIIObject", "length"),
    "unicode_object.asciiobject_size": ("PyASCIIObject", None),
    "unicode_object.compactunicodeobject_size": ("PyCompactUnicodeObject", None),
}


def debug_offsets_row_for(version: tuple[int, int]) -> DebugOffsetsRow | None:
    """The _Py_DebugOffsets layout of CPython ``version`` (the newest known one past the table)."""
    found = [row for row in DEBUG_OFFSETS if row.applies(version)]
    return found[0] if found else None


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

    def count(self, header) -> int:
        """Py_REFCNT of a PyObject model instance (free-threaded: ob_ref_local plus ob_ref_shared
        shifted past its flag bits, _Py_REF_SHARED_SHIFT)."""
        if self.immortal == "local_max":
            return header.ob_ref_local + (header.ob_ref_shared >> REF_SHARED_SHIFT)
        return header.ob_refcnt

    def header_is_immortal(self, header) -> bool:
        """Whether a PyObject model instance is immortal by this rule."""
        return self.is_immortal(header.ob_ref_local if self.immortal == "local_max" else header.ob_refcnt)

    def is_immortal(self, count_word: int) -> bool:
        """Whether a header whose count field (ob_refcnt; free-threaded: ob_ref_local) reads
        ``count_word`` belongs to an immortal object."""
        low32 = count_word & 0xFFFFFFFF
        if self.immortal == "none":
            return False
        if self.immortal == "sign32":
            return bool(low32 & 0x80000000)   # (int32_t)ob_refcnt < 0
        return low32 == self.value and count_word == low32   # "equal", "local_max"


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
