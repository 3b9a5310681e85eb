"""Every way an isolated child can end is named in its Outcome, and the parent survives what it sends.

Issue 14 ("Safe means safe"), item 8. The tests of the issue's reproducers failed on the isolate
before it (a wrong status, an exception out of isolate(), a hang, or a dead parent); the others pin
the rules that fixed them. Checks that could hang or kill the test process on that code run inside
an outer isolate() with a timeout.
"""

from __future__ import annotations

import ctypes
import decimal
import os
import pickle
import signal
import sys
import threading

import psutil
import pytest

from pyguts.errors import ChildCrashed, UnsafeOperationError
from pyguts.isolation import STATUSES, Outcome, isolate, load_pickle, wire

pytestmark = [pytest.mark.every_python, pytest.mark.crash_prone]

#: The module (pyguts.isolate the attribute is the function; the module is in sys.modules).
ISOLATION = sys.modules["pyguts.isolation"]
#: Seconds an outer guard gives a check that hung (or killed its process) before the fix.
GUARD_S = 60


def _guarded(check, *args):
    """Run ``check`` in an outer child so that a hang or a crash there fails the test, not pytest."""
    outer = isolate(check, *args, timeout=GUARD_S)
    assert outer.status == "ok", outer.describe()
    return outer.value


def _summary(o):
    return {"status": o.status, "signal": o.signal, "signal_name": o.signal_name,
            "exit_code": o.exit_code, "detail": o.detail, "fault": o.fault_traceback,
            "exc_type": o.exc_type, "exc_message": o.exc_message, "duration_s": o.duration_s}


def _actual_sigchld_handler() -> int:
    """What the kernel has for SIGCHLD (0 SIG_DFL, 1 SIG_IGN), not Python's record of it."""
    getsig = ctypes.pythonapi.PyOS_getsig
    getsig.restype, getsig.argtypes = ctypes.c_void_p, [ctypes.c_int]
    return getsig(signal.SIGCHLD) or 0


@pytest.fixture
def sigchld_ignored():
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)


# ----------------------------------------------------------------- SIGCHLD set to SIG_IGN

def test_parent_ignoring_sigchld_still_sees_the_abort(sigchld_ignored):
    outcome = isolate(os.abort)
    assert (outcome.status, outcome.signal, outcome.signal_name) == ("crashed", signal.SIGABRT, "SIGABRT")
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    assert _actual_sigchld_handler() == signal.SIG_IGN  # put back after the call
    assert psutil.Process().children() == []


def test_a_thread_of_a_parent_ignoring_sigchld_sees_the_abort_too(sigchld_ignored):
    got = {}
    worker = threading.Thread(target=lambda: got.update(o=isolate(os.abort)))  # signal.signal refuses here
    worker.start()
    worker.join()
    assert (got["o"].status, got["o"].signal_name) == ("crashed", "SIGABRT")
    assert _actual_sigchld_handler() == signal.SIG_IGN


def test_the_child_of_a_parent_ignoring_sigchld_ignores_it_too(sigchld_ignored):
    assert isolate(_actual_sigchld_handler).unwrap() == signal.SIG_IGN
    assert isolate(lambda: isolate(os.abort).signal_name).unwrap() == "SIGABRT"  # nested, in that child


def test_a_sigchld_handler_that_reaps_the_child_makes_it_lost():
    previous = signal.signal(signal.SIGCHLD, lambda signum, frame: _reap_all())
    try:
        outcome = isolate(os.abort)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert (outcome.status, outcome.signal, outcome.exit_code) == ("lost", None, None)  # not "exited 0"
    assert "another waiter" in outcome.detail


def _reap_all() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


# ----------------------------------------------------------------- the child's exceptions and result

class _StrRaises(Exception):
    def __str__(self):
        raise RuntimeError("no text")


def _raise_str_raises():
    raise _StrRaises()


def test_an_exception_whose_str_raises_comes_back_as_raised():
    outcome = isolate(_raise_str_raises)
    assert (outcome.status, outcome.exc_type, outcome.exit_code) == ("raised", "_StrRaises", 0)
    assert outcome.exc_message == "<str() of the _StrRaises raised RuntimeError>"
    assert "_raise_str_raises" in outcome.exc_traceback


class _CustomBase(BaseException):
    pass


class _PicklingRaises:
    def __init__(self, exc):
        self.exc = exc

    def __reduce__(self):
        raise self.exc


