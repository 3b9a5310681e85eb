"""Any memory as numpy: a bytes object's own memory, field by field, read through numpy views.

The notebook's hack was ``np.ctypeslib`` over ``id(b)``. ``pyguts.view(obj)`` is the safe form:
a uint8 array over exactly the object's allocation, read-only unless asked, whose ``.base`` keeps
the object alive. ``pyguts.explain`` names each field (offsets from the C headers, checked at
import), ``pyguts.payload`` gives the data part typed, ``pyguts.view_address`` any mapped memory.

Run: python examples/08_raw_memory.py
"""

import ctypes

import numpy as np

import pyguts

b = bytes(b"Hello, ") + b"world!"  # built at run time: not a shared constant
print(pyguts.explain(b))

model = type(pyguts.struct_of(b))  # the ctypes model of PyBytesObject for this interpreter
v = pyguts.view(b)
print(f"\npyguts.view(b): {v.dtype}[{v.size}] == b.__sizeof__() ({b.__sizeof__()}), "
      f"writeable={v.flags.writeable}")
header = v[:model.ob_sval.offset].view(np.int64)  # the fixed-size header as 8-byte words
for name, word in zip(("ob_refcnt", "ob_type", "ob_size", "ob_shash"), header):
    shown = f"{int(word):#x}" if name == "ob_type" else int(word)
    print(f"  {name:<9} at offset {getattr(model, name).offset:>2}: {shown}")
print(f"  ob_type == id(bytes): {int(header[1]) == id(bytes)}; ob_refcnt counts the view's own "
      f"reference (v.base holds b): {pyguts.refcount(b)}")
print(f"  ob_shash is -1 (not computed) until hash(b) runs: hash(b) = {hash(b)}, "
      f"now ob_shash = {int(header[3])}")

data = pyguts.payload(b)
print(f"pyguts.payload(b): {data.dtype}[{data.size}] -> {data.tobytes()!r}")

try:
    v.flags.writeable = True  # numpy 2 refuses: the memory was handed out read-only
except ValueError as exc:
    print(f"read-only stays read-only: ValueError: {exc}")

buf = ctypes.create_string_buffer(b"any memory at all")
arr = pyguts.view_address(ctypes.addressof(buf), len(buf.value), owner=buf)
print(f"pyguts.view_address over a ctypes buffer: {arr.tobytes()!r} (buf kept alive as the base)")
try:
    pyguts.view_address(16, 8)  # reading address 16 would crash; it is checked against /proc/self/maps
except ValueError as exc:
    print(f"refused: {exc}")
