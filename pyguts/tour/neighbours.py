"""A fresh bytes object between heap neighbours of our own: what a forced type swap reads past it is known garbage."""

from __future__ import annotations

#: Copies allocated to find one whose pymalloc neighbours on both sides are copies too.
POOL_SIZE = 512


def surrounded_bytes(value: bytes, count: int = POOL_SIZE) -> tuple[bytes, list[bytes]]:
    """A fresh ``bytes`` equal to ``value`` whose neighbouring heap blocks hold copies too, and the pool of them all.

    The forced swap of a bytes object to a subclass with a ``__dict__`` makes CPython read a
    ``__dict__`` pointer from memory next to the object: before 3.12 the next pymalloc block's
    first word (its ``ob_refcnt``), from 3.12 a pre-header word inside the previous block (its
    ``ob_shash``, -1). With bytes objects of our own on both sides that pointer is garbage every
    time, so the crash is deterministic. Keep the pool alive while the object is used: freed
    neighbours would hold the allocator's free-list pointers, which are valid addresses.

    >>> victim, pool = surrounded_bytes(b"Hello, world!")
    >>> victim == b"Hello, world!" and any(x is victim for x in pool)
    True
    """
    if len(value) < 2:
        raise ValueError(f"value must be at least 2 bytes long (empty and one-byte bytes objects are shared "
                         f"singletons, not fresh copies), got {value!r}")
    pool = [bytes(bytearray(value)) for _ in range(count)]
    addrs = {id(x) for x in pool}
    ordered = sorted(addrs)
    stride = min(b - a for a, b in zip(ordered, ordered[1:]))  # pymalloc's block size (debug builds pad blocks)
    victim = next((x for x in pool if id(x) - stride in addrs and id(x) + stride in addrs), None)
    if victim is None:
        raise RuntimeError(f"none of {count} copies of {value!r} lies between two others in memory; "
                           f"pass a larger count")
    return victim, pool
