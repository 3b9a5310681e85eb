"""In-place mutation of "immutable" objects, with the interpreter's rules kept.

``mutate`` writes into an object's payload, bounds-checked, and invalidates the caches the write
makes stale. It refuses objects the interpreter shares (immortal, interned, cached) with
:class:`~pyguts.errors.UnsafeOperationError` unless ``force=True`` (so does
:func:`pyguts.objects.swap.swap_type`).

>>> b = bytes(b"Hello, ") + b"world!"
>>> mutate(b, 4, b"EVIL")
>>> b, hash(b) == hash(b"HellEVILorld!")
(b'HellEVILorld!', True)
"""

from __future__ import annotations

import ctypes
import gc
from typing import Any

import numpy as np

from pyguts import _compat
from pyguts.errors import UnsafeOperationError
from pyguts.objects.memory import payload
from pyguts.objects.refs import is_immortal
from pyguts.objects.structs import MODELS, str_state

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


def shared_reason(obj: object) -> str | None:
    """Why ``obj`` is shared by the interpreter (so changing it changes it everywhere), or None."""
    tp = type(obj)
    if is_immortal(obj):
        return (f"{tp.__name__} object {obj!r:.40} is immortal: the interpreter shares one copy with "
                "every piece of code that uses this value")
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
            return (f"str {obj!r:.40} is interned: identifiers, attribute names, dict keys and literals "
                    "with this value all share it")
        if len(obj) == 0 or (len(obj) == 1 and ord(obj) < 256):
            return "empty and one-character Latin-1 strings are cached singletons"
    return None


def refuse_shared(obj: object, what: str, force: bool) -> None:
    """UnsafeOperationError when ``obj`` is shared (see :func:`shared_reason`), unless ``force``."""
    reason = shared_reason(obj)
    if reason and not force:
        raise UnsafeOperationError(f"refusing to {what}: {reason}. Changing it would change it for the whole "
                                   "interpreter; work on a fresh copy nothing else holds (e.g. bytes(bytearray(b))) "
                                   "or pass force=True (run forced experiments inside pyguts.isolate)")


def _check_span(start: int, count: int, length: int, unit: str) -> None:
    if not (0 <= start and start + count <= length):
        raise IndexError(f"writing {count} {unit}(s) at {start} needs 0 <= start and start + {count} <= {length} "
                         f"(the payload's length), got start={start}")


def _free_str_caches(s: str, state: dict[str, int]) -> None:
    """Drop the separately allocated UTF-8 (and, before 3.12, wchar_t) copies a write makes stale."""
    addr = id(s)
    data = addr + ctypes.sizeof(_ASCII if state["ascii"] else _Compact)
    if not state["ascii"]:
        head = _Compact.from_address(addr)
        if head.utf8:
            getattr(_api, _compat.UTF8_CACHE_FREE)(head.utf8)
            head.utf8, head.utf8_length = None, 0
    if "wstr" in _ASCII._c_paths_:  # 3.10/3.11: wstr may alias the data (UCS4) or be its own (PyObject_Malloc)
        head = _ASCII.from_address(addr)
        if head.wstr and head.wstr != data:
            _api.PyObject_Free(head.wstr)
            head.wstr = None
            if not state["ascii"]:
                _Compact.from_address(addr).wstr_length = 0


def _mutate_str(s: str, start: int, data: Any) -> None:
    if not isinstance(data, str):
        raise TypeError(f"data for a str must be a str, got {type(data).__name__}")
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
    payload(s, writable=True)[start:start + len(data)] = [ord(c) for c in data]
    _ASCII.from_address(id(s)).hash = _NOT_COMPUTED
    _free_str_caches(s, state)


def _mutate_tuple(t: tuple, start: int, items: Any) -> None:
    items = list(items)
    _check_span(start, len(items), len(t), "item")
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


def _check_digits(digits: np.ndarray, start: int, values: np.ndarray) -> None:
    limit = 1 << _compat.DIGIT_BITS
    if values.size and (values.min() < 0 or values.max() >= limit):
        raise ValueError(f"int digits must be in [0, 2**{_compat.DIGIT_BITS}), got {values.tolist()}")
    result = digits.astype(np.int64)
    result[start:start + values.size] = values
    if result.size and result[-1] == 0:
        raise UnsafeOperationError("the most significant digit would become 0; CPython keeps ints normalized "
                                   "(no leading zero digits) and its comparisons and arithmetic rely on it")


def mutate(obj: object, start: int, data: Any, *, force: bool = False) -> None:
    """Write ``data`` into ``obj``'s payload starting at element ``start``, in place.

    bytes/bytearray take bytes-like data; str takes a str (kind and ASCII form must be kept);
    tuple takes objects (references are moved correctly); int takes digits; float and complex take
    float values. Stale caches (bytes and str hashes, a str's UTF-8 copy, 3.14's tuple hash) are
    reset. Shared objects are refused unless ``force=True``.
    """
    refuse_shared(obj, f"mutate {type(obj).__name__} object {obj!r:.40}", force)
    if isinstance(obj, str):
        return _mutate_str(obj, start, data)
    if isinstance(obj, tuple):
        return _mutate_tuple(obj, start, data)
    target = payload(obj, writable=True)  # raises TypeError for unsupported types
    if isinstance(obj, (bytes, bytearray)):
        values = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    else:
        values = np.asarray(data, dtype=np.float64 if target.dtype == np.float64 else np.int64).ravel()
    _check_span(start, values.size, target.size, "element")
    if isinstance(obj, int):
        _check_digits(target, start, values)
    target[start:start + values.size] = values
    if isinstance(obj, bytes):
        _Bytes.from_address(id(obj)).ob_shash = _NOT_COMPUTED


__all__ = ["mutate", "refuse_shared", "shared_reason"]
