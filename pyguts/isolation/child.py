"""The child side of :func:`pyguts.isolation.isolate`: redirect fds, call, frame the result, exit.

Runs only in a forked child (apart from the framing constants, which the parent decodes with).
"""

from __future__ import annotations

import ctypes
import faulthandler
import functools
import gc
import io
import os
import signal
import sys
import traceback
from typing import Any, Callable

from pyguts.isolation import wire

try:
    import fcntl
except ImportError:  # Windows: no fork either
    fcntl = None  # type: ignore[assignment]

#: Results larger than this get a bigger pipe buffer (fewer context switches).
_BIG_PIPE_NBYTES = 1 << 20
#: Exit code of a child whose isolate machinery itself failed (EX_SOFTWARE).
_EXIT_INTERNAL = 70
#: Exit code of a child whose result pipe fn closed, so it could not send (EX_IOERR).
_EXIT_NO_CHANNEL = 74
#: Most buffers passed to one writev (POSIX guarantees at least 16; Linux allows 1024).
_IOV_MAX = 16
#: faulthandler's own C stack (3.14+) is left out where pyguts' handler records it: called from
#: that handler, it would start with that handler's frames.
_NO_C_STACK = {"c_stack": False} if sys.version_info >= (3, 14) else {}
#: Signal the parent sends on timeout so the child's faulthandler dumps where it is stuck.
DUMP_SIGNAL = getattr(signal, "SIGUSR2", None)


@functools.lru_cache(maxsize=None)
def _libc() -> Any:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def libc_fflush() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "fflush"):
        libc.fflush(None)


def child_main(fn: Callable[..., Any], args: tuple, kwargs: dict, pipes: list[tuple[int, int]],
               dump_on_signal: bool, streams: tuple[io.TextIOWrapper, io.TextIOWrapper],
               gc_enabled: bool, ending: Any, channel: tuple[int, int],
               native_handler: Callable[[int], int] | None) -> None:
    """Body of the forked child: redirect fds, call fn, send the frame, leave with os._exit.

    ``channel`` is the (device, inode) of the result pipe; when fn closed it, or its own code
    failed, the child says so in ``ending``, the page it shares with the parent
    (:data:`wire.ENDING_NBYTES`). Only this process sends: a process fn forked exits here.
    ``native_handler(fd)`` puts the native crash record's handler in front of faulthandler's
    (:mod:`pyguts.isolation.native`).
    """
    code = _EXIT_INTERNAL
    me = os.getpid()
    flushed = False
    try:
        # Every inherited object goes to the permanent generation: the child's collections then
        # never write to the parent's gc headers, so a big parent heap is not copied page by page.
        # Freezing here, not in the parent, leaves the parent's own gc.freeze() state untouched.
        gc.freeze()
        if gc_enabled:
            gc.enable()
        try:
            os.setpgid(0, 0)  # its own group, so a timeout also kills what it started
        except OSError:
            pass
        for r, _ in pipes:
            os.close(r)
        (_, res_w), (_, out_w), (_, err_w), (_, fault_w) = pipes
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout, sys.stderr = streams  # Python output unbuffered: it survives a crash
        if native_handler is not None:
            faulthandler.enable(file=fault_w, all_threads=True, **_NO_C_STACK)
            native_handler(fault_w)
        else:  # (3.14+ then prints its own C stack, as text)
            faulthandler.enable(file=fault_w, all_threads=True)
        if dump_on_signal and DUMP_SIGNAL is not None:
            faulthandler.register(DUMP_SIGNAL, file=fault_w, all_threads=True, chain=False)
        try:
            value, failure = fn(*args, **kwargs), None
        except BaseException as exc:
            value, failure = None, exc
        if isinstance(failure, SystemExit):
            code, payload = _exit_code_of(failure), None
        elif failure is not None:
            payload = wire.encode("raised", _describe_exception(failure))
        else:
            payload = _frame_value(value)
        _flush_child_output()
        flushed = True  # (the finally flushes only when something failed before this)
        if os.getpid() != me:  # a process that fn forked came back here: only the child reports
            os._exit(0 if payload is not None else code)
        # (The fast path below touches few objects: each page a forked child writes is a
        # copy-on-write fault, and those faults are most of a round trip's cost.)
        if payload is not None:  # (None: sys.exit, which the exit status says)
            try:
                st = os.fstat(res_w)
                if (st.st_dev, st.st_ino) != channel:
                    raise OSError  # fn closed it and opened another file there: do not write to that
                os.set_blocking(res_w, True)  # fn may have made it non-blocking
                _write_frame(res_w, payload)
            except OSError:  # fn closed the result pipe: nothing (or only part) could be sent
                code = _EXIT_NO_CHANNEL
                ending[1:wire.ENDING_NBYTES] = res_w.to_bytes(wire.ENDING_NBYTES - 1, "little")
                ending[0] = wire.ENDING_CHANNEL
            else:
                code = 0  # (the ending page is left alone: writing it would cost faults)
        # Close every pipe now: the parent sees end-of-file and decodes the result while this
        # process tears down its address space, instead of after it.
        for fd in (res_w, fault_w, 1, 2):
            try:
                os.close(fd)
            except OSError:  # fn closed it already
                pass
    except BaseException:
        try:
            if os.getpid() == me:
                ending[0] = wire.ENDING_MACHINERY
            text = "pyguts.isolate: the child's machinery failed:\n" + traceback.format_exc()
            os.write(2, text.encode())
        except BaseException:
            pass
    finally:
        try:
            if not flushed:
                _flush_child_output()
        finally:
            os._exit(code)


