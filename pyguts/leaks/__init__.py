"""Refcount-leak hunting on a release build: does ``fn(*args)`` leak, what, and how much per call.

:func:`check` warms the function up, then calls it in windows of doubling call counts and measures,
per window: refcount growth of watched objects (the arguments, objects reachable from them, the
return value's type, ``watch=``) and of every other live object (a sweep over gc-tracked objects,
type objects and module globals), new gc-tracked objects by type, ``sys.getallocatedblocks()``,
malloc bytes, open fds, resident bytes and, on a debug build, ``sys.gettotalrefcount()``.

The decision is taken on slopes, not on single rounds. A signal is *clean* when a window of at least
``SETTLE_CALLS`` calls adds nothing above its noise floor (or no new high: growth that stopped and
swings is bounded); the report then states the detection floor (a leak slower than one per window
would not have shown) and any bounded growth it saw ("settled after K calls"). A signal *leaks* when
it grew in each of the last ``runs`` windows without its slope falling below half, and kept doing
so past ``LEAK_CALLS`` measured calls (caches that fill — re's 512 patterns, sqlite's cursor lists,
an ``lru_cache`` — stop before). Fds and memory past 64 MiB are judged sooner, so the check never
exhausts the process. Resident memory never decides alone, nor does timing: the time ``budget``
only ends the check, as *undecided* with what to raise. The budget counts the CPU time of the thread
that calls the function (wall time divided by ``WALL_SLACK`` when that is more: a function that waits
or hands its work to other threads), so other processes on a busy machine do not spend it: the same
windows, the same verdict. When memory leaks, one extra tracemalloc window names the allocation sites.

>>> import pyguts.leaks
>>> kept = []
>>> pyguts.leaks.check(kept.append, object()).kinds
('reference',)
>>> pyguts.leaks.check(kept.append, object()).leaking
True
>>> pyguts.leaks.check(len, "x").leaking
False
"""

from __future__ import annotations

import array
import gc
import itertools
import random
import resource
import statistics
import sys
import time
import tracemalloc
from typing import Callable

from pyguts import _compat
from pyguts.leaks.probes import malloc_nbytes, open_fd_count, rss_nbytes
from pyguts.leaks.watch import (WATCH_CAP, WATCH_DEPTH, name_of, reachable, safe_repr, touched_by,
                                 type_name, watchable)
from pyguts.leaks.report import (CLEAN, LEAK, UNDECIDED, AllocationSite, GrownObject, Interrupted, LeakReport,
                                 Signal)

__all__ = ["check", "LeakReport", "Interrupted", "DEFAULT_BUDGET_S"]

#: Consecutive windows that must all grow, keeping their slope, for a leak (regrtest -R uses 3 runs).
DEFAULT_RUNS = 3
#: Seconds a check may take before it ends undecided (warm-up included).
DEFAULT_BUDGET_S = 2.0
#: The budget is CPU time of the calling thread, or wall time / WALL_SLACK when that is more: a check of
#: a function that sleeps, waits or hands its work to other threads ends within WALL_SLACK budgets of
#: wall time; one that computes, within one budget of its own CPU time however busy the machine is.
WALL_SLACK = 2
#: The first window lasts about this long: ROUND_TARGET_NS / time of one call, within [1, MAX_FIRST_WINDOW].
ROUND_TARGET_NS = 1_000_000
MAX_FIRST_WINDOW = 64
#: A window of this many calls that adds nothing settles a signal: the detection floor is about one
#: leaked object per window (three blocks per window for the allocated-blocks count, see FLOORS).
SETTLE_CALLS = 512
#: With the budget spent, a quiet window this long still settles (the report states the floor).
BUDGET_SETTLE_CALLS = 16
#: Growth must keep its slope past this many measured calls to be a leak (caches that fill stop sooner).
LEAK_CALLS = 1024
#: ... or this many when the budget leaves room for no further window.
BUDGET_LEAK_CALLS = 256
#: Fds and large memory are judged sooner: a leak must not exhaust the process while it is confirmed.
FD_LEAK_CALLS = 64
#: Descriptors a check keeps free below the soft limit (``ulimit -n``, often 1024): while fds grow,
#: a window or confirmation runs at most the calls that use half of what is left above this reserve.
FD_RESERVE = 64
MEMORY_LEAK_NBYTES = 64 << 20
#: A window's slope (growth per call) must stay above this fraction of the previous one to "keep" it:
#: a leak keeps it at ~1, a constant amount per window (something redone once per window) halves it.
SLOPE_KEPT = 0.7
#: Growth per window that is noise, by signal (exact signals: references, gc objects, fds: none).
FLOORS = {"blocks": 2, "malloc_nbytes": 64 << 10, "rss_nbytes": 1 << 20}
#: Signals that never decide alone: resident memory (page faults, other threads, the kernel's own
#: accounting) and a debug build's total refcount (extensions built for a release interpreter, numpy's
#: wheel among them, change counts without updating it: 13 references "per call" for a numpy sum).
SUPPORTING = ("rss_nbytes", "totalrefs")
#: Windows and confirmation parts are lengthened by a pseudo-random 0-50 %, the same sequence every
#: check: with lengths that only double, a cache cleared every P calls looks like a steady slope
#: (the boundaries' phase modulo P doubles with them, and advances evenly over equal parts).
JITTER_SEED = 15
#: Parts of the confirmation of a leak (twice the last window's calls), each ended by a full collection.
CONFIRM_PARTS = 8
#: Windows without calls that measure the check's own per-window overhead (subtracted from every window).
NULL_ROUNDS = 3
#: Default warm-up calls, at least: glibc's tcache keeps up to 7 freed chunks per size class, counted
#: as in use by mallinfo, so a function freeing one chunk of a size per call looks like it leaks for 7 calls.
WARMUP_MIN_CALLS = 8
#: Per-call growth from which memory is a "large-buffer" leak.
LARGE_BUFFER_NBYTES = 64 * 1024
#: New objects of each kind with a freelist that calls churn most (ints, floats, complexes, lists,
#: dicts and their keys) made and dropped before each snapshot: more than the freelists keep (80-100,
#: Include/internal/pycore_freelist_state.h), so both snapshots see them full. A freelist refilling
#: after a full collection emptied it (one block per call, for ~80 calls) is then not growth, and a
#: number the calls keep counts as a block whether or not it came from a freelist (3.14 added one
#: for ints).
FREELIST_FILL = 128
#: Kinds _fill_freelists makes, each FREELIST_FILL times.
_FILL_KINDS = 5
#: tracemalloc frames kept when locating a leak, and sites/objects reported.
TRACE_FRAMES = 16
TOP_SITES = 5
TOP_OBJECTS = 5

