"""pyguts.leaks.check on a clean function vs a regrtest-style loop and objgraph's show_growth.

Time to a verdict on a clean function (ratios against the regrtest-style loop), the calls each
needs, and which planted Python-level leaks each one sees on this release build.
objgraph is optional (`pip install objgraph`): its row is skipped with a message when absent.
"""

from __future__ import annotations

import gc
import io
import os
import statistics
import sys
import time

from pyguts import leaks

#: regrtest -R defaults: 3 warm-up runs, then 3 measured runs that must all grow.
REGRTEST_WARMUPS, REGRTEST_REPCOUNT = 3, 3
DATA = list(range(200, 0, -1))


def clean() -> object:
    return sorted(DATA)[:3]


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def regrtest_style(fn) -> bool:
    """CPython's `regrtest -R 3:3` on a release build: no total refcount, only blocks and fds.

    Each run: call, full gc.collect(), read sys.getallocatedblocks() and the fd count; a leak when
    every measured delta of one counter is >= 1 (Lib/test/libregrtest/refleak.py).
    """
    runs = REGRTEST_WARMUPS + REGRTEST_REPCOUNT
    block_deltas, fd_deltas = [0] * runs, [0] * runs   # preallocated, as refleak.py does
    blocks_before, fds_before = sys.getallocatedblocks(), _fd_count()
    for i in range(runs):
        fn()
        gc.collect()
        blocks_after, fds_after = sys.getallocatedblocks(), _fd_count()
        block_deltas[i], fd_deltas[i] = blocks_after - blocks_before, fds_after - fds_before
        blocks_before, fds_before = blocks_after, fds_after
    return any(all(d >= 1 for d in series[REGRTEST_WARMUPS:]) for series in (block_deltas, fd_deltas))


def objgraph_sees_growth(objgraph, fn, calls: int = 3) -> bool:
    """objgraph's recipe: warm up, growth() as a baseline (twice: its first call adds its own
    bookkeeping), then call; a leak when every call shows growth."""
    fn()
    objgraph.growth(limit=10)
    objgraph.growth(limit=10)
    grew = 0
    for _ in range(calls):
        fn()
        grew += bool(objgraph.growth(limit=10))
    return grew == calls


def _planted():
    kept, victim = [], type("Victim", (), {})()
    opened = []
    return kept, opened, {
        "reference to an existing object": lambda: kept.append(victim),
        "new list kept": lambda: kept.append([]),
        "new int kept": lambda: kept.append(10**9 + len(kept)),
        "fd left open": lambda: opened.append(os.open(os.devnull, os.O_RDONLY)),
    }


VERDICT_REPEATS = 9


def _verdict_times(fn, expect: bool) -> tuple:
    """Median elapsed ms and calls of check(fn) over VERDICT_REPEATS, and how many verdicts were right."""
    reports = [leaks.check(fn) for _ in range(VERDICT_REPEATS)]
    right = sum(r.leaking == expect and r.decided for r in reports)
    return (statistics.median(r.elapsed_ms for r in reports), int(statistics.median(r.calls for r in reports)),
            right)


def _sweep_cost() -> tuple:
    """Median ms to gather the sweep's population and to sweep it once, and its size, in this process."""
    gather, sweep = [], []
    for _ in range(VERDICT_REPEATS):
        t0 = time.perf_counter()
        population = leaks._population()
        t1 = time.perf_counter()
        list(map(sys.getrefcount, population))
        t2 = time.perf_counter()
        gather.append((t1 - t0) * 1e3)
        sweep.append((t2 - t1) * 1e3)
    return statistics.median(gather), statistics.median(sweep), len(population)


def run(h) -> None:
    try:
        import objgraph
    except ImportError:
        objgraph = None
        print("bench_leaks: objgraph is not installed (pip install objgraph): its rows are skipped")

    kept_victims, victim, counter = [], type("Victim", (), {})(), [0]

    def slow_leak():   # one small object kept per 100 calls
        counter[0] += 1
        if counter[0] % 100 == 0:
            kept_victims.append(object())

    population_ms, sweep_ms, swept = _sweep_cost()
    print(f"bench_leaks: the sweep of every live object's refcount: {swept} objects gathered in "
          f"{population_ms:.1f} ms, each sweep {sweep_ms:.1f} ms (medians; two sweeps per clean verdict)")
    for label, fn, expect in (("a clean verdict", clean, False),
                              ("a leak verdict (1 reference per call)", lambda: kept_victims.append(victim), True),
                              ("a leak verdict (1 object per 100 calls)", slow_leak, True)):
        ms, calls, right = _verdict_times(fn, expect)
        goal = "; goal <= 50 ms" if not expect else ""
        print(f"bench_leaks: median time to {label}: {ms:.1f} ms, {calls} calls, right {right} of "
              f"{VERDICT_REPEATS}{goal}")
        kept_victims.clear()
    print(f"bench_leaks: regrtest-style loop calls {REGRTEST_WARMUPS + REGRTEST_REPCOUNT}; "
          f"objgraph show_growth pair calls 1 and lists growth without a verdict "
          f"(its detection rows below: 1 warm-up + 3 calls)")
    candidates = {"pyguts.leaks.check": lambda: leaks.check(clean)}
    if objgraph is not None:
        objgraph.show_growth(limit=1, file=io.StringIO())   # its first call builds the baseline
        candidates["objgraph.show_growth x2"] = lambda: _objgraph_twice(objgraph)
    h.compare("leaks: verdict on clean fn", ("regrtest-style -R 3:3 loop", lambda: regrtest_style(clean)),
              candidates, repeat=11)

    kept, opened, planted = _planted()
    for label, fn in {"nothing (clean function)": clean, **planted}.items():
        seen = {"pyguts": leaks.check(fn).leaking, "regrtest-style": regrtest_style(fn)}
        if objgraph is not None:
            seen["objgraph"] = objgraph_sees_growth(objgraph, fn)
        print(f"bench_leaks: planted {label:<34} " + "  ".join(f"{k}={'leak' if v else 'clean'}"
                                                            for k, v in seen.items()))
    kept.clear()
    for fd in opened:
        os.close(fd)


def _objgraph_twice(objgraph) -> None:
    sink = io.StringIO()
    objgraph.show_growth(limit=10, file=sink)
    clean()
    objgraph.show_growth(limit=10, file=sink)
