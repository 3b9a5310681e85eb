"""The wire format between an isolated child and its parent, both ends.

A result travels as one frame: ``[total length][header][buffer lengths][main pickle][buffer...]``,
pickled with protocol 5 and out-of-band buffers so large arrays are not copied into the pickle.

>>> parts = encode("ok", {"x": 1})
>>> frame = b"".join(bytes(memoryview(p)) for p in parts)[LENGTH.size:]
>>> decode(bytearray(frame))
('ok', {'x': 1})
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

#: Frame header: main pickle length, number of out-of-band buffers; then each buffer's length.
HEADER = struct.Struct("<QI")
#: The frame's total length, sent first.
LENGTH = struct.Struct("<Q")


def try_pickle(obj: object) -> bytes | None:
    """``obj`` pickled, or None when it cannot be."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None


def encode(status: str, payload: Any) -> list:
    """Pickle with out-of-band buffers: [length, header, main pickle, buffer, ...] (raises if it cannot)."""
    buffers: list[pickle.PickleBuffer] = []
    main = pickle.dumps((status, payload), protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    header = HEADER.pack(len(main), len(raws)) + struct.pack("<%dQ" % len(raws), *(r.nbytes for r in raws))
    total = len(header) + len(main) + sum(r.nbytes for r in raws)
    return [LENGTH.pack(total), header, main, *raws]


def decode(frame: bytearray) -> tuple[str, Any]:
    """(status, payload) from a whole frame (without its length); raises if it cannot be unpickled."""
    view = memoryview(frame)
    main_nbytes, nbuf = HEADER.unpack_from(view)
    pos = HEADER.size
    lengths = struct.unpack_from("<%dQ" % nbuf, view, pos)
    pos += 8 * nbuf
    main = view[pos:pos + main_nbytes]
    pos += main_nbytes
    buffers = []
    for n in lengths:
        buffers.append(view[pos:pos + n])
        pos += n
    return pickle.loads(main, buffers=buffers)
