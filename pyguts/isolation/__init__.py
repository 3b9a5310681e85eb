"""Run a function in a forked child and get its result, exception or crash back as data.

``isolate(fn, *args, timeout=None, **kwargs)`` forks, calls ``fn`` in the child and returns an
:class:`Outcome`: the value, the child's exception, or the signal that killed it with the child's
faulthandler text, plus the tails of what the child wrote to its fds 1 and 2 (C output included).

>>> from pyguts.isolation import isolate
>>> isolate(pow, 2, 10).unwrap()
1024
>>> import os
>>> isolate(os.abort).signal_name
'SIGABRT'

Why fork and not multiprocessing: ``fn`` need not be picklable (closures, lambdas, objects made
in the parent are inherited), and the round trip is one fork, four pipes and one pickle.
Only the result (or the exception) crosses the pipe, pickled with protocol 5 and its buffers
sent out of band, so a large numpy array is copied once into the parent.
"""

from __future__ import annotations

import functools
import gc
import os
import pickle
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

try:
    import fcntl
except ImportError:  # Windows: no fork either, isolate() raises IsolationUnavailable
    fcntl = None  # type: ignore[assignment]

from pyguts.isolation import wire
from pyguts.isolation.child import DUMP_SIGNAL, child_main, child_streams, libc_fflush
from pyguts._compat import HAS_FORK
from pyguts.errors import ChildCrashed, IsolationUnavailable

__all__ = ["STATUSES", "Outcome", "isolate", "isolated"]

#: Bytes of the child's stdout/stderr kept (the tail); earlier output is dropped.
OUTPUT_TAIL_NBYTES = 64 * 1024
#: Chunk size of one read from an output pipe.
_READ_NBYTES = 256 * 1024
#: After a timeout the child gets this long to dump its stack (faulthandler on SIGUSR2).
_DUMP_GRACE_S = 0.5

#: Every value ``Outcome.status`` takes.
STATUSES = ("ok", "raised", "crashed", "timeout", "exited")


class _ChildTraceback(Exception):
    """Carries the child's formatted traceback as the ``__cause__`` of a re-created exception."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]).rstrip() + "\n  (raised in the isolated child above)"


@dataclass
class Outcome:
    """What happened to one isolated call.

    ``status`` is "ok" (``value`` holds the result), "raised" (``exc_*`` describe the exception,
    also when the result could not be pickled), "crashed" (killed by ``signal``), "timeout"
    (killed after ``timeout`` seconds) or "exited" (``os._exit``/``sys.exit``: ``exit_code``).

    >>> o = isolate(int, "x")
    >>> o.status, o.exc_type
    ('raised', 'ValueError')
    """

    status: str
    value: Any = None
    exc_type: str | None = None
    exc_message: str | None = None
    exc_traceback: str | None = None
    signal: int | None = None
    signal_name: str | None = None
    exit_code: int | None = None
    fault_traceback: str = ""
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    pid: int = 0
    timeout: float | None = None
    _exc_pickle: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One paragraph for humans: what happened, with the child's traceback or fault text."""
        head = {
            "ok": "the isolated call returned %s" % _short_repr(self.value),
            "raised": "the isolated call raised %s: %s" % (self.exc_type, self.exc_message),
            "crashed": "the isolated child (pid %d) was killed by %s (signal %s)"
            % (self.pid, self.signal_name, self.signal),
            "timeout": "the isolated child (pid %d) did not finish within %gs and was killed"
            % (self.pid, self.timeout or 0.0),
            "exited": "the isolated child (pid %d) exited with code %s without returning"
            % (self.pid, self.exit_code),
        }[self.status]
        parts = [head + " after %.3fs" % self.duration_s]
        if self.exc_traceback and self.status == "raised":
            parts.append("child traceback:\n" + self.exc_traceback.rstrip())
        if self.fault_traceback:
            parts.append("child faulthandler output:\n" + self.fault_traceback.rstrip())
        for name in ("stdout", "stderr"):
            text = getattr(self, name)
            if text and self.status != "ok":
                parts.append("child %s (last %d bytes kept):\n%s" % (name, OUTPUT_TAIL_NBYTES, text.rstrip()))
        return "\n".join(parts)

    def unwrap(self) -> Any:
        """Return the value, re-raise the child's exception, or raise :class:`ChildCrashed`.

        >>> isolate(len, "abc").unwrap()
        3
        """
        if self.status == "ok":
            return self.value
        if self.status == "raised" and self._exc_pickle is not None:
            try:
                exc = pickle.loads(self._exc_pickle)
            except Exception:
                exc = None
            if isinstance(exc, BaseException):
                raise exc from _ChildTraceback(self.exc_traceback or "")
        err = ChildCrashed(self.describe())
        err.outcome = self  # type: ignore[attr-defined]
        raise err