_UNITS = {"blocks": "block", "malloc_nbytes": "B", "rss_nbytes": "B", "fds": "fd", "refs:all": "ref",
          "totalrefs": "ref"}


def check(fn: Callable, /, *args, runs: int | None = None, warmup: int | None = None, watch=(),
          budget: float | None = None, progress: Callable | None = None, **kwargs) -> LeakReport:
    """Call ``fn(*args, **kwargs)`` repeatedly and report whether, what and how much it leaks per call.

    ``runs``: consecutive windows that must all grow, keeping their slope, for a leak (default 3);
    ``warmup``: calls before measuring (default: at least 8, enough for allocator caches to fill);
    ``watch``: more objects whose refcounts to follow (every live object's are swept anyway, these
    are named first); ``budget``: seconds the check may take (default 2.0) before it ends undecided,
    counted in CPU time of this thread (wall time / ``WALL_SLACK`` where that is more);
    ``progress``: called with the partial report after every window. Exceptions raised by ``fn``
    propagate; Ctrl-C raises :class:`Interrupted` carrying the partial report.

    A fast function gets a clean verdict after about 1,000 measured calls (windows of 64 ... 512) and
    a leak verdict after 2,000-8,000 (floor: one small object per ~170 calls); a function of 1 ms
    gets as many calls as the budget allows, and the report says what that rules out.

    While it runs, automatic gc is off (restored after) and the watched objects are held; after it
    returns, it holds nothing: refcounts and gc referrers of every watched object are as before.
    Other threads allocating at the same time add noise (a leak needs growth that keeps its slope).

    >>> check(lambda: None).leaking
    False
    """
    runs = DEFAULT_RUNS if runs is None else int(runs)
    if runs < 2:
        raise ValueError(f"runs must be at least 2 so that growth can be consistent, got {runs!r}; pass runs=3")
    if warmup is not None and warmup < 0:
        raise ValueError(f"warmup must be a number of calls >= 0, got {warmup!r}")
    budget = DEFAULT_BUDGET_S if budget is None else budget
    if not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budget must be a positive number of seconds, got {budget!r}; pass e.g. budget=5")
    gc_was_enabled = gc.isenabled()
    gc.disable()   # automatic collections would move our survivors out of generation 1
    try:
        session = _Session(fn, args, kwargs, runs, int(budget * 1e9))
        try:
            session.warm_up(warmup, watch)
            return session.measure(progress)
        finally:
            session.release()
            del session
    finally:
        if gc_was_enabled:
            gc.enable()


