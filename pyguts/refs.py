"""Exact reference counts and immortality, read from the object header.

``refcount(obj)`` is ``ob_refcnt`` as the caller sees it: the reference the call itself holds
is not counted, so for an ordinary object it equals ``sys.getrefcount(obj) - 1`` taken at the
same call site. Immortal objects (3.12+) report their raw, unchanging count.

>>> x = object()
>>> refcount(x)
1
>>> is_immortal(x)
False
"""

from __future__ import annotations

import gc
import sys

from pyguts import _compat, layouts
from pyguts.structs import BUILD, MODELS

_RULE = layouts.refcount_rule_for(_compat.VERSION, BUILD)
_Header = MODELS["PyObject"]
_FREETHREADED = _RULE.immortal == "local_max"


def _count(header) -> int:
    if _FREETHREADED:
        # Py_REFCNT: local + (shared >> _Py_REF_SHARED_SHIFT); the low bits of shared are flags.
        return header.ob_ref_local + (header.ob_ref_shared >> layouts.REF_SHARED_SHIFT)
    return header.ob_refcnt


def _immortal(header) -> bool:
    if _RULE.immortal == "none":
        return False
    if _FREETHREADED:
        return header.ob_ref_local == _RULE.value
    low32 = header.ob_refcnt & 0xFFFFFFFF
    if _RULE.immortal == "equal":
        return low32 == _RULE.value
    return bool(low32 & 0x80000000)  # "sign32": (int32_t)ob_refcnt < 0


def is_immortal(obj: object) -> bool:
    """True when CPython never changes ``obj``'s count (None, small ints, … on 3.12+).

    >>> import sys
    >>> is_immortal(None) == (sys.version_info >= (3, 12))
    True
    """
    return _immortal(_Header.from_address(id(obj)))


def refcount(obj: object) -> int:
    """The exact reference count of ``obj`` as the caller sees it (see the module docstring)."""
    header = _Header.from_address(id(obj))
    if _immortal(header):
        return _count(header)
    return _count(header) - _CALL_REFS


def _references_held_by_a_call() -> int:
    """How many references a direct call ``refcount(x)`` holds while it runs: measured, since
    it depends on the calling convention (2 on 3.10, 1 on 3.11-3.13)."""
    probe = object()  # referenced once, by this local
    return refcount(probe) - 1


_CALL_REFS = 0
_CALL_REFS = _references_held_by_a_call()


def referrers(obj: object) -> list:
    """Objects that refer to ``obj`` (gc-tracked containers and frames), this call's own frame
    excluded; what ``refcount`` counts but untracked holders (C globals, the stack) cannot show.
    """
    frame = sys._getframe()
    try:
        return [r for r in gc.get_referrers(obj) if r is not frame]
    finally:
        del frame


__all__ = ["is_immortal", "refcount", "referrers"]