def isolate(fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Outcome:
    """Call ``fn(*args, **kwargs)`` in a forked child; return an :class:`Outcome`, never raise for the child.

    ``timeout`` (seconds) kills the child's process group with SIGKILL after a stack dump.

    >>> import ctypes
    >>> o = isolate(ctypes.string_at, 0)
    >>> o.status, o.signal_name
    ('crashed', 'SIGSEGV')
    """
    if not HAS_FORK:
        raise IsolationUnavailable(
            "isolate() needs os.fork, which %s lacks; run the experiment in a subprocess instead"
            % sys.platform)
    if timeout is not None and not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds or None, got %r" % (timeout,))
    streams = child_streams()
    pipes: list[tuple[int, int]] = []
    pid = -1
    try:
        for _ in range(4):  # result, stdout, stderr, faulthandler
            pipes.append(os.pipe())
        _flush_std_streams()
        gc_enabled = gc.isenabled()
        gc.disable()  # no collection between fork and the child's gc.freeze()
        try:
            start = time.perf_counter()
            pid = os.fork()
        finally:
            if pid != 0 and gc_enabled:  # (the child re-enables it after freezing)
                gc.enable()
        if pid == 0:  # child: never returns
            child_main(fn, args, kwargs, pipes, timeout is not None, streams, gc_enabled)
        for i, (r, w) in enumerate(pipes):
            pipes[i] = (r, -1)  # closed: never close that number again (another thread may reuse it)
            os.close(w)
        try:
            os.setpgid(pid, pid)  # also done in the child; whichever runs first wins the race
        except OSError:
            pass
    except BaseException:
        for r, w in pipes:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)
        if pid > 0:
            _signal_child(pid, signal.SIGKILL, group=False)
            _reap(pid, block=True)
        raise
    return _collect(pid, [r for r, _ in pipes], start, timeout)


def isolated(fn: Callable[..., Any] | None = None, *, timeout: float | None = None) -> Any:
    """Decorator: every call runs in a forked child and returns its value (or raises, see ``unwrap``).

    ``wrapper.outcome(*args, **kwargs)`` returns the :class:`Outcome` instead.

    >>> @isolated(timeout=5)
    ... def double(x):
    ...     return 2 * x
    >>> double(21), double.outcome(1).status
    (42, 'ok')
    """
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return isolate(func, *args, timeout=timeout, **kwargs).unwrap()

        wrapper.outcome = functools.partial(_outcome_of, func, timeout)  # type: ignore[attr-defined]
        return wrapper

    return decorate if fn is None else decorate(fn)


def _outcome_of(func: Callable[..., Any], timeout: float | None, *args: Any, **kwargs: Any) -> Outcome:
    return isolate(func, *args, timeout=timeout, **kwargs)


# ---------------------------------------------------------------- parent side

def _flush_std_streams() -> None:
    """Flush Python and C stdio buffers so the child does not inherit (and repeat) pending output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    libc_fflush()


class _Reader:
    """The parent's end of one pipe: a frame reader (result) or a bounded tail (output)."""

    def __init__(self, fd: int, framed: bool) -> None:
        self.fd = fd
        self.framed = framed
        self.data = bytearray()
        self.frame: bytearray | None = None
        self.filled = 0
        self.open = True

    def read_once(self) -> bool:
        """Read what is available; return False at end of file."""
        if not self.framed:
            chunk = os.read(self.fd, _READ_NBYTES)
            self.data += chunk
            if len(self.data) > 2 * OUTPUT_TAIL_NBYTES:
                del self.data[:-OUTPUT_TAIL_NBYTES]
            return bool(chunk)
        if self.frame is None:  # length prefix not complete yet: small reads, usually the whole frame
            chunk = os.read(self.fd, _READ_NBYTES)
            self.data += chunk
            if len(self.data) >= wire.LENGTH.size:
                self.frame = bytearray(wire.LENGTH.unpack_from(self.data)[0])
                got = self.data[wire.LENGTH.size:wire.LENGTH.size + len(self.frame)]
                self.frame[:len(got)] = got
                self.filled = len(got)
            return bool(chunk)
        if self.filled == len(self.frame):
            return bool(os.read(self.fd, 1))
        n = os.readv(self.fd, [memoryview(self.frame)[self.filled:]])
        self.filled += n
        return n > 0

    def complete(self) -> bool:
        return self.frame is not None and self.filled == len(self.frame)

    def text(self) -> str:
        return bytes(self.data[-OUTPUT_TAIL_NBYTES:]).decode("utf-8", "replace")


