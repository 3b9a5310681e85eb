"""numpy arrays over raw interpreter memory, bounded and read-only unless asked.

Each array's ``.base`` is a small holder object that keeps the owner of the memory alive. The
array is made in C (:mod:`pyguts._ndarray`); where that cannot be built, through
``__array_interface__`` on the holder (numpy 2 refuses ``np.array(ctypes_struct, copy=False)``
and ``frombuffer(bytes)`` stays read-only).

>>> b = b"Hello, world!"
>>> bytes(payload(b)[:5])
b'Hello'
>>> view(b).nbytes == b.__sizeof__()
True
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import operator
import os

import numpy as np

from pyguts import _compat, _ndarray
from pyguts.objects import layouts
from pyguts.objects.structs import MODELS, str_state, struct_owner

#: Highest address + 1 a view may reach on this machine.
_ADDRESS_LIMIT = 1 << (8 * _compat.POINTER_SIZE)

_Bytes, _Tuple, _List = MODELS["PyBytesObject"], MODELS["PyTupleObject"], MODELS["PyListObject"]
_Long, _Float, _Complex = MODELS["PyLongObject"], MODELS["PyFloatObject"], MODELS["PyComplexObject"]
_ASCII, _Compact = MODELS["PyASCIIObject"], MODELS["PyCompactUnicodeObject"]
_VarObject = MODELS["PyVarObject"]
_STR_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32)}
#: Variable-size types whose instances pyguts models as PyVarObjects with ob_size items after
#: tp_basicsize (int has its own rule). Other types with a tp_itemsize (frames, generators, code
#: objects, memoryviews, regex patterns) are not sized: ob_size may not even be their field.
_COUNTED_BY_OB_SIZE = (bytes, tuple, type)
_DIGIT_DTYPE = np.dtype({2: np.uint16, 4: np.uint32}[_compat.DIGIT_SIZE])
#: Exact types whose len() is their ob_size: (tp_basicsize, tp_itemsize), the fast path of nbytes_of.
_SIZED_BY_LEN = {tp: (tp.__basicsize__, tp.__itemsize__) for tp in (bytes, tuple)}
_U8, _UINTP, _F64 = np.dtype(np.uint8), np.dtype(np.uintp), np.dtype(np.float64)


class _Holder:
    """Exposes one block of memory to numpy and keeps its owner alive (as the array's base), where
    :mod:`pyguts._ndarray` cannot be built (its ``Holder`` does the same in C)."""

    __slots__ = ("__array_interface__", "owner")

    def __init__(self, addr: int, count: int, dtype: np.dtype, writable: bool, owner: object):
        self.__array_interface__ = {
            "version": 3, "shape": (count,), "typestr": dtype.str, "data": (addr, not writable),
        }
        self.owner = owner

    def __repr__(self) -> str:
        addr, readonly = self.__array_interface__["data"]
        return f"<pyguts memory at {addr:#x}, owner {type(self.owner).__name__}, {'read-only' if readonly else 'writable'}>"


def _array(addr: int, count: int, dtype: np.dtype, writable: bool, owner: object) -> np.ndarray:
    made = _ndarray.functions()
    if made is None:
        return np.asarray(_Holder(addr, count, dtype, writable, owner))
    return made.held(owner, addr, count, dtype, writable)


def kept_alive(x: object) -> tuple[int, object] | None:
    """(id of the pyguts object holding the reference, the object) when ``x`` is a pyguts array
    (``view``, ``payload``, ``view_address``) or a ``struct_of`` model, which keep the object whose
    memory they show alive; None for anything else. No method of ``x`` runs."""
    if issubclass(type(x), np.ndarray):
        base = np.ndarray.base.__get__(x)
        while issubclass(type(base), np.ndarray):
            base = np.ndarray.base.__get__(base)
        return (id(base), base.owner) if type(base) in (_Holder, _ndarray.holder_type()) else None
    owner = struct_owner(x)
    return None if owner is None else (id(x), owner)


def ndigits(obj: int) -> int:
    """Number of digits CPython stores for the int ``obj`` (its sign lives elsewhere)."""
    if _compat.VERSION >= (3, 12):
        # lv_tag = ndigits << 3 | sign bits (Include/cpython/longintrepr.h, _PyLong_NON_SIZE_BITS).
        return _Long.from_address(id(obj)).lv_tag >> 3
    return abs(_VarObject.from_address(id(obj)).ob_size)


def _str_data(obj: str) -> tuple[int, int]:
    """(offset of the character data, bytes per character) of a compact str."""
    state = str_state(obj)
    if not state["compact"]:
        raise TypeError("this str is not compact (a str subclass instance keeps its characters in a "
                        "separate buffer); pass str(obj) to look at a compact copy")
    return (ctypes.sizeof(_ASCII) if state["ascii"] else ctypes.sizeof(_Compact)), state["kind"]


def nbytes_of(obj: object) -> int:
    """Bytes CPython allocated for ``obj`` at ``id(obj)`` (its GC header and any managed
    ``__dict__`` pre-header excluded; separately allocated buffers such as a list's item array
    not included). TypeError for a variable-size type pyguts has no model for.

    >>> nbytes_of(1.5) == float.__basicsize__
    True
    """
    tp = type(obj)
    sizes = _SIZED_BY_LEN.get(tp)
    if sizes is not None:
        return sizes[0] + sizes[1] * len(obj)
    if isinstance(obj, str):
        offset, kind = _str_data(obj)
        return offset + (len(obj) + 1) * kind
    if isinstance(obj, int):
        # bool's tp_basicsize is a whole struct _longobject; the digits start at ob_digit.
        start = _Long.ob_digit.offset if tp in (int, bool) else tp.__basicsize__
        return start + _compat.DIGIT_SIZE * max(ndigits(obj), _compat.INT_MIN_DIGITS)
    if isinstance(obj, type) and not obj.__flags__ & layouts.TPFLAGS_HEAPTYPE:  # a static type: a plain struct
        return type.__sizeof__(obj)
    if tp.__itemsize__:
        if not issubclass(tp, _COUNTED_BY_OB_SIZE):
            raise TypeError(
                f"the size of a {tp.__name__} object is unknown to pyguts: its type declares {tp.__itemsize__}-byte "
                "items (tp_itemsize), but no pyguts model says where their number is kept (a frame, for one, keeps "
                "a pointer where a PyVarObject keeps ob_size). Use view_address(id(obj), "
                f"{tp.__basicsize__}, owner=obj) for its fixed part (tp_basicsize)")
        return tp.__basicsize__ + tp.__itemsize__ * abs(_VarObject.from_address(id(obj)).ob_size)
    # Every allocation of an instance (PyObject_New, tp_alloc) is tp_basicsize bytes; static
    # singletons (None, NotImplemented, Ellipsis) declare 0.
    return tp.__basicsize__


def view(obj: object, *, writable: bool = False) -> np.ndarray:
    """uint8 array over exactly ``obj``'s own memory, starting at ``id(obj)``.

    Read-only unless ``writable=True``. The array's ``.base`` keeps ``obj`` alive.

    >>> v = view(b"Hello, world!")
    >>> v.flags.writeable, int(v[16])     # ob_size is at offset 16 on 64-bit builds
    (False, 13)
    """
    made = _ndarray.functions()  # (the hot path of teaching loops: one call fewer than through _array)
    if made is None:
        return _array(id(obj), nbytes_of(obj), _U8, writable, obj)
    return made.held(obj, id(obj), nbytes_of(obj), _U8, writable)


def _check_mapped(addr: int, nbytes: int, writable: bool) -> None:
    """Refuse a range that is not entirely inside readable (and, if asked, writable) mappings."""
    try:
        with open("/proc/self/maps") as maps:
            regions = []
            for line in maps:
                span, perms = line.split(None, 2)[:2]
                start, end = (int(x, 16) for x in span.split("-"))
                regions.append((start, end, perms))
    except OSError:  # no /proc: the readability probe below still decides
        return
    cursor, stop = addr, addr + nbytes
    for start, end, perms in sorted(regions):
        if start <= cursor < end:
            if perms[0] != "r" or (writable and perms[1] != "w"):
                need = "readable and writable" if writable else "readable"
                raise ValueError(f"memory at {cursor:#x} is mapped {perms!r}, not {need}; "
                                 "refusing to view it (reading it would crash the interpreter)")
            cursor = end
            if cursor >= stop:
                return
    raise ValueError(f"memory {addr:#x}..{stop:#x} is not mapped in this process (first gap at "
                     f"{cursor:#x}); refusing to view it (reading it would crash the interpreter)")


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


#: Remote iovecs one process_vm_readv call may take (Linux UIO_MAXIOV).
_IOV_MAX = 1024


@functools.lru_cache(maxsize=None)
def _process_vm_readv():
    """libc's process_vm_readv (Linux 3.2+, glibc 2.15+), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                   ctypes.c_ulong]
    fn.restype = ctypes.c_ssize_t
    return fn


def _probe_addresses(addr: int, nbytes: int) -> np.ndarray:
    """One address in each page of [addr, addr + nbytes): addr itself, then each later page's start."""
    first_next = (addr // mmap.PAGESIZE + 1) * mmap.PAGESIZE
    later = np.arange(first_next, max(first_next, addr + nbytes), mmap.PAGESIZE, dtype=np.uint64)
    return np.concatenate((np.array([addr], dtype=np.uint64), later))


def _first_unreadable_vm(probes: np.ndarray) -> int | None:
    """process_vm_readv of one byte at each probe address, on this very process: the kernel reports
    a page it cannot read (EFAULT) instead of faulting. Raises OSError when the call is unavailable."""
    fn, pid = _process_vm_readv(), os.getpid()
    if fn is None:
        raise OSError(errno.ENOSYS, "process_vm_readv is not available")
    for i in range(0, len(probes), _IOV_MAX):
        chunk = probes[i:i + _IOV_MAX]
        remote = np.empty((len(chunk), 2), dtype=np.uint64)  # struct iovec {void *iov_base; size_t iov_len;}
        remote[:, 0], remote[:, 1] = chunk, 1
        sink = ctypes.create_string_buffer(len(chunk))
        local = _IoVec(ctypes.addressof(sink), len(chunk))
        got = fn(pid, ctypes.byref(local), 1, remote.ctypes.data_as(ctypes.POINTER(_IoVec)), len(chunk), 0)
        if got < 0:
            err = ctypes.get_errno()
            if err != errno.EFAULT:
                raise OSError(err, os.strerror(err))
            return int(chunk[0])
        if got < len(chunk):
            return int(chunk[got])
    return None


def _first_unreadable_mem(probes: np.ndarray) -> int | None:
    """The same probe through /proc/self/mem (an unreadable page reads as EIO)."""
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for a in map(int, probes):
            try:
                if len(os.pread(fd, 1, a)) != 1:
                    return a
            except (OSError, OverflowError):
                return a
    finally:
        os.close(fd)
    return None


def _check_readable(addr: int, nbytes: int) -> None:
    """Refuse a range with a page that cannot be read. A page listed readable in /proc/self/maps may
    still fault: [vvar] pages, or a file mapping past the end of a file truncated since."""
    probes = _probe_addresses(addr, nbytes)
    try:
        bad = _first_unreadable_vm(probes)
    except OSError:
        try:
            bad = _first_unreadable_mem(probes)
        except OSError as exc:
            raise ValueError(f"cannot prove that memory {addr:#x}..{addr + nbytes:#x} is readable: this system offers "
                             f"neither process_vm_readv nor /proc/self/mem ({exc}); refusing to view it") from None
    if bad is not None:
        raise ValueError(f"memory at {bad:#x} cannot be read (the kernel refuses a read of that page: a special "
                         "mapping such as [vvar], or a file mapping past its file's end); refusing to view it "
                         "(reading it would crash the interpreter with SIGBUS or SIGSEGV)")


def view_address(addr: int, nbytes: int, *, dtype="u1", writable: bool = False,
                 owner: object = None) -> np.ndarray:
    """Array of ``dtype`` over ``nbytes`` bytes at ``addr``; ``owner`` is kept alive as its base.

    The range must lie in memory mapped into this process (checked against /proc/self/maps),
    readable, and writable too when ``writable=True``; every page of it is read once through the
    kernel (``process_vm_readv`` on this process, else ``/proc/self/mem``), which reports a page it
    cannot read instead of crashing. Memory that stays mapped is the caller's promise: pass the
    object that keeps it alive as ``owner``.

    >>> import ctypes
    >>> buf = ctypes.create_string_buffer(b"abc")
    >>> bytes(view_address(ctypes.addressof(buf), 3, owner=buf))
    b'abc'
    """
    addr, nbytes, dt = operator.index(addr), operator.index(nbytes), np.dtype(dtype)
    if addr == 0:
        raise ValueError("addr is NULL (0); pass the address of live memory")
    if addr < 0 or addr >= _ADDRESS_LIMIT:
        raise ValueError(f"addr must be in [1, {_ADDRESS_LIMIT:#x}), got {addr:#x}")
    if nbytes < 0 or addr + nbytes > _ADDRESS_LIMIT:
        raise ValueError(f"nbytes must be >= 0 and end below {_ADDRESS_LIMIT:#x}, got {nbytes} at {addr:#x}")
    if dt.itemsize == 0 or dt.hasobject or nbytes % dt.itemsize:
        raise ValueError(f"nbytes ({nbytes}) must be a whole number of {dt} items "
                         f"(itemsize {dt.itemsize}); object and void-0 dtypes are refused")
    if nbytes:
        _check_mapped(addr, nbytes, writable)
        _check_readable(addr, nbytes)
    return _array(addr, nbytes // dt.itemsize, dt, writable, owner)


def payload(obj: object, *, writable: bool = False) -> np.ndarray:
    """The data part of ``obj``, typed.

    bytes → uint8 of ``len(obj)``; bytearray → uint8 over its buffer (resizing is locked while the
    array lives); compact str → uint8/uint16/uint32 by kind; tuple → uintp item pointers; list →
    uintp item pointers (a snapshot copy unless ``writable=True``: the item array moves when the
    list grows); int → its digits; float → one float64; complex → two.

    >>> payload(2.5)
    array([2.5])
    >>> payload("hé").tolist(), payload("hé").dtype.name
    ([104, 233], 'uint8')
    """
    addr = id(obj)
    if isinstance(obj, bytes):
        return _array(addr + _Bytes.ob_sval.offset, len(obj), _U8, writable, obj)
    if isinstance(obj, bytearray):
        # A buffer export bumps ob_exports, so CPython refuses to resize under the array.
        arr = np.frombuffer(obj, dtype=np.uint8)
        arr.flags.writeable = writable
        return arr
    if isinstance(obj, str):
        offset, kind = _str_data(obj)
        return _array(addr + offset, len(obj), _STR_DTYPES[kind], writable, obj)
    if isinstance(obj, tuple):
        return _array(addr + _Tuple.ob_item.offset, len(obj), _UINTP, writable, obj)
    if isinstance(obj, list):
        items = _List.from_address(addr).ob_item or 0
        live = _array(items, len(obj), _UINTP, writable, obj) if obj else np.empty(0, np.uintp)
        if writable:
            return live
        snapshot = live.copy()
        snapshot.flags.writeable = False
        return snapshot
    if isinstance(obj, int):
        return _array(addr + _Long.ob_digit.offset, ndigits(obj), _DIGIT_DTYPE, writable, obj)
    if isinstance(obj, float):
        return _array(addr + _Float.ob_fval.offset, 1, _F64, writable, obj)
    if isinstance(obj, complex):
        return _array(addr + _Complex.real.offset, 2, _F64, writable, obj)
    raise TypeError(f"payload() supports bytes, bytearray, str, tuple, list, int, float and complex, "
                    f"got {type(obj).__name__}; use view(obj) for its raw memory")


__all__ = ["kept_alive", "nbytes_of", "ndigits", "payload", "view", "view_address"]