def judge(windows: list, deltas: list, floor: float, runs: int, leak_calls: int, at_budget: bool) -> str:
    """The decision on one signal's per-window growth (``windows``: calls per window).

    >>> judge([16, 32, 64, 128, 256, 512, 1024], [16, 32, 64, 128, 256, 512, 1024], 0, 3, 1024, False)
    'leak'
    >>> judge([16, 32, 64, 128, 256, 512], [16, 32, 64, 10, 0, 0], 0, 3, 1024, False)   # a cache of 122
    'clean'
    >>> judge([16, 32, 64, 128], [16, 32, 64, 128], 0, 3, 1024, False)   # too soon to tell
    'undecided'
    """
    n = sum(windows)
    w_last, d_last = windows[-1], deltas[-1]
    if (len(windows) >= runs and all(d > floor for d in deltas[-runs:])
            and d_last * windows[-2] > SLOPE_KEPT * deltas[-2] * w_last
            and (n >= leak_calls or (at_budget and n >= BUDGET_LEAK_CALLS))):
        return LEAK
    if w_last >= SETTLE_CALLS or (at_budget and w_last >= BUDGET_SETTLE_CALLS):
        high, total = 0.0, 0.0
        for d in deltas[:-1]:
            total += d
            high = max(high, total)
        if d_last <= floor or total + d_last <= high + floor:   # quiet, or no new high: bounded
            return CLEAN
    return UNDECIDED