def _collect(pid: int, fds: list[int], start: float, timeout: float | None) -> Outcome:
    """Read the child's pipes while waiting for it, so a full pipe never deadlocks the pair."""
    readers = [_Reader(fds[0], True)] + [_Reader(fd, False) for fd in fds[1:]]
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
            until = min(x for x in (deadline if not timed_out else None, kill_at, float("inf"))
                        if x is not None)
            wait_ms = None if until == float("inf") else max(0, int((until - now) * 1000) + 1)
            if pidfd is None:  # no exit notification: poll for it
                wait_ms = 10 if wait_ms is None else min(wait_ms, 10)
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    wait_status = _reap(pid, block=False)
                    continue
                reader = by_fd[fd]
                if not reader.read_once():
                    reader.open = False
                    poller.unregister(fd)
                elif timed_out and fd == fds[3] and kill_at != float("inf"):
                    kill_at = min(kill_at, time.perf_counter() + 0.05)  # the dump is arriving
            if not any(r.open for r in readers):
                if readers[0].complete():  # the child has sent everything and is exiting
                    break
                if pidfd is None:
                    wait_status = _reap(pid, block=False)
            elif pidfd is None:
                wait_status = _reap(pid, block=False)
        _drain(readers)
        outcome = _outcome(pid, wait_status, readers, timeout, timed_out)
        if wait_status is None:
            wait_status = _reap(pid, block=True)
            if os.WIFSIGNALED(wait_status) and not timed_out:  # died after sending: say so
                outcome.status = "crashed"
            outcome.signal, outcome.signal_name, outcome.exit_code = _decode_status(wait_status)
    except BaseException:
        _signal_child(pid, signal.SIGKILL, group=True)
        if wait_status is None:
            _reap(pid, block=True)
        raise
    finally:
        for r in readers:
            os.close(r.fd)
        if pidfd is not None:
            os.close(pidfd)
    outcome.duration_s = time.perf_counter() - start
    return outcome


def _pidfd_open(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _reap(pid: int, block: bool) -> int | None:
    """Wait for the child; return its raw wait status, or None if it is still running."""
    while True:
        try:
            got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return 0  # somebody else reaped it (a SIGCHLD handler set to SIG_IGN)
        except InterruptedError:
            continue
        return status if got == pid else None


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


def _drain(readers: list[_Reader]) -> None:
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


def _decode_status(wait_status: int | None) -> tuple[int | None, str | None, int | None]:
    """(signal, signal_name, exit_code) from a raw wait status."""
    if wait_status is not None and os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        return signum, signal_name(signum), None
    if wait_status is not None and os.WIFEXITED(wait_status):
        return None, None, os.WEXITSTATUS(wait_status)
    return None, None, None


def _outcome(pid: int, wait_status: int | None, readers: list[_Reader],
             timeout: float | None, timed_out: bool) -> Outcome:
    common = dict(pid=pid, timeout=timeout, stdout=readers[1].text(),
                  stderr=readers[2].text(), fault_traceback=readers[3].text())
    signum, signal_name, exit_code = _decode_status(wait_status)
    if readers[0].complete():
        return _decode_frame(readers[0].frame, exit_code, common)
    if timed_out:
        return Outcome("timeout", signal=signum, signal_name=signal_name, exit_code=exit_code, **common)
    if signum is not None:
        return Outcome("crashed", signal=signum, signal_name=signal_name, **common)
    return Outcome("exited", exit_code=exit_code, **common)


def _decode_frame(frame: bytearray, exit_code: int | None, common: dict) -> Outcome:
    try:
        status, payload = wire.decode(frame)
    except Exception as exc:
        return Outcome("raised", exc_type=type(exc).__name__, exit_code=exit_code,
                       exc_message="the child's result could not be unpickled in the parent: %s; "
                       "return types the parent can import" % exc,
                       exc_traceback=traceback.format_exc(), _exc_pickle=wire.try_pickle(exc), **common)
    if status == "ok":
        return Outcome("ok", value=payload, exit_code=exit_code, **common)
    return Outcome("raised", exit_code=exit_code, exc_type=payload["type"], exc_message=payload["message"],
                   exc_traceback=payload["traceback"], _exc_pickle=payload["pickle"], **common)


def signal_name(signum: int | None) -> str | None:
    """``'SIGSEGV'`` for 11; ``'signal 77'`` for a number with no name; None for None."""
    if signum is None:
        return None
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
