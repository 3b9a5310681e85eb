"""Type swapping under CPython's own ``__class__`` assignment rules (Objects/typeobject.c).

``swap_type`` changes ``ob_type`` only when ``compatible_for_assignment`` says the layouts are
interchangeable, and refuses shared objects like :func:`pyguts.mutate` does, unless ``force=True``.
"""

from __future__ import annotations

import ctypes

from pyguts import _compat
from pyguts.errors import UnsafeOperationError
from pyguts.objects import layouts
from pyguts.objects.mutate import refuse_shared
from pyguts.objects.structs import MODELS

_Type = MODELS["PyTypeObject"]
# A private PyDLL: setting argtypes on ctypes.pythonapi's shared function objects would change them
# for every other user of ctypes.pythonapi in the process.
_api = ctypes.PyDLL(ctypes.pythonapi._name, handle=ctypes.pythonapi._handle)
_api.Py_IncRef.argtypes = _api.Py_DecRef.argtypes = [ctypes.py_object]


def _slots(tp: type) -> tuple[str, ...]:
    """A heap type's __slots__ as CPython keeps them (ht_slots): mangled, sorted, no __dict__/__weakref__."""
    raw = tp.__dict__.get("__slots__", ())
    names = (raw,) if isinstance(raw, str) else tuple(raw)
    mangle = "_" + tp.__name__.lstrip("_")
    return tuple(sorted(mangle + n if n.startswith("__") and not n.endswith("__") else n
                        for n in names if n not in ("__dict__", "__weakref__")))


def _subtype_dealloc() -> int:
    class _Probe:  # any heap class's tp_dealloc is CPython's subtype_dealloc
        pass

    return _Type.from_address(id(_Probe)).tp_dealloc


_SUBTYPE_DEALLOC = _subtype_dealloc()


def _same_layout_as_base(child: type) -> bool:
    """typeobject.c compatible_with_tp_base: child adds nothing to its base's instance layout."""
    parent = child.__base__
    if parent is None:
        return False
    dealloc = _Type.from_address(id(child)).tp_dealloc
    return (child.__basicsize__ == parent.__basicsize__ and child.__itemsize__ == parent.__itemsize__
            and child.__dictoffset__ == parent.__dictoffset__
            and child.__weakrefoffset__ == parent.__weakrefoffset__
            and (child.__flags__ & layouts.TPFLAGS_HAVE_GC) == (parent.__flags__ & layouts.TPFLAGS_HAVE_GC)
            and dealloc in (_SUBTYPE_DEALLOC, _Type.from_address(id(parent)).tp_dealloc))


def _same_slots_added(a: type, b: type) -> bool:
    """typeobject.c same_slots_added: a and b extend the same base by the same slots."""
    size = a.__base__.__basicsize__
    if a.__dictoffset__ == size and b.__dictoffset__ == size:
        size += _compat.POINTER_SIZE
    if a.__weakrefoffset__ == size and b.__weakrefoffset__ == size:
        size += _compat.POINTER_SIZE
    if not (a.__flags__ & b.__flags__ & layouts.TPFLAGS_HEAPTYPE) or _slots(a) != _slots(b):
        return False
    size += _compat.POINTER_SIZE * len(_slots(a))
    return size == a.__basicsize__ == b.__basicsize__


def _where(tp: type, attr: str, managed_flag: int) -> str:
    """Where instances of ``tp`` keep their __dict__/__weakref__ pointer, in words ('' if nowhere)."""
    if tp.__flags__ & managed_flag:
        return "in a pre-header before the object (managed by CPython)"
    offset = getattr(tp, attr)
    return f"at offset {offset}" if offset else ""


