"""Allocator statistics: the library's own figures where it exposes them, pyguts' counters, RSS.

Keys (bytes unless named otherwise):

- every allocator: ``rss`` (process resident set, psutil), ``pyguts_live_bytes`` (bytes of
  :func:`empty`/:func:`zeros` blocks not yet freed), and the shim's call counters
  ``handler_allocs``/``handler_frees``/``handler_reallocs`` (NEP 49 path) and
  ``owned_allocs``/``owned_frees`` (blocks), ``handler_cached_bytes`` (small blocks freed by numpy
  and kept for reuse, as numpy's default handler does; still allocated in the library's figures).
- jemalloc (``mallctl`` after an ``"epoch"`` write, with this thread's tcache flushed first):
  ``allocated``, ``active``, ``resident``, ``mapped``, ``retained``. jemalloc is opened privately,
  so these count pyguts' bytes only (unless it was LD_PRELOADed as the process malloc).
- mimalloc 2.0 (``mi_process_info``; its per-heap counters are compiled out of release builds):
  ``committed``, ``peak_committed`` (its "current_rss" on Linux is the commit charge again).
- tcmalloc (``MallocExtension_GetNumericProperty``): ``allocated``, ``heap_size``, ``resident``
  (heap minus unmapped pages), ``pageheap_free``.
- libc (``mallinfo2``, the whole process's glibc heap, Python's objects included):
  ``allocated`` (in-use chunks + mmapped chunks), ``arena``, ``mapped``.
- mmap: ``mapped`` (bytes mapped now through pyguts); mmap-huge also ``anon_huge_pages`` (the
  whole process's transparent huge pages, ``/proc/self/smaps_rollup``; 0 where THP is off).

>>> s = stats("libc")
>>> s["rss"] > 0 and s["allocated"] > 0
True
"""

from __future__ import annotations

import ctypes
import os

import psutil

from pyguts import _mallinfo
from pyguts.alloc import registry, shim

_SIZE = ctypes.c_size_t


def _mallctl_fn(alloc):
    return registry.MALLCTL(alloc.symbol("mallctl"))


def mallctl(name: str, value: int | None = None, *, ctype=ctypes.c_size_t) -> int | None:
    """Read jemalloc's control ``name``, or write ``value`` to it (then returns None).

    ``ctype`` is the control's C type: ``ctypes.c_ssize_t`` for the ``*_decay_ms`` controls,
    ``ctypes.c_bool`` for flags, ``ctypes.c_size_t`` (default) for sizes; see ``man jemalloc``.
    Writing ``arena.4096.dirty_decay_ms`` (4096: every arena) to -1 stops purging freed pages.

    >>> mallctl("opt.dirty_decay_ms", ctype=ctypes.c_ssize_t) >= -1
    True
    """
    fn = _mallctl_fn(registry.load("jemalloc"))
    old, size = ctype(), _SIZE(ctypes.sizeof(ctype))
    if value is None:
        rc = fn(name.encode(), ctypes.byref(old), ctypes.byref(size), None, 0)
    else:  # write only: some controls (arena.4096.*, every arena at once) cannot be read
        rc = fn(name.encode(), None, None, ctypes.byref(ctype(value)), ctypes.sizeof(ctype))
    if rc:
        raise OSError(rc, f"jemalloc mallctl({name!r}) must return 0, got errno {rc} "
                          f"({os.strerror(rc)}); check the name and ctype against `man jemalloc`")
    return old.value if value is None else None


def _jemalloc(alloc) -> dict[str, int]:
    mallctl = _mallctl_fn(alloc)
    mallctl(b"thread.tcache.flush", None, None, None, 0)  # cached frees count as allocated otherwise
    epoch = ctypes.c_uint64(1)
    rc = mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))  # refresh the stats
    if rc:
        raise OSError(rc, f"jemalloc mallctl('epoch') must return 0, got {rc}")
    out = {}
    for key in ("allocated", "active", "resident", "mapped", "retained"):
        value, size = _SIZE(0), _SIZE(ctypes.sizeof(_SIZE))
        if mallctl(f"stats.{key}".encode(), ctypes.byref(value), ctypes.byref(size), None, 0) == 0:
            out[key] = value.value
    return out


def _mimalloc(alloc) -> dict[str, int]:
    fn = ctypes.CFUNCTYPE(None, *[ctypes.POINTER(_SIZE)] * 8)(alloc.symbol("process_info"))
    vals = [_SIZE(0) for _ in range(8)]
    fn(*map(ctypes.byref, vals))
    # elapsed_msecs, user_msecs, system_msecs, current_rss, peak_rss, current_commit, peak_commit, page_faults
    # On Linux mimalloc 2.0 reports current_rss as its commit charge, so only commit is kept.
    return {"committed": vals[5].value, "peak_committed": vals[6].value}


def _tcmalloc(alloc) -> dict[str, int]:
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_SIZE))(alloc.symbol("numeric_property"))
    out = {}
    for key, prop in (("allocated", b"generic.current_allocated_bytes"), ("heap_size", b"generic.heap_size"),
                      ("pageheap_free", b"tcmalloc.pageheap_free_bytes"),
                      ("unmapped", b"tcmalloc.pageheap_unmapped_bytes")):
        value = _SIZE(0)
        if fn(prop, ctypes.byref(value)):
            out[key] = value.value
    if "heap_size" in out and "unmapped" in out:
        out["resident"] = out["heap_size"] - out.pop("unmapped")
    return out


def _libc(alloc) -> dict[str, int]:
    if alloc.symbol("mallinfo2") is None:  # glibc < 2.33: mallinfo's int fields wrap past 2 GiB
        return {}
    info = _mallinfo.read()
    return {"allocated": info.uordblks + info.hblkhd, "arena": info.arena, "mapped": info.hblkhd}


def _anon_huge_pages() -> int:
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_LIBRARY_STATS = {"jemalloc": _jemalloc, "mimalloc": _mimalloc, "tcmalloc": _tcmalloc, "libc": _libc}


def stats(name: str) -> dict[str, int]:
    """A snapshot of allocator ``name``'s figures, pyguts' counters and the process RSS (see module doc).

    >>> s = stats("mmap")
    >>> sorted(k for k in s if k in ("mapped", "rss"))
    ['mapped', 'rss']
    """
    alloc = registry.load(name)
    counts = shim.counts(alloc.ctx)
    out: dict[str, int] = {"rss": psutil.Process().memory_info().rss,
                           "pyguts_live_bytes": counts.pop("owned_live_bytes")}
    mmap_bytes = counts.pop("mmap_live_bytes")
    out.update(counts)
    if alloc.spec.family == shim.FAMILY_MMAP:
        out["mapped"] = mmap_bytes
    if alloc.spec.huge:
        out["anon_huge_pages"] = _anon_huge_pages()
    reader = _LIBRARY_STATS.get(name)
    if reader is not None:
        out.update(reader(alloc))
    return out
