"""Foreign allocators under numpy: np.empty/zeros/ones through each pyguts NEP 49 handler vs numpy's own.

Every candidate runs a batch of allocations inside a ``contextvars.Context`` copied while its
handler was installed, the baseline the same batch inside a copy taken under numpy's default
handler: both pay the same ``ctx.run``, and within a batch numpy's context-variable lookup is
cached, as it is inside a ``with use(...)`` block. Times are per batch; the ratios are per array.
Also: ``pyguts.alloc.empty`` (a Block + ``__array_interface__``) vs ``np.empty``, and the cost of
entering and leaving ``use()`` vs numpy's own context-variable manager ``np.errstate()``.

Where allocators lose, and why (measured; see the issue 4 closing note):
- jemalloc, 64 KiB: above its ``tcache_max`` (32 KiB) every request takes the arena path;
  ``MALLOC_CONF=tcache_max:131072`` brings it to 1.00x.
- jemalloc, 8 MiB ``np.ones``: decay purges the freed pages (``madvise``), so every ``np.ones``
  faults 2048 pages in again; the "decay" group shows ``dirty_decay_ms=-1`` closing the gap.
- mmap: an ``mmap``/``munmap`` pair per array (µs) and fresh zero pages to fault in; mmap-huge
  faults 2 MiB pages instead of 4 KiB ones (8 MiB ``np.ones`` ~6x faster than plain mmap).
- Blocks of 4 MiB and more get numpy's own ``madvise(MADV_HUGEPAGE)`` (numpy's switch honoured):
  without it, ``np.sqrt(x*x + y*y)`` at n=1e6 ran 1.6-1.8x numpy's time under pyguts-libc.
- ``np.zeros`` of 8 MiB: allocators that know their pages are fresh (jemalloc after a purge,
  mmap) skip the memset, so the cost moves to the first touch; mimalloc and tcmalloc reuse
  dirty memory and must clear it.
"""

from __future__ import annotations

import contextvars
import ctypes

import numpy as np

import pyguts.alloc as alloc

SIZES = {"128 B": 128, "64 KiB": 64 << 10, "8 MiB": 8 << 20}
#: Arrays made per timed call, by size: enough to amortise ctx.run, few enough for 8 MiB np.ones.
BATCH = {"128 B": 256, "64 KiB": 64, "8 MiB": 2}
MAKERS = {"empty": np.empty, "zeros": np.zeros, "ones": np.ones}


def _context_for(name: str | None) -> contextvars.Context:
    if name is None:
        return contextvars.copy_context()
    with alloc.use(name):
        return contextvars.copy_context()


def _batch(maker, count: int, repeat: int) -> None:
    for _ in range(repeat):
        maker(count)


def _jemalloc_decay(h, default, ctx) -> None:
    """Why jemalloc loses on 8 MiB np.ones: decay purges the freed pages, np.ones faults them in.

    8 MiB reaches jemalloc's ``oversize_threshold``: such requests go to a dedicated arena whose
    decay times are 0 (purge at once). The group below turns decay off on every arena.
    """
    ssize, count, repeat = ctypes.c_ssize_t, (8 << 20) // 8, BATCH["8 MiB"]
    ctx.run(np.ones, count)  # creates the oversize arena (lazily made on the first huge request)
    saved = {}
    for i in range(alloc.mallctl("arenas.narenas", ctype=ctypes.c_uint)):
        for kind in ("dirty", "muzzy"):
            try:
                saved[f"arena.{i}.{kind}_decay_ms"] = alloc.mallctl(f"arena.{i}.{kind}_decay_ms", ctype=ssize)
            except OSError:  # an arena index not in use
                pass
    for key in saved:
        alloc.mallctl(key, -1, ctype=ssize)  # for the whole group: changing decay purges, never toggle
    try:
        h.compare(f"alloc np.ones 8 MiB x{repeat} no decay",
                  ("numpy default", lambda: default.run(_batch, np.ones, count, repeat)),
                  {"pyguts-jemalloc decay_ms=-1": lambda: ctx.run(_batch, np.ones, count, repeat)})
    finally:
        for key, ms in saved.items():
            alloc.mallctl(key, ms, ctype=ssize)


def run(h) -> None:
    names = alloc.available()
    contexts = {name: _context_for(name) for name in names}
    default = _context_for(None)
    for size_name, nbytes in SIZES.items():
        count = nbytes // 8
        for op_name, maker in MAKERS.items():
            def call(ctx, maker=maker, count=count, repeat=BATCH[size_name]):
                return lambda: ctx.run(_batch, maker, count, repeat)
            h.compare(f"alloc np.{op_name} {size_name} x{BATCH[size_name]}", ("numpy default", call(default)),
                      {f"pyguts-{name}": call(ctx) for name, ctx in contexts.items()})
    # A realistic expression: three 8 MB temporaries per call, each over numpy's 4 MiB huge-page line.
    x, y = np.random.default_rng(0).random((2, 10**6))

    def expression(ctx):
        return lambda: ctx.run(lambda: np.sqrt(x * x + y * y))
    h.compare("alloc np.sqrt(x*x+y*y) 1e6", ("numpy default", expression(default)),
              {f"pyguts-{name}": expression(ctx) for name, ctx in contexts.items()})
    if "jemalloc" in contexts:
        _jemalloc_decay(h, default, contexts["jemalloc"])
    count = (64 << 10) // 8
    h.compare("alloc owned empty 64 KiB", ("np.empty", lambda: np.empty(count)),
              {f"alloc.empty {name}": (lambda name=name: alloc.empty(count, allocator=name)) for name in names})

    def install(name=names[0]):
        with alloc.use(name):
            pass

    def errstate():
        with np.errstate():
            pass

    h.compare("alloc handler install", ("np.errstate() enter+exit", errstate),
              {f"use({names[0]!r}) enter+exit": install})