@pytest.mark.parametrize("exc", [KeyboardInterrupt("in __reduce__"), SystemExit(3), _CustomBase("base")],
                         ids=["KeyboardInterrupt", "SystemExit", "BaseException subclass"])
def test_a_result_whose_pickling_raises_a_base_exception_is_reported_as_unpicklable(exc):
    outcome = isolate(_PicklingRaises, exc)
    assert (outcome.status, outcome.exc_type, outcome.signal) == ("raised", type(exc).__qualname__, None)
    assert "cannot be pickled" in outcome.exc_message and "_PicklingRaises" in outcome.exc_message


# ----------------------------------------------------------------- the result pipe

def _close_inherited_fds():
    os.closerange(3, 1 << 16)
    return 1


def test_a_child_that_closes_its_inherited_fds_is_channel_closed():
    outcome = isolate(_close_inherited_fds)
    assert (outcome.status, outcome.exit_code, outcome.signal) == ("channel_closed", 74, None)
    assert "closerange" in outcome.detail and outcome.value is None
    with pytest.raises(ChildCrashed, match="result pipe was closed"):
        outcome.unwrap()


def test_nothing_is_written_into_a_file_that_took_the_result_pipes_number(tmp_path):
    path = tmp_path / "user-file"

    def close_then_open():
        os.closerange(3, 1 << 16)
        files = [os.open(path, os.O_WRONLY | os.O_CREAT) for _ in range(16)]  # fills the low numbers
        return len(files)

    outcome = isolate(close_then_open)
    assert outcome.status == "channel_closed"
    assert path.read_bytes() == b""  # the frame did not go into the file now at that number


def test_a_result_pipe_made_non_blocking_by_fn_still_carries_a_big_result(pipe_fds):
    def unblock_then_return():
        os.set_blocking(pipe_fds[0][1], False)
        return bytes(8 << 20)  # far more than a pipe holds

    outcome = isolate(unblock_then_return)
    assert outcome.status == "ok", outcome.describe()
    assert outcome.value == bytes(8 << 20)


@pytest.fixture
def pipe_fds(monkeypatch):
    """The fds of the pipes isolate() makes (result, stdout, stderr, faulthandler), as it makes them."""
    made = []
    real_pipe = os.pipe

    def recording_pipe():
        fds = real_pipe()
        made.append(fds)
        return fds

    monkeypatch.setattr(os, "pipe", recording_pipe)
    return made


BIG = 1 << 62
#: (what the child writes into its result pipe before the call ends, then returns or os._exit(3),
#:  the status, words of which the detail must contain one)
CHANNEL_CASES = [
    (b"\xff" * 64, "return", "garbled", ("starts with",)),
    (wire.START.pack(wire.MAGIC, BIG), "return", "garbled", ("cannot map",)),
    # 4 GiB: mapped lazily where memory allows (and never touched), refused where it does not
    (wire.START.pack(wire.MAGIC, 1 << 32), "return", "garbled", ("truncated", "cannot map")),
    (wire.START.pack(wire.MAGIC, 100) + b"x" * 10, "exit", "exited", ("truncated",)),
    (wire.START.pack(wire.MAGIC, 12) + wire.HEADER.pack(10**6, 0), "exit", "exited", ("malformed",)),
    (wire.START.pack(wire.MAGIC, 12) + wire.HEADER.pack(0, 0), "return", "garbled", ("followed its frame",)),
]


@pytest.mark.parametrize("junk, then, status, words", CHANNEL_CASES)
def test_the_parent_survives_whatever_arrives_on_the_result_pipe(pipe_fds, junk, then, status, words):
    rss_before = psutil.Process().memory_info().rss

    def write_junk():
        os.write(pipe_fds[0][1], junk)
        if then == "exit":
            os._exit(3)
        return "real result"

    outcome = isolate(write_junk)
    exit_code = 3 if then == "exit" else 0
    assert (outcome.status, outcome.exit_code, outcome.signal) == (status, exit_code, None), outcome.describe()
    assert any(w in outcome.detail for w in words) and outcome.value is None
    assert psutil.Process().memory_info().rss - rss_before < 256 << 20  # no room made for a claimed length


def _fork_and_return_big():
    pid = os.fork()
    if pid == 0:
        return b"g" * 3_000_000  # the grandchild returns from fn too
    os.waitpid(pid, 0)  # its whole frame would arrive first
    return b"c" * 3_000_000


def test_only_the_child_sends_a_result_when_fn_forks():
    outcome = isolate(_fork_and_return_big, timeout=GUARD_S)
    assert outcome.status == "ok", outcome.describe()
    assert outcome.value == b"c" * 3_000_000


# ----------------------------------------------------------------- stopped children

def _stop_self(signum):
    os.kill(os.getpid(), signum)
    return "resumed"


@pytest.mark.parametrize("signum", [signal.SIGSTOP, signal.SIGTSTP], ids=["SIGSTOP", "SIGTSTP"])
def test_a_child_that_stops_is_reported_as_stopped_and_killed(signum):
    got = _guarded(lambda: _summary(isolate(_stop_self, signum)))  # before: waited forever
    assert (got["status"], got["signal"], got["signal_name"]) == ("stopped", signum, signum.name)
    assert "SIGKILL" in got["detail"] and got["duration_s"] < GUARD_S / 2


# ----------------------------------------------------------------- loading what came back

class _CrashesOnLoad:
    """Unpickling it reads address 0."""

    def __reduce__(self):
        return ctypes.string_at, (0,)


class _CrashesOnLoadError(Exception):
    def __reduce__(self):
        return ctypes.string_at, (0,)


def _raise_crashes_on_load():
    raise _CrashesOnLoadError("boom")


def test_a_result_whose_loading_crashes_does_not_kill_the_parent():
    got = _guarded(lambda: _summary(isolate(_CrashesOnLoad)))  # before: this outer child died of SIGSEGV
    assert (got["status"], got["signal"], got["exit_code"]) == ("unloadable", None, 0)
    assert "ctypes.string_at" in got["detail"] and "killed by SIGSEGV (signal 11)" in got["detail"]
    assert "string_at" in got["fault"]  # the trial load's faulthandler text


def test_unwrap_of_an_exception_whose_loading_crashes_does_not_kill_the_parent():
    def unwrap_it():
        outcome = isolate(_raise_crashes_on_load)
        try:
            outcome.unwrap()
        except ChildCrashed as exc:
            return outcome.status, type(exc).__name__
        return outcome.status, "returned"

    assert _guarded(unwrap_it) == ("raised", "ChildCrashed")


PLAIN_RESULTS = [
    {"a": [1, 2.5, None, True], "b": (b"x", "y")},
    {1, 2}, frozenset({3}), complex(1, 2), slice(1, 9, 2), Ellipsis, NotImplemented, int, float,
    ValueError("v"), OSError(2, "gone", "f"), bytearray(b"ba"),
]


@pytest.mark.parametrize("value", PLAIN_RESULTS, ids=repr)
def test_plain_results_load_without_a_trial(monkeypatch, value):
    monkeypatch.setattr(ISOLATION, "_trial_load", lambda main, buffers: os.abort())  # a trial would show
    outcome = isolate(lambda: value)
    assert outcome.status == "ok", outcome.describe()
    assert outcome.value == value or (isinstance(value, BaseException) and repr(outcome.value) == repr(value))


def test_other_results_are_loaded_only_after_a_trial_load(monkeypatch):
    assert isolate(decimal.Decimal, "1.5").unwrap() == decimal.Decimal("1.5")
    monkeypatch.setattr(ISOLATION, "_trial_load", lambda main, buffers: os.abort())
    outcome = isolate(decimal.Decimal, "1.5")
    assert outcome.status == "unloadable" and "decimal.Decimal" in outcome.detail
    assert "killed by SIGABRT" in outcome.detail


def test_load_pickle_loads_plain_data_and_refuses_a_crashing_load():
    assert load_pickle(pickle.dumps({"k": [1, 2]})) == {"k": [1, 2]}
    assert load_pickle(pickle.dumps(decimal.Decimal("2"))) == decimal.Decimal("2")
    with pytest.raises(UnsafeOperationError, match="killed by SIGSEGV"):
        load_pickle(pickle.dumps(_CrashesOnLoad()))
    with pytest.raises(pickle.UnpicklingError, match="ZeroDivisionError"):
        load_pickle(pickle.dumps(_DividesByZeroOnLoad()))


class _DividesByZeroOnLoad:
    def __reduce__(self):
        return divmod, (1, 0)


# ----------------------------------------------------------------- every status is described

def test_exit_code_70_from_fn_is_a_plain_exit():
    outcome = isolate(os._exit, 70)
    assert (outcome.status, outcome.exit_code, outcome.detail) == ("exited", 70, "")


def test_every_status_has_a_description():
    for status in STATUSES:
        assert Outcome(status, pid=1, signal=9, signal_name="SIGKILL", detail="d").describe()
