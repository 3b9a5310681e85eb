"""The fuzz suite's kit: a corpus of awkward objects, memory snapshots, a health check, and a
forked child per example (tests/unit/test_fuzz_safe_mode.py).

Every target is built *in the child* from its corpus name, so it is fresh (nothing else holds it),
its refcount is exactly what the child holds, and the reproducer is a name, not a memory address.
The child runs one call, checks "refused and unchanged, or right", runs the health check and
leaves with ``os._exit``; the parent reads a verdict line from a pipe and the exit status.
"""

from __future__ import annotations

import collections
import ctypes
import faulthandler
import gc
import json
import mmap
import os
import select
import signal
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pyguts.errors import PygutsError


class Boom(Exception):
    """Raised on purpose by the corpus's hostile __index__/__eq__/__hash__/__repr__/__iter__."""


#: What a safe-mode call may raise instead of doing what was asked ("a refusal"). BufferError: a
#: buffer that cannot be exported as asked (a non-contiguous memoryview) is refused by the buffer
#: protocol itself before any C runs. Boom: the corpus's own hostile methods raised.
REFUSALS = (PygutsError, TypeError, ValueError, IndexError, OverflowError, BufferError, Boom)
#: Seconds a child may run before it counts as hung and is killed (busy machines are slow).
CHILD_TIMEOUT_S = float(os.environ.get("PYGUTS_FUZZ_TIMEOUT", "20"))
_VERDICT = b"\0pyguts-fuzz-verdict "
_WORD = ctypes.sizeof(ctypes.c_void_p)
#: A refcount this high means the object is shared (True, small ints, types...): other code moves its
#: count, so it is not compared. Objects the child made fresh have a handful of references.
SHARED_REFCNT = 32


class Violation(AssertionError):
    """The property failed in the child: the message says what held, what was got."""


# --------------------------------------------------------------------------------------------------
# Hostile helpers (used as targets and as arguments; their reprs are the reproducer's words)

class RaisingIndex:
    def __index__(self):
        raise Boom("__index__ raises")

    def __repr__(self):
        return "RaisingIndex()"


class Shifty:
    """An index whose comparisons and sums pass any bounds check, while __index__ says ``n``."""

    def __init__(self, n: int):
        self.n = n

    def __index__(self):
        return self.n

    def __ge__(self, other):
        return True

    __le__ = __gt__ = __lt__ = __ge__

    def __add__(self, other):
        return 0

    __radd__ = __add__

    def __repr__(self):
        return f"Shifty({self.n})"


class IndexOf:
    """A well-behaved index object (``operator.index`` gives ``n``)."""

    def __init__(self, n: int):
        self.n = n

    def __index__(self):
        return self.n

    def __repr__(self):
        return f"IndexOf({self.n})"


class HugeLen:
    def __len__(self):
        return 2 ** 62

    def __iter__(self):
        return iter((1, 2))

    def __repr__(self):
        return "HugeLen()"


class SneakyStr(str):
    """A str whose __iter__/__len__ lie about its characters."""

    def __iter__(self):
        return iter("\xe9" * str.__len__(self))

    def __repr__(self):
        return f"SneakyStr({str.__str__(self)!r})"


class LongLenStr(str):
    def __len__(self):
        return 0

    def __repr__(self):
        return f"LongLenStr({str.__str__(self)!r})"


class Gen:
    """Data given as a one-shot generator over ``items``, raising Boom before item ``fail_at``."""

    def __init__(self, items: tuple, fail_at: int | None = None):
        self.items, self.fail_at = items, fail_at

    def fresh(self):
        for i, x in enumerate(self.items):
            if i == self.fail_at:
                raise Boom("the data's iterator raises")
            yield x
        if self.fail_at is not None and self.fail_at >= len(self.items):
            raise Boom("the data's iterator raises at its end")

    def __repr__(self):
        return f"Gen({self.items!r}, fail_at={self.fail_at})"


