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

What the parent does with the child's bytes (the child is not trusted: it may be broken, or run
code that writes to any fd it inherited):

- Output pipes: a bounded tail (:data:`OUTPUT_TAIL_NBYTES`), decoded as UTF-8 with replacement.
- The result pipe must carry exactly one frame (:mod:`pyguts.isolation.wire`): a magic start and
  lengths that add up. Junk, a truncated frame, bytes after it or a length this process cannot
  map make the outcome "garbled" (or "exited" with that in ``detail`` when the exit code is not 0).
  Memory grows only with the bytes that actually arrive, and the pipe is read to its end.
- Only the forked child itself sends; a process fn forks that returns into isolate's code exits
  without writing. When fn closed the result pipe, the child says so in a small shared page,
  which fn closing its fds cannot take away.
- A frame is unpickled here directly only when it names no globals but builtin value types and
  exceptions (:func:`wire.load_plain`). Any other pickle runs code on load (``__reduce__``,
  ``__setstate__``, imports; numpy arrays too: a crafted dtype state segfaults numpy), so it is
  first loaded in a forked child of this process, and loaded here only if that trial load
  returned. A load that crashes (or outlives ``timeout``) makes the outcome "unloadable" instead
  of killing this process; one that raises makes it "raised".
"""

from __future__ import annotations

import functools
import gc
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pyguts.isolation import native, parent, wire
from pyguts.isolation.child import child_main, child_streams
from pyguts.isolation.parent import LOST, OUTPUT_TAIL_NBYTES, SIGCHLD, signal_name
from pyguts._compat import HAS_FORK
from pyguts.errors import ChildCrashed, IsolationUnavailable, UnsafeOperationError

__all__ = ["STATUSES", "Outcome", "isolate", "isolated", "load_pickle"]

#: Every value ``Outcome.status`` takes.
STATUSES = ("ok", "raised", "crashed", "timeout", "exited", "stopped", "channel_closed", "garbled",
            "unloadable", "lost")


class _ChildTraceback(Exception):
    """Carries the child's formatted traceback as the ``__cause__`` of a re-created exception."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]).rstrip() + "\n  (raised in the isolated child above)"


