"""``build(..., threads=True)``: each call runs with one thread or the whole OpenMP team, whichever
measured faster for calls of its size.

An OpenMP team is not always faster: on a loaded machine, a thread sharing its core makes the
whole team wait (7x slower than serial was measured on a busy 2-core machine), and small calls pay
the team's start-up for nothing. So each checked function of a ``threads=True`` library keeps, per
size class (the bytes of its array arguments, by power of two), the times of both ways:

- the first calls of a size class alternate one thread and the team (``TRIALS`` each), then the
  faster (by its best time) is used;
- now and then the other way runs once more, to follow a machine whose load changes: after
  ``RETRY`` calls, then twice as many after each retry that confirms the choice (up to
  ``RETRY_MAX``), back to ``RETRY`` after a switch. The retry's one time is compared with the best
  of the chosen way's last ``TRIALS`` calls, so a choice only changes for a way faster now.

The team size is set with ``omp_set_num_threads`` just for the call and restored after it, so other
OpenMP code on the thread keeps its own setting. ``team_choices(fn)`` says what was chosen.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any, Callable

import numpy as np

#: Calls of each way in a size class before the first choice.
TRIALS = 3
#: Calls after a choice before the other way is tried again; doubled after each confirmation.
RETRY = 16
RETRY_MAX = 4096

#: C helpers compiled into every threads=True build (cdef, source).
CDEF = "int _pyguts_omp_get(void);\nvoid _pyguts_omp_set(int n);"
SOURCE = """#include <omp.h>
int _pyguts_omp_get(void) { return omp_get_max_threads(); }
void _pyguts_omp_set(int n) { omp_set_num_threads(n); }
"""


class _SizeClass:
    """Times of one function's calls of one size class, and the way chosen for them.

    Calls from several threads at once may add a retry or decide on one sample fewer: harmless.
    """

    __slots__ = ("other", "pending", "recent", "choice", "countdown", "retry")

    def __init__(self, team: int) -> None:
        self.other = {1: team, team: 1}
        self.pending = [team, 1] * TRIALS          # popped from the end: one thread first
        self.recent: dict[int, list[int]] = {1: [], team: []}   # the last TRIALS times of each way
        self.choice: int | None = None             # None while the trials run
        self.countdown = 0
        self.retry = RETRY

    def next_team(self) -> int:
        if self.pending:
            return self.pending.pop()
        if self.choice is None:                    # the last trials are still running elsewhere
            return 1
        if self.countdown > 1:
            self.countdown -= 1
            return self.choice
        self.countdown = 0
        return self.other[self.choice]             # a retry of the other way

    def record(self, threads: int, ns: int) -> None:
        if self.choice is not None and threads != self.choice:
            self.recent[threads].clear()           # a retry: only its fresh time speaks for that way
        times = self.recent[threads]
        times.append(ns)
        del times[:-TRIALS]
        if self.pending or threads == self.choice:
            return                                 # a trial, or an ordinary call of the chosen way
        # The trials are over, or the other way's retry ran: the faster by its best recent time.
        faster = min(self.recent, key=lambda way: min(self.recent[way], default=math.inf))
        if self.choice is not None:
            self.retry = min(self.retry * 2, RETRY_MAX) if faster == self.choice else RETRY
        self.choice, self.countdown = faster, self.retry


def size_class(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Power-of-two class of the bytes in the call's numpy arrays."""
    nbytes = 0
    for value in (*args, *kwargs.values()):
        if isinstance(value, np.ndarray):
            nbytes += value.nbytes
    return nbytes.bit_length()


def with_team_choice(fn: Callable[..., Any], get: Callable[[], int], set_: Callable[[int], None]) -> Callable[..., Any]:
    """``fn`` (a checked call into a threads=True build) choosing its team per call, as described above."""
    classes: dict[int, _SizeClass] = {}
    lock = threading.Lock()
    clock = time.perf_counter_ns

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        team = get()
        if team <= 1:   # OMP_NUM_THREADS=1, one CPU, or the caller's own setting: nothing to choose
            return fn(*args, **kwargs)
        key = size_class(args, kwargs)
        with lock:
            state = classes.get(key)
            if state is None:
                state = classes[key] = _SizeClass(team)
            chosen = state.next_team()
        if chosen != team:
            set_(chosen)
        start = clock()
        try:
            result = fn(*args, **kwargs)
        finally:
            if chosen != team:
                set_(team)
        elapsed = clock() - start   # a call that raised is not a time
        with lock:
            state.record(chosen, elapsed)
        return result

    call.__pyguts_team_classes__ = classes
    return call


def team_choices(fn: Callable[..., Any]) -> dict[int, int]:
    """{size class: threads chosen (None while its trials run)} of a threads=True library function."""
    classes = getattr(fn, "__pyguts_team_classes__", None)
    if classes is None:
        raise TypeError(f"{getattr(fn, '__name__', fn)!r} is not a function of a build(..., threads=True) library")
    return {key: state.choice for key, state in classes.items()}