class Fit:
    """Data that suits the target's type (built in the child): ``n`` elements, variant ``seed``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __repr__(self):
        return f"Fit({self.n}, {self.seed})"


class _Raising:
    def __init__(self, *what: str):
        self.what = what

    def __eq__(self, other):
        if "eq" in self.what:
            raise Boom("__eq__ raises")
        return self is other

    def __hash__(self):
        if "hash" in self.what:
            raise Boom("__hash__ raises")
        return 7

    def __index__(self):
        if "index" in self.what:
            raise Boom("__index__ raises")
        return 3

    def __repr__(self):
        if "repr" in self.what:
            raise Boom("__repr__ raises")
        return f"_Raising{self.what}"


# --------------------------------------------------------------------------------------------------
# Classes (module level: forked children inherit them; each child may spoil its own copy)

class Plain:
    pass


class Plain2:
    pass


class Slotted:
    __slots__ = ("a",)


class Slotted2:
    __slots__ = ("a",)


class SlottedB:
    __slots__ = ("b",)


class NoDict:
    __slots__ = ()


class WithWeakref:
    __slots__ = ("__weakref__",)


class WithDictSlot:
    __slots__ = ("__dict__",)


class IntSub(int):
    pass


class IntSubNoDict(int):
    __slots__ = ()


class FloatSub(float):
    pass


class ComplexSub(complex):
    pass


class BytesSub(bytes):
    pass


class StrSub(str):
    pass


class TupleSub(tuple):
    pass


class ListSub(list):
    pass


class DictSub(dict):
    pass


class ByteArraySub(bytearray):
    pass


class Err(Exception):
    pass


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    pass


class HashRaises(_Raising):
    def __init__(self):
        super().__init__("hash", "eq")


class ReprRaises(_Raising):
    def __init__(self):
        super().__init__("repr")


class IndexRaises(_Raising):
    def __init__(self):
        super().__init__("index", "eq", "hash")


CLASSES = {c.__name__: c for c in (
    Plain, Plain2, Slotted, Slotted2, SlottedB, NoDict, WithWeakref, WithDictSlot, IntSub, IntSubNoDict, FloatSub,
    ComplexSub, BytesSub, StrSub, TupleSub, ListSub, DictSub, ByteArraySub, Err, Meta, WithMeta, HashRaises,
    ReprRaises, IndexRaises, int, float, complex, bytes, bytearray, str, tuple, list, dict, set, object, type,
    bool, type(None), types.ModuleType, types.SimpleNamespace, Exception)}

#: A fresh instance of each class, built in the child (a literal or a cached value would be shared).
INSTANCE_OF: dict[str, Callable[[], object]] = {
    "int": lambda: int("123456789012345"), "float": lambda: float("2.5"), "complex": lambda: complex(1.0, 2.5),
    "bytes": lambda: bytes(bytearray(b"abcdef")), "bytearray": lambda: bytearray(b"abc"),
    "str": lambda: "".join(["abc", "def"]), "tuple": lambda: tuple([1.5, "x"]), "list": lambda: [1, 2],
    "dict": lambda: {"k": 1}, "set": lambda: {1, 2}, "object": object, "type": lambda: type("Fresh", (), {}),
    "bool": lambda: True, "NoneType": lambda: None, "module": lambda: types.ModuleType("fresh_module"),
    "SimpleNamespace": lambda: types.SimpleNamespace(a=1), "Exception": lambda: Exception("x"),
    "IntSub": lambda: IntSub(10 ** 20), "IntSubNoDict": lambda: IntSubNoDict(10 ** 20),
    "FloatSub": lambda: FloatSub(1.25), "ComplexSub": lambda: ComplexSub(1, 2), "BytesSub": lambda: BytesSub(b"xyz"),
    "StrSub": lambda: StrSub("sub"), "TupleSub": lambda: TupleSub((1, 2)), "ListSub": lambda: ListSub([1]),
    "DictSub": lambda: DictSub(a=1), "ByteArraySub": lambda: ByteArraySub(b"ab"), "Err": lambda: Err("e"),
    "Meta": lambda: Meta("M2", (), {}),
}


def instance_of(name: str) -> object:
    make = INSTANCE_OF.get(name)
    return make() if make is not None else CLASSES[name]()


# --------------------------------------------------------------------------------------------------
# The corpus: name -> factory of a Target, run in the child

@dataclass
class Target:
    obj: object
    health: Callable[[], None] | None = None  # exercises what owns or shares obj after a change
    volatile: bool = False                     # its memory changes by itself (a running frame)
    keep: object = None                        # what must outlive obj (a generator, a mapping)


CORPUS: dict[str, Callable[[], Target]] = {}


def corpus(name: str):
    def add(factory):
        CORPUS[name] = factory
        return factory
    return add


def _simple(name: str, make: Callable[[], object]) -> None:
    CORPUS[name] = lambda: Target(make())


for _name, _make in {
    # bytes and bytearray
    "bytes": lambda: bytes(bytearray(b"Hello, world!")), "bytes_empty": lambda: b"", "bytes_one": lambda: b"a",
    "bytes_256": lambda: bytes(range(256)), "bytes_sub": lambda: BytesSub(b"subclass"),
    "bytearray": lambda: bytearray(b"Hello"), "bytearray_empty": lambda: bytearray(),
    "bytearray_sub": lambda: ByteArraySub(b"abc"),
    # str of each kind
    "str_ascii": lambda: "".join(["Hello, ", "world"]), "str_latin1": lambda: "".join(["caf", "\xe9s"]),
    "str_ucs2": lambda: "".join(["\u0100b", "cd"]), "str_ucs4": lambda: "".join(["\U0001f600", "ab"]),
    "str_surrogate": lambda: "".join(["\ud800", "x"]), "str_empty": lambda: "", "str_one": lambda: "z",
    "str_one_ucs2": lambda: chr(0x1234), "str_interned": lambda: sys.intern("".join(["pyguts_", "fuzz"])),
    "str_identifier_literal": lambda: "__name__", "str_sub": lambda: StrSub("subclass"),
    # tuples (fresh, shared, owned by types and code)
    "tuple": lambda: tuple([1.5, "a", None]), "tuple_empty": lambda: (), "tuple_one": lambda: tuple([object()]),
    "tuple_with_list": lambda: tuple([[1], 2]), "tuple_sub": lambda: TupleSub((1, 2, 3)),
    "tuple_int_mro": lambda: int.__mro__, "tuple_sys_flags": lambda: sys.version_info,
    # ints, floats, complex
    "int_small": lambda: 5, "int_minus5": lambda: -5, "int_256": lambda: 256, "int_257": lambda: int("257"),
    "int_zero": lambda: 0, "int_big": lambda: 2 ** 100 + 12345, "int_big_negative": lambda: -(2 ** 70) - 3,
    "int_huge": lambda: 7 ** 3000, "int_sub": lambda: IntSub(10 ** 30), "bool_true": lambda: True,
    "float": lambda: float("1.5"), "float_nan": lambda: float("nan"), "float_negzero": lambda: -0.0 * 1,
    "float_sub": lambda: FloatSub(3.25), "complex": lambda: complex(1.0, 2.0), "complex_sub": lambda: ComplexSub(1, 1),
    # containers
    "list": lambda: [1, 2, 3], "list_empty": lambda: [], "list_sub": lambda: ListSub([1, "a"]),
    "list_big": lambda: list(range(100)), "dict": lambda: {"a": 1, "b": [2]}, "dict_empty": lambda: {},
    "dict_sub": lambda: DictSub(x=1), "set": lambda: {1, 2, 3}, "frozenset": lambda: frozenset({1.5}),
    # singletons, types, callables, oddities
    "none": lambda: None, "ellipsis": lambda: ..., "notimplemented": lambda: NotImplemented, "type_int": lambda: int,
    "type_heap": lambda: type("Heap", (), {}), "type_meta": lambda: WithMeta, "function": lambda: lambda x: x,
    "builtin_function": lambda: len, "module": lambda: types.ModuleType("m"), "code": lambda: (lambda: 1).__code__,
    "cell": lambda: types.CellType(1),
    "slice": lambda: slice(1, None, 2), "range": lambda: range(3, 10),
    "exception": lambda: ValueError("x"), "object": lambda: object(), "plain_instance": lambda: Plain(),
    "slotted_instance": lambda: Slotted(), "nodict_instance": lambda: NoDict(),
    "hash_raises": HashRaises, "repr_raises": ReprRaises, "index_raises": IndexRaises,
    "numpy_array": lambda: np.arange(4.0), "numpy_object_array": lambda: np.array([None, 1], dtype=object),
    "numpy_int": lambda: np.int64(7), "ctypes_int": lambda: ctypes.c_int(5),
}.items():
    _simple(_name, _make)


@corpus("bytes_code_constant")
def _bytes_constant() -> Target:
    def f():
        return b"a constant of f"
    return Target(f(), health=f)


@corpus("bytearray_exported")
def _bytearray_exported() -> Target:
    ba = bytearray(b"exported")
    mv = memoryview(ba)
    return Target(ba, keep=mv)


@corpus("str_utf8_cached")
def _str_utf8_cached() -> Target:
    s = "".join(["h\xe9", "llo"])
    _as_utf8(s)
    return Target(s)


def _class_health(cls: type) -> Callable[[], None]:
    """Use the class as code would: instances with attributes side by side, every method that takes
    no argument called on one of them (a corrupted __mro__ hands them another type's methods)."""
    def health() -> None:
        instances = []
        for k in range(16):
            inst = cls()
            for attr in ("a", "b", "x"):
                _tolerant(lambda x: setattr(x, attr, str(k) * 9), inst)
            instances.append(inst)
        inst = instances[8]
        for op in (repr, str, hash, dir, lambda x: x == x, lambda x: isinstance(x, cls), lambda x: cls.mro(),
                   lambda x: type(cls)("Derived", (cls,), {})()):
            _tolerant(op, inst)
        names = {n for klass in type.__dict__["__mro__"].__get__(cls) for n in _tolerant(vars, klass) or ()}
        for name in sorted(names):  # what attribute lookup finds through the mro, as dir() may not
            method = _tolerant(lambda x: getattr(x, name), inst)
            if callable(method) and not isinstance(method, type):
                _tolerant(lambda m: m(), method)
    return health


@corpus("tuple_type_mro")
def _type_mro() -> Target:
    cls = type("Owner", (Plain,), {"attr": 1})
    return Target(cls.__mro__, health=_class_health(cls), keep=cls)


@corpus("tuple_type_mro_slots")
def _type_mro_slots() -> Target:
    cls = type("Owner", (Plain,), {"__slots__": ("a", "b")})
    return Target(cls.__mro__, health=_class_health(cls), keep=cls)


@corpus("tuple_type_bases")
def _type_bases() -> Target:
    cls = type("Owner", (Plain, Exception), {})
    return Target(cls.__bases__, health=_class_health(cls), keep=cls)


@corpus("tuple_co_consts")
def _co_consts() -> Target:
    namespace: dict[str, Any] = {}
    exec("def f(x):\n    return (x, 'fuzz-constant', 12345678901234, None)\n", namespace)
    f = namespace["f"]
    return Target(f.__code__.co_consts, health=lambda: [f(i) for i in range(3)], keep=f)


@corpus("tuple_defaults")
def _defaults() -> Target:
    def f(a=1.5, b="x"):
        return a, b
    return Target(f.__defaults__, health=lambda: f(), keep=f)


@corpus("tuple_dict_key")
def _tuple_dict_key() -> Target:
    key = tuple([10 ** 20, "key"])
    table = {key: 1}
    return Target(key, health=lambda: (table.get(tuple([10 ** 20, "key"])), list(table)), keep=table)


@corpus("bytes_dict_key")
def _bytes_dict_key() -> Target:
    key = bytes(bytearray(b"dict key"))
    table = {key: 1}
    return Target(key, health=lambda: (table.get(b"dict key"), [hash(k) for k in table]), keep=table)


def _finished_frame():
    return sys._getframe()


@corpus("frame_finished")
def _frame_finished() -> Target:
    return Target(_finished_frame())


@corpus("frame_traceback")
def _frame_traceback() -> Target:
    def fail():
        raise Err("traceback frame")
    try:
        fail()
    except Err as exc:
        tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Target(tb.tb_frame, keep=tb)


def _generator():
    yield 1
    yield 2


@corpus("frame_generator_suspended")
def _frame_generator() -> Target:
    gen = _generator()
    next(gen)
    return Target(gen.gi_frame, keep=gen, health=lambda: list(gen))


@corpus("frame_generator_unstarted")
def _frame_generator_unstarted() -> Target:
    gen = _generator()
    return Target(gen.gi_frame, keep=gen, health=lambda: list(gen))


@corpus("generator")
def _generator_target() -> Target:
    return Target(_generator())


@corpus("memoryview")
def _memoryview() -> Target:
    return Target(memoryview(bytes(bytearray(b"view me"))))


@corpus("memoryview_released")
def _memoryview_released() -> Target:
    mv = memoryview(bytearray(b"gone"))
    mv.release()
    return Target(mv)


@corpus("list_self")
def _list_self() -> Target:
    lst: list = [1]
    lst.append(lst)
    return Target(lst)


@corpus("weakref")
def _weakref() -> Target:
    import weakref
    owner = Plain()
    return Target(weakref.ref(owner), keep=owner)


def _tolerant(op: Callable[[Any], Any], x: Any) -> Any:
    """Run ``op(x)``; the corpus's hostile methods (Boom) and unhashable/unsized types may raise."""
    try:
        return op(x)
    except (Boom, TypeError, AttributeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Memory: sizes, snapshots, raw reads (independent of pyguts' own models)

_api = ctypes.PyDLL(ctypes.pythonapi._name, handle=ctypes.pythonapi._handle)
_api.PyUnicode_AsUTF8.restype = ctypes.c_char_p
_api.PyUnicode_AsUTF8.argtypes = [ctypes.py_object]
#: sizeof(PyASCIIObject) and sizeof(PyCompactUnicodeObject), measured on fresh, cache-free strings.
_ASCII_HEAD = str.__sizeof__(chr(65) * 2) - 3
_COMPACT_HEAD = str.__sizeof__(chr(0x100) * 2) - 6


def _as_utf8(s: str) -> None:
    """Fill the str's cached UTF-8 copy (what mutate must free or refresh)."""
    try:
        _api.PyUnicode_AsUTF8(s)
    except (UnicodeEncodeError, ValueError):  # lone surrogates have no UTF-8
        pass


def own_nbytes(obj: object) -> int:
    """Bytes at id(obj) that surely belong to obj: exact for builtin payload types, else a floor."""
    tp = type(obj)
    if tp in (bytes, tuple, int, bool, float, complex):
        return tp.__sizeof__(obj)
    if tp is str:
        top = max(map(ord, obj), default=0)
        kind = 1 if top < 0x100 else 2 if top < 0x10000 else 4
        return (_ASCII_HEAD if top < 0x80 else _COMPACT_HEAD) + (len(obj) + 1) * kind
    if isinstance(obj, type):
        return min(type.__sizeof__(obj), type.__basicsize__)
    return max(tp.__basicsize__, 2 * _WORD)


def raw_refcnt(addr: int) -> int:
    return ctypes.c_ssize_t.from_address(addr).value


def _extra(obj: object) -> object:
    """What obj keeps outside its own block: list item pointers, a bytearray's bytes, dict entries."""
    if isinstance(obj, list):
        items = ctypes.c_void_p.from_address(id(obj) + 3 * _WORD).value
        n = list.__len__(obj)
        return ctypes.string_at(items, n * _WORD) if items and n else b""
    if isinstance(obj, bytearray):
        return memoryview(obj).tobytes()
    if isinstance(obj, dict):
        return [(id(k), id(v)) for k, v in dict.items(obj)]
    return None


@dataclass
class Snapshot:
    addr: int
    refcnt: int
    body: bytes   # everything after the refcount word, own_nbytes long
    extra: object

    @classmethod
    def take(cls, obj: object) -> "Snapshot":
        addr, n = id(obj), own_nbytes(obj)
        return cls(addr, raw_refcnt(addr), ctypes.string_at(addr + _WORD, n - _WORD), _extra(obj))

    def differences(self, now: "Snapshot") -> list[str]:
        """What changed between this snapshot and ``now`` (taken at the same call depth: the
        refcount then counts the same frames)."""
        found = []
        if 0 < self.refcnt < SHARED_REFCNT and now.refcnt != self.refcnt:
            found.append(f"refcount {self.refcnt} -> {now.refcnt}")
        if now.body != self.body:
            at = next(i for i, (a, b) in enumerate(zip(self.body, now.body)) if a != b) + _WORD
            found.append(f"memory differs from offset {at}: {self.body[at - _WORD:at]!r}.. -> "
                         f"{now.body[at - _WORD:at + 8 - _WORD]!r}")
        if now.extra != self.extra:
            found.append("its separately allocated part (items/buffer/entries) changed")
        return found


def warm_caches(obj: object) -> None:
    """Fill what a write must invalidate: hashes (bytes, str, 3.14 tuples) and a str's UTF-8 copy."""
    for base in (bytes, str, tuple, int, float, complex, frozenset):
        if isinstance(obj, base):
            _tolerant(base.__hash__, obj)
    if isinstance(obj, str):
        _as_utf8(obj)


# --------------------------------------------------------------------------------------------------
# Addresses for view_address, resolved in the child

def _maps() -> list[tuple[int, int, str, str]]:
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end, parts[1], parts[5] if len(parts) > 5 else ""))
    return out


def _named_region(name: str) -> int | None:
    return next((s for s, e, p, n in _maps() if n == name), None)


def _truncated_mapping() -> tuple[int, object]:
    """Address of the second page of a file mapping whose file was cut to one page."""
    fd, path = tempfile.mkstemp(prefix="pyguts-fuzz-")
    os.unlink(path)
    os.ftruncate(fd, 2 * mmap.PAGESIZE)
    m = mmap.mmap(fd, 2 * mmap.PAGESIZE)
    os.ftruncate(fd, 100)
    os.close(fd)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    return base + mmap.PAGESIZE, m


def _guard_page() -> tuple[int, object]:
    """A PROT_NONE page (it exports no buffer: found as the "---" region the mapping added)."""
    known = set(_maps())
    m = mmap.mmap(-1, mmap.PAGESIZE, prot=getattr(mmap, "PROT_NONE", 0))
    new = [s for s, e, p, n in set(_maps()) - known if p.startswith("---")]
    return (new[0] if new else 0x1000), m


def _gap_after_heap() -> int:
    regions = sorted(_maps())
    for (s1, e1, _, _), (s2, _, _, _) in zip(regions, regions[1:]):
        if s2 - e1 > 4 * mmap.PAGESIZE:
            return e1 + mmap.PAGESIZE
    return 0x10000


def _mapping_end() -> int:
    """The last byte of a readable anonymous mapping followed by a gap (ranges cross the end)."""
    regions = sorted(_maps())
    for (s1, e1, p1, n1), (s2, _, _, _) in zip(regions, regions[1:]):
        if p1.startswith("r") and not n1 and s2 > e1:
            return e1
    return regions[0][1]


class Address:
    """An address for view_address named by its kind (resolved in the child) plus ``delta`` bytes."""

    def __init__(self, kind: str, delta: int = 0):
        self.kind, self.delta = kind, delta

    def __repr__(self):
        return f"Address({self.kind!r}, {self.delta})"

    def resolve(self) -> tuple[Any, object]:
        keep: object = None
        kind = self.kind
        if kind.startswith("id:"):
            keep = CORPUS[kind[3:]]()
            base = id(keep.obj)
        elif kind in ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]", "[stack]", "[heap]"):
            base = _named_region(kind)
            if base is None:
                base = _named_region("[vvar]") or 0x1000
        elif kind == "truncated_file":
            base, keep = _truncated_mapping()
        elif kind == "prot_none":
            base, keep = _guard_page()
        elif kind == "gap":
            base = _gap_after_heap()
        elif kind == "mapping_end":
            base = _mapping_end()
        elif kind == "numpy_int":
            buf = ctypes.create_string_buffer(64)
            return np.uint64(ctypes.addressof(buf) + self.delta), buf
        else:
            base = int(kind, 0)  # a literal: "0", "0x10", "0xffff800000000000", "-8", "2**64"
        return base + self.delta, keep