class _Session:
    """State of one check: the watched objects (released at the end) and the per-window history."""

    def __init__(self, fn, args, kwargs, runs: int, budget_ns: int):
        self.fn, self.args, self.kwargs, self.runs = fn, args, kwargs, runs
        self.budget_ns = budget_ns
        self.started_ns, self.cpu0_ns = time.perf_counter_ns(), time.thread_time_ns()
        self.watched: list = []
        self.population: list = []            # every other live object whose refcount is swept
        self.sweeps: list = [None, None, None]   # (measured calls, per-object refcounts) of the last three sweeps
        self.sweep_sum = 0
        self.sweeping = False                  # sweep after every window (after growth was seen)
        self.k = 1
        self.call_ns = 1
        self.calls = 0
        self.windows: list = []               # calls per measured window
        self.series: dict[str, list] = {}     # signal name -> per-window deltas, bias subtracted
        self.bias: dict[str, float] = {}      # signal name -> the check's own per-window growth
        self.gc_counts: dict[str, int] = {}   # type name -> objects in generation 1 after the last window
        self.refs: list = []                  # refcounts of watched objects at the start of a window
        self.states: dict[str, str] = {}      # signal name -> LEAK, CLEAN or UNDECIDED
        self.slots: list = [None] * (_FILL_KINDS * FREELIST_FILL)   # see _fill_freelists
        self.at_budget = False
        self.jitter = random.Random(JITTER_SEED)   # window lengths: see JITTER_SEED
        self.interrupted = False
        self.leaked_windows = 0                # consecutive windows that ended with a leaking signal
        self.not_confirmed: list = []          # leaking signals whose growth the confirmation did not show

    def _spent_ns(self) -> int:
        """Budget spent so far: this thread's CPU time, or wall time / WALL_SLACK when that is more."""
        return max(time.thread_time_ns() - self.cpu0_ns, (time.perf_counter_ns() - self.started_ns) // WALL_SLACK)

    # -- phases -----------------------------------------------------------------------------------

    def warm_up(self, warmup: int | None, watch) -> None:
        fn, args, kwargs = self.fn, self.args, self.kwargs
        t0 = self._spent_ns()
        result = fn(*args, **kwargs)
        self.call_ns = max(self._spent_ns() - t0, 1)
        result_type = type(result)
        del result
        self.calls = 1
        self.k = max(1, min(MAX_FIRST_WINDOW, ROUND_TARGET_NS // self.call_ns))
        for _ in range((max(WARMUP_MIN_CALLS, self.k) if warmup is None else warmup) - 1):
            fn(*args, **kwargs)
            self.calls += 1
        explicit = [*args, *kwargs.values(), *watch]
        watched = reachable([*explicit, *touched_by(fn)], WATCH_CAP, WATCH_DEPTH)
        # Shared objects passed explicitly (None, small ints on <= 3.11) are watched too; immortal ones
        # (3.12+) cannot leak a reference at all.
        for obj in explicit:
            if not _compat.is_immortal(obj) and all(obj is not w for w in watched):
                watched.append(obj)
        del explicit
        if watchable(result_type) and all(result_type is not w for w in watched):
            watched.append(result_type)
        del result_type
        self.watched = watched
        self.refs = [0] * len(watched)
        gc.collect(1)   # generations 0 and 1 empty: from now on gen 1 holds what the windows keep alive
        self.population = _population()

    def measure(self, progress) -> LeakReport:
        # No comprehension or closure here: their cells would live in generation 1 and count as growth.
        # Null rounds are recorded exactly as measured windows are, from the same frame, so their
        # bookkeeping (and the references our frames hold) is the same.
        self.gc_counts = self._count_gc()
        for i in range(NULL_ROUNDS):
            raw = self._round(0, i == NULL_ROUNDS - 1)   # the last one takes the sweep's baseline
            self._record(0, raw)
            del raw   # (a bound method or a result on the stack would hold references the sweep sees)
        for name, series in self.series.items():
            self.bias[name] = statistics.median(series)
        self.series.clear()
        self.windows.clear()
        gc.collect(1)   # what the warm-up left in generation 1 must not count as freed in window 1
        self.gc_counts = self._count_gc()
        k = self.k
        try:
            while True:
                t0 = self._spent_ns()
                w = min(k + self.jitter.randrange(k // 2 + 1), self._fd_room_calls())
                raw = self._round(w, self.sweeping)
                self._record(w, raw)
                del raw
                spent = self._spent_ns()
                self.call_ns = max(1, (spent - t0) // w)
                k *= 2
                self.at_budget = spent + 3 * k // 2 * self.call_ns > self.budget_ns
                self._update_states()
                if self._done() and not self.sweeping and not self.at_budget and self.leaked_windows == 0:
                    # Every other signal settled clean: did any live object's refcount grow since the
                    # baseline? One sweep says, from this frame as every window's (the same references
                    # held); if some did, sweeping goes on after every window until that is settled.
                    raw = self._round(0, True)
                    self._caught_up(raw)
                    del raw
                if progress is not None and not self._done():
                    progress(self._report(()))
                    gc.collect(0)   # what the callback keeps is not the function's growth
                    self.gc_counts = self._count_gc()
                if self._done():
                    break
            if self.leaked_windows:
                self._confirm()
            sites = self._locate() if self._memory_leaks() else ()
        except KeyboardInterrupt:
            self.interrupted = True
            raise Interrupted(self._report(())) from None
        return self._report(sites)

    def _caught_up(self, raw: dict) -> None:
        self.sweeping = True
        if "refs:all" not in self.series:
            self.series["refs:all"] = [0.0] * len(self.windows)
        self.series["refs:all"][-1] += raw["refs:all"] - self.bias.get("refs:all", 0)   # shown on the last window
        self._update_states()

    def _confirm(self) -> None:
        """About twice the last window's calls more, in CONFIRM_PARTS parts of jittered lengths, each
        ended by a full collection: a leak raises the lowest level of each leaking signal from the
        first half of the parts to the second by about its slope, and never falls between parts.
        Growth a cache clears every so often falls at some part (or, aliasing with windows that
        doubled, only looked steady), and growth a full collection frees (a class made per call)
        does not rise at all."""
        names = [name for name, state in self.states.items() if state == LEAK and name not in SUPPORTING]
        fn, args, kwargs, slots, jitter = self.fn, self.args, self.kwargs, self.slots, self.jitter
        # Twice the last window, unless that overruns the budget by more than half of it: then fewer
        # calls, and a leak they cannot confirm is undecided rather than clean.
        affordable = (3 * self.budget_ns // 2 - self._spent_ns()) // (3 * self.call_ns // 2 or 1)
        # (Parts are lengthened by up to half: two thirds of the fd room keeps them within it.)
        total = max(CONFIRM_PARTS, min(2 * self.windows[-1], affordable, 2 * self._fd_room_calls() // 3))
        short = total < 2 * self.windows[-1]
        part = total // CONFIRM_PARTS
        lengths = [part + jitter.randrange(part // 2 + 1) for _ in range(CONFIRM_PARTS)]
        levels = array.array("q", bytes(8 * CONFIRM_PARTS * len(names)))   # no int objects: no blocks
        for p in range(CONFIRM_PARTS):
            for _ in itertools.repeat(None, lengths[p]):
                fn(*args, **kwargs)
            _clear_type_cache()   # names cached per lookup (4096 entries) are not the function's growth
            gc.collect()
            _fill_freelists(slots)
            self._levels(names, levels, p * len(names))
        self.calls += sum(lengths)
        half = CONFIRM_PARTS // 2
        for i, name in enumerate(names):
            own = levels[i::len(names)]
            floor = FLOORS.get(name, 0)
            grown = min(own[half:]) - min(own[:half])
            expected = self.series[name][-1] / self.windows[-1] * sum(lengths[half:])   # the last window's slope
            fell = any(own[p] < own[p - 1] - floor for p in range(1, CONFIRM_PARTS))
            if fell or grown <= floor or grown <= SLOPE_KEPT * expected:
                self.states[name] = UNDECIDED if short and not fell else CLEAN
                self.not_confirmed.append(name)

    def _fd_room_calls(self) -> int:
        """Calls that use at most half the descriptors left below the soft limit (less FD_RESERVE) at
        the steepest fd slope seen so far: a function leaking fds must not run out of them here."""
        steepest = 0.0
        for d, w in zip(self.series.get("fds", ()), self.windows):   # no generator: nothing gc-tracked left
            steepest = max(steepest, d / w)
        if steepest <= 0:   # fds do not grow: no limit to ask about
            return sys.maxsize
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return sys.maxsize
        room = soft - FD_RESERVE - (open_fd_count() or 0)
        return max(1, int(room / 2 / steepest))

    def _levels(self, names: list, out: array.array, at: int) -> None:
        """The current level of each signal in ``names`` into ``out[at:]`` (gc signals: all gc objects)."""
        blocks = sys.getallocatedblocks()   # first: nothing of ours allocated since the collection
        objects = -1
        for i, name in enumerate(names):
            if name == "blocks":
                out[at + i] = blocks
            elif name == "malloc_nbytes":
                out[at + i] = malloc_nbytes()
            elif name == "fds":
                out[at + i] = open_fd_count()
            elif name.startswith("ref:"):
                out[at + i] = sys.getrefcount(self.watched[int(name[4:])])
            elif name == "refs:all":
                out[at + i] = sum(map(sys.getrefcount, self.population))
            elif name.startswith("gc:"):
                if objects < 0:
                    objects = len(gc.get_objects())
                out[at + i] = objects

    def _done(self) -> bool:
        if self.at_budget:
            return True
        undecided = False
        for name, state in self.states.items():
            undecided = undecided or (state == UNDECIDED and name not in SUPPORTING)
        if not undecided:
            return True
        # A leak is settled once its companions (the same leak seen by other counters) had one more window.
        return self.leaked_windows >= 2

    def _update_states(self) -> None:
        windows, runs, at_budget, states = self.windows, self.runs, self.at_budget, self.states
        for name, series in self.series.items():
            leak_calls = LEAK_CALLS
            if name == "fds":
                leak_calls = FD_LEAK_CALLS
            elif name == "malloc_nbytes" and sum(series) >= MEMORY_LEAK_NBYTES:
                leak_calls = 0
            states[name] = judge(windows, series, FLOORS.get(name, 0), runs, leak_calls, at_budget)
        leaked = False
        for name, state in states.items():
            leaked = leaked or (state == LEAK and name not in SUPPORTING)
        if leaked:   # a leak is established: its companions (other counters of the same leak) need no more calls
            for name, series in self.series.items():
                if states[name] == UNDECIDED:
                    states[name] = judge(windows, series, FLOORS.get(name, 0), runs, 0, at_budget)
        self.leaked_windows = self.leaked_windows + 1 if leaked else 0

    def _memory_leaks(self) -> bool:
        return any(state == LEAK for name, state in self.states.items()
                   if not name.startswith(("ref:", "refs:", "totalrefs", "fds")))

    def release(self) -> None:
        """Drop every reference to measured objects (the check must not keep them alive)."""
        self.watched = []
        self.population = []
        self.sweeps[:] = [None, None, None]
        self.fn = self.args = self.kwargs = None

    # -- one window -------------------------------------------------------------------------------

    def _round(self, k: int, sweep: bool = True) -> dict:
        """Run ``k`` calls between two snapshots; return the raw growth of every signal."""
        fn, args, kwargs, watched, refs = self.fn, self.args, self.kwargs, self.watched, self.refs
        for i in range(len(watched)):
            refs[i] = sys.getrefcount(watched[i])
        _fill_freelists(self.slots)
        fds0 = open_fd_count()
        rss0 = rss_nbytes()
        malloc0 = malloc_nbytes()
        total0 = _total_refcount()
        blocks0 = sys.getallocatedblocks()   # read last before and first after: our own ints stay out
        for _ in itertools.repeat(None, k):   # no loop int alive after the calls (a block, a reference)
            fn(*args, **kwargs)
        gc.collect(0)   # cyclic garbage of the calls goes; survivors join generation 1
        _fill_freelists(self.slots)
        blocks1 = sys.getallocatedblocks()
        total1 = _total_refcount()
        malloc1 = malloc_nbytes()
        rss1 = rss_nbytes()
        fds1 = open_fd_count()
        raw = {"blocks": blocks1 - blocks0}
        if total0 is not None:
            raw["totalrefs"] = total1 - total0
        if malloc0 is not None:
            raw["malloc_nbytes"] = malloc1 - malloc0
        if rss0 is not None:
            raw["rss_nbytes"] = rss1 - rss0
        if fds0 is not None:
            raw["fds"] = fds1 - fds0
        for i in range(len(watched)):
            raw[f"ref:{i}"] = sys.getrefcount(watched[i]) - refs[i]
        counts = self._count_gc()
        old = self.gc_counts
        for name in {*counts, *old}:
            raw["gc:" + name] = counts.get(name, 0) - old.get(name, 0)
        self.gc_counts = counts
        # The sweep is taken at one point of a window, after the calls: the same frames and locals
        # hold the same references each time.
        if sweep:
            refcounts = list(map(sys.getrefcount, self.population))
            total = sum(refcounts)
            raw["refs:all"] = 0 if self.sweeps[2] is None else total - self.sweep_sum
            sweeps = self.sweeps   # shifted in place: the list itself is swept
            sweeps[0], sweeps[1], sweeps[2] = sweeps[1], sweeps[2], (sum(self.windows) + k, refcounts)
            self.sweep_sum = total
        self.calls += k
        return raw

    def _record(self, k: int, raw: dict) -> None:
        for name in raw.keys() - self.series.keys():
            self.series[name] = [0.0] * len(self.windows)
        for name, series in self.series.items():
            series.append(raw.get(name, 0) - self.bias.get(name, 0))
        self.windows.append(k)

    def _count_gc(self) -> dict[str, int]:
        """Objects in generation 1 (kept alive by the windows) by type name, our own bookkeeping excluded."""
        counts: dict[str, int] = {}
        own = _own_ids(self)
        for obj in gc.get_objects(1):
            if id(obj) not in own:
                name = type_name(type(obj))
                counts[name] = counts.get(name, 0) + 1
        return counts

    # -- decision and report ----------------------------------------------------------------------

    def _swept_growth(self) -> list:
        """(growth per call, object) of swept objects whose refcount grew in both of the last two
        windows, keeping its slope."""
        found = []
        if self.sweeps[0] is None:
            return found
        (n0, older), (n1, before), (n2, after) = self.sweeps
        w_prev, w_last = n1 - n0, n2 - n1
        if not w_prev or not w_last:
            return found
        population = self.population
        for i in range(len(population)):
            d_last, d_prev = after[i] - before[i], before[i] - older[i]
            if d_last > 0 and d_prev > 0 and d_last * w_prev > SLOPE_KEPT * d_prev * w_last:
                found.append((d_last / w_last, population[i]))
        return found

    def _locate(self) -> tuple:
        """One tracemalloc window as long as the last (what is left of the budget allowing, tracing
        slowing calls down ~5x, at least 64 calls): where the kept memory was allocated, per call."""
        left_calls = (self.budget_ns - self._spent_ns()) // (5 * self.call_ns)
        k = max(min(self.windows[-1], left_calls), min(self.windows[-1], 64))
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start(TRACE_FRAMES)
        try:
            fn, args, kwargs = self.fn, self.args, self.kwargs
            before = tracemalloc.take_snapshot()
            for _ in itertools.repeat(None, k):
                fn(*args, **kwargs)
            gc.collect(0)
            after = tracemalloc.take_snapshot()
        finally:
            if not was_tracing:
                tracemalloc.stop()
        self.calls += k
        diffs = after.compare_to(before, "traceback")
        sites: dict[str, list] = {}
        for stat in diffs:
            if stat.size_diff <= 0:
                continue
            frame = _outside_frame(stat.traceback)
            if frame is not None and frame.filename == tracemalloc.__file__:
                continue   # tracemalloc's own snapshot bookkeeping
            where = f"{frame.filename}:{frame.lineno}" if frame else f"native code called by {name_of(fn)}"
            acc = sites.setdefault(where, [0, 0])
            acc[0] += stat.size_diff
            acc[1] += stat.count_diff
        # A site counts past the noise floor of one window: more blocks than the blocks floor, or more
        # bytes than the malloc floor (one block per thousand calls is an allocator's noise).
        kept = [item for item in sites.items() if item[1][1] > FLOORS["blocks"] or item[1][0] >= FLOORS["malloc_nbytes"]]
        top = sorted(kept, key=lambda item: -item[1][0])[:TOP_SITES]
        return tuple(AllocationSite(where, nbytes / k, count / k) for where, (nbytes, count) in top)

    def _report(self, sites: tuple) -> LeakReport:
        windows, states = self.windows, self.states
        n = sum(windows)
        signals, grown_objects, grown_types = [], [], []
        for name, series in self.series.items():
            state = states.get(name, UNDECIDED)
            per_call = self._tail_per_call(name)
            label, unit = name, _UNITS.get(name, "object")
            if name.startswith("ref:"):
                obj = self.watched[int(name[4:])]
                label, unit = f"refcount:{type_name(type(obj))}@0x{id(obj):x}", "ref"
                if state == LEAK:
                    grown_objects.append(GrownObject(safe_repr(obj), type_name(type(obj)), id(obj), per_call))
                del obj
            elif name.startswith("gc:") and state == LEAK:
                grown_types.append((name[3:], per_call))
            signals.append(Signal(label, unit, tuple(series), FLOORS.get(name, 0), per_call, state))
        if LEAK in (states.get("refs:all"), states.get("totalrefs")):
            leaked_type_names = {t for t, _ in grown_types}
            named = {g.addr for g in grown_objects}
            for per_call, obj in sorted(self._swept_growth(), key=lambda g: -g[0])[:TOP_OBJECTS]:
                if id(obj) in named or (isinstance(obj, type) and type_name(obj) in leaked_type_names):
                    continue   # watched, or instances of it leak (each holds its type): nothing of its own
                grown_objects.append(GrownObject(safe_repr(obj), type_name(type(obj)), id(obj), per_call))
                del obj
        deciding = {name: state for name, state in states.items() if name not in SUPPORTING}
        leaking = LEAK in deciding.values()
        kinds = []
        if grown_objects:
            kinds.append("reference")
        if grown_types:
            kinds.append("container")
        if states.get("blocks") == LEAK and not grown_types:
            kinds.append("object")
        memory = [self._tail_per_call(n_) for n_ in ("malloc_nbytes",) if states.get(n_) == LEAK]
        memory += [s.nbytes_per_call for s in sites]
        if memory and max(memory) >= LARGE_BUFFER_NBYTES:
            kinds.append("large-buffer")
        if states.get("malloc_nbytes") == LEAK and states.get("blocks") != LEAK:
            kinds.append("native-memory")
        if states.get("fds") == LEAK:
            kinds.append("fd")
        if leaking and not kinds:
            kinds.append("reference")   # the swept total grew, on no object the last windows could name
        decided = not self.interrupted and (leaking or UNDECIDED not in deciding.values())
        notes = self._notes(leaking, decided, kinds, sites, n)
        signals.sort(key=lambda s: (s.state == CLEAN, s.name.startswith(("gc:", "refcount:")), s.name))
        return LeakReport(
            function=name_of(self.fn), leaking=leaking, decided=decided, kinds=tuple(kinds),
            windows=tuple(windows), calls=self.calls, elapsed_ms=(time.perf_counter_ns() - self.started_ns) / 1e6,
            signals=tuple(signals), grown_objects=tuple(sorted(grown_objects, key=lambda g: -g.growth_per_call)),
            grown_types=tuple(sorted(grown_types, key=lambda t: -t[1])), sites=sites, notes=tuple(notes))

    def _tail_per_call(self, name: str) -> float:
        """The slope: median growth per call of the last ``runs`` windows."""
        pairs = zip(self.windows[-self.runs:], self.series[name][-self.runs:])
        return statistics.median([d / w for w, d in pairs if w]) if self.windows[-1] else 0.0

    def _notes(self, leaking: bool, decided: bool, kinds: list, sites: tuple, n: int) -> list:
        notes = []
        windows, states = self.windows, self.states
        budget_s = self.budget_ns / 1e9
        if self.interrupted:
            notes.append(f"interrupted after {n} measured calls: a partial report, no verdict")
        elif not decided:
            growing = sorted(name for name, state in states.items() if state == UNDECIDED and name not in SUPPORTING)
            notes.append(f"no verdict within the budget of {budget_s:g} s ({n} measured calls): "
                         f"{', '.join(growing[:4])} kept changing; raise budget= (e.g. budget={4 * budget_s:g})")
        if not leaking and decided and windows:
            w = windows[-1]
            raise_budget = "; raise budget= for a lower floor" if w < SETTLE_CALLS else ""
            notes.append(f"detection floor: no growth in the last window of {w} calls, so a leak of one reference "
                         f"or object per {w} calls ({FLOORS['blocks'] + 1} untracked objects per {w} calls) "
                         f"or slower would not show{raise_budget}")
        for name, series in self.series.items():
            if states.get(name) != CLEAN or name.startswith("ref:"):
                continue
            total, high, high_at, calls = 0.0, 0.0, 0, 0
            for w, d in zip(windows, series):
                total += d
                calls += w
                if total > high:
                    high, high_at = total, calls
            if high > 2 * FLOORS.get(name, 0) and high >= 1:
                notes.append(f"bounded growth of {high:g} {_UNITS.get(name, 'object')} ({name}), "
                             f"settled after {high_at} calls")
        if self.not_confirmed:
            notes.append(f"{', '.join(self.not_confirmed[:4])} grew with the windows, but over {CONFIRM_PARTS} more "
                         f"fully collected parts fell back or did not rise by its slope: a cache cleared "
                         f"every so often, or cycles only gc.collect() frees; not a leak")
        if states.get("totalrefs") == LEAK and "reference" not in kinds:
            notes.append("the debug build's total refcount grew while no watched or swept object's did: a reference "
                         "leaked on an object outside the sweep, or a release-built extension's own "
                         "Py_INCREF/Py_DECREF (not counted in the total); it never decides alone")
        if states.get("rss_nbytes") == LEAK and not leaking:
            notes.append("resident memory kept growing while no allocator counter did (mmap or another allocator?); "
                         "resident memory never decides alone")
        if "native-memory" in kinds and not sites:
            notes.append("tracemalloc does not see malloc() outside Python's allocators, so no allocation "
                         "site is named: look for malloc/calloc/realloc without free in the C code")
        if _compat.VERSION >= (3, 12):
            notes.append("immortal objects (None, small ints, interned strings) have no refcount to grow on 3.12+")
        return notes


def _population() -> list:
    """Every live object whose refcount a leak could raise unnamed: gc-tracked objects, all types (the
    static ones are untracked) and the untracked values of module globals, pyguts' own modules' left
    out (the tool must not widen what it measures: a numpy dtype that pyguts keeps at hand would bring
    numpy's own drift on it into every check). The check's own objects are among them: their counts
    do not move from window to window."""
    found = gc.get_objects()
    extra: dict[int, object] = {}
    stack = [object]
    while stack:
        tp = stack.pop()
        if not gc.is_tracked(tp):
            extra[id(tp)] = tp
        try:
            stack.extend(type.__subclasses__(tp))
        except TypeError:   # type.__subclasses__(type) needs the instance form
            pass
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and name.partition(".")[0] != "pyguts":
            for value in itertools.filterfalse(gc.is_tracked, list(namespace.values())):
                if id(value) not in _SHARED_IDS:
                    extra[id(value)] = value
    found += extra.values()
    return found


#: Objects shared interpreter-wide whose counts move with anything (None, bools, small ints, one-
#: character strings, the empty str/bytes/tuple): kept out of the sweep (immortal from 3.12 anyway).
_SHARED_IDS = frozenset(map(id, [None, True, False, Ellipsis, NotImplemented, "", b"", (), LEAK, CLEAN, UNDECIDED,
                                 *_compat.SMALL_INTS,
                                 *map(chr, range(256)), *(bytes([i]) for i in range(256))]))


def _own_ids(session: _Session) -> set:
    """Ids of the session's own bookkeeping (never growth of the function's)."""
    own = {id(session.__dict__), id(session.series), id(session.bias), id(session.gc_counts), id(session.refs),
           id(session.watched), id(session.states), id(session.slots), id(session.windows),
           id(session.population), id(session.sweeps), *map(id, session.series.values())}
    for sweep in session.sweeps:
        if sweep is not None:
            own.update((id(sweep), id(sweep[1])))
    return own


def _clear_type_cache() -> None:
    """Empty CPython's type attribute cache (it keeps the name of each lookup: a str made per call by
    C code that looks attributes up by C string stays there until 4096 others replace it)."""
    clear = getattr(sys, "_clear_internal_caches", None) or sys._clear_type_cache   # 3.13 renamed it
    clear()


def _total_refcount() -> int | None:
    """sys.gettotalrefcount() on a debug build, else None."""
    total = getattr(sys, "gettotalrefcount", None)
    return None if total is None else total()


def _fill_freelists(slots: list) -> None:
    """Make and drop enough new objects to leave the common freelists full; ``slots`` (allocated
    once, _FILL_KINDS * FREELIST_FILL long) holds them meanwhile, so no container is malloc'ed."""
    for i in range(FREELIST_FILL):
        slots[_FILL_KINDS * i] = 1_000_000 + i
        slots[_FILL_KINDS * i + 1] = i + 0.5
        slots[_FILL_KINDS * i + 2] = complex(i, 1)
        slots[_FILL_KINDS * i + 3] = []
        slots[_FILL_KINDS * i + 4] = {"pyguts": i}   # a dict, and the smallest str-keyed keys object
    for i in range(len(slots)):
        slots[i] = None


def _outside_frame(traceback):
    """The innermost frame of an allocation, or None when it is this module's loop (the caller is C)."""
    frame = traceback[-1] if len(traceback) else None   # tracemalloc orders frames oldest first
    return None if frame is None or frame.filename == __file__ else frame
