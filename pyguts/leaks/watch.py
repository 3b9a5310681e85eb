"""Which objects a leak check watches, and how it names them without keeping them alive.

The watched set: the arguments, what is reachable from them within a cap, what a Python function
reaches by itself (bound self, closure cells, the globals its code names), minus objects shared
interpreter-wide (None, small ints, one-character strings, immortal objects on 3.12+).

>>> kept = [10**6, "".join(["t", "wo"])]   # a runtime string: literals are interned (immortal on 3.12+)
>>> sorted(type(x).__name__ for x in reachable([kept], cap=10, depth=1))
['int', 'list', 'str']
>>> watchable(None), watchable(5), watchable(10**6)
(False, False, True)
"""

from __future__ import annotations

import functools
import gc
import sys
import types

from pyguts import _compat

#: At most this many objects are watched for refcount growth; reachable ones within WATCH_DEPTH hops.
WATCH_CAP = 256
WATCH_DEPTH = 2
REPR_MAX = 80


def name_of(fn) -> str:
    """``module.qualname`` of a callable, through partials.

    >>> name_of(functools.partial(reachable, []))
    'pyguts.leaks.watch.reachable'
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def safe_repr(obj) -> str:
    """``repr(obj)`` cut to REPR_MAX characters; a failing ``__repr__`` gives a placeholder.

    >>> safe_repr("x" * 100)[-4:]
    'x...'
    """
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the report
        text = f"<{type(obj).__name__} repr failed: {type(exc).__name__}>"
    return text if len(text) <= REPR_MAX else text[:REPR_MAX - 3] + "..."


def type_name(tp: type) -> str:
    """A type's qualified name, without the module for builtins.

    >>> type_name(list), type_name(functools.partial)
    ('list', 'functools.partial')
    """
    module = getattr(tp, "__module__", "builtins")
    return tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"


def watchable(obj) -> bool:
    """False for objects shared interpreter-wide (their refcounts move with anything, or never on 3.12+)."""
    if obj is None or isinstance(obj, (bool, type(Ellipsis), type(NotImplemented))) or _compat.is_immortal(obj):
        return False
    tp = type(obj)
    if tp is int:   # the small-int cache, CPython's _PY_NSMALLNEGINTS/_PY_NSMALLPOSINTS
        return obj not in _compat.SMALL_INTS
    if tp in (str, bytes, tuple, frozenset):   # empty and one-character singletons
        return len(obj) > (0 if tp in (tuple, frozenset) else 1)
    return True


def reachable(roots, cap: int, depth: int) -> list:
    """Objects reachable from ``roots`` within ``depth`` referent hops, at most ``cap``, no duplicates."""
    seen: set[int] = set()
    found: list = []
    frontier = list(roots)
    for level in range(depth + 1):
        nxt = []
        for obj in frontier:
            if id(obj) in seen or len(found) >= cap:
                continue
            seen.add(id(obj))
            if watchable(obj):
                found.append(obj)
            # Do not walk into modules, classes or functions: their referents are whole namespaces.
            if level < depth and not isinstance(obj, (type, type(sys), types.FunctionType)):
                nxt.extend(gc.get_referents(obj))
        frontier = nxt
    return found


def touched_by(fn, depth: int = 2) -> list:
    """What a Python function reaches without arguments: bound self, partial's arguments, closure
    cells and the module globals its code names (a leaked reference to any of them is visible);
    functions among those are followed ``depth`` levels (a test body wrapped in a closure)."""
    found: list = []
    for _ in range(8):   # unwrap partials and bound methods, a few levels deep
        if isinstance(fn, functools.partial):
            found += [*fn.args, *fn.keywords.values()]
            fn = fn.func
        elif hasattr(fn, "__self__") and hasattr(fn, "__func__"):   # a bound Python method
            found.append(fn.__self__)
            fn = fn.__func__
        else:
            owner = getattr(fn, "__self__", None)   # a bound builtin method: kept.append -> kept
            if owner is not None and not isinstance(owner, types.ModuleType):
                found.append(owner)
            break
    code, namespace = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if code is not None and isinstance(namespace, dict):
        found += [namespace[name] for name in code.co_names if name in namespace]
        found += [cell.cell_contents for cell in (getattr(fn, "__closure__", None) or ())
                  if _cell_filled(cell)]
    if depth > 0:
        for obj in list(found):
            if isinstance(obj, (types.FunctionType, types.MethodType, functools.partial)):
                found += touched_by(obj, depth - 1)
    return found


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:   # an empty cell: the variable is not bound yet
        return False
    return True
