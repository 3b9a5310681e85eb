"""In-place mutation of "immutable" objects, with the interpreter's rules kept.

``mutate`` writes plain data into an object's payload, bounds-checked, and invalidates the caches
the write makes stale: the bytes of a bytes object, a str's characters, an int's digits, a float's
or complex's values, a tuple's items (references moved with their counts). A list's payload is
object pointers, not data: lists are refused whatever ``force`` says.

Without ``force=True`` it refuses (:class:`~pyguts.errors.UnsafeOperationError`):

- objects the interpreter shares: immortal, interned, cached (:func:`shared_reason`);
- objects anything else holds. Every reference must be a variable of the code running on this
  thread (a local, a cell, a name in the module or class namespace it runs in) or a pyguts view or
  model of the object kept in one. This is CPython's own rule for changing a str, bytes or tuple
  in place (``unicode_modifiable``, ``_PyBytes_Resize``, ``_PyTuple_Resize``: nobody else holds
  it), so a type's ``__mro__``, a code object's constants, a dict's key, or a string another thread
  could intern are never written.

:func:`pyguts.objects.swap.swap_type` shares :func:`refuse_shared`.

>>> b = bytes(b"Hello, ") + b"world!"
>>> mutate(b, 4, b"EVIL")
>>> b, hash(b) == hash(b"HellEVILorld!")
(b'HellEVILorld!', True)
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import itertools
import operator
import sys
import types
from typing import Any

import numpy as np

from pyguts import _compat
from pyguts.errors import UnsafeOperationError
from pyguts.objects import refs
from pyguts.objects.memory import kept_alive, payload
from pyguts.objects.refs import is_immortal
from pyguts.objects.structs import MODELS, STATE_BITS, str_state

_Bytes, _Tuple, _ASCII, _Compact = (MODELS[n] for n in ("PyBytesObject", "PyTupleObject", "PyASCIIObject",
                                                         "PyCompactUnicodeObject"))
# A private PyDLL: setting argtypes on ctypes.pythonapi's shared function objects would change them
# for every other user of ctypes.pythonapi in the process.
_api = ctypes.PyDLL(ctypes.pythonapi._name, handle=ctypes.pythonapi._handle)
_api.Py_IncRef.argtypes = _api.Py_DecRef.argtypes = [ctypes.py_object]
_api.PyObject_Free.argtypes = _api.PyMem_Free.argtypes = [ctypes.c_void_p]
_api.PyObject_GC_Track.argtypes = [ctypes.c_void_p]
_NOT_COMPUTED = -1  # a cached hash of -1 means "compute on next hash()"
#: Small ints CPython caches and hands out for every occurrence (-5..256; 3.15: ..1024).
_SMALL_INTS = _compat.SMALL_INTS
#: Highest code point each str kind may hold; a kind must also *need* its width (canonical form).
_KIND_MAX = {1: 0xFF, 2: 0xFFFF, 4: 0x10FFFF}
_KIND_MIN = {1: 0x80, 2: 0x100, 4: 0x10000}
_STR_UNITS = {1: np.uint8, 2: np.uint16, 4: np.uint32}
_INTERNED = STATE_BITS["interned"]
_INTERNED_MASK = ((1 << _INTERNED.width) - 1) << _INTERNED.shift
#: Types whose payload mutate writes. bytearray is mutable by design: no ownership rule applies.
_WRITABLE = (bytes, bytearray, str, tuple, int, float, complex)
#: What pyguts' own views (numpy arrays) and struct_of() models derive from: they keep the object
#: they show alive (memory.kept_alive), so a reference from one counts as the caller's.
_HOLDER_BASES = (np.ndarray, ctypes.Structure)
#: A fresh private copy of a value of each type, for the refusal messages.
_COPY = {bytes: "bytes(bytearray(b))", str: "''.join(list(s))", tuple: "tuple(list(t))", int: "n + 0",
         float: "x + 0.0", complex: "z + 0j"}
#: 3.11+ (with the GIL) switches threads and runs other Python code (signal handlers, finalizers,
#: pending calls) only at calls, backward jumps and function entries; 3.10 may do so before any
#: instruction.
_ATOMIC_SECTIONS = _compat.VERSION >= (3, 11)


def _describe(obj: object) -> str:
    """``"<type> object <short value>"`` without running methods of ``obj`` (or failing on huge ints)."""
    tp = type(obj)
    if isinstance(obj, (str, bytes, bytearray)):
        base = next(b for b in (str, bytes, bytearray) if isinstance(obj, b))
        text = repr(base.__getitem__(obj, slice(0, 40))) + ("…" if base.__len__(obj) > 40 else "")
    elif isinstance(obj, int) and not isinstance(obj, bool):
        bits = int.bit_length(obj)
        text = int.__repr__(obj) if bits <= 128 else f"of {bits} bits"
    elif isinstance(obj, (float, complex, bool)) or obj is None:
        text = repr(obj) if type(obj) in (float, complex, bool, type(None)) else ""
    elif isinstance(obj, tuple):
        text = f"of {tuple.__len__(obj)} items"
    else:
        text = ""
    return f"{tp.__name__} object {text}".rstrip()


def shared_reason(obj: object) -> str | None:
    """Why ``obj`` is shared by the interpreter (so changing it changes it everywhere), or None."""
    tp = type(obj)
    if is_immortal(obj):
        return f"{_describe(obj)} is immortal: the interpreter shares one copy with every piece of code that uses this value"
    if tp is bool:
        return "True and False are singletons shared by the whole interpreter"
    if tp is int and obj in _SMALL_INTS:
        return f"small ints {_SMALL_INTS.start}..{_SMALL_INTS.stop - 1} are cached: every {obj} in the process is this object"
    if tp is bytes and len(obj) <= 1:
        return "empty and one-byte bytes objects are cached singletons shared by every use of that value"
    if tp is tuple and not obj:
        return "the empty tuple is a singleton shared by the whole interpreter"
    if tp is str:
        if str_state(obj)["interned"]:
            return (f"str {obj[:40]!r} is interned: identifiers, attribute names, dict keys and literals "
                    "with this value all share it")
        if len(obj) == 0 or (len(obj) == 1 and ord(obj) < 256):
            return "empty and one-character Latin-1 strings are cached singletons"
    return None


def refuse_shared(obj: object, verb: str, force: bool) -> None:
    """UnsafeOperationError when ``obj`` is shared (see :func:`shared_reason`), unless ``force``.
    ``verb`` is what was asked, e.g. ``"mutate"``."""
    reason = None if force else shared_reason(obj)
    if reason:
        raise UnsafeOperationError(f"refusing to {verb} {_describe(obj)}: {reason}. Changing it would change it for "
                                   "the whole interpreter; work on a fresh copy nothing else holds (e.g. "
                                   "bytes(bytearray(b))) or pass force=True (run forced experiments inside pyguts.isolate)")


def _check_span(start: int, count: int, length: int, unit: str) -> None:
    if not (0 <= start and start + count <= length):
        raise IndexError(f"writing {count} {unit}(s) at {start} needs 0 <= start and start + {count} <= {length} "
                         f"(the payload's length), got start={start}")


def _refuse_unwritable(obj: object) -> None:
    if isinstance(obj, list):
        raise TypeError("mutate() does not write lists: a list's payload is an array of object pointers, so writing "
                        "values there plants addresses that point nowhere (a crash on the next read), and "
                        "the reference counts go wrong. Assign items instead (lst[i] = x)")
    if not isinstance(obj, _WRITABLE):
        raise TypeError(f"mutate() changes the payload of bytes, bytearray, str, tuple, int, float and complex objects "
                        f"(what payload() supports, lists excepted), got {type(obj).__name__}; use view(obj) to read "
                        "its memory")


# --- what to write, checked before any ownership check (the data's own methods run here) -------

def _str_units(s: str, start: int, data: Any) -> bytes:
    """The code units ``data`` becomes in ``s``'s kind, once the result is known to stay canonical."""
    if not isinstance(data, str):
        raise TypeError(f"data for a str must be a str, got {type(data).__name__}")
    data = str(data) if type(data) is not str else data  # a subclass's own __len__/__iter__ may lie
    state = str_state(s)
    if not state["compact"]:
        raise TypeError("only compact strings can be mutated in place; str subclass instances are not compact")
    _check_span(start, len(data), len(s), "character")
    kind, ascii_ = state["kind"], state["ascii"]
    top = max(map(ord, s[:start] + data + s[start + len(data):]), default=0)
    if (ascii_ and top > 0x7F) or top > _KIND_MAX[kind] or (not ascii_ and top < _KIND_MIN[kind]):
        form = "ASCII" if ascii_ else f"{kind}-byte kind (code points {_KIND_MIN[kind]:#x}..{_KIND_MAX[kind]:#x})"
        raise UnsafeOperationError(
            f"the result's largest code point would be {top:#x}, but this string is stored in {form}; CPython "
            "assumes every str uses its narrowest form (comparisons and hashing rely on it). Write characters "
            "that keep that form, or build a new string")
    return np.array([ord(c) for c in data], dtype=_STR_UNITS[kind]).tobytes()


