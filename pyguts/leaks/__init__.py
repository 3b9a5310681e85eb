"""Refcount-leak hunting on a release build: does ``fn(*args)`` leak, what, and how much per call.

:func:`check` warms the function up, then calls it in rounds of k calls and measures per round:
refcount deltas of watched objects (the arguments, objects reachable from them, the return value's
type, ``watch=``), new gc-tracked objects by type, ``sys.getallocatedblocks()``, malloc bytes,
resident bytes and open fds. Like CPython's regrtest ``-R``, a signal is a leak only when it grew on
every one of the last ``runs`` rounds; a signal that grew on some rounds only is undecided and gets
more rounds. When memory leaks, one extra tracemalloc pass names the allocation sites.

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

import gc
import statistics
import sys
import time
import tracemalloc
from typing import Callable

from pyguts import _compat
from pyguts.leaks.probes import PAGE_NBYTES, malloc_nbytes, open_fd_count, rss_nbytes
from pyguts.leaks.watch import (WATCH_CAP, WATCH_DEPTH, name_of, reachable, safe_repr, touched_by,
                                 type_name, watchable)
from pyguts.leaks.report import CLEAN, LEAK, UNDECIDED, AllocationSite, GrownObject, LeakReport, Signal

__all__ = ["check", "LeakReport"]

#: Rounds that must all grow before a signal counts as leaking (regrtest -R uses 3).
DEFAULT_RUNS = 3
#: At most this many rounds of ``runs`` rounds each before giving up as undecided.
MAX_ROUNDS_FACTOR = 4
#: A round lasts about this long: k = ROUND_TARGET_NS / time of one call, within [1, MAX_CALLS_PER_ROUND].
ROUND_TARGET_NS = 300_000
MAX_CALLS_PER_ROUND = 16
#: Calls over which memory growth (blocks, malloc bytes, resident bytes) must persist, when nothing
#: exact (references, gc objects, fds) grew: glibc's tcache and bins fill for dozens of calls when a
#: function resizes buffers (a slow function, checked one call per round, was judged on 6 calls).
MIN_MEMORY_LEAK_CALLS = 64
#: Rounds without calls that measure the check's own per-round overhead (subtracted from every round).
NULL_ROUNDS = 3
#: Default warm-up calls, at least: glibc's tcache keeps up to 7 freed chunks per size class, counted
#: as in use by mallinfo, so a function freeing one chunk of a size per call looks like it leaks for 7 calls.
WARMUP_MIN_CALLS = 8
#: Malloc growth counts only from this many bytes per call (the smallest glibc chunk is 32 B).
MIN_MALLOC_NBYTES_PER_CALL = 16
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
#: tracemalloc frames kept when locating a leak, and sites reported.
TRACE_FRAMES = 16
TOP_SITES = 5


def check(fn: Callable, /, *args, runs: int | None = None, warmup: int | None = None, watch=(),
          **kwargs) -> LeakReport:
    """Call ``fn(*args, **kwargs)`` repeatedly and report whether, what and how much it leaks per call.

    ``runs``: rounds that must all grow for a leak (default 3; more rounds run while undecided);
    ``warmup``: calls before measuring (default: at least 8, enough for allocator caches to fill);
    ``watch``: more objects whose refcounts to follow. Exceptions raised by ``fn`` propagate.

    While it runs, automatic gc is off (restored after) and the watched objects are held; after it
    returns, it holds nothing: refcounts and gc referrers of every watched object are as before.
    Other threads allocating at the same time add noise (a leak verdict needs consistent growth).

    >>> check(lambda: None).leaking
    False
    """
    runs = DEFAULT_RUNS if runs is None else int(runs)
    if runs < 2:
        raise ValueError(f"runs must be at least 2 so that growth can be consistent, got {runs!r}; pass runs=3")
    if warmup is not None and warmup < 0:
        raise ValueError(f"warmup must be a number of calls >= 0, got {warmup!r}")
    started_ns = time.perf_counter_ns()
    gc_was_enabled = gc.isenabled()
    gc.disable()   # automatic collections would move our survivors out of generation 1
    try:
        session = _Session(fn, args, kwargs, runs)
        try:
            session.warm_up(warmup, watch)
            return session.measure(started_ns)
        finally:
            session.release()
            del session
    finally:
        if gc_was_enabled:
            gc.enable()


def _decide(last: list, threshold: float, runs: int) -> str:
    """regrtest's rule on the last ``runs`` deltas: all grew -> LEAK; at most half grew -> CLEAN."""
    if len(last) < runs:
        return UNDECIDED
    grew = sum(1 for d in last if d >= threshold)
    if grew == runs:
        return LEAK
    return CLEAN if 2 * grew <= runs else UNDECIDED


#: Signals that move only when references, gc objects or fds are kept: no allocator noise.
_EXACT_SIGNALS = ("ref:", "gc:", "fds")
_UNITS = {"blocks": "block", "malloc_nbytes": "B", "rss_nbytes": "B", "fds": "fd"}


