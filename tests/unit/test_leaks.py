"""pyguts.leaks in-process: the decision rule, Python-level leaks, and that the check perturbs nothing."""

from __future__ import annotations

import gc
import os
import sys
import time
import weakref

import pytest

from pyguts import leaks
from pyguts.leaks.report import CLEAN, LEAK, UNDECIDED, AllocationSite, GrownObject, LeakReport, Signal

pytestmark = pytest.mark.every_python   # refcount semantics differ by version (immortal objects from 3.12)

KEPT: list = []


@pytest.fixture(autouse=True)
def _drop_kept():
    yield
    KEPT.clear()


class Payload:
    """A plain heap-type instance: refcounted, weak-referenceable, never immortal."""


# last `runs` per-round deltas, threshold, runs, expected state
DECISIONS = [
    ([1, 1, 1], 1, 3, LEAK),
    ([16, 16, 16], 1, 3, LEAK),
    ([0, 0, 0], 1, 3, CLEAN),
    ([5, 0, 0], 1, 3, CLEAN),          # one noisy delta is never a leak
    ([5, -5, 5], 1, 3, UNDECIDED),     # growth on some rounds only: run more rounds
    ([1, 1, 0], 1, 3, UNDECIDED),
    ([1, 1], 1, 3, UNDECIDED),         # too few rounds
    ([300, 300, 300], 256, 3, LEAK),
    ([200, 300, 300], 256, 3, UNDECIDED),
    ([1, 1, 1, 0], 1, 4, UNDECIDED),
    ([1, 1, 0, 0], 1, 4, CLEAN),
]


@pytest.mark.parametrize("deltas, threshold, runs, state", DECISIONS)
def test_decision_rule_is_regrtests(deltas, threshold, runs, state):
    assert leaks._decide(deltas, threshold, runs) == state


def test_clean_function_is_clean_and_quick():
    report = leaks.check(sum, (1, 2, 3))
    assert not report.leaking and report.decided, str(report)
    assert report.kinds == () and report.grown_objects == () and report.sites == ()
    assert report.rounds == leaks.DEFAULT_RUNS
    assert report.elapsed_ms < 1000   # the 50 ms goal is measured by benchmarks/bench_leaks.py


def test_reference_leak_names_the_object_and_its_growth():
    victim = Payload()
    before = sys.getrefcount(victim)
    report = leaks.check(KEPT.append, victim)
    assert report.leaking and report.kinds == ("reference",), str(report)
    [grown] = report.grown_objects
    assert grown.type_name.endswith("Payload") and grown.addr == id(victim)
    assert grown.growth_per_call == 1 and "Payload object at 0x" in grown.repr
    # every call kept exactly one reference (one call site, so 3.14's borrowing cancels out)
    assert sys.getrefcount(victim) - before == report.calls == KEPT.count(victim)


GLOBAL_PAYLOAD = Payload()


def test_globals_the_function_names_are_watched():
    report = leaks.check(lambda: KEPT.append(GLOBAL_PAYLOAD))   # no arguments: found through co_names
    assert report.leaking and report.kinds == ("reference",), str(report)
    assert [g.addr for g in report.grown_objects] == [id(GLOBAL_PAYLOAD)]


def test_new_containers_are_named_by_type():
    report = leaks.check(lambda: KEPT.append({"k": [1]}))
    assert report.leaking and "container" in report.kinds, str(report)
    assert dict(report.grown_types) == {"dict": 1, "list": 1}
    assert report.sites and __file__ in report.sites[0].location   # located by tracemalloc


def test_untracked_objects_show_in_blocks():
    report = leaks.check(lambda: KEPT.append(str(10**9 + len(KEPT))))
    assert report.leaking and "object" in report.kinds, str(report)
    assert report.signal("blocks").state == LEAK


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to find the leaked fds")
def test_fd_leak():
    # The fd numbers are not kept: above 256 they are new int objects, which would be a second leak.
    before = _open_fds()
    try:
        report = leaks.check(lambda: os.open(os.devnull, os.O_RDONLY) and None)
    finally:
        leaked = [int(fd) for fd in _open_fds() - before
                  if os.readlink(f"/proc/self/fd/{fd}") == os.devnull]
        for fd in leaked:
            os.close(fd)
    assert report.leaking and report.kinds == ("fd",), str(report)
    assert report.growth["fds"] == 1 and len(leaked) == report.calls


def test_the_check_changes_no_refcount_and_no_referrer():
    watched = Payload()
    holder = [watched, {"inner": watched}]
    refcnt, referrers = sys.getrefcount(watched), _referrer_ids(watched)
    report = leaks.check(len, holder, watch=[watched])
    assert not report.leaking, str(report)
    assert sys.getrefcount(watched) == refcnt
    assert _referrer_ids(watched) == referrers   # same referrers (gc may list them in another order)