def _tuple_items(t: tuple, start: int, data: Any) -> list:
    items = list(data)
    _check_span(start, len(items), len(t), "item")
    return items


def _check_digits(digits: np.ndarray, start: int, values: np.ndarray) -> None:
    limit = 1 << _compat.DIGIT_BITS
    if values.size and (values.min() < 0 or values.max() >= limit):
        raise ValueError(f"int digits must be in [0, 2**{_compat.DIGIT_BITS}), got {values.tolist()}")
    result = digits.astype(np.int64)
    result[start:start + values.size] = values
    if result.size and result[-1] == 0:
        raise UnsafeOperationError("the most significant digit would become 0; CPython keeps ints normalized "
                                   "(no leading zero digits) and its comparisons and arithmetic rely on it")


def _plain_values(obj: object, start: int, data: Any) -> np.ndarray:
    """``data`` as a private array of the payload's element type, checked against the payload."""
    current = payload(obj)  # read-only; dropped on return, so it holds no reference at the ownership check
    if isinstance(obj, (bytes, bytearray)):
        values = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8).copy()
    else:
        values = np.array(data, dtype=np.float64 if current.dtype == np.float64 else np.int64).ravel()
    _check_span(start, values.size, current.size, "element")
    if isinstance(obj, int):
        _check_digits(current, start, values)
    return values