def _describe_difference(old: type, new: type) -> str:
    """The first way instances of ``new`` differ in layout from instances of ``old``, in words."""
    o, n = old.__name__, new.__name__
    for attr, what, managed in (("__dictoffset__", "a __dict__", layouts.TPFLAGS_MANAGED_DICT),
                                ("__weakrefoffset__", "a __weakref__ list", layouts.TPFLAGS_MANAGED_WEAKREF)):
        ov, nv = (_where(tp, attr, managed) for tp in (old, new))
        if ov != nv:
            if not ov:
                return f"instances of {n} keep {what} {nv} that {o} objects lack"
            if not nv:
                return f"{o} objects keep {what} {ov} that instances of {n} lack"
            return f"{o} objects keep {what} {ov}, instances of {n} {nv}"
    for attr, what in (("__basicsize__", "bytes of fixed part"), ("__itemsize__", "bytes per item")):
        if getattr(old, attr) != getattr(new, attr):
            return f"{o} objects have {getattr(old, attr)} {what}, instances of {n} {getattr(new, attr)}"
    if (old.__flags__ ^ new.__flags__) & layouts.TPFLAGS_HAVE_GC:
        gc_type = n if new.__flags__ & layouts.TPFLAGS_HAVE_GC else o
        return f"only {gc_type} instances are tracked by the garbage collector (they carry a GC header)"
    if (old.__flags__ ^ new.__flags__) & layouts.TPFLAGS_LAYOUT:
        return f"{o} and {n} keep __dict__/__weakref__ in different places (managed dict/weakref flags differ)"
    if _slots(old) != _slots(new):
        return f"{o} has __slots__ {_slots(old)}, {n} has {_slots(new)}"
    return f"{o} and {n} instances are laid out differently (different base layouts or deallocators)"


def layout_difference(old: type, new: type) -> str | None:
    """Why instances of ``old`` cannot become instances of ``new`` (typeobject.c
    compatible_for_assignment, the check behind ``obj.__class__ = new``), or None if they can."""
    if _Type.from_address(id(new)).tp_free != _Type.from_address(id(old)).tp_free:
        return _describe_difference(old, new)  # e.g. one is GC-tracked: PyObject_GC_Del vs PyObject_Free
    newbase, oldbase = new, old
    while _same_layout_as_base(newbase):
        newbase = newbase.__base__
    while _same_layout_as_base(oldbase):
        oldbase = oldbase.__base__
    if newbase is not oldbase and (newbase.__base__ is not oldbase.__base__ or not _same_slots_added(newbase, oldbase)):
        return _describe_difference(old, new)
    if (old.__flags__ ^ new.__flags__) & layouts.TPFLAGS_LAYOUT:
        return _describe_difference(old, new)
    return None


def _is_mutable_heap(tp: type) -> bool:
    return bool(tp.__flags__ & layouts.TPFLAGS_HEAPTYPE) and not tp.__flags__ & layouts.TPFLAGS_IMMUTABLETYPE


def swap_type(obj: object, new_type: type, *, force: bool = False) -> type:
    """Make ``obj`` an instance of ``new_type`` in place; return its old type.

    Refuses (UnsafeOperationError, naming the first difference) what CPython's ``__class__``
    assignment refuses: different instance layouts, and instances of static or immutable types.
    When both types are mutable heap types, CPython itself does the swap (materialising managed
    dicts, fixing refcounts). ``force=True`` writes ``ob_type`` anyway, increfing a new heap type
    and decrefing an old one, so ``sys.getrefcount(T)`` balances once the object dies.

    >>> class A: pass
    >>> class B: pass
    >>> a = A()
    >>> swap_type(a, B).__name__, type(a).__name__
    ('A', 'B')
    """
    if not isinstance(new_type, type):
        raise TypeError(f"new_type must be a type, got {type(new_type).__name__}")
    old_type = type(obj)
    if new_type is old_type:
        return old_type
    refuse_shared(obj, "change the type of", force)
    why = layout_difference(old_type, new_type)
    if why is None and _is_mutable_heap(old_type) and _is_mutable_heap(new_type):
        obj.__class__ = new_type  # CPython's own path: same checks passed, plus its bookkeeping
        return old_type
    if why is None:
        static = old_type if not _is_mutable_heap(old_type) else new_type
        why = (f"{static.__name__} is a static or immutable type: CPython refuses __class__ assignment for it "
               "(its instances may be cached or shared, and C code may rely on exact type checks). The layouts "
               "are compatible, so force=True will not corrupt memory")
    if not force:
        raise UnsafeOperationError(f"refusing to make a {old_type.__name__} object a {new_type.__name__}: {why}. "
                                   "Pass force=True to write ob_type anyway (run it inside pyguts.isolate)")
    if new_type.__flags__ & layouts.TPFLAGS_HEAPTYPE:
        _api.Py_IncRef(new_type)  # instances of heap types own a reference to their type
    MODELS["PyObject"].from_address(id(obj)).ob_type = id(new_type)
    if old_type.__flags__ & layouts.TPFLAGS_HEAPTYPE:
        _api.Py_DecRef(old_type)
    return old_type


__all__ = ["layout_difference", "swap_type"]
