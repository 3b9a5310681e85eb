"""The parent's end of :func:`pyguts.isolation.isolate`: SIGCHLD, the ending page, the pipes, reaping.

:func:`collect` reads the child's four pipes while it waits for the child, kills it on a timeout
or when it stops, and returns what it saw; ``pyguts.isolation`` names the outcome.

Performance note: after a fork every page of this process is write-protected, so each page the
parent writes until the child is gone costs a fault (a copy while the child lives); the same holds
for the child. The fast path therefore touches few objects: no lock, no per-call mapping.
"""

from __future__ import annotations

import _signal
import _thread
import ctypes
import functools
import mmap
import os
import select
import signal
import sys
import time
from typing import Any, Callable

from pyguts.isolation import wire
from pyguts.isolation.child import DUMP_SIGNAL, libc_fflush

#: Bytes of the child's stdout/stderr kept (the tail); earlier output is dropped.
OUTPUT_TAIL_NBYTES = 64 * 1024
#: Bytes kept from the start of the fault pipe besides its tail: the native crash record.
NATIVE_HEAD_NBYTES = 32 * 1024
#: Chunk size of one read from an output pipe.
_READ_NBYTES = 256 * 1024
#: After a timeout the child gets this long to dump its stack (faulthandler on SIGUSR2).
_DUMP_GRACE_S = 0.5
#: How often the parent asks whether the child is stopped (a pidfd only reports its exit).
_STOP_CHECK_S = 0.1
#: Frames at least this big are received into an anonymous private mapping, not a bytearray:
#: pages are only committed as bytes arrive, so a huge announced length costs nothing by itself.
_MAP_MIN_NBYTES = 1 << 20
#: :func:`reap`'s answer when the child's exit status was taken by another waiter.
LOST = -1
_getsignal = _signal.getsignal  # Python's record of the handler, not the kernel's
_SIGCHLD_NUM, _SIG_IGN_NUM = int(signal.SIGCHLD), int(signal.SIG_IGN)


def flush_std_streams() -> None:
    """Flush Python and C stdio buffers so the child does not inherit (and repeat) pending output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    libc_fflush()


class SigchldGuard:
    """Keeps SIGCHLD from being ignored while isolated children live.

    With SIGCHLD set to SIG_IGN the kernel reaps exiting children itself, and ``waitpid`` can no
    longer say that one died of SIGABRT. ``signal.signal`` only works in the main thread, so the
    disposition is set with CPython's ``PyOS_setsig`` (plain sigaction, any thread), and SIG_IGN
    is put back when the last such call in this process returns; zombies of other children that
    exited meanwhile are then reaped, as SIG_IGN would have done. Python's own record of the
    handler (``signal.getsignal``) is never changed, so it says SIG_IGN throughout. The common
    case costs one read of that record: no lock (every page touched after a fork is a fault).
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = _thread.allocate_lock()
        self._users = 0
        self.replaced = False  # SIGCHLD is SIG_DFL now, and goes back to SIG_IGN after the last call

    def hold(self) -> bool:
        """Before a fork: True if SIGCHLD is ignored and now set to SIG_DFL until :meth:`release`."""
        if _getsignal(_SIGCHLD_NUM) != _SIG_IGN_NUM:  # (plain ints: enum members are more pages)
            return False  # as Python set it (C code that ignores SIGCHLD behind it: "lost")
        if self._pid != os.getpid():  # a forked child: the lock may be held by a thread gone here
            self.__init__()  # type: ignore[misc]
        with self._lock:
            if self._users == 0 and _sig_ignored(signal.SIGCHLD):
                set_sig(signal.SIGCHLD, signal.SIG_DFL)
                self.replaced = True
            self._users += 1
        return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self.replaced:
                self.replaced = False
                set_sig(signal.SIGCHLD, signal.SIG_IGN)
                _reap_strays()


@functools.lru_cache(maxsize=None)
def _sig_functions() -> tuple[Any, Any]:
    getsig, setsig = ctypes.pythonapi.PyOS_getsig, ctypes.pythonapi.PyOS_setsig
    getsig.restype = setsig.restype = ctypes.c_void_p
    getsig.argtypes, setsig.argtypes = [ctypes.c_int], [ctypes.c_int, ctypes.c_void_p]
    return getsig, setsig


def _sig_ignored(signum: int) -> bool:
    return (_sig_functions()[0](signum) or 0) == signal.SIG_IGN


def set_sig(signum: int, handler: int) -> None:
    _sig_functions()[1](signum, int(handler))


def _reap_strays() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


SIGCHLD = SigchldGuard()


#: Free ending pages (MAP_SHARED, so a fork shares them) and the process they belong to. Reusing
#: them saves a shared mapping (a tmpfs file) per call, ~1% of a round trip.
PAGES: list[mmap.mmap] = []
_PAGES_PID = [0]
_ENDING_RESET = bytes(wire.ENDING_NBYTES)