def _flush_child_output() -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    libc_fflush()  # printf() output from C, which os._exit would drop


@functools.lru_cache(maxsize=None)
def child_streams() -> tuple[io.TextIOWrapper, io.TextIOWrapper]:
    """Unbuffered text streams on fds 1 and 2, made once in the parent and only used by children.

    Made ahead because building a TextIOWrapper in every child costs ~0.1 ms of page faults.
    """
    return _unbuffered_text(1), _unbuffered_text(2)


def _unbuffered_text(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "wb", closefd=False)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True)


def _exit_code_of(exc: SystemExit) -> int:
    """The exit code CPython would use for ``sys.exit(exc.code)``."""
    try:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return int(exc.code) & 0xFF
        print(_text(exc.code), file=sys.stderr)
    except BaseException:
        pass
    return 1


def _text(obj: object) -> str:
    """``str(obj)`` as a plain str, or a note saying that ``str()`` raised (it runs user code)."""
    try:
        return "%s" % (obj,)
    except BaseException as exc:
        return "<str() of the %s raised %s>" % (_type_name(obj), _type_name(exc))


def _type_name(obj: object) -> str:
    try:
        return "%s" % (type(obj).__qualname__,)
    except BaseException:
        return "object"


def _describe_exception(exc: BaseException) -> dict:
    """Plain data only (str, bytes, None), so the frame always pickles and loads without code."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException as err:
        text = "<the traceback could not be formatted: %s>" % _type_name(err)
    return {"type": _type_name(exc), "message": _text(exc), "traceback": "%s" % (text,),
            "pickle": wire.try_pickle(exc)}


def _frame_value(value: Any) -> list:
    try:
        return wire.encode("ok", value)
    except BaseException as exc:  # __reduce__ is user code: it may raise anything, SystemExit too
        info = _describe_exception(exc)
        info["message"] = ("the result of the isolated function, a %s, cannot be pickled to send it "
                           "to the parent: %s; return plain data (convert it, or pickle what you need "
                           "inside the child)" % (_type_name(value), info["message"]))
        return wire.encode("raised", info)


def _write_frame(fd: int, parts: list) -> None:
    total = sum(memoryview(p).nbytes for p in parts)
    if total > _BIG_PIPE_NBYTES and hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _BIG_PIPE_NBYTES)
        except OSError:
            pass
    if len(parts) == 3:  # no out-of-band buffers: one bytes object, one write
        parts = [b"".join(parts)]
    views = [memoryview(p).cast("B") for p in parts]
    while views:  # one writev for small frames; a full pipe makes it return short
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