def _referrer_ids(obj) -> set:
    return {id(r) for r in gc.get_referrers(obj)}


def test_a_leaking_check_keeps_nothing_alive_itself():
    victim = Payload()
    ref = weakref.ref(victim)
    counts = []
    for check in (False, True):   # one call site for both counts (3.14 may borrow getrefcount's argument)
        counts.append(sys.getrefcount(victim) - KEPT.count(victim))
        if not check:
            report = leaks.check(KEPT.append, victim)
    assert report.leaking
    # Only the leaked references (held by KEPT) and ours remain: none from the report or the check.
    assert counts[0] == counts[1]
    assert all(r is KEPT or r is sys._getframe() for r in gc.get_referrers(victim) if r is not None), \
        "the check left a referrer"
    KEPT.clear()
    del victim
    assert ref() is None


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_state_is_restored(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        leaks.check(len, "abc")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_exceptions_of_the_function_propagate_and_gc_comes_back():
    def boom():
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        leaks.check(boom)
    assert gc.isenabled()


def test_growth_on_two_rounds_of_three_stays_undecided_and_is_not_a_leak():
    calls = []

    def sometimes():   # one call per round (slower than the round target); keeps a list 2 calls of 3
        time.sleep(0.001)
        calls.append(None)
        if len(calls) % 3:
            KEPT.append([])

    report = leaks.check(sometimes, warmup=3)
    assert report.calls_per_round == 1, str(report)
    assert not report.leaking and not report.decided, str(report)
    assert report.rounds == leaks.DEFAULT_RUNS * leaks.MAX_ROUNDS_FACTOR
    assert report.signal("gc:list").state == UNDECIDED and "undecided" in str(report)


BOUNDED_CACHE: list = []


def _slow_call_filling_a_bounded_cache():
    """A slow function (one call per round) whose malloc'ed cache grows for 30 calls, then stops."""
    time.sleep(0.0005)
    if len(BOUNDED_CACHE) < 30:
        BOUNDED_CACHE.append(bytearray(4096))


def test_memory_growth_that_stops_is_not_a_leak_even_for_a_slow_function():
    BOUNDED_CACHE.clear()
    report = leaks.check(_slow_call_filling_a_bounded_cache)
    assert report.calls_per_round == 1 and len(BOUNDED_CACHE) == 30
    assert not report.leaking, str(report)   # judged past the 30 growing calls, not on the first few


def test_more_runs_means_more_rounds():
    assert leaks.check(len, "abc", runs=5).rounds >= 5


@pytest.mark.parametrize("kwargs, match", [({"runs": 1}, "runs must be at least 2"),
                                           ({"warmup": -1}, "warmup must be")])
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        leaks.check(len, "abc", **kwargs)


def test_keyword_arguments_reach_the_function():
    seen = []
    leaks.check(lambda *, runs_of: seen.append(runs_of) or seen.clear(), runs_of=7)
    report = leaks.check(lambda fn=None: KEPT.append([fn]), fn=1)
    assert report.leaking, str(report)


def test_report_text_from_a_hand_made_record():
    report = LeakReport(
        function="mod.f", leaking=True, decided=True, kinds=("reference", "large-buffer"), calls_per_round=4,
        rounds=3, calls=20, elapsed_ms=2.5,
        signals=(Signal("malloc_nbytes", "B", (1 << 20, 1 << 20, 1 << 20), 64, 262144.0, LEAK),
                 Signal("fds", "fd", (0, 0, 0), 1, 0.0, CLEAN)),
        grown_objects=(GrownObject("<Payload object>", "Payload", 0x1234, 1.0),),
        sites=(AllocationSite("mod.py:12", 262144.0, 1.0),))
    text = str(report)
    assert text.splitlines()[0] == "pyguts.leaks: mod.f LEAKS (reference, large-buffer): 3 rounds x 4 calls, " \
                                   "20 calls in 2.5 ms"
    assert "malloc_nbytes" in text and "<- leak" in text and "+262144 B" in text
    assert "Payload at 0x1234: <Payload object>  +1" in text
    assert "mod.py:12: +262144 B in +1 blocks" in text
    assert report.growth == {"malloc_nbytes": 262144.0, "fds": 0.0}
    assert report.signal("fds").state == CLEAN and report.signal("nope") is None


def _open_fds() -> set:
    """Names of this process's open fds, without the one os.listdir used to list them."""
    return {fd for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")}
