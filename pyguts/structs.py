"""ctypes models of CPython objects, built from :mod:`pyguts.layouts` for the running interpreter.

Every field sits flat under its C member name, so ``PyBytesObject.ob_refcnt.offset`` is
``offsetof(PyBytesObject, ob_base.ob_base.ob_refcnt)``; ``Model._c_paths_`` maps each flat name
to that C path. Importing this module checks the models against the live interpreter and raises
:class:`~pyguts.errors.LayoutMismatchError` instead of guessing.

>>> from pyguts import structs
>>> structs.PyBytesObject.ob_size.offset, structs.PyBytesObject.ob_sval.offset
(16, 32)
>>> struct_of(b"Hello, world!").ob_size
13
"""

from __future__ import annotations

import ctypes
from typing import Any

from pyguts import _compat, layouts
from pyguts.errors import LayoutMismatchError

_SCALARS: dict[str, Any] = {
    "Py_ssize_t": ctypes.c_ssize_t, "Py_hash_t": ctypes.c_ssize_t, "ptr": ctypes.c_void_p,
    "char": ctypes.c_char, "uint8": ctypes.c_uint8, "uint16": ctypes.c_uint16,
    "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64, "uintptr": ctypes.c_size_t,
    "uint": ctypes.c_uint, "ulong": ctypes.c_ulong, "double": ctypes.c_double,
}
_DIGITS = {2: ctypes.c_uint16, 4: ctypes.c_uint32}


def _leaves(rows: dict[str, layouts.Row], model: str, prefix: str = "") -> list[tuple[str, str, str]]:
    """(flat name, C path, member type) of every member, nested rows flattened in order."""
    out = []
    for member in rows[model].fields:
        path = prefix + member.name
        if member.ctype in rows:
            out.extend(_leaves(rows, member.ctype, path + "."))
        else:
            out.append((member.name, path, member.ctype))
    return out


def _ctype(spec: str, rows: dict[str, layouts.Row], digit_size: int, cache: dict[str, type]) -> Any:
    base, _, count = spec.partition("[")
    if base == "digit":
        ctype = _DIGITS[digit_size]
    elif base in _SCALARS:
        ctype = _SCALARS[base]
    else:  # an array of a row's struct, e.g. setentry[8]
        ctype = _model(base, rows, digit_size, cache)
    return ctype * int(count.rstrip("]")) if count else ctype


def _model(name: str, rows: dict[str, layouts.Row], digit_size: int, cache: dict[str, type]) -> type:
    if name not in cache:
        leaves = _leaves(rows, name)
        names = [leaf[0] for leaf in leaves]
        if len(set(names)) != len(names):
            raise LookupError(f"flattening {name} gives duplicate field names: {names}")
        row = rows[name]
        cache[name] = type(name, (ctypes.Structure,), {
            "_fields_": [(flat, _ctype(spec, rows, digit_size, cache)) for flat, _, spec in leaves],
            "_c_paths_": {flat: path for flat, path, _ in leaves},
            "_header_": row.header,
            "__doc__": f"{name} as declared in {row.header} (CPython {row.since[0]}.{row.since[1]}+, "
                       f"{row.build} build), fields flattened under their C member names.",
            "__module__": __name__,
        })
    return cache[name]


def build_models(version: tuple[int, int], build: str = "default", digit_size: int = 4) -> dict[str, type]:
    """ctypes classes for every public model of CPython ``version`` built ``build``.

    Works for any interpreter in the table, not only the running one (tests use it to check
    rows against other interpreters' headers).

    >>> build_models((3, 14))["PyTupleObject"].ob_item.offset
    32
    """
    rows = layouts.rows_for(version, build)
    cache: dict[str, type] = {}
    return {name: _model(name, rows, digit_size, cache) for name in layouts.PUBLIC_MODELS}


BUILD = "freethreaded" if _compat.GIL_DISABLED else "default"