@dataclass
class Outcome:
    """What happened to one isolated call.

    ``status`` is one of :data:`STATUSES`:

    - "ok": ``value`` holds the result.
    - "raised": ``exc_*`` describe the exception ``fn`` raised, or the error that stopped its
      result from being pickled in the child or unpickled here (the message says which).
    - "crashed": the child was killed by ``signal`` (not by isolate).
    - "timeout": killed by isolate after ``timeout`` seconds (``signal`` is SIGKILL).
    - "exited": ``os._exit``/``sys.exit`` before returning (``exit_code``).
    - "stopped": the child was stopped by ``signal`` (SIGSTOP, SIGTSTP, ...); isolate killed it,
      since a stopped child never finishes.
    - "channel_closed": ``fn`` closed the result pipe (or put another file at its fd), so the
      result could not be sent.
    - "garbled": the result pipe carried bytes that are not one frame from the child (junk, a
      truncated frame, a second writer); ``detail`` says what arrived.
    - "unloadable": the result arrived whole, but loading it would run code, and a trial load in
      a forked child died (``detail`` names its signal): it was not loaded in this process.
    - "lost": another waiter in this process reaped the child, so how it ended is unknown.

    ``detail`` explains the last five in words. The child's own exit status is in ``exit_code``
    or ``signal`` whenever it is known.

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
    native_crash: native.Crash | None = field(default=None, repr=False)
    fault_address: int | None = None
    fault_region: str = ""
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    pid: int = 0
    timeout: float | None = None
    detail: str = ""
    _exc_pickle: bytes | None = field(default=None, repr=False)
    _native_frames: tuple[native.NativeFrame, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def native_frames(self) -> tuple[native.NativeFrame, ...]:
        """The crashing thread's native frames, innermost first (empty when none were recorded).

        Symbolized on first use (symbol tables, and ``addr2line`` for file:line): tens of ms per
        shared object, paid only by crashes someone looks at.
        """
        if self._native_frames is None:
            self._native_frames = native.symbolize(self.native_crash) if self.native_crash else ()
        return self._native_frames

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One paragraph for humans: what happened, with the child's traceback or fault text."""
        child = "the isolated child (pid %d)" % self.pid
        head = {
            "ok": "the isolated call returned %s" % _short_repr(self.value),
            "raised": "the isolated call raised %s: %s" % (self.exc_type, self.exc_message),
            "crashed": "%s was killed by %s (signal %s)" % (child, self.signal_name, self.signal),
            "timeout": "%s did not finish within %gs and was killed" % (child, self.timeout or 0.0),
            "exited": "%s exited with code %s without returning" % (child, self.exit_code),
            "stopped": "%s was stopped by %s (signal %s) and killed" % (child, self.signal_name, self.signal),
            "channel_closed": "%s could not send its result: its result pipe was closed" % child,
            "garbled": "the result pipe of %s carried bytes that are not its result" % child,
            "unloadable": "the isolated call returned a result that was not loaded in this process",
            "lost": "%s ended, but how is unknown" % child,
        }[self.status]
        parts = [head + " after %.3fs" % self.duration_s]
        if self.detail:
            parts.append(self.detail)
        if self.exc_traceback and self.status == "raised":
            parts.append("child traceback:\n" + self.exc_traceback.rstrip())
        if self.fault_address is not None:
            parts.append("fault address: %#x, %s" % (self.fault_address, self.fault_region))
        if self.native_frames:
            parts.append("native frames of the crashing thread (most recent call first):\n"
                         + native.describe(self.native_frames))
        elif self.status == "crashed" and native.why_not():
            parts.append("no native frames: the crash handler could not be built (%s)" % native.why_not())
        if self.fault_traceback:
            parts.append("child faulthandler output:\n" + self.fault_traceback.rstrip())
        for name in ("stdout", "stderr"):
            text = getattr(self, name)
            if text and self.status != "ok":
                parts.append("child %s (last %d bytes kept):\n%s" % (name, OUTPUT_TAIL_NBYTES, text.rstrip()))
        return "\n".join(parts)

    def unwrap(self) -> Any:
        """Return the value, re-raise the child's exception, or raise :class:`ChildCrashed`.

        The exception is re-created from its pickle the way :func:`load_pickle` loads one.

        >>> isolate(len, "abc").unwrap()
        3
        """
        if self.status == "ok":
            return self.value
        if self.status == "raised" and self._exc_pickle is not None:
            try:
                exc = _load(self._exc_pickle, (), self.timeout)
            except Exception:  # cannot be re-created here (or loading it would crash this process)
                exc = None
            if isinstance(exc, BaseException):
                raise exc from _ChildTraceback(self.exc_traceback or "")
        err = ChildCrashed(self.describe())
        err.outcome = self  # type: ignore[attr-defined]
        raise err

    def __repr__(self) -> str:
        """One line: how it ended, the pid and the time (``describe()`` and Jupyter's view say more).

        >>> repr(isolate(pow, 2, 10)).split(", pid")[0]
        '<Outcome ok: 1024'
        """
        if self.status == "ok":
            how = _short_repr(self.value)
        elif self.status == "raised":
            how = "%s: %s" % (self.exc_type, self.exc_message)
        elif self.status in ("crashed", "stopped"):
            how = "%s (signal %s)" % (self.signal_name, self.signal)
        elif self.status == "timeout":
            how = "killed after %gs" % (self.timeout or 0.0)
        elif self.status == "exited":
            how = "code %s" % self.exit_code
        else:
            how = self.detail
        how = " ".join(str(how).split())  # one line, whatever the child said
        how = how if len(how) <= 80 else how[:77] + "..."
        return "<Outcome %s%s, pid %d, %.0f ms>" % (self.status, ": " + how if how else "", self.pid,
                                                   self.duration_s * 1e3)

    def _repr_html_(self) -> str:
        """Jupyter's view: the verdict, a table of what is known, the child's tracebacks and output."""
        from html import escape

        colour = "#1e7b34" if self.status == "ok" else "#b03a2e"
        rows = [("status", self.status)]
        if self.signal is not None:
            rows.append(("signal", "%s (%s)" % (self.signal, self.signal_name)))
        if self.exit_code is not None:
            rows.append(("exit code", str(self.exit_code)))
        if self.status == "ok":
            rows.append(("value", _short_repr(self.value)))
        if self.exc_type is not None:
            rows.append(("exception", "%s: %s" % (self.exc_type, self.exc_message)))
        if self.fault_address is not None:
            rows.append(("fault address", "%#x, %s" % (self.fault_address, self.fault_region)))
        if self.timeout is not None:
            rows.append(("timeout", "%gs" % self.timeout))
        rows += [("pid", str(self.pid)), ("duration", "%.1f ms" % (self.duration_s * 1e3))]
        if self.detail:
            rows.append(("detail", self.detail))
        table = "".join('<tr><th style="text-align:left">%s</th><td style="text-align:left">%s</td></tr>'
                        % (escape(k), escape(v)) for k, v in rows)
        parts = ['<div class="pyguts-outcome"><p><b style="color:%s">isolate: %s</b> \u2014 %s</p>'
                 % (colour, escape(self.status), escape(self.describe().split("\n", 1)[0])),
                 "<table>%s</table>" % table]
        failed = self.status != "ok"
        for title, text, open_ in (("child traceback", self.exc_traceback, True),
                                   ("native frames (most recent call first)", native.describe(self.native_frames), True),
                                   ("child faulthandler output", self.fault_traceback, True),
                                   ("child stdout (last %d bytes kept)" % OUTPUT_TAIL_NBYTES, self.stdout, failed),
                                   ("child stderr (last %d bytes kept)" % OUTPUT_TAIL_NBYTES, self.stderr, failed)):
            if text and text.strip():
                parts.append("<details%s><summary>%s</summary><pre>%s</pre></details>"
                             % (' open=""' if open_ else "", escape(title), escape(text.rstrip())))
        return "".join(parts) + "</div>"


