"""Process-wide counters the leak check reads between rounds: malloc bytes, resident bytes, open fds.

Each probe returns an ``int`` or ``None`` when the platform lacks it; none of them keeps a file
descriptor open between calls, so the fd count is not disturbed by reading it.

>>> from pyguts.leaks.probes import open_fd_count, rss_nbytes
>>> open_fd_count() is None or open_fd_count() > 0
True
>>> rss_nbytes() is None or rss_nbytes() > 0
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Callable

#: Bytes per page; /proc/self/statm counts pages.
PAGE_NBYTES: int = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Directories listing this process's open file descriptors (Linux, then macOS/BSD).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


class _MallInfo2(ctypes.Structure):
    """``struct mallinfo2`` from glibc's <malloc.h> (glibc >= 2.33): every field a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class _MallInfo(ctypes.Structure):
    """``struct mallinfo`` (older glibc): the same fields as int, wrapping past 2 GiB."""

    _fields_ = [(name, ctypes.c_int) for name, _ in _MallInfo2._fields_]


def _load_mallinfo() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    for symbol, restype in (("mallinfo2", _MallInfo2), ("mallinfo", _MallInfo)):
        fn = getattr(libc, symbol, None)
        if fn is not None:
            fn.argtypes = []
            fn.restype = restype
            return fn
    return None


#: mallinfo2/mallinfo, looked up on first use (importing pyguts loads nothing).
_MALLINFO: list = []


def malloc_nbytes() -> int | None:
    """Bytes the C allocator (glibc malloc) has handed out and not had back: heap in use + mmapped.

    >>> malloc_nbytes() is None or malloc_nbytes() > 0
    True
    """
    if not _MALLINFO:
        _MALLINFO.append(_load_mallinfo())
    fn = _MALLINFO[0]
    if fn is None:
        return None
    info = fn()
    return int(info.uordblks) + int(info.hblkhd)


def rss_nbytes() -> int | None:
    """Resident set size of this process in bytes, from /proc/self/statm (None where absent)."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return None
    try:
        fields = os.read(fd, 128).split()
    finally:
        os.close(fd)
    return int(fields[1]) * PAGE_NBYTES


def open_fd_count() -> int | None:
    """Number of open file descriptors of this process (None where no fd directory exists).

    The directory's own descriptor, open while listing, is not counted.
    """
    for path in _FD_DIRS:
        try:
            return len(os.listdir(path)) - 1
        except OSError:
            continue
    return None