def ending_page() -> mmap.mmap:
    if _PAGES_PID[0] != os.getpid():  # a child's inherited pages are its parent's to use
        PAGES[:] = []
        _PAGES_PID[0] = os.getpid()
    try:
        page = PAGES.pop()
    except IndexError:
        page = mmap.mmap(-1, wire.ENDING_NBYTES)
    page[:] = _ENDING_RESET
    return page


class _Tail:
    """The parent's end of an output pipe: a bounded tail of what arrived, and its first
    ``head`` bytes (the fault pipe's: the native crash record comes before faulthandler's text)."""

    def __init__(self, fd: int, head: int = 0) -> None:
        self.fd = fd
        self.data = bytearray()
        self.open = True
        self.head = bytearray()
        self.head_room = head
        self.cut = False

    def read_once(self) -> bool:
        """Read what is available; return False at end of file."""
        chunk = os.read(self.fd, _READ_NBYTES)
        got = bool(chunk)
        if self.head_room and chunk:
            kept = chunk[:self.head_room]
            self.head += kept
            self.head_room -= len(kept)
            chunk = chunk[len(kept):]
        self.data += chunk
        if len(self.data) > 2 * OUTPUT_TAIL_NBYTES:
            del self.data[:-OUTPUT_TAIL_NBYTES]
            self.cut = True
        return got

    def text(self) -> str:
        data = self.data[-OUTPUT_TAIL_NBYTES:]
        if self.head:
            cut = self.cut or len(self.data) > OUTPUT_TAIL_NBYTES
            data = self.head + (b"\n[... cut ...]\n" if cut else b"") + data
        return bytes(data).decode("utf-8", "replace")


class FrameReader:
    """The parent's end of the result pipe: one frame, checked as it arrives.

    Bytes that cannot belong to the frame (before a valid start, after its end) are counted,
    never kept, and the pipe is read to its end whatever arrives, so the writer never blocks.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.open = True
        self.head = bytearray()  # the frame's start, until it is whole
        self.frame: bytearray | mmap.mmap | None = None
        self.filled = 0
        self.whole = False  # the frame has arrived, all of it
        self.stray = 0  # bytes that are not part of the frame
        self.problem = ""  # why no frame can come, once known

    def read_once(self) -> bool:
        if self.frame is not None and not self.whole:
            n = os.readv(self.fd, [memoryview(self.frame)[self.filled:]])
            self.filled += n
            self.whole = self.filled == len(self.frame)
            return n > 0
        chunk = os.read(self.fd, _READ_NBYTES)
        if self.frame is None and not self.problem:
            self.head += chunk
            if len(self.head) >= wire.START.size:
                self._begin()
        else:
            self.stray += len(chunk)
        return bool(chunk)

    def _begin(self) -> None:
        magic, nbytes = wire.START.unpack_from(self.head)
        rest = bytes(self.head[wire.START.size:])
        if magic != wire.MAGIC:
            self.problem = "it starts with %r, not a frame's %r" % (bytes(self.head[:8]), wire.MAGIC)
            self.stray = len(self.head)
            return
        try:
            if nbytes < _MAP_MIN_NBYTES:
                self.frame = bytearray(nbytes)
            else:  # private: a later fork must not share what the array will hold
                self.frame = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
        except (OverflowError, OSError, ValueError, MemoryError) as exc:
            self.problem = "its frame announces %d bytes, which this process cannot map (%s)" % (nbytes, exc)
            self.stray = len(self.head)
            return
        self.filled = min(len(rest), nbytes)
        self.frame[:self.filled] = rest[:self.filled]
        self.stray = len(rest) - self.filled
        self.whole = self.filled == nbytes

    def check(self) -> str:
        """Why what arrived is not exactly one whole frame; "" if it is, or if nothing arrived."""
        if self.problem:
            return self.problem
        if self.frame is None:
            return "%d bytes arrived, fewer than a frame's start" % len(self.head) if self.head else ""
        if self.filled < len(self.frame):
            return "its frame is truncated: %d of %d bytes arrived" % (self.filled, len(self.frame))
        if self.stray:
            return "%d bytes followed its frame (another process wrote to the result pipe)" % self.stray
        return ""


def collect(pid: int, fds: list[int], start: float, timeout: float | None,
            receive: Callable[[Any, float | None], Any]) -> tuple:
    """Read the child's pipes while waiting for it, so a full pipe never deadlocks the pair.

    A whole frame is handed to ``receive(frame, timeout)`` before the child is reaped, so the
    result is loaded while the child tears its address space down. Returns the raw facts:
    (wait status or LOST, stop signal or None, timed out, the :class:`FrameReader`, what
    ``receive`` returned or None, stdout tail, stderr tail, faulthandler text); a tuple, not a
    record class, because every object touched here after the fork costs a page fault.
    """
    result = FrameReader(fds[0])
    outputs = [_Tail(fds[1]), _Tail(fds[2]), _Tail(fds[3], head=NATIVE_HEAD_NBYTES)]
    readers: list[Any] = [result, *outputs]
    by_fd = {r.fd: r for r in readers}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    pidfd = _pidfd_open(pid)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    deadline = None if timeout is None else start + timeout
    wait_status: int | None = None
    timed_out = False
    kill_at: float | None = None
    stop_signal: int | None = None
    next_check = start + _STOP_CHECK_S
    received = None
    try:
        while wait_status is None:
            now = time.perf_counter()
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                kill_at = now + _DUMP_GRACE_S
                _signal_child(pid, DUMP_SIGNAL, group=False)
            if kill_at is not None and now >= kill_at:
                _signal_child(pid, signal.SIGKILL, group=True)
                kill_at = float("inf")
            until = min(x for x in (deadline if not timed_out else None, kill_at, next_check)
                        if x is not None)
            wait_ms = max(0, int((until - now) * 1000) + 1)
            if pidfd is None:  # no exit notification: poll for it
                wait_ms = min(wait_ms, 10)
            check = pidfd is None
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    check = True
                    continue
                reader = by_fd[fd]
                if not reader.read_once():
                    reader.open = False
                    poller.unregister(fd)
                elif timed_out and fd == fds[3] and kill_at != float("inf"):
                    kill_at = min(kill_at, time.perf_counter() + 0.05)  # the dump is arriving
            if result.whole and not any(r.open for r in readers):
                break  # the child has sent everything and is exiting
            if check or time.perf_counter() >= next_check:
                # a pidfd reports only the exit, so now and then ask whether it is stopped
                next_check = time.perf_counter() + _STOP_CHECK_S
                wait_status = reap(pid, block=False)
                if wait_status is not None and os.WIFSTOPPED(wait_status):
                    stop_signal = os.WSTOPSIG(wait_status)
                    _signal_child(pid, signal.SIGKILL, group=True)
                    wait_status = None
        _drain(readers)
        if result.whole and not result.stray:
            received = receive(result.frame, timeout)  # meanwhile the child tears itself down
        if wait_status is None:
            wait_status = reap(pid, block=True)
            if os.WIFSTOPPED(wait_status):
                wait_status, stop_signal = reap_past_stops(pid, wait_status)
    except BaseException:
        if wait_status is None:
            kill_and_reap(pid)
        raise
    finally:
        for r in readers:
            os.close(r.fd)
        if pidfd is not None:
            os.close(pidfd)
    return (wait_status, stop_signal, timed_out, result, received, outputs[0].text(),
            outputs[1].text(), outputs[2].text())


def _pidfd_open(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def reap(pid: int, block: bool) -> int | None:
    """The child's raw wait status (stops included), None if it is still running, or LOST."""
    while True:
        try:
            got, status = os.waitpid(pid, os.WUNTRACED | (0 if block else os.WNOHANG))
        except ChildProcessError:
            return LOST  # another waiter reaped it (a SIGCHLD handler, SA_NOCLDWAIT)
        except InterruptedError:
            continue
        return status if got == pid else None


