"""Exact reference counts and immortality, read from the object header.

``refcount(obj)`` counts every reference to ``obj`` that exists apart from the call itself: names,
containers, attributes, frames, the caller's evaluation stack. It is ``ob_refcnt`` less what the
call holds, which depends on the version:

- 3.10: two (the caller's stack entry and the callee's argument, a calibrated constant);
- 3.11-3.13: one (the argument, moved from the caller's stack);
- 3.14+: one or none. A caller may pass a *borrowed* reference (``LOAD_FAST_BORROW``: the stack
  entry owns no count, Include/internal/pycore_stackref.h), so pyguts reads the tag bit of its own
  argument slot in the running frame (``localsplus``, offset from ``_Py_DebugOffsets``) and
  subtracts one only when that slot owns a reference.

On 3.10-3.13 this equals ``sys.getrefcount(obj) - 1`` at the same call site. On 3.14+ that
expression is one low wherever the compiler borrows the argument, and a function's own parameters
may own no count when borrowed from its caller; ``refcount`` stays exact: it equals ``ob_refcnt``
read at that call site with nothing of the call on the stack. Immortal objects (3.12+) report their
raw, unchanging count.

>>> x = object()
>>> refcount(x)
1
>>> is_immortal(x)
False
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import sys

from pyguts import _compat
from pyguts.objects import debug_offsets, layouts
from pyguts.errors import LayoutMismatchError
from pyguts.objects.structs import BUILD, MODELS

_RULE = layouts.refcount_rule_for(min(_compat.VERSION, layouts.NEWEST), BUILD)
_Header = MODELS["PyObject"]
_count = _RULE.count
_immortal = _RULE.header_is_immortal
#: Default builds keep the whole count in ob_refcnt at offset 0: read it as one scalar (a struct
#: instance and a field read cost twice as much); free-threaded counts take the struct.
_WORD = None if _RULE.immortal == "local_max" else {4: ctypes.c_uint32, 8: ctypes.c_ssize_t}[_Header.ob_refcnt.size]
_is_immortal_word = _RULE.is_immortal


def _count_of(addr: int) -> tuple[int, bool]:
    """(count, immortal) of the object at ``addr``."""
    if _WORD is None:
        header = _Header.from_address(addr)
        return _count(header), _immortal(header)
    count = _WORD.from_address(addr).value
    return count, _is_immortal_word(count)


def header_count(addr: int) -> int:
    """The count in the header of the object at ``addr``, nothing subtracted (free-threaded:
    ``ob_ref_local + ob_ref_shared >> 2``)."""
    return _count_of(addr)[0]


def count_cell(addr: int):
    """A ctypes scalar over the count of the object at ``addr``, so ``.value`` reads
    :func:`header_count` without a call (default builds); None where the count spans two fields
    (free-threaded)."""
    return None if _WORD is None else _WORD.from_address(addr)


def is_immortal(obj: object) -> bool:
    """True when CPython never changes ``obj``'s count (None, small ints, … on 3.12+).

    >>> import sys
    >>> is_immortal(None) == (sys.version_info >= (3, 12))
    True
    """
    return _count_of(id(obj))[1]


def refcount(obj: object) -> int:
    """The exact reference count of ``obj`` as the caller sees it (see the module docstring)."""
    if _WORD is None:
        count, immortal = _count_of(id(obj))
    else:   # inline: this is the hot path
        count = _WORD.from_address(id(obj)).value
        immortal = _is_immortal_word(count)
    if immortal:
        return count
    if _STACKREFS:
        return count - held_by_call(sys._getframe(), obj)
    return count - _CALL_REFS


#: 3.14+: a _PyStackRef whose low bit is set owns no reference (Py_TAG_REFCNT, Py_TAG_DEFERRED
#: free-threaded); the low two bits are tags (Py_TAG_BITS), the rest is the object's address. Both
#: bits set (Py_INT_TAG) mark a tagged int, no object at all.
_BORROWED_TAG = 1
_TAG_MASK = 3
_STACKREFS = _compat.VERSION >= (3, 14)
#: 3.10 keeps a frame's variables in the frame object itself (PyFrameObject.f_localsplus, after a
#: 20-entry block stack); 3.11+ in a _PyInterpreterFrame the frame object points to (f_frame).
_LOCALS_IN_FRAME_OBJECT = _compat.VERSION < (3, 11)
#: Words of a running frame searched for its first argument where no debug offsets say where
#: localsplus starts (before 3.13, and past the table): a _PyInterpreterFrame header is ~10 words,
#: a 3.10 PyFrameObject ~45.
_FRAME_SEARCH_WORDS = 64 if _LOCALS_IN_FRAME_OBJECT else 16
#: PyFrameObject: PyObject_HEAD, f_back, then f_frame (3.11+, Include/internal/pycore_frame.h).
_F_FRAME = ctypes.sizeof(_Header) + _compat.POINTER_SIZE


def _iframe(frame) -> int:
    """Address of a running frame's _PyInterpreterFrame (3.11+: PyFrameObject.f_frame); 3.10: the
    frame object itself."""
    if _LOCALS_IN_FRAME_OBJECT:
        return id(frame)
    return ctypes.c_void_p.from_address(id(frame) + _F_FRAME).value


def _frame_words(frame) -> list[int]:
    # 3.10: no further than the frame object's own allocation (frame.__sizeof__(), Objects/frameobject.c).
    words = min(_FRAME_SEARCH_WORDS, frame.__sizeof__() // _compat.POINTER_SIZE) if _LOCALS_IN_FRAME_OBJECT \
        else _FRAME_SEARCH_WORDS
    return list((ctypes.c_size_t * words).from_address(_iframe(frame)))


def _first_slot(frame) -> int:
    """The _PyStackRef bits of a running frame's first local."""
    return ctypes.c_size_t.from_address(_iframe(frame) + _LOCALSPLUS).value