def isolate(fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Outcome:
    """Call ``fn(*args, **kwargs)`` in a forked child; return an :class:`Outcome`, never raise for the child.

    ``timeout`` (seconds) kills the child's process group with SIGKILL after a stack dump. While
    the call runs, a SIGCHLD that is set to SIG_IGN is set to SIG_DFL (from any thread; the kernel
    would otherwise reap the child itself and its exit status would be lost) and set back after.

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
    native_handler = native.installer()  # (built on the first call; cached on disk)
    sigchld_held = SIGCHLD.hold()
    ending = parent.ending_page()  # shared with the child: survives it closing fds
    pipes: list[tuple[int, int]] = []
    pid = -1
    try:
        try:
            for _ in range(4):  # result, stdout, stderr, faulthandler
                pipes.append(os.pipe())
            st = os.fstat(pipes[0][1])
            channel = (st.st_dev, st.st_ino)  # so the child can tell its result pipe from a new file
            child_ignores_sigchld = sigchld_held and SIGCHLD.replaced
            parent.flush_std_streams()
            gc_enabled = gc.isenabled()
            gc.disable()  # no collection between fork and the child's gc.freeze()
            try:
                start = time.perf_counter()
                pid = os.fork()
            finally:
                if pid != 0 and gc_enabled:  # (the child re-enables it after freezing)
                    gc.enable()
            if pid == 0:  # child: never returns
                if child_ignores_sigchld:  # the disposition its parent's code set
                    parent.set_sig(signal.SIGCHLD, signal.SIG_IGN)
                child_main(fn, args, kwargs, pipes, timeout is not None, streams, gc_enabled, ending, channel,
                           native_handler)
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
                parent.kill_and_reap(pid)
            raise
        ended = parent.collect(pid, [r for r, _ in pipes], start, timeout, _receive)
        outcome = _outcome(ended, ending, pid, timeout)
        parent.PAGES.append(ending)  # the child is reaped: the page is free again
        outcome.duration_s = time.perf_counter() - start
        return outcome
    finally:
        if sigchld_held:
            SIGCHLD.release()


def load_pickle(data: Any, buffers: Any = (), *, timeout: float | None = None) -> Any:
    """Unpickle bytes that came from an isolated child so that a load which crashes cannot kill
    this process: plain data loads directly, any other pickle only after a trial load in a forked
    child returned. Raises what a direct load raised, :class:`pickle.UnpicklingError` when the
    trial load raised, or :class:`UnsafeOperationError` when it died (the pickle was not loaded).

    >>> load_pickle(pickle.dumps({"a": [1, 2.5, None]}))
    {'a': [1, 2.5, None]}
    """
    try:
        return _load(data, buffers, timeout)
    except _Unloadable as exc:
        if exc.trial.status == "raised":
            raise pickle.UnpicklingError("loading the pickle raised %s: %s"
                                         % (exc.trial.exc_type, exc.trial.exc_message)) from None
        raise UnsafeOperationError(str(exc)) from None


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


def _receive(frame: Any, timeout: float | None) -> Outcome | str:
    """The Outcome a whole frame holds, or why it holds none (a malformed frame)."""
    try:
        main, buffers = wire.split(frame)
    except wire.FrameError as exc:
        return "its frame is malformed: %s" % exc
    cannot = "the child's result could not be unpickled in the parent: %s; return types the parent can import"
    try:
        loaded = _load(main, buffers, timeout)
    except _Unloadable as exc:
        trial = exc.trial
        if trial.status == "raised":
            return Outcome("raised", exc_type=trial.exc_type, exc_message=cannot % trial.exc_message,
                           exc_traceback=trial.exc_traceback, _exc_pickle=trial._exc_pickle)
        return Outcome("unloadable", fault_traceback=trial.fault_traceback, detail=str(exc))
    except Exception as exc:
        return Outcome("raised", exc_type=type(exc).__name__, exc_message=cannot % exc,
                       _exc_pickle=wire.try_pickle(exc))
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and loaded[0] in ("ok", "raised")):
        return "its frame does not hold (status, payload)"
    status, payload = loaded
    if status == "ok":
        return Outcome("ok", value=payload)
    if not isinstance(payload, dict):
        return "its frame does not hold an exception's description"
    return Outcome("raised", exc_type=payload.get("type"), exc_message=payload.get("message"),
                   exc_traceback=payload.get("traceback"), _exc_pickle=payload.get("pickle"))


class _Unloadable(Exception):
    """A pickle that runs code on load did not load in a trial child; ``trial`` says how that ended."""

    def __init__(self, trial: Outcome, needs: str) -> None:
        super().__init__(
            "Loading it runs code (it names %s), and a trial load in a forked child ended: %s; it was "
            "not loaded in this process. Return plain data, or pickle.dumps the result in the child "
            "and load it where a crash is affordable." % (needs, trial.describe().splitlines()[0]))
        self.trial = trial


def _load(main: Any, buffers: Any, timeout: float | None) -> Any:
    """Unpickle: plain pickles here, others only after a trial load in a forked child returned
    (see the module docstring); raises :class:`_Unloadable` when it did not."""
    try:
        return wire.load_plain(main, buffers)
    except wire.NotPlain as exc:
        needs = "%s.%s" % (exc.module, exc.name)
    trial = isolate(_trial_load, main, buffers, timeout=timeout)
    if trial.status != "ok":
        raise _Unloadable(trial, needs)
    return pickle.loads(main, buffers=buffers)


def _trial_load(main: Any, buffers: Any) -> None:
    pickle.loads(main, buffers=buffers)


def _outcome(ended: tuple, ending: Any, pid: int, timeout: float | None) -> Outcome:
    """:func:`_named_outcome`, with the native crash record taken out of the fault text (its frames
    are symbolized when first read: :attr:`Outcome.native_frames`)."""
    crash, fault = native.split(ended[-1])
    outcome = _named_outcome(ended[:-1] + (fault,), ending, pid, timeout)
    if crash is not None:
        outcome.native_crash = crash
        if crash.signal in (signal.SIGSEGV, signal.SIGBUS):
            outcome.fault_address, outcome.fault_region = crash.address, native.fault_region(crash)
    return outcome


def _named_outcome(ended: tuple, ending: Any, pid: int, timeout: float | None) -> Outcome:
    """Name how the child ended, from what :func:`parent.collect` saw and the ending record."""
    wait_status, stop_signal, timed_out, result, received, stdout, stderr, fault = ended
    signum, sig_name, exit_code = parent.decode_status(wait_status)
    if isinstance(received, Outcome):  # a result came back whole: it stands, with how the child ended
        outcome = received
        if signum is not None and not (timed_out or stop_signal):
            outcome.status = "crashed"  # died after sending: say so
        outcome.signal, outcome.signal_name, outcome.exit_code = signum, sig_name, exit_code
        outcome.pid, outcome.timeout, outcome.stdout, outcome.stderr = pid, timeout, stdout, stderr
        outcome.fault_traceback = fault + outcome.fault_traceback  # (+ a trial load's)
        return outcome
    common = dict(pid=pid, timeout=timeout, stdout=stdout, stderr=stderr, fault_traceback=fault)
    if stop_signal is not None:
        return Outcome("stopped", signal=stop_signal, signal_name=signal_name(stop_signal),
                       detail="isolate sent SIGKILL to its process group: a stopped child never "
                       "finishes (something sent it %s, or it read a terminal)" % signal_name(stop_signal),
                       **common)
    if timed_out:
        return Outcome("timeout", signal=signum, signal_name=sig_name, exit_code=exit_code, **common)
    if signum is not None:
        return Outcome("crashed", signal=signum, signal_name=sig_name, **common)
    if wait_status == LOST:
        return Outcome("lost", detail="Its exit status was taken by another waiter in this process: a "
                       "SIGCHLD handler that calls os.waitpid, or SIGCHLD ignored behind Python's back (C "
                       "code, SA_NOCLDWAIT); isolate lifts only a SIG_IGN that signal.signal set.", **common)
    kind = ending[0]
    channel_fd = int.from_bytes(ending[1:wire.ENDING_NBYTES], "little")
    problem = received if isinstance(received, str) else result.check()
    if kind == wire.ENDING_CHANNEL:
        return Outcome("channel_closed", exit_code=exit_code,
                       detail="fn closed fd %d, the result pipe (or put another file at that number), so "
                       "nothing was sent; leave fds it did not open alone (os.closerange(3, ...) closes "
                       "isolate's pipes too)" % channel_fd, **common)
    if kind == wire.ENDING_MACHINERY:
        return Outcome("exited", exit_code=exit_code, detail="isolate's own code in the child failed "
                       "(a pyguts bug; its traceback is in stderr)", **common)
    if problem and exit_code == 0:  # it exited as a child that sent its result does
        return Outcome("garbled", exit_code=exit_code, detail="The child exited normally, but " + problem
                       + "; nothing on the result pipe is trusted.", **common)
    return Outcome("exited", exit_code=exit_code, detail="the result pipe also carried bytes that are "
                   "not a result: " + problem if problem else "", **common)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
