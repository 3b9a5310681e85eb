"""The C shim behind pyguts.alloc: NEP 49 handler functions and owned allocations, no Python inside.

The shim is built on first use through :func:`pyguts.native.build` (cffi API mode, cached on disk
by content hash under ``$PYGUTS_CACHE_DIR``, else ``$XDG_CACHE_HOME/pyguts``, else
``~/.cache/pyguts``). Extension modules are never unloaded, so the handler functions numpy calls
stay valid until the process ends (interpreter exit included).

Each allocator gets one ``pg_ctx`` (the library's function pointers + counters), created by
``pg_ctx_new`` and never freed, and one ``pg_handler`` (numpy's ``PyDataMem_Handler`` layout,
version 1, ``numpy/ndarraytypes.h``) pointing at it.

>>> lib = shim()
>>> lib.pg_abi_version() == ABI_VERSION
True
"""

from __future__ import annotations

import pathlib
import re

#: The C source, a real file shipped beside this module.
SOURCE_PATH = pathlib.Path(__file__).with_name("shim.c")
#: The shim's ABI version, bumped (in shim.c) whenever its structs or function signatures change.
ABI_VERSION = int(re.search(r"#define PG_ABI_VERSION (\d+)", SOURCE_PATH.read_text())[1])

#: Allocator families: how the shim calls a library (see pg_owned_alloc).
FAMILY_PLAIN, FAMILY_JEMALLOC, FAMILY_MIMALLOC, FAMILY_MMAP = 0, 1, 2, 3

#: Counter slots filled by pg_ctx_counts, in order.
COUNTER_NAMES = ("handler_allocs", "handler_frees", "handler_reallocs",
                 "owned_allocs", "owned_frees", "owned_live_bytes", "mmap_live_bytes",
                 "handler_cached_bytes")

#: The shim's C interface: addresses travel as uintptr_t so Python ints pass straight through.
CDEF = """
int pg_abi_version(void);
uintptr_t pg_capsule_name_addr(void);
uintptr_t pg_ctx_new(uintptr_t malloc_fn, uintptr_t calloc_fn, uintptr_t realloc_fn, uintptr_t free_fn,
                     uintptr_t memalign_fn, uintptr_t zalign_fn, int family, int huge, int flags,
                     int lazy_zero);
uintptr_t pg_handler_new(const char *name, uintptr_t ctx);
void pg_ctx_counts(uintptr_t ctx, uint64_t *out);
uintptr_t pg_owned_alloc(uintptr_t ctx, size_t nbytes, size_t align, int zero);
void pg_owned_free(uintptr_t ctx, uintptr_t addr, size_t nbytes, size_t align);
void pg_set_numpy_hugepage(int on);
"""

_LIB = None
_FFI = None


def shim():
    """The compiled shim's raw cffi ``lib`` (built once through pyguts.native, cached on disk).

    >>> shim().pg_abi_version() == ABI_VERSION
    True
    """
    global _LIB, _FFI
    if _LIB is None:
        from pyguts import native  # imported on first use: importing pyguts.alloc compiles nothing
        library = native.build(CDEF, SOURCE_PATH.read_text(), name="pyguts_alloc_shim")
        _FFI, _LIB = library.ffi, library.lib
    return _LIB


def ffi():
    """The shim's cffi FFI (building the shim first, like :func:`shim`)."""
    shim()
    return _FFI


def counts(ctx: int) -> dict[str, int]:
    """The shim's counters for one allocator context, as signed integers."""
    lib = shim()
    buf = _FFI.new("uint64_t[]", len(COUNTER_NAMES))
    lib.pg_ctx_counts(ctx, buf)
    return {name: (int(v) - (1 << 64) if v >= 1 << 63 else int(v)) for name, v in zip(COUNTER_NAMES, buf)}