class _Session:
    """State of one check: the watched objects (released at the end) and the per-round history."""

    def __init__(self, fn, args, kwargs, runs: int):
        self.fn, self.args, self.kwargs, self.runs = fn, args, kwargs, runs
        self.watched: list = []
        self.k = 1
        self.calls = 0
        self.rounds = 0
        self.series: dict[str, list] = {}     # signal name -> per-round deltas, bias subtracted
        self.bias: dict[str, float] = {}      # signal name -> the check's own per-round growth
        self.gc_counts: dict[str, int] = {}   # type name -> objects in generation 1 after the last round
        self.refs: list = []                  # refcounts of watched objects at the start of a round
        self.states: dict[str, str] = {}      # signal name -> LEAK, CLEAN or UNDECIDED
        self.slots: list = [None] * (_FILL_KINDS * FREELIST_FILL)   # see _fill_freelists

    # -- phases -----------------------------------------------------------------------------------

    def warm_up(self, warmup: int | None, watch) -> None:
        fn, args, kwargs = self.fn, self.args, self.kwargs
        t0 = time.perf_counter_ns()
        result = fn(*args, **kwargs)
        call_ns = max(time.perf_counter_ns() - t0, 1)
        result_type = type(result)
        del result
        self.calls = 1
        self.k = max(1, min(MAX_CALLS_PER_ROUND, ROUND_TARGET_NS // call_ns))
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
        gc.collect(1)   # generations 0 and 1 empty: from now on gen 1 holds what the rounds keep alive
        self.gc_counts = self._count_gc()
        # Null rounds are recorded exactly as measured rounds are, so their bookkeeping is the same.
        for _ in range(NULL_ROUNDS):
            self._record(self._round(0))
        for name, series in self.series.items():
            self.bias[name] = statistics.median(series)
        self.series.clear()
        self.rounds = 0
        gc.collect(1)   # what the warm-up left in generation 1 must not count as freed in round 1
        self.gc_counts = self._count_gc()

    def measure(self, started_ns: int) -> LeakReport:
        # No comprehension or closure here: their cells would live in generation 1 and count as growth.
        while not self._done():
            self._record(self._round(self.k))
            self._update_states()
        return self._report(self._locate() if self._memory_leaks() else (), started_ns)

    def _done(self) -> bool:
        if self.rounds < self.runs:
            return False
        states = self.states
        undecided = UNDECIDED in states.values()
        exact = False
        allocator = False
        for name, state in states.items():
            if state == LEAK:
                if name.startswith(_EXACT_SIGNALS):
                    exact = True
                else:
                    allocator = True
        # Memory growth alone must also outlast MIN_MEMORY_LEAK_CALLS calls: allocator caches fill
        # for a while (a slow function checked one call per round would otherwise be judged on ~6).
        enough_calls = self.rounds * self.k >= MIN_MEMORY_LEAK_CALLS
        if self.rounds >= self.runs * MAX_ROUNDS_FACTOR and (exact or not allocator or enough_calls):
            return True
        if exact:
            return not undecided or self.rounds >= self.runs + 2
        if allocator:   # freelists and caches fill for a while: confirm over a second window of rounds
            return self.rounds >= 2 * self.runs and enough_calls
        return not undecided

    def _update_states(self) -> None:
        for name, series in self.series.items():
            self.states[name] = _decide(series[-self.runs:], self._threshold(name), self.runs)

    def _memory_leaks(self) -> bool:
        return any(state == LEAK for name, state in self.states.items() if not name.startswith(("ref:", "fds")))

    def release(self) -> None:
        """Drop every reference to measured objects (the check must not keep them alive)."""
        self.watched = []
        self.fn = self.args = self.kwargs = None

    # -- one round --------------------------------------------------------------------------------

    def _round(self, k: int) -> dict:
        """Run ``k`` calls between two snapshots; return the raw growth of every signal."""
        fn, args, kwargs, watched, refs = self.fn, self.args, self.kwargs, self.watched, self.refs
        for i in range(len(watched)):
            refs[i] = sys.getrefcount(watched[i])
        _fill_freelists(self.slots)
        fds0 = open_fd_count()
        rss0 = rss_nbytes()
        malloc0 = malloc_nbytes()
        blocks0 = sys.getallocatedblocks()   # read last before and first after: our own ints stay out
        for _ in range(k):
            fn(*args, **kwargs)
        gc.collect(0)   # cyclic garbage of the calls goes; survivors join generation 1
        _fill_freelists(self.slots)
        blocks1 = sys.getallocatedblocks()
        malloc1 = malloc_nbytes()
        rss1 = rss_nbytes()
        fds1 = open_fd_count()
        raw = {"blocks": blocks1 - blocks0}
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
        self.calls += k
        return raw

    def _record(self, raw: dict) -> None:
        for name in raw.keys() - self.series.keys():
            self.series[name] = [0.0] * self.rounds
        for name, series in self.series.items():
            series.append(raw.get(name, 0) - self.bias.get(name, 0))
        self.rounds += 1

    def _count_gc(self) -> dict[str, int]:
        """Objects in generation 1 (kept alive by the rounds) by type name, our own bookkeeping excluded."""
        own = {id(self.__dict__), id(self.series), id(self.bias), id(self.gc_counts), id(self.refs),
               id(self.watched), id(self.states), id(self.slots), *map(id, self.series.values())}
        counts: dict[str, int] = {}
        for obj in gc.get_objects(1):
            if id(obj) not in own:
                name = type_name(type(obj))
                counts[name] = counts.get(name, 0) + 1
        return counts

    # -- decision and report ----------------------------------------------------------------------

    def _threshold(self, name: str) -> float:
        k = self.k
        if name == "blocks":
            return max(1, k // 4)
        if name == "malloc_nbytes":
            return k * MIN_MALLOC_NBYTES_PER_CALL
        if name == "rss_nbytes":
            return k * PAGE_NBYTES
        return 1

    def _per_call(self, name: str) -> float:
        return statistics.median(self.series[name][-self.runs:]) / self.k

    def _locate(self) -> tuple:
        """One tracemalloc pass of k calls: where the kept memory was allocated, per call."""
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start(TRACE_FRAMES)
        try:
            fn, args, kwargs = self.fn, self.args, self.kwargs
            before = tracemalloc.take_snapshot()
            for _ in range(self.k):
                fn(*args, **kwargs)
            gc.collect(0)
            after = tracemalloc.take_snapshot()
        finally:
            if not was_tracing:
                tracemalloc.stop()
        self.calls += self.k
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
        top = sorted(sites.items(), key=lambda item: -item[1][0])[:TOP_SITES]
        return tuple(AllocationSite(where, nbytes / self.k, count / self.k) for where, (nbytes, count) in top)

    def _report(self, sites: tuple, started_ns: int) -> LeakReport:
        k, runs, states = self.k, self.runs, self.states
        signals = []
        grown_objects, grown_types = [], []
        for name, series in self.series.items():
            state = states[name]
            per_call = self._per_call(name)
            label, unit = name, _UNITS.get(name, "object")
            if name.startswith("ref:"):
                obj = self.watched[int(name[4:])]
                label, unit = f"refcount:{type_name(type(obj))}@0x{id(obj):x}", "ref"
                if state == LEAK:
                    grown_objects.append(GrownObject(safe_repr(obj), type_name(type(obj)), id(obj), per_call))
                del obj
            elif name.startswith("gc:") and state == LEAK:
                grown_types.append((name[3:], per_call))
            signals.append(Signal(label, unit, tuple(series[-runs:]), self._threshold(name), per_call, state))
        leaking = LEAK in states.values()
        kinds = []
        if grown_objects:
            kinds.append("reference")
        if grown_types:
            kinds.append("container")
        if states.get("blocks") == LEAK and not grown_types:
            kinds.append("object")
        memory = [self._per_call(n) for n in ("malloc_nbytes", "rss_nbytes") if states.get(n) == LEAK]
        memory += [s.nbytes_per_call for s in sites]
        if memory and max(memory) >= LARGE_BUFFER_NBYTES:
            kinds.append("large-buffer")
        if states.get("malloc_nbytes") == LEAK and states.get("blocks") != LEAK:
            kinds.append("native-memory")
        if states.get("fds") == LEAK:
            kinds.append("fd")
        if leaking and not kinds:
            kinds.append("memory")
        notes = []
        if "native-memory" in kinds and not sites:
            notes.append("tracemalloc does not see malloc() outside Python's allocators, so no allocation "
                         "site is named: look for malloc/calloc/realloc without free in the C code")
        if not leaking and UNDECIDED in states.values():
            notes.append(f"no verdict after {self.rounds} rounds: growth came and went; run with a larger runs=")
        if _compat.VERSION >= (3, 12):
            notes.append("immortal objects (None, small ints, interned strings) have no refcount to grow on 3.12+")
        signals.sort(key=lambda s: (s.state == CLEAN, s.name.startswith(("gc:", "refcount:")), s.name))
        # A leak shown by a signal that grew every round is settled even while a lagging companion
        # (resident pages on a busy machine) is still undecided; a clean verdict needs all settled.
        return LeakReport(
            function=name_of(self.fn), leaking=leaking, decided=leaking or UNDECIDED not in states.values(),
            kinds=tuple(kinds), calls_per_round=k, rounds=self.rounds, calls=self.calls,
            elapsed_ms=(time.perf_counter_ns() - started_ns) / 1e6, signals=tuple(signals),
            grown_objects=tuple(sorted(grown_objects, key=lambda g: -g.growth_per_call)),
            grown_types=tuple(sorted(grown_types, key=lambda t: -t[1])), sites=sites, notes=tuple(notes))


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
