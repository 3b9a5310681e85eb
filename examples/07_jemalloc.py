"""numpy arrays in jemalloc's memory: allocation, the allocator's own statistics, numpy's own arrays via NEP 49.

``pyguts.alloc.zeros(shape, allocator="jemalloc")`` gives an array whose buffer jemalloc allocated
and frees exactly once (``pyguts.alloc.owner`` names the block); ``pyguts.alloc.stats`` reads
jemalloc's ``stats.*`` through ``mallctl``; inside ``with pyguts.alloc.use("jemalloc")`` numpy
allocates its own results there.

Debian's libjemalloc2 can only be loaded if the process started with
GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096 (glibc reads it at start-up only), so this
script restarts itself once with it set (``pyguts.alloc.ensure_static_tls()``), as the
``pyguts`` command does; ``make test`` sets it. A Jupyter kernel cannot restart itself: started
without the variable, this section says why and how to get it (``pyguts.tour.static_tls_hint()``),
then goes on with the next allocator that loads (mimalloc, tcmalloc or libc): the same calls.

Run: python examples/07_jemalloc.py
"""

import numpy as np

import pyguts.alloc as alloc
from pyguts.errors import AllocatorUnavailable
from pyguts.tour import static_tls_hint

alloc.ensure_static_tls()  # restarts this script once with GLIBC_TUNABLES set (never a Jupyter kernel)

#: Each allocator's own figures shown here, in the order tried (pyguts.alloc.stats has more).
FIGURES = {"jemalloc": ("allocated", "active", "resident", "mapped"), "mimalloc": ("committed",),
           "tcmalloc": ("allocated", "heap_size", "resident"), "libc": ("allocated", "arena", "mapped")}
print(f"allocators that load here: {', '.join(alloc.available())}")
try:
    name = alloc.load("jemalloc").name
except AllocatorUnavailable as exc:
    name = next(n for n in FIGURES if n in alloc.available())  # libc always loads
    print(f"jemalloc cannot be loaded in this process: {exc}")
    if "static TLS" in str(exc):
        print(f"in Jupyter: {static_tls_hint()}")
    print(f"so this section goes on with {name}: the same calls, {name}'s own figures\n")
before = alloc.stats(name)
a = alloc.zeros((1000, 1000), allocator=name)  # 8 MB, zeroed by the allocator
a += 1.5
after = alloc.stats(name)
block = alloc.owner(a)
print(f"alloc.zeros((1000, 1000), allocator={name!r}): {a.nbytes:,} bytes from {block.allocator}, "
      f"aligned to {block.alignment} bytes (address % 64 = {block.addr % 64}), sum = {a.sum():,.1f}")
for key in FIGURES[name]:
    print(f"  {name} stats.{key:<9}: {before[key]:>12,} -> {after[key]:>12,} ({after[key] - before[key]:+,})")
print(f"  pyguts' live bytes in {name}: {after['pyguts_live_bytes']:,}")

with alloc.use(name):  # numpy's own allocations in this thread now come from that allocator
    b = np.sqrt(a)
c = np.sqrt(a)
print(f"np.sqrt(a) inside alloc.use({name!r}): data from {alloc.handler_name(b)!r}; "
      f"outside: {alloc.handler_name(c)!r}")

del a, b, block  # the Block owns the memory: freed once the last array over it (or the Block) goes
print(f"after del a, b, block: pyguts' live bytes in {name} {alloc.stats(name)['pyguts_live_bytes']:,}")