def _find_localsplus() -> int:
    """Where a frame's first argument lives, found by its contents: two known arguments, side by side."""
    def probe(first, second):
        spare0 = spare1 = spare2 = spare3 = spare4 = spare5 = spare6 = spare7 = None  # noqa: F841 (frame room)
        return _frame_words(sys._getframe())

    first, second = object(), object()
    words = probe(first, second)
    for i in range(len(words) - 1):
        if words[i] & ~_TAG_MASK == id(first) and words[i + 1] & ~_TAG_MASK == id(second):
            return i * _compat.POINTER_SIZE
    raise LayoutMismatchError(f"pyguts cannot find a frame's arguments on CPython {_compat.BUILD_NAME} "
                              "(no _Py_DebugOffsets, and no argument slot in the first frame words)")


# localsplus[0] is a running frame's first argument: CPython's debug offsets say where (3.13+), else
# it is found by its contents (before 3.13, and past the table).
_offsets = debug_offsets.read()
_LOCALSPLUS = (_offsets.values["interpreter_frame.localsplus"] if _offsets is not None and not _LOCALS_IN_FRAME_OBJECT
               else _find_localsplus())
del _offsets


def _nlocalsplus(code) -> int:
    """Slots a frame of ``code`` gives its variables: locals, then cells and free variables
    (3.11+: a cell that is also an argument shares the argument's slot)."""
    if _LOCALS_IN_FRAME_OBJECT:
        return code.co_nlocals + len(code.co_cellvars) + len(code.co_freevars)
    return len(set(code.co_varnames) | set(code.co_cellvars)) + len(code.co_freevars)


#: 3.10 leaves a Python-to-Python call's arguments on the caller's value stack while the callee
#: runs (3.11+ moves them into the callee's frame): each argument is then held twice.
CALLERS_KEEP_ARGUMENTS = _compat.VERSION < (3, 11)
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def frame_arguments(frame) -> list:
    """The objects a running frame's named parameters still hold (positional and keyword-only), in
    order; unbound ones skipped. Empty for a generator or coroutine frame, whose caller passed its
    arguments when it was created, not when it was resumed."""
    code = frame.f_code
    if code.co_flags & _GENERATOR_FLAGS:
        return []
    return _owned(frame, code.co_argcount + code.co_kwonlyargcount)


def frame_variables(frame) -> list:
    """The objects a running frame's variables hold a reference to (locals, arguments, cells and
    free variables), read from the frame's memory: ``frame.f_locals`` would build a locals dict
    before 3.13, and that dict keeps references for as long as the frame runs. Unbound variables are
    skipped, and so (3.14+) are arguments borrowed from the caller's stack, which own no count."""
    return _owned(frame, _nlocalsplus(frame.f_code))