def _models_for_running() -> dict[str, type]:
    why = None
    if _compat.POINTER_SIZE != 8:
        why = f"pointers are {_compat.POINTER_SIZE} bytes; the layout table covers 64-bit builds only"
    elif _compat.TRACE_REFS:
        why = "this is a Py_TRACE_REFS build (two extra pointers before every object header)"
    if why is None:
        try:
            return build_models(_compat.VERSION, BUILD, _compat.DIGIT_SIZE)
        except LookupError as exc:
            why = str(exc)
    raise LayoutMismatchError(
        f"pyguts needs a known object layout, got CPython {_compat.BUILD_NAME}: {why}. "
        "Use a 64-bit CPython 3.10-3.14 (default or free-threaded build).")


MODELS: dict[str, type] = _models_for_running()
globals().update(MODELS)

#: The model of each builtin type's instances (subclasses use their base's model).
_TYPE_MODELS: dict[type, str] = {
    bytes: "PyBytesObject", bytearray: "PyByteArrayObject", int: "PyLongObject",
    float: "PyFloatObject", complex: "PyComplexObject", tuple: "PyTupleObject",
    list: "PyListObject", dict: "PyDictObject", set: "PySetObject", frozenset: "PySetObject",
    str: "PyCompactUnicodeObject", type: "PyTypeObject",
}

STATE_BITS = {bits.name: bits for bits in layouts.state_bits_for(_compat.VERSION, BUILD)}


def str_state(s: str) -> dict[str, int]:
    """The decoded ``PyASCIIObject.state`` bit fields of ``s`` (kind, compact, ascii, interned…).

    >>> str_state("abc")["kind"], str_state("abc")["ascii"]
    (1, 1)
    """
    if not isinstance(s, str):
        raise TypeError(f"str_state() needs a str, got {type(s).__name__}")
    word = ctypes.c_uint32.from_address(id(s) + MODELS["PyASCIIObject"].state.offset).value
    return {name: bits.get(word) for name, bits in STATE_BITS.items()}


def model_for(obj: object) -> type:
    """The ctypes model that describes ``obj``'s memory (its builtin base's, else PyObject)."""
    tp = type(obj)
    for base in tp.__mro__:
        name = _TYPE_MODELS.get(base)
        if name is not None:
            break
    else:
        name = "PyVarObject" if tp.__itemsize__ else "PyObject"
    if name == "PyCompactUnicodeObject":
        state = str_state(obj)
        # A compact ASCII string's characters start right after PyASCIIObject: the
        # PyCompactUnicodeObject fields would read past them (and past the allocation).
        if state["compact"] and state["ascii"]:
            name = "PyASCIIObject"
    return MODELS[name]


def _frozen(value):
    """A copy of a ctypes array (of structs) as tuples, so reading it hands out no live memory."""
    if isinstance(value, ctypes.Array):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, ctypes.Structure):
        return tuple(getattr(value, name) for name, _ in value._fields_)
    return value


class _ReadOnlyField(property):
    """A read-only field; like ctypes' own field descriptors it tells its ``offset`` and ``size``."""

    offset: int
    size: int


def _read_only_field(model: type, name: str) -> property:
    field = model.__dict__[name]

    def get(self):
        return _frozen(field.__get__(self, type(self)))

    def refuse(self, value):
        raise AttributeError(f"{model.__name__}.{name} is read-only: this struct came from struct_of(obj); "
                             "use struct_of(obj, writable=True) to write object memory (see SAFETY.md)")

    prop = _ReadOnlyField(get, refuse, doc=f"{name} (read-only; offset {field.offset}, size {field.size})")
    prop.offset, prop.size = field.offset, field.size
    return prop


_READ_ONLY: dict[type, type] = {}


def _read_only(model: type) -> type:
    """The same model with every field read-only (a subclass: same layout, same name)."""
    if model not in _READ_ONLY:
        props = {name: _read_only_field(model, name) for name in model._c_paths_}
        _READ_ONLY[model] = type(model.__name__, (model,), {**props, "__module__": __name__,
                                                            "__doc__": model.__doc__})
    return _READ_ONLY[model]