# --------------------------------------------------------------------------------------------------
# Health check

def health_check(target: Target | None) -> None:
    """After the call: the interpreter still works, the target and everything shared with it too."""
    gc.collect()
    if target is not None:
        obj = target.obj
        for op in (repr, str, bool, lambda x: x == x, lambda x: type(x).__name__, lambda x: sys.getsizeof(x)):
            _tolerant(op, obj)
        warm_caches(obj)
        if isinstance(obj, (tuple, list, dict, set, frozenset, bytes, bytearray, str)):
            _tolerant(lambda x: [repr(i) for i in x], obj)
        if target.health is not None:
            _tolerant(lambda f: f(), target.health)
    for make in CORPUS.values():  # the shared objects (small ints, interned strings, types) still work
        other = make()
        for op in (repr, hash, lambda x: x == x):
            _tolerant(op, other.obj)
    junk = [bytes(64) for _ in range(200)] + [str(i) * 3 for i in range(200)] + [{i: [i]} for i in range(100)]
    assert int("250") + 1 == 251 and "".join(["a", "b"]) == "ab" and sys.intern("health") == "health"
    assert hash(b"health") == hash(bytes(bytearray(b"health"))) and len(junk) == 500
    del junk
    gc.collect()


# --------------------------------------------------------------------------------------------------
# The forked child