# --- who holds it ---------------------------------------------------------------------------------

def _namespaces(frame) -> list[dict]:
    """The dicts a frame looks names up in first: its class or module namespace, then its globals."""
    spaces = [] if frame.f_code.co_flags & inspect.CO_OPTIMIZED else [frame.f_locals]
    return [ns for ns in (*spaces, frame.f_globals) if type(ns) is dict]


def _held_elsewhere(obj: object, outside: int, frame) -> tuple[int, bool]:
    """(how many of the ``outside`` references to ``obj`` are not variables of ``frame`` and the
    frames that called it, nor pyguts views or models kept in them; whether a reference counted came
    from a namespace dict or a cell, which other threads can reach too). Stops once all are found."""
    found, reachable, seen = 0, False, set()  # seen: ids of cells, namespaces and pyguts holders counted once
    while frame is not None and found < outside:
        sources = [(refs.frame_variables(frame), False)]
        if refs.CALLERS_KEEP_ARGUMENTS:  # 3.10: the calling frame's stack still holds each argument
            sources.append((refs.frame_arguments(frame), False))
        for ns in _namespaces(frame):
            if id(ns) not in seen:
                seen.add(id(ns))
                sources.append((list(dict.values(ns)), True))
        for values, in_namespace in sources:  # names bound to obj itself (a C loop: namespaces can be big)
            hits = sum(map(operator.is_, values, itertools.repeat(obj)))
            found, reachable = found + hits, reachable or (in_namespace and hits > 0)
        for values, in_namespace in sources:  # cells and pyguts views or models holding obj
            if found >= outside:
                break
            for value in values:
                tp = type(value)
                if tp is types.CellType:
                    if id(value) not in seen:
                        seen.add(id(value))
                        if _cell_holds(value, obj):
                            found, reachable = found + 1, True
                elif issubclass(tp, _HOLDER_BASES):
                    held = kept_alive(value)
                    if held is not None and held[1] is obj and held[0] not in seen:
                        seen.add(held[0])
                        found, reachable = found + 1, reachable or in_namespace
        frame = frame.f_back
    return outside - found, reachable