def struct_of(obj: object, *, writable: bool = False) -> ctypes.Structure:
    """The model instance living at ``id(obj)``; it keeps ``obj`` alive while it exists.

    Fields are read-only (arrays come back as tuples) unless ``writable=True``.

    >>> s = struct_of(3.5)
    >>> type(s).__name__, s.ob_fval
    ('PyFloatObject', 3.5)
    >>> s.ob_fval = 1.0
    Traceback (most recent call last):
    AttributeError: PyFloatObject.ob_fval is read-only: this struct came from struct_of(obj); ...
    """
    model = model_for(obj)
    inst = (model if writable else _read_only(model)).from_address(id(obj))
    inst._pyguts_owner = obj
    return inst


def _check_live() -> None:
    """Compare the models with what the interpreter itself reports; raise on any difference."""
    M = MODELS
    expected = {
        "object.__basicsize__ == sizeof(PyObject)": (object.__basicsize__, ctypes.sizeof(M["PyObject"])),
        "bytes.__basicsize__ == offsetof(PyBytesObject, ob_sval) + 1":
            (bytes.__basicsize__, M["PyBytesObject"].ob_sval.offset + 1),
        "tuple.__basicsize__ == offsetof(PyTupleObject, ob_item)":
            (tuple.__basicsize__, M["PyTupleObject"].ob_item.offset),
        "int.__basicsize__ == offsetof(PyLongObject, ob_digit)":
            (int.__basicsize__, M["PyLongObject"].ob_digit.offset),
        "str.__basicsize__ == sizeof(PyCompactUnicodeObject) + sizeof(void *)":
            (str.__basicsize__, ctypes.sizeof(M["PyCompactUnicodeObject"]) + _compat.POINTER_SIZE),
    }
    for tp in (list, float, complex, dict, set, bytearray):
        model = M[_TYPE_MODELS[tp]]
        expected[f"{tp.__name__}.__basicsize__ == sizeof({model.__name__})"] = (tp.__basicsize__, ctypes.sizeof(model))
    T = M["PyTypeObject"]
    for tp in (bytes, int, tuple, type, object):
        t = T.from_address(id(tp))
        for field, attr in (("tp_basicsize", "__basicsize__"), ("tp_itemsize", "__itemsize__"),
                            ("tp_flags", "__flags__"), ("tp_dictoffset", "__dictoffset__"),
                            ("tp_weaklistoffset", "__weakrefoffset__")):
            expected[f"PyTypeObject.{field} of {tp.__name__} == {tp.__name__}.{attr}"] = (
                getattr(t, field), getattr(tp, attr))
        expected[f"PyTypeObject.ob_type of {tp.__name__} == id(type)"] = (t.ob_type, id(type))
    wrong = [f"{what}: got {got!r}, want {want!r}" for what, (got, want) in expected.items() if got != want]
    if not wrong:
        # Pointers only after the integer checks passed: following a wrong one could crash.
        sample = b"pyguts layout check"
        got_name = ctypes.string_at(T.from_address(id(bytes)).tp_name)
        checks = {
            "tp_name of bytes": (got_name, b"bytes"),
            "ob_type of a bytes object": (M["PyBytesObject"].from_address(id(sample)).ob_type, id(bytes)),
            "ob_size of a bytes object": (M["PyBytesObject"].from_address(id(sample)).ob_size, len(sample)),
            "ob_sval of a bytes object": (ctypes.string_at(id(sample) + M["PyBytesObject"].ob_sval.offset,
                                                           len(sample)), sample),
            "ob_fval of 2.5": (M["PyFloatObject"].from_address(id(2.5)).ob_fval, 2.5),
            "PyASCIIObject.length of a str": (M["PyASCIIObject"].from_address(id("pyguts")).length, 6),
        }
        wrong = [f"{what}: got {got!r}, want {want!r}" for what, (got, want) in checks.items() if got != want]
    if wrong:
        raise LayoutMismatchError(
            f"pyguts' layout table for CPython {_compat.BUILD_NAME} disagrees with this interpreter: "
            + "; ".join(wrong) + ". Refusing to read or write object memory; please report this build.")


_check_live()
