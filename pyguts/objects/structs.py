"""ctypes models of CPython objects, built from :mod:`pyguts.objects.layouts` for the running interpreter.

Every field sits flat under its C member name, so ``PyBytesObject.ob_refcnt.offset`` is
``offsetof(PyBytesObject, ob_base.ob_base.ob_refcnt)``; ``Model._c_paths_`` maps each flat name
to that C path. Importing this module checks the models against the live interpreter (and, on
3.13+, CPython's own ``_Py_DebugOffsets``) and raises :class:`~pyguts.errors.LayoutMismatchError`
instead of guessing. On a CPython newer than the table, a model is used only once every field is
confirmed live; the others stand as :class:`RefusedModel` (reasons in ``REFUSED``).

>>> from pyguts.objects import structs
>>> structs.PyBytesObject.ob_size.offset, structs.PyBytesObject.ob_sval.offset
(16, 32)
>>> struct_of(b"Hello, world!").ob_size
13
"""

from __future__ import annotations

import builtins
import ctypes
from typing import Any

from pyguts import _compat
from pyguts.objects import debug_offsets, live_checks, layouts
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
    names = [*layouts.PUBLIC_MODELS, *(name for name in layouts.OPTIONAL_MODELS if name in rows)]
    return {name: _model(name, rows, digit_size, cache) for name in names}


BUILD = "freethreaded" if _compat.GIL_DISABLED else "default"


class RefusedModel:
    """Stands in for a model pyguts could not verify on this interpreter: any use raises."""

    def __init__(self, name: str, reason: str):
        self.__name__, self.reason = name, reason

    def refuse(self):
        raise LayoutMismatchError(f"{self.__name__} is unavailable on CPython {_compat.BUILD_NAME}: {self.reason}")

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        self.refuse()

    def __repr__(self) -> str:
        return f"<refused model {self.__name__}: {self.reason}>"


def _candidates() -> dict[str, type]:
    """The table's models for this interpreter; past the table, the newest rows as candidates."""
    why = None
    if _compat.POINTER_SIZE != 8:
        why = f"pointers are {_compat.POINTER_SIZE} bytes; the layout table covers 64-bit builds only"
    elif _compat.TRACE_REFS:
        why = "this is a Py_TRACE_REFS build (two extra pointers before every object header)"
    elif _compat.VERSION < layouts.OLDEST:
        why = f"the layout table starts at {layouts.OLDEST[0]}.{layouts.OLDEST[1]}"
    if why is None:
        try:
            return build_models(min(_compat.VERSION, layouts.NEWEST), BUILD, _compat.DIGIT_SIZE)
        except LookupError as exc:
            why = str(exc)
    raise LayoutMismatchError(
        f"pyguts needs a known object layout, got CPython {_compat.BUILD_NAME}: {why}. "
        f"Use a 64-bit CPython {layouts.OLDEST[0]}.{layouts.OLDEST[1]} or newer (default or free-threaded build).")


def _check(models: dict[str, type]) -> tuple[dict[str, type], dict[str, str]]:
    """(models in use, refused model -> reason). Inside the table every live fact and debug offset
    must agree; past it, a model is used only when every field and its size were confirmed."""
    verdict = live_checks.verify(models, debug_offsets.read())
    if _compat.VERSION <= layouts.NEWEST:
        if verdict.wrong:
            raise LayoutMismatchError(
                f"pyguts' layout table for CPython {_compat.BUILD_NAME} disagrees with this interpreter: "
                + "; ".join(verdict.wrong) + ". Refusing to read or write object memory; please report this build.")
        return models, {}
    newest = "%d.%d" % layouts.NEWEST
    refused = {}
    for name, model in models.items():
        wrong = [w for w in verdict.wrong if w.startswith(name + ".")]
        missing = verdict.unconfirmed(model)
        if wrong or missing:
            refused[name] = (f"the layout table ends at {newest}, and its {newest} row of {name} "
                             + (f"disagrees here ({'; '.join(wrong)})" if wrong else
                                f"could not be confirmed field by field (unconfirmed: {', '.join(missing)})")
                             + "; update pyguts for this version")
    if "PyObject" in refused or "PyVarObject" in refused:
        raise LayoutMismatchError(f"pyguts cannot read object memory on CPython {_compat.BUILD_NAME}: the object "
                                  f"header: {refused.get('PyObject') or refused['PyVarObject']}")
    return {name: RefusedModel(name, refused[name]) if name in refused else model
            for name, model in models.items()}, refused


#: Every model of this interpreter (a RefusedModel where one could not be verified), and why refused.
MODELS, REFUSED = _check(_candidates())
globals().update(MODELS)

#: The model of each builtin type's instances (subclasses use their base's model).
_TYPE_MODELS: dict[type, str] = {
    bytes: "PyBytesObject", bytearray: "PyByteArrayObject", int: "PyLongObject",
    float: "PyFloatObject", complex: "PyComplexObject", tuple: "PyTupleObject",
    list: "PyListObject", dict: "PyDictObject", set: "PySetObject", frozenset: "PySetObject",
    str: "PyCompactUnicodeObject", type: "PyTypeObject",
}
if "PyFrozenDictObject" in MODELS and hasattr(builtins, "frozendict"):   # 3.15+
    _TYPE_MODELS[builtins.frozendict] = "PyFrozenDictObject"

STATE_BITS = {bits.name: bits for bits in layouts.state_bits_for(min(_compat.VERSION, layouts.NEWEST), BUILD)}


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
    model = MODELS[name]
    if isinstance(model, RefusedModel):
        model.refuse()
    return model


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
#: ids of every class struct_of() instantiates (the models and their read-only forms); ids, so
#: that asking runs no metaclass __hash__ or __eq__.
_OWNING_TYPES: set[int] = {id(model) for model in MODELS.values() if isinstance(model, type)}


def _read_only(model: type) -> type:
    """The same model with every field read-only (a subclass: same layout, same name)."""
    if model not in _READ_ONLY:
        props = {name: _read_only_field(model, name) for name in model._c_paths_}
        _READ_ONLY[model] = type(model.__name__, (model,), {**props, "__module__": __name__,
                                                            "__doc__": model.__doc__})
        _OWNING_TYPES.add(id(_READ_ONLY[model]))
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


def struct_owner(inst: object) -> object | None:
    """The object a :func:`struct_of` model instance keeps alive; None for anything else (no method
    of ``inst`` runs)."""
    if id(type(inst)) in _OWNING_TYPES:  # classes are never freed: their ids stay theirs
        return inst.__dict__.get("_pyguts_owner")
    return None
