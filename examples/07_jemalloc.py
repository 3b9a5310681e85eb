"""numpy arrays in jemalloc's memory: allocation, the allocator's own statistics, numpy's own arrays via NEP 49.

``pyguts.alloc.zeros(shape, allocator="jemalloc")`` gives an array whose buffer jemalloc allocated
and frees exactly once (``pyguts.alloc.owner`` names the block); ``pyguts.alloc.stats`` reads
jemalloc's ``stats.*`` through ``mallctl``; inside ``with pyguts.alloc.use("jemalloc")`` numpy
allocates its own results there.

Debian's libjemalloc2 can only be loaded if the process started with
GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096 (glibc reads it at start-up only), so this
script restarts itself once with it set (``pyguts.alloc.ensure_static_tls()``), as the
``pyguts`` command does; ``make test`` sets it.

Run: python examples/07_jemalloc.py
"""

import numpy as np

import pyguts.alloc as alloc

alloc.ensure_static_tls()  # restarts this script once with GLIBC_TUNABLES set (never a Jupyter kernel)

print(f"allocators that load here: {', '.join(alloc.available())}")
before = alloc.stats("jemalloc")
a = alloc.zeros((1000, 1000), allocator="jemalloc")  # 8 MB, zeroed by jemalloc
a += 1.5
after = alloc.stats("jemalloc")
block = alloc.owner(a)
print(f"alloc.zeros((1000, 1000), allocator='jemalloc'): {a.nbytes:,} bytes from {block.allocator}, "
      f"aligned to {block.alignment} bytes (address % 64 = {block.addr % 64}), sum = {a.sum():,.1f}")
for key in ("allocated", "active", "resident", "mapped"):
    print(f"  jemalloc stats.{key:<9}: {before[key]:>12,} -> {after[key]:>12,} "
          f"({after[key] - before[key]:+,})")
print(f"  pyguts' live bytes in jemalloc: {after['pyguts_live_bytes']:,}")

with alloc.use("jemalloc"):  # numpy's own allocations in this thread now come from jemalloc
    b = np.sqrt(a)
c = np.sqrt(a)
print(f"np.sqrt(a) inside alloc.use('jemalloc'): data from {alloc.handler_name(b)!r}; "
      f"outside: {alloc.handler_name(c)!r}")

del a, b, block  # the Block owns the memory: freed once the last array over it (or the Block) goes
print(f"after del a, b, block: pyguts' live bytes in jemalloc {alloc.stats('jemalloc')['pyguts_live_bytes']:,}")