def _owned(frame, count: int) -> list:
    """The objects in a running frame's first ``count`` variable slots that own a reference."""
    words = (ctypes.c_size_t * count).from_address(_iframe(frame) + _LOCALSPLUS)
    # A _PyStackRef tagged Py_TAG_REFCNT (or Py_TAG_DEFERRED) owns no count; both tags set: an int.
    return [ctypes.cast(w & ~_TAG_MASK, ctypes.py_object).value for w in words
            if w & ~_TAG_MASK and not w & _BORROWED_TAG]


def held_by_call(frame, obj: object) -> int:
    """References to ``obj`` that the running call ``frame``, whose first argument is ``obj``,
    holds itself (see the module docstring): what a function reporting counts subtracts."""
    if not _STACKREFS:
        return _CALL_REFS
    bits = _first_slot(frame)
    if bits & ~_TAG_MASK != id(obj):
        raise LayoutMismatchError(
            f"the first argument slot of {frame.f_code.co_name}() holds {bits:#x}, not id(obj) = {id(obj):#x}: "
            f"pyguts misreads frames on CPython {_compat.BUILD_NAME}; please report this build")
    return 0 if bits & _BORROWED_TAG else 1


def _references_held_by_a_call() -> int:
    """How many references a direct call ``refcount(x)`` holds while it runs before 3.14: measured,
    since it depends on the calling convention (2 on 3.10, 1 on 3.11-3.13)."""
    probe = object()  # referenced once, by this local
    return refcount(probe) - 1


#: 3.10-3.13 default builds: ``refcount`` reads the count through ``sys.getrefcount``, which
#: returns ob_refcnt as it is (an immortal count unchanged); below _IMMORTAL_FROM no count is
#: immortal (3.12+: a negative low 32-bit word, Include/object.h), so no rule is asked.
_getrefcount = sys.getrefcount
_BY_GETREFCOUNT = False
_GETREFCOUNT_REFS = 0
_IMMORTAL_FROM = 1 << 31 if _compat.VERSION >= (3, 12) else sys.maxsize
_CALL_REFS = 0
if not _STACKREFS:
    _CALL_REFS = _references_held_by_a_call()


def _held_through_getrefcount(obj: object) -> int:
    """What ``refcount``'s fast path reads, for a call shaped as ``refcount(x)`` (a ``def`` of one
    argument calling sys.getrefcount on it): less the probe's one reference, what such a call holds."""
    return _getrefcount(obj)


if not _STACKREFS and _WORD is not None:
    _probe = object()   # referenced once, by this name
    _GETREFCOUNT_REFS = _held_through_getrefcount(_probe) - 1
    del _probe
    # sys.getrefcount holds its own argument: one more than the ctypes read. Otherwise, the ctypes read.
    _BY_GETREFCOUNT = _GETREFCOUNT_REFS == _CALL_REFS + 1


def _refcount_by_getrefcount(obj: object) -> int:   # 3.12-3.13 default builds: immortal counts stay raw
    count = _getrefcount(obj)
    if count < _IMMORTAL_FROM:
        return count - _GETREFCOUNT_REFS
    return count if _is_immortal_word(count) else count - _GETREFCOUNT_REFS


def _refcount_no_immortals(obj: object) -> int:     # 3.10-3.11 default builds: nothing is immortal
    return _getrefcount(obj) - _GETREFCOUNT_REFS


# The hot path of leak hunting and teaching loops: on 3.10-3.13 default builds ``refcount`` is one of
# the two above (the same word read by sys.getrefcount, no ctypes object made, no branch taken
# first; each has the shape _held_through_getrefcount calibrated), under refcount's name and docs.
if _BY_GETREFCOUNT:
    _fast = _refcount_no_immortals if _IMMORTAL_FROM == sys.maxsize else _refcount_by_getrefcount
    _fast.__name__ = _fast.__qualname__ = "refcount"
    _fast.__doc__ = refcount.__doc__
    refcount = _fast
    del _fast


def referrers(obj: object) -> list:
    """Objects that refer to ``obj`` (gc-tracked containers and frames), this call's own frame
    excluded; what ``refcount`` counts but untracked holders (C globals, the stack) cannot show.
    """
    frame = sys._getframe()
    try:
        return [r for r in gc.get_referrers(obj) if r is not frame]
    finally:
        del frame


__all__ = ["CALLERS_KEEP_ARGUMENTS", "count_cell", "frame_arguments", "frame_variables", "header_count",
           "held_by_call", "is_immortal", "refcount", "referrers"]