def _cell_holds(cell, obj: object) -> bool:
    try:
        return cell.cell_contents is obj
    except ValueError:  # an empty cell
        return False


def _refuse_held(obj: object, elsewhere: int, outside: int) -> None:
    copy = next((hint for base, hint in _COPY.items() if isinstance(obj, base)), "a fresh copy")
    if elsewhere == outside:
        held = "its one reference (besides this call) is" if outside == 1 else f"all {outside} references to it are"
    else:
        held = f"{elsewhere} of the {outside} references to it {'is' if elsewhere == 1 else 'are'}"
    raise UnsafeOperationError(
        f"refusing to mutate {_describe(obj)}: {held} held by something other than the variables of the code "
        "running on this thread (a container, a type's __mro__ or __bases__, a code object's constants, a "
        "function's defaults or closure, another thread), which may rely on its value. mutate() changes only an object that "
        f"nothing else holds: mutate a private copy held by one variable (e.g. {copy}), or pass force=True (run "
        "forced experiments inside pyguts.isolate)")


def _other_threads() -> bool:
    return len(sys._current_frames()) > 1


def _atomic_here() -> bool:
    """Whether _write_str's check and write run with no other thread in between: 3.11+ with the GIL,
    and no tracer, profiler or sys.monitoring tool whose Python callbacks would run between the lines."""
    if not _ATOMIC_SECTIONS or _compat.GIL_DISABLED or sys.gettrace() is not None or sys.getprofile() is not None:
        return False
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is None or all(monitoring.get_tool(tool) is None for tool in range(6))


# --- the writes ---------------------------------------------------------------------------------

def _write_str(s: str, start: int, units: bytes, count: int | None) -> None:
    """Write ``units`` into ``s`` unless, at that very moment, ``s`` is interned or its count is
    not ``count`` (what mutate() found, plus this call's own references; None: forced, no check). The check and the write
    run with no call, loop or tracked allocation between them, so on 3.11+ (with the GIL) no other
    thread runs in between; 3.10 and free-threaded builds cannot promise that (mutate() refuses
    strings other threads can reach there)."""
    forced = count is None
    expected = 0 if forced else count + refs.held_by_call(sys._getframe(), s)
    addr, state = id(s), str_state(s)
    data = addr + ctypes.sizeof(_ASCII if state["ascii"] else _Compact)
    counter = refs.count_cell(addr)
    state_word = ctypes.c_uint32.from_address(addr + _ASCII.state.offset)
    hash_word = ctypes.c_ssize_t.from_address(addr + _ASCII.hash.offset)
    target = (ctypes.c_char * len(units)).from_address(data + start * state["kind"])
    head = _ASCII.from_address(addr)
    compact = None if state["ascii"] else _Compact.from_address(addr)
    has_wstr = "wstr" in _ASCII._c_paths_  # 3.10/3.11: wstr may alias the data (UCS4) or be its own block
    utf8 = wstr = None
    written = False
    collecting = gc.isenabled()
    gc.disable()  # 3.11 may collect (and run finalizers) inside any allocation
    try:
        # --- no call, loop or tracked allocation from here to the write ---
        now = counter.value if counter is not None else refs.header_count(addr)
        if forced or (now == expected and not state_word.value & _INTERNED_MASK):
            hash_word.value = _NOT_COMPUTED
            if compact is not None and compact.utf8:
                utf8, compact.utf8, compact.utf8_length = compact.utf8, None, 0
            if has_wstr and head.wstr and head.wstr != data:
                wstr, head.wstr = head.wstr, None
                if compact is not None:
                    compact.wstr_length = 0
            target.raw = units
            written = True
    finally:
        if collecting:
            gc.enable()
    if utf8:  # detached above, freed once nothing can read it
        getattr(_api, _compat.UTF8_CACHE_FREE)(utf8)
    if wstr:
        _api.PyObject_Free(wstr)
    if not written:
        raise UnsafeOperationError(
            f"refusing to mutate {_describe(s)}: while mutate() checked it, another thread interned it or took a "
            "reference to it, so it is no longer private to this code. Nothing was written; mutate a private copy")


