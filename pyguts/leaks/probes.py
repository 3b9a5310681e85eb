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

import os

from pyguts import _mallinfo

#: Bytes per page; /proc/self/statm counts pages.
PAGE_NBYTES: int = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Directories listing this process's open file descriptors (Linux, then macOS/BSD).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def malloc_nbytes() -> int | None:
    """Bytes the C allocator (glibc malloc) has handed out and not had back: heap in use + mmapped.

    >>> malloc_nbytes() is None or malloc_nbytes() > 0
    True
    """
    info = _mallinfo.read()
    return None if info is None else int(info.uordblks) + int(info.hblkhd)


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