@dataclass
class ChildReport:
    status: str          # "refused", "right", "violation", "crashed", "hung", "error"
    detail: str          # the refusal text, the violation, the signal and faulthandler's output


def run_forked(body: Callable[[], str], timeout_s: float = CHILD_TIMEOUT_S) -> ChildReport:
    """Run ``body()`` in a forked child. It returns "refused: …" or "right: …", or raises
    Violation; the child always leaves with os._exit, never back into pytest."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            os.close(r)
            sys.settrace(None)
            gc.freeze()  # the parent's heap: never traversed (fast, no copy-on-write)
            faulthandler.enable(file=w, all_threads=True)
            try:
                verdict = {"status": "ok", "detail": body()}
                code = 0
            except Violation as exc:
                verdict, code = {"status": "violation", "detail": str(exc)}, 1
            except BaseException as exc:  # noqa: B036 (everything is reported, nothing escapes)
                where = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)[1:-1])
                verdict, code = {"status": "error", "detail": f"{type(exc).__name__}: {exc}\n{where}"}, 2
            os.write(w, _VERDICT + json.dumps(verdict).encode() + b"\n")
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline, hung = [], time.monotonic() + timeout_s, False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hung = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    out = b"".join(chunks)
    text = _child_frames(out.split(_VERDICT)[0].decode(errors="replace"))
    if hung:
        return ChildReport("hung", f"no answer in {timeout_s:.0f} s (killed){': ' + text if text else ''}")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ChildReport("crashed", f"killed by {signal.Signals(sig).name}\n{text}")
    if _VERDICT not in out:
        return ChildReport("error", f"exit status {os.WEXITSTATUS(status)} without a verdict\n{text}")
    verdict = json.loads(out.split(_VERDICT)[1])
    if verdict["status"] == "ok":
        status_word, _, detail = verdict["detail"].partition(": ")
        return ChildReport(status_word, detail)
    return ChildReport(verdict["status"], verdict["detail"] + ("\n" + text if text else ""))


def _child_frames(text: str) -> str:
    """faulthandler's dump cut to the frames of the example (pytest's and hypothesis' frames below
    run_forked, and the extension module list, are the same every time)."""
    kept = []
    for line in text.splitlines():
        if "in run_forked" in line:
            kept.append("  ...")
            break
        kept.append(line)
    return "\n".join(kept)


# --------------------------------------------------------------------------------------------------
# Counting

COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
#: Reproducer and first line of every failing child (hypothesis reports one per kind; a long run wants all).
FAILURES: list[str] = []


def record(entry: str, report: ChildReport, reproducer: str) -> None:
    COUNTS[entry]["examples"] += 1
    COUNTS[entry][report.status] += 1
    if report.status not in ("refused", "right"):
        FAILURES.append(f"{reproducer}: {report.status}: {report.detail.splitlines()[0][:300]}")


def summary(counts: dict[str, collections.Counter]) -> str:
    total = sum(counts.values(), collections.Counter())
    return (f"{total['examples']} examples: {total['refused']} refused, {total['right']} right, "
            f"{total['crashed']} crashed, {total['hung']} hung, {total['violation']} wrong, "
            f"{total['error']} other errors")


__all__ = ["Address", "Boom", "CLASSES", "CORPUS", "COUNTS", "ChildReport", "FAILURES", "Fit", "Gen", "HugeLen", "IndexOf",
           "LongLenStr", "REFUSALS", "RaisingIndex", "Shifty", "Snapshot", "SneakyStr", "Target", "Violation",
           "health_check", "instance_of", "own_nbytes", "raw_refcnt", "record", "run_forked", "summary",
           "warm_caches"]
