"""The wire format between an isolated child and its parent, both ends, and how the parent loads it.

A result travels as one frame on the result pipe: ``[START: magic, length][header][buffer lengths]
[main pickle][buffer...]``, pickled with protocol 5 and out-of-band buffers so large arrays are not
copied into the pickle. The parent accepts exactly one frame that starts with :data:`MAGIC` and
whose lengths add up; anything else on that pipe (junk, a truncated frame, a second writer) makes
the whole channel untrusted, and :func:`split` raises :class:`FrameError` for a malformed frame.

What the result pipe cannot say (fn closed it; isolate's own child code failed) is written into a
small shared page (:data:`ENDING_NBYTES`) that closing fds cannot take away.

>>> parts = encode("ok", {"x": 1})
>>> START.unpack_from(parts[0])[0] == MAGIC
True
>>> main, buffers = split(bytearray(b"".join(bytes(memoryview(p)) for p in parts[1:])))
>>> load_plain(main, buffers)
('ok', {'x': 1})
"""

from __future__ import annotations

import builtins
import functools
import io
import pickle
import struct
from typing import Any

#: First bytes of every frame; a result pipe that starts otherwise carries something else.
MAGIC = b"pyguts\x01\n"
#: Frame start: the magic, then the length of the rest of the frame.
START = struct.Struct("<8sQ")
#: Frame header: main pickle length, number of out-of-band buffers; then each buffer's length.
HEADER = struct.Struct("<QI")
#: Size of the child's ending record in the shared page: byte 0 says how the call ended when the
#: result pipe cannot (0: sent, or never got that far; the exit status tells those apart), the
#: rest holds the result pipe's fd for ENDING_CHANNEL.
ENDING_NBYTES = 8

ENDING_CHANNEL = 1       # the result pipe was closed or replaced by fn: nothing sent
ENDING_MACHINERY = 2     # isolate's own child code failed (a bug; its traceback went to fd 2)

#: Names in ``builtins`` a plain pickle may name (and so call): value types that take any
#: arguments built from this set without running user code or allocating more than the pickle
#: holds, and every builtin exception class. Not bytes/bytearray/range (an integer argument
#: allocates or iterates that much), not str (``str(b, encoding)`` runs registered codecs).
_PLAIN_BUILTINS = frozenset({"bool", "complex", "dict", "float", "frozenset", "int", "list", "set",
                             "slice", "tuple", "Ellipsis", "NotImplemented"})

#: Opcodes that look a global up (GLOBAL, STACK_GLOBAL, INST, EXT1/2/4): without them a pickle
#: can call nothing. A small pickle none of whose bytes is one loads with plain ``pickle.loads``
#: (cheaper than a restricted Unpickler: fewer pages touched, and every page costs in a fork).
_LOOKUP_OPCODES = b"c\x93i\x82\x83\x84"
_SCAN_MAX_NBYTES = 512


class FrameError(ValueError):
    """The bytes on the result pipe are not one well-formed frame."""


class NotPlain(pickle.UnpicklingError):
    """The pickle names a global outside the plain set, so loading it may run arbitrary code."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__("%s.%s" % (module, name))
        self.module, self.name = module, name


def try_pickle(obj: object) -> bytes | None:
    """``obj`` pickled, or None when it cannot be (whatever its pickling raises)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:
        return None


def encode(status: str, payload: Any) -> list:
    """Pickle with out-of-band buffers: [start, header, main pickle, buffer, ...] (raises if it cannot)."""
    buffers: list[pickle.PickleBuffer] = []
    main = pickle.dumps((status, payload), protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    header = HEADER.pack(len(main), len(raws)) + struct.pack("<%dQ" % len(raws), *(r.nbytes for r in raws))
    total = len(header) + len(main) + sum(r.nbytes for r in raws)
    return [START.pack(MAGIC, total), header, main, *raws]


def split(frame: Any) -> tuple[memoryview, list[memoryview]]:
    """(main pickle, out-of-band buffers) as views of a whole frame (without its start); raises
    :class:`FrameError` unless the header's lengths add up to exactly the frame's size."""
    view = memoryview(frame)
    if view.nbytes < HEADER.size:
        raise FrameError("the frame holds %d bytes, fewer than its %d-byte header" % (view.nbytes, HEADER.size))
    main_nbytes, nbuf = HEADER.unpack_from(view)
    pos = HEADER.size
    if nbuf > (view.nbytes - pos) // 8:
        raise FrameError("the header announces %d buffers, more than a %d-byte frame can list"
                         % (nbuf, view.nbytes))
    lengths = struct.unpack_from("<%dQ" % nbuf, view, pos) if nbuf else ()
    pos += 8 * nbuf
    if pos + main_nbytes + sum(lengths) != view.nbytes:
        raise FrameError("the header's lengths add up to %d bytes, the frame holds %d"
                         % (pos + main_nbytes + sum(lengths), view.nbytes))
    main = view[pos:pos + main_nbytes]
    pos += main_nbytes
    buffers = []
    for n in lengths:
        buffers.append(view[pos:pos + n])
        pos += n
    return main, buffers


@functools.lru_cache(maxsize=None)
def _plain_globals() -> dict[str, Any]:
    """The objects themselves, taken once (not whatever ``builtins`` holds later)."""
    found = {n: v for n, v in vars(builtins).items() if n in _PLAIN_BUILTINS}
    found.update((n, v) for n, v in vars(builtins).items()
                 if isinstance(v, type) and issubclass(v, BaseException) and v.__module__ == "builtins")
    return found


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _plain_globals().get(name) if module == "builtins" else None
        if found is None:
            raise NotPlain(module, name)
        return found


def load_plain(main: Any, buffers: Any = ()) -> Any:
    """Unpickle ``main`` if it names no globals but builtin value types and exceptions (so the load
    runs only CPython's own code); raise :class:`NotPlain` naming the first other global."""
    if len(main) <= _SCAN_MAX_NBYTES:
        raw = bytes(main)
        if len(raw.translate(None, _LOOKUP_OPCODES)) == len(raw):
            return pickle.loads(raw, buffers=buffers)  # no byte of it can look a global up
    return _PlainUnpickler(io.BytesIO(main), buffers=buffers).load()
