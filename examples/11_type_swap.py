"""The type swap that killed the kernel: refused with the reason, then forced inside pyguts.isolate, crash as data.

The notebook wrote a bytes object's ``ob_type`` to a subclass whose instances have a
``__dict__``; bytes objects have no room for one, so the next attribute access followed a garbage
pointer and the kernel died. ``pyguts.swap_type`` does the checks CPython's ``__class__``
assignment does and refuses, naming the difference. ``force=True`` writes ``ob_type`` anyway: do
it inside ``pyguts.isolate``, a forked child whose death comes back as an ``Outcome`` (status,
signal, the address it faulted on, the C frames it died in, the child's faulthandler traceback)
while this interpreter lives on.

Run: python examples/11_type_swap.py
"""

import pyguts
from pyguts import UnsafeOperationError
from pyguts.tour import surrounded_bytes


class DifferentClass(bytes):
    """The notebook's subclass: its instances get a __dict__, which a bytes object has no room for."""


class A:
    pass


class B:
    pass


a = A()
pyguts.swap_type(a, B)  # compatible layouts, both heap types: allowed (CPython itself does it)
print(f"swap_type(A(), B) is allowed: type(a) is now {type(a).__name__}")

b = bytes(b"Hello, ") + b"world!"
try:
    pyguts.swap_type(b, DifferentClass)
except UnsafeOperationError as exc:
    print(f"swap_type(b, DifferentClass) is refused:\n  {exc}")


def forced_swap():
    """In the child: force the swap, then set an attribute, as the notebook did."""
    # The bogus __dict__ pointer is read from the memory next to the object: with bytes objects of
    # our own there (kept alive by pool), what it reads is garbage every time, so the crash is certain.
    victim, pool = surrounded_bytes(b"Hello, world!")
    pyguts.swap_type(victim, DifferentClass, force=True)
    victim.attr = "boom"
    return victim.attr


out = pyguts.isolate(forced_swap, timeout=60)
print(f"\nforced inside pyguts.isolate: status={out.status!r}, signal={out.signal} ({out.signal_name}), "
      f"after {out.duration_s * 1e3:.0f} ms")
if out.fault_address is not None:
    print(f"it faulted on address {out.fault_address:#x}: {out.fault_region}")
print("in C (the crashing thread's innermost native frames):")
for frame in out.native_frames[:4]:
    print(f"  | {frame}")
print("the child's faulthandler report (its Python frames):")
for line in [ln for ln in out.fault_traceback.splitlines() if ln.strip()][:6]:
    print(f"  | {line}")
print(f"\nand this interpreter lives on: b = {b!r}, type {type(b).__name__}")
