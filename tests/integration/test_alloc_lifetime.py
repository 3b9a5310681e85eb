"""pyguts.alloc over many cycles and at interpreter exit: nothing leaks, nothing is freed too early."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyguts.alloc as alloc
from pyguts.alloc import registry

ALLOCATORS = list(registry.SPECS)
CYCLES = 100_000
LIVE_SLOTS = 32               # arrays alive at once: frees happen out of allocation order
MAX_LOG2_NBYTES = 20          # sizes 1 B .. 1 MiB, log-uniform
#: jemalloc's figures after a warm-up and after the run may differ by partially used slabs.
JEMALLOC_SLACK_NBYTES = 64 << 10
#: Allocator caches settle during the first half; a leak of even 100 bytes per cycle would add
#: 5 MB over the second half (the mean request is ~75 KiB), so the second half must not grow more.
RSS_SLACK_NBYTES = 4 << 20


def _cycles(name: str, count: int, seed: int) -> None:
    """``count`` alloc/free cycles of random sizes, half through use(), half through empty()."""
    rng = np.random.default_rng(seed)
    sizes = (2 ** rng.uniform(0, MAX_LOG2_NBYTES, count)).astype(np.int64)
    slots = rng.integers(0, LIVE_SLOTS, count)
    live = [None] * LIVE_SLOTS
    with alloc.use(name):
        for i in range(count):
            n = int(sizes[i])
            a = np.empty(n, dtype=np.uint8) if i & 1 else alloc.empty(n, dtype=np.uint8, allocator=name)
            a[0] = a[-1] = 1          # touch both ends: RSS sees the pages
            live[slots[i]] = a        # frees whatever the slot held
    live.clear()
    gc.collect()


@pytest.mark.parametrize("name", ALLOCATORS)
def test_many_cycles_return_every_byte(name, require_allocator):
    require_allocator(name)
    _cycles(name, 2_000, seed=1)      # warm-up: size classes, thread caches, arenas
    before = alloc.stats(name)
    _cycles(name, CYCLES // 2, seed=2)
    middle = alloc.stats(name)
    _cycles(name, CYCLES // 2, seed=3)
    after = alloc.stats(name)
    assert after["owned_allocs"] - before["owned_allocs"] == CYCLES // 2
    assert after["owned_frees"] - before["owned_frees"] == CYCLES // 2
    assert after["handler_allocs"] - before["handler_allocs"] == CYCLES // 2
    assert after["handler_frees"] - before["handler_frees"] == CYCLES // 2
    assert after["pyguts_live_bytes"] == before["pyguts_live_bytes"]
    if name == "jemalloc":
        # small blocks kept by the handler's cache still count as allocated in jemalloc
        drift = (after["allocated"] - after["handler_cached_bytes"]) - (
            before["allocated"] - before["handler_cached_bytes"])
        assert abs(drift) <= JEMALLOC_SLACK_NBYTES, (
            f"jemalloc stats.allocated must return to its baseline {before['allocated']} "
            f"within {JEMALLOC_SLACK_NBYTES} bytes, got {after['allocated']} (drift {drift})")
    if name == "tcmalloc":
        drift = (after["allocated"] - after["handler_cached_bytes"]) - (
            before["allocated"] - before["handler_cached_bytes"])
        assert abs(drift) <= JEMALLOC_SLACK_NBYTES, (before, after)
    if name.startswith("mmap"):
        assert after["mapped"] == before["mapped"]
    growth = after["rss"] - middle["rss"]
    assert growth <= RSS_SLACK_NBYTES, (
        f"RSS must not grow over the second {CYCLES // 2} cycles by more than {RSS_SLACK_NBYTES} bytes, "
        f"grew {growth} (first half: {middle['rss'] - before['rss']})")


_AT_EXIT = """
import atexit, gc, sys, threading
import numpy as np
import pyguts.alloc as alloc
name = sys.argv[1]
kept = []
with alloc.use(name):
    kept.append(np.arange(1000.0))
    cycle = [np.ones(50)]
    cycle.append(cycle)                          # freed by the last gc pass, if at all
    holder = type("Holder", (), {})()
    holder.arr = np.concatenate([np.zeros(3), np.ones(3)])
kept.append(alloc.zeros(4096, allocator=name))
kept.append(kept[-1][10:20])
del cycle

def late():
    # runs during finalisation, after use() ended: arrays must still be readable, then freed
    assert alloc.handler_name(kept[0]) == "pyguts-" + name
    assert kept[0].sum() == 499500.0 and kept[2].sum() == 0.0
    print("at-exit-ok", flush=True)

atexit.register(late)
gc.freeze() if hasattr(gc, "freeze") else None
"""


@pytest.mark.every_python
@pytest.mark.parametrize("name", ["jemalloc", "mimalloc", "mmap"])
def test_handler_and_blocks_outlive_arrays_through_interpreter_exit(name, require_allocator):
    require_allocator(name)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(_AT_EXIT), name],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "at-exit-ok" and "Traceback" not in proc.stderr, proc.stderr
