"""Foreign allocators under numpy: np.empty/zeros/ones through each pyguts NEP 49 handler vs numpy's own.

Every candidate runs a batch of allocations inside a ``contextvars.Context`` copied while its
handler was installed, the baseline the same batch inside a copy taken under numpy's default
handler: both pay the same ``ctx.run``, and within a batch numpy's context-variable lookup is
cached, as it is inside a ``with use(...)`` block. Times are per batch; the ratios are per array.
Also: ``pyguts.alloc.empty`` (array and Block made in C, pyguts/_ndarray.c) vs ``np.empty``, and the cost of
entering and leaving ``use()`` vs numpy's own context-variable manager ``np.errstate()``.

Sizes 8 B to 256 MiB, each with ``np.sqrt(x*x + y*y)`` over inputs of that size; the goal for the
general-purpose allocators is 1.10x numpy's default (issue 17). What was fixed, and what stays:
- jemalloc, 64 KiB and 8 MiB: above its default ``tcache_max`` (32 KiB) every request took the arena
  path (64 KiB 2.5x, 8 MiB 1.4x); pyguts loads it with ``tcache_max:8388608``, its largest
  (pyguts.alloc.registry.JEMALLOC_CONF): 8 MiB 1.02-1.13x.
- jemalloc, ``alloc.empty`` of 64 KiB: asked for an alignment, jemalloc serves blocks over 14 KiB
  from the arena, never its thread cache (3x); the shim asks without one first and checks.
- jemalloc, 8 MiB and up: freed blocks were purged at once (its oversize policy), so every
  ``np.ones`` faulted 2048 pages in again (7-17x); pyguts' own arena lifts the threshold.
- mmap: an ``mmap``/``munmap`` pair per array (µs) and fresh zero pages to fault in; mmap-huge
  faults 2 MiB pages instead of 4 KiB ones (8 MiB ``np.ones`` ~6x faster than plain mmap).
- Blocks of 4 MiB and more get numpy's own ``madvise(MADV_HUGEPAGE)`` (numpy's switch honoured):
  without it, ``np.sqrt(x*x + y*y)`` at n=1e6 ran 1.6-1.8x numpy's time under pyguts-libc.
- ``np.zeros`` of 8 MiB and more: allocators that know their pages are fresh (mmap; glibc and
  numpy above glibc's mmap threshold) skip the memset, so the cost moves to the first touch;
  those that reuse freed memory must clear it. mimalloc and tcmalloc cleared a reused 256 MiB block
  with memset (13,000x and 416x numpy's time); from 32 MiB on, pyguts clears their blocks by giving
  the pages back instead (shim.c, pg_lazy_zero: 3x and 0.25x, measured under load).
- ``alloc.empty``: a repeated request is looked up in C (pyguts/_ndarray.c, cached()), and libc and
  tcmalloc take alignments of 32-256 B as malloc(n + alignment): glibc's memalign(64, 64 KiB) costs
  71 ns against malloc's 10 ns (2.9-3.9x np.empty before, 1.9-2.7x after).
What stays above 1.10x is the libraries' own cost per call at those sizes, measured in C without
numpy: alloc+free of 64 KiB or 8 MiB from jemalloc's thread cache 34-46 ns (glibc 12 ns); of 8 MiB,
without numpy's madvise, glibc 100 ns, tcmalloc 131 ns, jemalloc's arena 300 ns, mimalloc 2.0.9
790 ns (its slice bookkeeping); mimalloc 2.0.9 maps every 256 MiB segment afresh and writes its
68 KiB header (2x).
Only a cache of freed large blocks in the shim, or mimalloc without decommit, would hide it.
"""

from __future__ import annotations

import contextvars

import numpy as np

import pyguts.alloc as alloc

SIZES = {"8 B": 8, "1 KiB": 1 << 10, "64 KiB": 64 << 10, "8 MiB": 8 << 20, "256 MiB": 256 << 20}
#: Arrays made per timed call, by size: enough to amortise ctx.run, few enough for the big ones.
BATCH = {"8 B": 256, "1 KiB": 256, "64 KiB": 64, "8 MiB": 2, "256 MiB": 1}
#: Interleaved repeats by size: a 256 MiB np.ones takes tens of ms.
REPEAT = {"8 MiB": 15, "256 MiB": 7}
MAKERS = {"empty": np.empty, "zeros": np.zeros, "ones": np.ones}
#: The issue's goal for the general-purpose allocators' handlers, as a ratio to numpy's default.
#: The mmap handlers have none: one mapping (and fresh pages) per array is what they are for.
HANDLER_GOAL = 1.10
NO_GOAL = ("mmap", "mmap-huge")


def _context_for(name: str | None) -> contextvars.Context:
    if name is None:
        return contextvars.copy_context()
    with alloc.use(name):
        return contextvars.copy_context()


def _batch(maker, count: int, repeat: int) -> None:
    for _ in range(repeat):
        maker(count)


def run(h) -> None:
    names = alloc.available()
    contexts = {name: _context_for(name) for name in names}
    default = _context_for(None)
    goals = {f"pyguts-{name}": None if name in NO_GOAL else HANDLER_GOAL for name in names}
    rng = np.random.default_rng(0)
    for size_name, nbytes in SIZES.items():
        count, repeat = nbytes // 8, REPEAT.get(size_name)
        for op_name, maker in MAKERS.items():
            def call(ctx, maker=maker, count=count, batch=BATCH[size_name]):
                return lambda: ctx.run(_batch, maker, count, batch)
            h.compare(f"alloc np.{op_name} {size_name} x{BATCH[size_name]}", ("numpy default", call(default)),
                      {f"pyguts-{name}": call(ctx) for name, ctx in contexts.items()}, repeat=repeat, goal=goals)
        # A realistic expression: three temporaries of the inputs' size per call.
        x, y = rng.random((2, count))

        def expression(ctx, x=x, y=y):
            return lambda: ctx.run(lambda: np.sqrt(x * x + y * y))
        h.compare(f"alloc np.sqrt(x*x+y*y) {size_name}", ("numpy default", expression(default)),
                  {f"pyguts-{name}": expression(ctx) for name, ctx in contexts.items()}, repeat=repeat, goal=goals)
        del x, y
    count = (64 << 10) // 8
    h.compare("alloc owned empty 64 KiB", ("np.empty", lambda: np.empty(count)),
              {f"alloc.empty {name}": (lambda name=name: alloc.empty(count, allocator=name)) for name in names},
              goal={f"alloc.empty {name}": None if name in NO_GOAL else 3.0 for name in names})

    def install(name=names[0]):
        with alloc.use(name):
            pass

    def errstate():
        with np.errstate():
            pass

    h.compare("alloc handler install", ("np.errstate() enter+exit", errstate),
              {f"use({names[0]!r}) enter+exit": install})
