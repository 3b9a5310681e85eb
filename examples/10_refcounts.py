"""Reference counts, exactly: ``ob_refcnt`` as the caller sees it, who holds the references, immortal objects.

``sys.getrefcount(x)`` counts its own argument (+1); ``pyguts.refcount(x)`` reads ``ob_refcnt``
and leaves out the reference the call itself holds, so it is the number of real holders.
``pyguts.referrers`` lists the containers and frames holding one; ``pyguts.is_immortal`` says when
the count never changes (None, small ints, ... on 3.12+).

Run: python examples/10_refcounts.py
"""

import gc
import sys

import pyguts

x = bytes(b"Hello, ") + b"world!"
print(f"a fresh object held by one name: pyguts.refcount {pyguts.refcount(x)}, "
      f"sys.getrefcount {sys.getrefcount(x)} (its argument counts too)")

holders = [x, x, x]
d = {"key": x}
print(f"in a list three times and in a dict: refcount {pyguts.refcount(x)}")
seen = pyguts.referrers(x)
print(f"pyguts.referrers(x): holders is there: {any(r is holders for r in seen)}, the module namespace: "
      f"{any(r is globals() for r in seen)}, d: {any(r is d for r in seen)} (gc.is_tracked(d) is "
      f"{gc.is_tracked(d)}: a dict of atomic values is untracked; refcount counts it, referrers cannot see it)")

v = pyguts.view(x)  # a numpy view of x's memory keeps x alive through v.base
print(f"with a pyguts.view(x) alive: refcount {pyguts.refcount(x)}; the view reads ob_refcnt itself: "
      f"{int(v[:8].view('i8')[0])}")
del holders, d, v, seen
print(f"after del holders, d, v, seen: refcount {pyguts.refcount(x)}")

before = pyguts.refcount(x)
for _ in range(1000):
    pyguts.refcount(x)
for _ in range(3):  # gc.get_referrers walks every tracked object: slow in a big process
    pyguts.referrers(x)
print(f"1000 refcount() and 3 referrers() calls later: {pyguts.refcount(x)} (was {before}: the tool "
      f"adds no references of its own)")

for obj in (None, True, 7, x):
    print(f"{obj!r:>24}: refcount {pyguts.refcount(obj):>12}, immortal {pyguts.is_immortal(obj)}")
print(f"(this is Python {sys.version_info.major}.{sys.version_info.minor}; immortal objects came with 3.12, "
      f"PEP 683: before that every count changes, even None's)")