def reap_past_stops(pid: int, status: int) -> tuple[int, int | None]:
    """From a stopped child's wait status: kill it, wait until it is gone; (status, stop signal)."""
    stop_signal = None
    while os.WIFSTOPPED(status):
        stop_signal = os.WSTOPSIG(status)
        _signal_child(pid, signal.SIGKILL, group=True)
        status = reap(pid, block=True)
    return status, stop_signal


def kill_and_reap(pid: int) -> None:
    _signal_child(pid, signal.SIGKILL, group=True)
    status = reap(pid, block=True)
    if os.WIFSTOPPED(status):
        reap_past_stops(pid, status)


def _signal_child(pid: int, signum: int | None, group: bool) -> None:
    if signum is None:
        return
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        if group:  # the group may be gone while the (zombie) leader remains
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass


def _drain(readers: list[Any]) -> None:
    """Read what the dead child left in its pipes without waiting for grandchildren to close them."""
    for r in readers:
        if not r.open:
            continue
        os.set_blocking(r.fd, False)
        try:
            while r.read_once():
                pass
        except BlockingIOError:
            pass
        r.open = False


def decode_status(wait_status: int | None) -> tuple[int | None, str | None, int | None]:
    """(signal, signal_name, exit_code) from a raw wait status."""
    if wait_status is not None and wait_status != LOST and os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        return signum, signal_name(signum), None
    if wait_status is not None and wait_status != LOST and os.WIFEXITED(wait_status):
        return None, None, os.WEXITSTATUS(wait_status)
    return None, None, None


def signal_name(signum: int | None) -> str | None:
    """``'SIGSEGV'`` for 11; ``'signal 77'`` for a number with no name; None for None."""
    if signum is None:
        return None
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum
