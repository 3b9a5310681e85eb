"""Fixtures of the whole suite: ``cpu_hog``, a child process keeping another core busy (issue 15),
and the closing of /dev/null fds a test leaked on purpose.

A leak verdict must be the same on a busy machine. A module proves it by running every test with a
hog::

    pytestmark = pytest.mark.usefixtures("cpu_hog")

or, for one test, by asking for the ``cpu_hog`` fixture. Scripts outside pytest use
:func:`spinning_child` (benchmarks/leaks_verdicts.py loads this file by path).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

#: The child: say it is spinning, then spin; every ~10^6 iterations (tens of ms) it checks that its
#: parent is alive, so a killed test run (SIGKILL skips every teardown) leaves no spinner behind.
HOG_SOURCE = """\
import os, sys
parent = os.getppid()
sys.stdout.write("spinning\\n")
sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""
#: Seconds to wait for the child to go after SIGKILL.
HOG_STOP_TIMEOUT_S = 10.0


@contextlib.contextmanager
def spinning_child():
    """Run a child process spinning on a CPU for the duration of the block; yield its pid.

    The block starts once the child is spinning; the child is killed by its pid and reaped on exit,
    also when the block raises.

    >>> with spinning_child() as pid:
    ...     pid > 0
    True
    """
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", HOG_SOURCE], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()   # blocks until the child spins (or dies: "")
        if line != "spinning\n":
            raise RuntimeError(f"the CPU hog (pid {proc.pid}) must print 'spinning' when it starts, got "
                               f"{line!r} and exit status {proc.poll()!r}; run `{sys.executable} -c` on "
                               f"tests/conftest.py's HOG_SOURCE to see why")
        yield proc.pid
    finally:
        proc.kill()   # by its pid (Popen.kill is os.kill(proc.pid, SIGKILL)); harmless if it is gone
        proc.wait(HOG_STOP_TIMEOUT_S)
        proc.stdout.close()


@pytest.fixture
def cpu_hog():
    """A child process spinning on a CPU while the test runs (started before it, killed after it)."""
    with spinning_child() as pid:
        yield pid


@pytest.fixture(autouse=True)
def _close_leaked_devnull_fds():
    """Close the /dev/null fds a test opened and left open (the planted fd leaks): a check that finds
    one leaks hundreds, and a user's soft limit is often 1024 fds for the whole session."""
    if not os.path.isdir("/proc/self/fd"):
        yield
        return
    before = set(os.listdir("/proc/self/fd"))
    yield
    for fd in set(os.listdir("/proc/self/fd")) - before:
        with contextlib.suppress(OSError):   # the listing's own fd, gone already
            if os.readlink(f"/proc/self/fd/{fd}") == os.devnull:
                os.close(int(fd))
