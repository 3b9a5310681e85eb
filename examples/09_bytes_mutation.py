"""Changing "immutable" bytes in place: the hash goes stale, pyguts.mutate keeps it right, shared objects are refused.

A bytes object caches its hash in ``ob_shash``. The notebook wrote through a numpy view over the
object's memory: the bytes changed, the cached hash did not, and sets and dicts stopped finding
the value. ``pyguts.mutate(obj, start, data)`` writes in bounds and resets ``ob_shash`` to -1
(recompute); objects the interpreter shares (one-byte bytes, small ints, interned and immortal
objects) are refused unless ``force=True``.

Run: python examples/09_bytes_mutation.py
"""

import pyguts
from pyguts import UnsafeOperationError

b = bytes(b"Hello, ") + b"world!"  # a fresh object nothing else holds
s = pyguts.struct_of(b)  # a live ctypes view of its header: s.ob_shash reads the cache
print(f"before: {b!r}, refcount {pyguts.refcount(b)} (b and s), ob_shash {s.ob_shash} (not computed yet)")
h = hash(b)
print(f"hash(b) = {h}, now cached: ob_shash == hash(b): {s.ob_shash == h}")

# 1. The notebook's way: a raw write through a writable view. The cache is not told.
raw = pyguts.payload(b, writable=True)
raw[0] = ord("J")
del raw
print(f"\nraw write of 'J': {b!r}; ob_shash still the old hash: {s.ob_shash == h}")
print(f"  b == b'Jello, world!': {b == b'Jello, world!'}, but hash(b) == hash(b'Jello, world!'): "
      f"{hash(b) == hash(b'Jello, world!')}")
print(f"  b in {{b'Jello, world!'}}: {b in {b'Jello, world!'}} (a stale hash breaks set and dict lookups)")

# 2. pyguts.mutate: the same kind of write, and the cached hash is reset.
pyguts.mutate(b, 0, b"M")
print(f"\npyguts.mutate(b, 0, b'M'): {b!r}; ob_shash reset to {s.ob_shash}")
print(f"  hash(b) == hash(b'Mello, world!'): {hash(b) == hash(b'Mello, world!')}, "
      f"b in {{b'Mello, world!'}}: {b in {b'Mello, world!'}}")
print(f"  refcount after: {pyguts.refcount(b)} (unchanged: mutate keeps no reference)")
print("  (a dict or set already holding b keeps its old hash: change keys before they are stored)")

# 3. Bounds and shared objects.
try:
    pyguts.mutate(b, 10, b"toolong")
except IndexError as exc:
    print(f"\nrefused: IndexError: {exc}")
one = bytes([72])  # b"H": every one-byte bytes object is a cached singleton
try:
    pyguts.mutate(one, 0, b"J")
except UnsafeOperationError as exc:
    print(f"refused: UnsafeOperationError: {exc}")
print(f"b'H' is still b'H' everywhere: {bytes([72]) == b'H'}")