def _write_tuple(t: tuple, start: int, items: list) -> None:
    base = id(t) + _Tuple.ob_item.offset
    for i, new in enumerate(items, start):
        slot = ctypes.c_void_p.from_address(base + 8 * i)
        old = t[i]
        _api.Py_IncRef(new)  # the tuple's new reference
        slot.value = id(new)
        _api.Py_DecRef(old)  # the tuple's old reference (may run __del__: after the write)
        del old
    if not gc.is_tracked(t) and any(gc.is_tracked(x) for x in items):
        # CPython untracks tuples of atomic items; one now holding a container must be tracked
        # again or cycles through it are never collected.
        _api.PyObject_GC_Track(id(t))
    if "ob_hash" in _Tuple._c_paths_:  # 3.14 caches the tuple's hash
        _Tuple.from_address(id(t)).ob_hash = _NOT_COMPUTED


def mutate(obj: object, start: int, data: Any, *, force: bool = False) -> None:
    """Write ``data`` into ``obj``'s payload starting at element ``start``, in place.

    bytes/bytearray take bytes-like data; str takes a str (kind and ASCII form must be kept);
    tuple takes objects (references are moved correctly); int takes digits; float and complex take
    float values. Stale caches (bytes and str hashes, a str's UTF-8 copy, 3.14's tuple hash) are
    reset. Lists are refused (TypeError): their payload is pointers. Shared objects, and objects
    anything but this thread's variables holds, are refused unless ``force=True`` (module docstring).
    """
    refuse_shared(obj, "mutate", force)
    _refuse_unwritable(obj)
    start = operator.index(start)
    if isinstance(obj, str):
        new = _str_units(obj, start, data)
    elif isinstance(obj, tuple):
        new = _tuple_items(obj, start, data)
    else:
        new = _plain_values(obj, start, data)
    del data  # from here on no method of the caller's data runs, and only this call holds obj
    count = 0
    if not force and not isinstance(obj, bytearray):
        count = refs.header_count(id(obj))
        outside = count - refs.held_by_call(sys._getframe(), obj)
        elsewhere, reachable = _held_elsewhere(obj, outside, sys._getframe(1))
        if elsewhere > 0:
            _refuse_held(obj, elsewhere, outside)
        if isinstance(obj, str) and reachable and _other_threads() and not _atomic_here():
            raise UnsafeOperationError(
                f"refusing to mutate {_describe(obj)}: other threads are running and can reach it (it is a name in a "
                "module or class namespace, or in a cell), and here (CPython 3.10, a free-threaded build, or a "
                "tracer, profiler or sys.monitoring tool running Python code between lines) pyguts cannot keep "
                "them from interning it between its check and its write. Hold it only in a local variable of a "
                "function, or pass force=True")
    if isinstance(obj, str):
        return _write_str(obj, start, new, None if force else count)
    if isinstance(obj, tuple):
        return _write_tuple(obj, start, new)
    target = payload(obj, writable=True)
    target[start:start + new.size] = new
    if isinstance(obj, bytes):
        _Bytes.from_address(id(obj)).ob_shash = _NOT_COMPUTED


__all__ = ["mutate", "refuse_shared", "shared_reason"]
