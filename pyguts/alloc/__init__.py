"""Foreign allocators under numpy: jemalloc, mimalloc, tcmalloc, libc, mmap.

- :func:`available` / :func:`load`: the allocators that load here (kept loaded for good).
- :func:`empty` / :func:`zeros`: arrays whose data lives in one allocator, freed by it exactly once.
- :func:`use`: a NEP 49 handler so numpy itself allocates there inside a ``with`` block (this thread
  and context only; see :mod:`pyguts.alloc.handler`).
- :func:`stats`: the allocator's own figures, pyguts' counters and the process RSS.

jemalloc needs ``GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096`` at process start (Debian's
build uses static TLS); without it :func:`load` raises :class:`~pyguts.errors.AllocatorUnavailable`
saying so. ``make test``, ``make tour`` and the ``pyguts`` command set it; a script can call
:func:`ensure_static_tls` first thing to restart itself with it.

>>> import numpy as np
>>> a = zeros((2, 4), allocator="mimalloc")
>>> with use("libc"):
...     b = a + 1.0
>>> handler_name(b), float(b.sum()), stats("mimalloc")["pyguts_live_bytes"] >= a.nbytes
('pyguts-libc', 8.0, True)
"""

from pyguts.alloc.arrays import Block, empty, owner, zeros
from pyguts.alloc.handler import current_handler_name, handler_name, use
from pyguts.alloc.registry import STATIC_TLS_TUNABLE, Allocator, available, ensure_static_tls, load
from pyguts.alloc.counters import mallctl, stats

__all__ = [
    "STATIC_TLS_TUNABLE",
    "Allocator",
    "Block",
    "available",
    "current_handler_name",
    "empty",
    "ensure_static_tls",
    "handler_name",
    "load",
    "mallctl",
    "owner",
    "stats",
    "use",
    "zeros",
]
