"""CPython's own ``_Py_DebugOffsets`` (3.13+), read from the running interpreter.

CPython publishes, as the first member of ``_PyRuntime``, the offsets debuggers and profilers need
(cookie ``"xdebugpy"``, then ``uint64_t`` entries). pyguts reads them as a second ground truth beside
the C compiler: the layout table must agree with them, and past the table they confirm fields.

>>> import sys
>>> offsets = read()
>>> offsets is None or offsets.values["pyobject.ob_type"] == 8
True
"""

from __future__ import annotations

import ctypes
import functools
import sys
from dataclasses import dataclass

from pyguts import _compat
from pyguts.objects import layouts

COOKIE = b"xdebugpy"


@dataclass(frozen=True)
class DebugOffsets:
    """The entries read, as ``{"section.member": value}``, and the row that named them."""

    row: layouts.DebugOffsetsRow
    values: dict[str, int]
    #: True when the row is the one for this version; False when it is the newest known row tried on a
    #: newer interpreter (its values then passed the plausibility checks, see :func:`read`).
    exact: bool


def _runtime_address() -> int | None:
    try:
        return ctypes.addressof(ctypes.c_char.in_dll(ctypes.PyDLL(None), "_PyRuntime"))
    except (OSError, ValueError):  # no such symbol exported (an embedded or stripped build)
        return None


def _plausible(values: dict[str, int]) -> bool:
    """Integer facts any correct reading must show (no memory is followed)."""
    want = {
        "version": sys.hexversion,
        "free_threaded": int(_compat.GIL_DISABLED),
        "pyobject.size": object.__basicsize__,
        "float_object.size": float.__basicsize__,
        "list_object.size": list.__basicsize__,
        "dict_object.size": dict.__basicsize__,
        "type_object.size": type.__sizeof__(int),
    }
    return all(values.get(name) == value for name, value in want.items())


@functools.lru_cache(maxsize=None)
def read() -> DebugOffsets | None:
    """The running interpreter's debug offsets; None before 3.13, where ``_PyRuntime`` is not
    exported, or past the table when the newest known layout does not read plausibly."""
    row = layouts.debug_offsets_row_for(_compat.VERSION)
    base = _runtime_address() if row is not None else None
    if base is None or ctypes.string_at(base, len(COOKIE)) != COOKIE:
        return None
    names = row.names()
    raw = (ctypes.c_uint64 * len(names)).from_address(base + len(COOKIE))
    values = dict(zip(names, raw))
    exact = _compat.VERSION <= layouts.NEWEST
    if not exact and not _plausible(values):
        return None   # a newer interpreter whose debug-offsets layout is unknown: use none of it
    return DebugOffsets(row, values, exact)


def field_facts(offsets: DebugOffsets, models: dict[str, type]) -> list[tuple[str, str | None, int, int]]:
    """(model, field or None for sizeof, published value, model's value) for every entry that
    names a modelled field."""
    out = []
    for name, (model_name, field) in layouts.DEBUG_OFFSET_FIELDS.items():
        model = models.get(model_name)
        if name not in offsets.values or model is None:
            continue
        if field is None:
            mine = ctypes.sizeof(model)
        elif field in model._c_paths_:
            mine = getattr(model, field).offset
        else:
            continue
        out.append((model_name, field, offsets.values[name], mine))
    return out
