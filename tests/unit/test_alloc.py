"""pyguts.alloc in-process: registry, owned arrays and their lifetime, the NEP 49 handler, stats."""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import gc
import os
import pickle
import subprocess
import sys
import threading

import needs  # tests/needs.py
import numpy as np
import pytest

from refkit import total_growth

import pyguts.alloc as alloc
from pyguts.alloc import registry, shim
from pyguts.alloc.registry import static_tls_environ
from pyguts.errors import AllocatorUnavailable, UnsafeOperationError

ALLOCATORS = list(registry.SPECS)


def _loaded(name: str):
    """Load ``name`` or skip where its library is missing here, or jemalloc lacks its start-up fix
    (tests/needs.py); where the library is there, a load failure is a failure."""
    return needs.load_allocator(name)


@pytest.fixture(params=ALLOCATORS)
def name(request) -> str:
    _loaded(request.param)
    return request.param


def _counts(name: str) -> dict[str, int]:
    return shim.counts(alloc.load(name).ctx)


# ---- registry -----------------------------------------------------------------------------------

def test_available_lists_loadable_allocators_in_registry_order():
    names = alloc.available()
    assert {"libc", "mmap"} <= set(names)
    assert names == [n for n in ALLOCATORS if n in names]
    assert alloc.load("libc") is alloc.load("libc")  # loaded once, kept


def test_unknown_name_is_refused_with_the_known_names():
    with pytest.raises(AllocatorUnavailable, match=r"must be one of .*'jemalloc'.*got 'nope'"):
        alloc.load("nope")


def test_missing_library_names_the_debian_package():
    spec = registry.Spec("bogus", "libpyguts-bogus-allocator.so.9", "libpyguts-bogus9",
                          shim.FAMILY_PLAIN, dict(malloc="malloc"))
    with pytest.raises(AllocatorUnavailable, match=r"apt-get install libpyguts-bogus9") as info:
        registry._load_spec(spec)
    assert isinstance(info.value, OSError) and "libpyguts-bogus-allocator.so.9" in str(info.value)


def test_missing_symbol_is_refused():
    spec = registry.Spec("libc-odd", "libc.so.6", "libc6", shim.FAMILY_PLAIN,
                          dict(malloc="pyguts_no_such_malloc"))
    with pytest.raises(AllocatorUnavailable, match=r"symbol 'pyguts_no_such_malloc'"):
        registry._load_spec(spec)


# ---- owned arrays ---------------------------------------------------------------------------------

def test_sized_in_elements_aligned_and_owned(name):
    a = alloc.empty((3, 5), dtype=np.float64, allocator=name, alignment=64)
    assert a.shape == (3, 5) and a.dtype == np.float64 and a.nbytes == 120
    block = alloc.owner(a)
    assert a.base is block and block.nbytes == 120 and block.allocator == name
    assert a.ctypes.data == block.addr and block.addr % 64 == 0
    assert a.flags.writeable and a.flags.c_contiguous and not a.flags.owndata
    a[...] = np.arange(15).reshape(3, 5)
    assert a.sum() == 105
    big = alloc.empty(1 << 16, dtype=np.uint8, allocator=name, alignment=4096)
    assert big.ctypes.data % 4096 == 0
    big[-1] = 7  # the last element is inside the allocation


@pytest.mark.parametrize("zero", [False, True], ids=["empty", "zeros"])
def test_the_alignment_promise_holds_for_random_sizes(name, zero):
    """Block.alignment divides the address, whatever the size (0 B up) and the alignment asked for
    (tcmalloc's calloc of up to 8 B gave 8-byte-aligned blocks while alignment said 16)."""
    make = alloc.zeros if zero else alloc.empty
    rng = np.random.default_rng(17)
    sizes = [*range(0, 40), *rng.integers(0, 1 << 16, 300)]
    kept, wrong = [], []
    for nbytes in sizes:
        a = make(int(nbytes), dtype=np.uint8, allocator=name, alignment=int(2 ** rng.integers(0, 13)))
        block = alloc.owner(a)
        if block.addr % block.alignment or a.ctypes.data != block.addr or (zero and a.any()):
            wrong.append((int(nbytes), block.alignment, hex(block.addr)))
        kept.append(a)   # alive together: the allocator cannot hand the same well-aligned block back
    assert not wrong, wrong[:10]


@pytest.mark.parametrize("nbytes", [4096, (48 << 20) + 4099], ids=["4 KiB", "48 MiB, unaligned"])
def test_zeros_are_zero_even_after_dirty_reuse(name, nbytes):
    """Blocks of 32 MiB and more are cleared by giving their whole pages back (MADV_DONTNEED) and
    clearing the partial pages at the ends: every byte must read zero, through both paths."""
    for _ in range(3):
        dirty = alloc.empty(nbytes, dtype=np.uint8, allocator=name, alignment=16)
        dirty[...] = 0xAB
        del dirty
        z = alloc.zeros(nbytes, dtype=np.uint8, allocator=name, alignment=16)
        assert not z.any()
        del z
        with alloc.use(name):
            dirty = np.full(nbytes, 0xAB, dtype=np.uint8)
            del dirty
            z = np.zeros(nbytes + 1, dtype=np.uint8)   # (+1: never the same offset within a page)
        assert alloc.handler_name(z) == f"pyguts-{name}" and not z.any()
        del z


@pytest.mark.parametrize("dtype", ["f8", "i2", "c16", "U3", "S5", "M8[ns]", [("x", "f4"), ("y", "i8", (2,))],
                                   ("f4", (2, 3))])
def test_dtypes_match_numpy(dtype):
    a = alloc.zeros(4, dtype=dtype, allocator="libc")
    expected = np.zeros(4, dtype=dtype)
    assert (a.dtype, a.shape, a.nbytes) == (expected.dtype, expected.shape, expected.nbytes)
    assert a.tobytes() == expected.tobytes()


def test_refuses_object_dtype_and_bad_arguments():
    with pytest.raises(UnsafeOperationError, match="must not hold Python objects"):
        alloc.empty(3, dtype=object, allocator="libc")
    with pytest.raises(ValueError, match="power of two"):
        alloc.empty(3, allocator="libc", alignment=48)
    with pytest.raises(ValueError, match=">= 0"):
        alloc.empty((2, -1), allocator="libc")
    with pytest.raises(TypeError):
        alloc.empty(2.5, allocator="libc")


def test_empty_shapes():
    a = alloc.empty((0, 4), allocator="libc")
    assert a.shape == (0, 4) and a.size == 0 and alloc.owner(a).addr != 0
    s = alloc.zeros((), allocator="mmap")
    assert s.shape == () and float(s) == 0.0


def test_views_outlive_the_base_and_free_once(name):
    before = _counts(name)
    a = alloc.zeros((4, 6), allocator=name)
    a[...] = np.arange(24).reshape(4, 6)
    block = alloc.owner(a)
    views = [a[1:3], a.T, a.reshape(6, 4), np.asarray(a)[::2], a.ravel(), a[2]]
    del a
    gc.collect()
    assert not block.freed
    assert _counts(name)["owned_frees"] == before["owned_frees"]
    assert views[0].sum() == sum(range(6, 18)) and views[-1].tolist() == list(range(12, 18))
    del block
    while views:
        views.pop()
        gc.collect()
        freed = _counts(name)["owned_frees"] - before["owned_frees"]
        assert freed == (0 if views else 1)
    after = _counts(name)
    assert after["owned_allocs"] - before["owned_allocs"] == 1
    assert after["owned_live_bytes"] == before["owned_live_bytes"]


def test_pickled_copies_are_ordinary_numpy_arrays(name):
    a = alloc.empty((2, 3), dtype="i4", allocator=name)
    a[...] = [[1, 2, 3], [4, 5, 6]]
    for obj in (a, a[:, 1:]):
        back = pickle.loads(pickle.dumps(obj))
        np.testing.assert_array_equal(back, obj)
        root = back   # numpy 2.5 unpickles into views of an array over the pickle's own buffer
        while isinstance(root.base, np.ndarray):
            root = root.base
        assert alloc.owner(back) is None
        if isinstance(root.base, (bytes, memoryview)):
            assert root.tobytes() in pickle.dumps(obj)   # the data is the pickle's: no allocator involved
        else:
            assert root.flags.owndata and alloc.handler_name(root) == "default_allocator"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(alloc.owner(a))


def test_block_cannot_be_repointed_at_another_allocator():
    a = alloc.empty(8, allocator="mmap")
    block = alloc.owner(a)
    other = alloc.owner(alloc.empty(8, allocator="libc"))
    for attr, value in (("allocator", "libc"), ("_plan", other._plan), ("_mem", other._mem)):
        with pytest.raises(AttributeError, match="read-only"):
            setattr(block, attr, value)
    with pytest.raises(AttributeError):
        del block._plan
    with pytest.raises(AttributeError):
        block._mem.addr = other.addr  # the C object that frees the memory has no setters
    with pytest.raises(TypeError, match="made by pyguts.alloc.empty"):
        alloc.Block()
    assert block._plan.ctx == alloc.load("mmap").ctx and block.allocator == "mmap"
    assert block.addr == a.ctypes.data == block._mem.addr


def test_owned_arrays_give_back_every_reference_they_take():
    """Blocks and arrays made in C: 1000 made and dropped leave the plan's and the dtype's counts as
    they were, and move a debug build's total count no more than as many np.empty arrays."""
    a = alloc.empty(16, allocator="libc")
    plan = alloc.owner(a)._plan
    del a
    before = (sys.getrefcount(plan), sys.getrefcount(plan.dtype))
    ours = total_growth(lambda: alloc.empty(16, allocator="libc")[3:])
    assert (sys.getrefcount(plan), sys.getrefcount(plan.dtype)) == before
    assert ours - total_growth(lambda: np.empty(2)[3:]) < 100


# ---- NEP 49 handler -------------------------------------------------------------------------------

def _workload():
    """Allocations numpy makes itself: ufunc outputs, concatenate, resize, argsort, strings, objects."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(1000)
    grown = np.arange(10.0)
    grown.resize(5000, refcheck=False)
    grown.resize(3, refcheck=False)
    strings = np.array(["alpha", "be", "", "gamma" * 20])
    objects = np.array([1, "two", None, 3.0, (4,)], dtype=object)
    out = {
        "ufunc": np.sqrt(np.abs(x)) * 2 + 1,
        "reduce": np.add.reduce(x.reshape(10, 100), axis=1),
        "concatenate": np.concatenate([x, x[::-1], np.zeros(7)]),
        "resize": np.resize(x[:10], 37),
        "method-resize": grown.copy(),
        "argsort": np.argsort(x, kind="stable"),
        "argsort-empty": np.argsort(np.array([], dtype=float)),
        "sort-small": np.sort(x[:3]),
        "strings": np.char.add(strings, "!"),
        "strings-cat": np.concatenate([strings, strings[::-1]]),
        "objects": np.concatenate([objects, objects]),
        "objects-repeat": np.repeat(objects, 3),
        "matmul": x[:100].reshape(10, 10) @ x[:100].reshape(10, 10).T,
    }
    if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
        vs = np.array(["short", "a much longer string than sixteen bytes"], dtype=np.dtypes.StringDType())
        out["stringdtype"] = np.concatenate([vs, vs]) + "?"
    return out


@pytest.mark.every_python
def test_use_gives_results_equal_to_the_default_handler(name):
    expected = _workload()
    before = _counts(name)
    with alloc.use(name) as loaded:
        assert alloc.current_handler_name() == f"pyguts-{name}"
        got = _workload()
    assert loaded is alloc.load(name)
    assert alloc.current_handler_name() == "default_allocator"
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        if value.dtype == object:
            assert got[key].tolist() == value.tolist(), key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        if got[key].flags.owndata:
            assert alloc.handler_name(got[key]).startswith("pyguts"), key
    mid = _counts(name)
    assert mid["handler_allocs"] - before["handler_allocs"] >= len(expected)
    del got
    gc.collect()
    after = _counts(name)
    # allocated inside, freed outside: every handler allocation went back through this allocator
    assert after["handler_allocs"] - after["handler_frees"] == before["handler_allocs"] - before["handler_frees"]


@pytest.mark.every_python
def test_memory_allocated_inside_is_freed_by_its_own_allocator_outside():
    with alloc.use("mmap"):
        a = np.ones(100)
    libc_before, mmap_before = _counts("libc"), _counts("mmap")
    with alloc.use("libc"):
        assert alloc.handler_name(a) == "pyguts-mmap"
        del a
    assert _counts("mmap")["handler_frees"] == mmap_before["handler_frees"] + 1
    assert _counts("libc")["handler_frees"] == libc_before["handler_frees"]


#: A fresh interpreter (no allocator cache holding an earlier, advised block) sets numpy's switch as
#: argv[2] says, then makes an 8 MiB array through allocator argv[1] and an owned 8 MiB block
#: (alloc.empty: pyguts advises nothing there); prints, for each, whether the mapping under its middle
#: carries the huge-page advice ("hg" in /proc/self/smaps' VmFlags).
_ADVICE_PROBE = """
import sys, numpy as np, pyguts.alloc as alloc
from pyguts.alloc import handler
handler._multiarray()._set_madvise_hugepage(sys.argv[2] == "on")
with alloc.use(sys.argv[1]):
    big = np.ones(1 << 20)
owned = alloc.empty(1 << 20, allocator=sys.argv[1], alignment=16)
for a in (big, owned):
    middle, start, end = a.ctypes.data + a.nbytes // 2, None, None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(None, 1)[0]
            if "-" in head and ":" not in head:
                start, end = (int(x, 16) for x in head.split("-"))
            elif head == "VmFlags:" and start <= middle < end:
                print("hg" in line.split())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs_proc: /proc/self/smaps shows the advice")
@pytest.mark.parametrize("switch", ["on", "off"], ids=["numpy advises", "numpy switched off"])
def test_blocks_of_4_mib_get_numpys_huge_page_advice(name, switch):
    """As numpy's own handler (alloc.c): madvise(MADV_HUGEPAGE) on blocks of 4 MiB and more, unless
    numpy's switch is off. Without it, page faults made np.sqrt(a*a + b*b) at n=1e6 1.6-1.8x slower."""
    if registry.SPECS[name].family == shim.FAMILY_MMAP:
        pytest.skip("mmap and mmap-huge map each block themselves (mmap-huge always advises)")
    done = subprocess.run([sys.executable, "-c", _ADVICE_PROBE, name, switch], capture_output=True, text=True,
                          env=static_tls_environ(), timeout=120)
    handled, owned = done.stdout.split() or ["no output", ""]
    if switch == "off" and owned == "True":
        pytest.skip(f"needs_no_own_advice: {name} advises huge pages itself (its own 8 MiB block has it), "
                    "so numpy's switch cannot be seen")
    assert handled == str(switch == "on"), done.stdout + done.stderr


@pytest.mark.every_python
def test_use_restores_the_previous_handler_on_error_and_nests():
    with pytest.raises(ZeroDivisionError):
        with alloc.use("libc"):
            with alloc.use("mmap"):
                assert alloc.current_handler_name() == "pyguts-mmap"
                1 / 0
    assert alloc.current_handler_name() == "default_allocator"
    with alloc.use("libc"):
        with alloc.use("mmap"):
            pass
        assert alloc.current_handler_name() == "pyguts-libc"
        assert alloc.handler_name(np.empty(3)) == "pyguts-libc"
    assert alloc.handler_name(np.empty(3)) == "default_allocator"


@pytest.mark.every_python
def test_handler_is_per_thread_and_per_context():
    seen = {}

    def in_thread():
        seen["thread"] = (alloc.current_handler_name(), alloc.handler_name(np.empty(5)))

    async def in_task():
        return alloc.current_handler_name()

    with alloc.use("libc"):
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        snapshot = contextvars.copy_context()
        task_name = asyncio.run(in_task())
    # Python >= 3.14 may let threads inherit the context (sys.flags.thread_inherit_context).
    inherits = bool(getattr(sys.flags, "thread_inherit_context", 0))
    expected = "pyguts-libc" if inherits else "default_allocator"
    assert seen["thread"] == (expected, expected)
    assert task_name == "pyguts-libc"  # asyncio copies the current context into the task
    # a context copied inside the block keeps the handler after the block ended
    assert snapshot.run(alloc.current_handler_name) == "pyguts-libc"
    assert alloc.current_handler_name() == "default_allocator"


@pytest.mark.every_python
def test_default_handler_can_free_null_through_ours():
    # numpy calls free(ctx, NULL, n) for zero-size sorts and resizes; the shim must ignore NULL.
    before = _counts("libc")
    with alloc.use("libc"):
        for n in (0, 1, 2, 17):
            np.argsort(np.arange(n, dtype=float)[::-1])
            e = np.empty(n)
            e.resize(0, refcheck=False)
            del e
    gc.collect()
    after = _counts("libc")
    assert after["handler_allocs"] - after["handler_frees"] == before["handler_allocs"] - before["handler_frees"]


@pytest.mark.every_python
def test_small_block_cache_reuses_memory_correctly(name):
    # Like numpy's default handler, freed small blocks are kept per allocator and handed out again.
    with alloc.use(name):
        for n in (0, 1, 7, 16, 17, 100, 128, 1000, 1024, 1025):
            for _ in range(6):
                dirty = np.full(n, 0xFF, dtype=np.uint8)
                del dirty
                clean = np.zeros(n, dtype=np.uint8)       # calloc from a reused block: zeroed
                assert not clean.any(), n
                grown = np.ones(n, dtype=np.uint8)
                grown.resize(n + 40, refcheck=False)      # realloc of a cached-size block
                assert grown[:n].all() and not grown[n:].any()
                del clean, grown
    cached = _counts(name)["handler_cached_bytes"]
    if name.startswith("mmap"):
        assert cached == 0  # every array is its own mapping: nothing is kept
    else:
        assert 0 < cached <= 4 * 16 * sum(range(1, 1024 // 16 + 2))


# ---- stats ----------------------------------------------------------------------------------------

def test_stats_keys(name):
    s = alloc.stats(name)
    assert s["rss"] > 0 and s["pyguts_live_bytes"] >= 0
    expected = {"jemalloc": {"allocated", "resident", "active", "mapped"},
                "mimalloc": {"committed", "peak_committed"},
                "tcmalloc": {"allocated", "resident", "heap_size"},
                "libc": {"allocated", "arena"},
                "mmap": {"mapped"}, "mmap-huge": {"mapped"}}[name]
    assert expected <= set(s), set(s)


def test_stats_follow_live_blocks(name):
    before = alloc.stats(name)
    a = alloc.empty(1 << 20, dtype=np.uint8, allocator=name)
    mid = alloc.stats(name)
    assert mid["pyguts_live_bytes"] - before["pyguts_live_bytes"] == 1 << 20
    if "allocated" in before and name != "libc":  # libc's figure moves with Python's own objects
        assert mid["allocated"] - before["allocated"] >= 1 << 20
    if name.startswith("mmap"):
        assert mid["mapped"] - before["mapped"] == 1 << 20
    del a
    after = alloc.stats(name)
    assert after["pyguts_live_bytes"] == before["pyguts_live_bytes"]
    if "allocated" in before and name != "libc":
        assert after["allocated"] - before["allocated"] < 1 << 16


def test_mallctl_reads_and_writes_jemalloc_controls():
    _loaded("jemalloc")
    ssize = ctypes.c_ssize_t
    assert alloc.mallctl("arenas.page") >= 4096
    old = alloc.mallctl("arena.0.dirty_decay_ms", ctype=ssize)
    try:
        alloc.mallctl("arena.0.dirty_decay_ms", 1234, ctype=ssize)
        assert alloc.mallctl("arena.0.dirty_decay_ms", ctype=ssize) == 1234
    finally:
        alloc.mallctl("arena.0.dirty_decay_ms", old, ctype=ssize)
    with pytest.raises(OSError, match=r"mallctl\('pyguts.no.such'\) must return 0, got errno 2"):
        alloc.mallctl("pyguts.no.such")


def test_jemalloc_keeps_freed_big_blocks_in_pyguts_own_arena_for_reuse():
    """jemalloc purges a freed block of 8 MiB or more at once (its oversize policy), so every new one
    faulted its pages in again; pyguts' own arena lifts that, as glibc keeps such blocks for reuse."""
    je = _loaded("jemalloc")
    u64 = ctypes.c_uint64
    assert je.arena is not None and je.arena > 0
    assert alloc.mallctl(f"arena.{je.arena}.oversize_threshold") == alloc.registry.JEMALLOC_OVERSIZE

    def purged():
        alloc.mallctl("epoch", 1, ctype=u64)
        return alloc.mallctl(f"stats.arenas.{je.arena}.dirty_purged", ctype=u64)

    def big_block_page():
        a = alloc.empty(16 << 20, dtype=np.uint8, allocator="jemalloc")
        a[:] = 1
        return a.ctypes.data >> 12   # jemalloc offsets big blocks within their first page at random

    before = purged()
    with alloc.use("jemalloc"):
        ones = np.ones((16 << 20) // 8)
        assert alloc.handler_name(ones) == "pyguts-jemalloc"
        del ones
    first = big_block_page()
    assert big_block_page() == first  # the freed block is reused as it is
    # Purged at free, the three 16 MiB blocks would be 12,291 pages; the arena's decay (10 s) may give
    # back a few dozen pages a second meanwhile, on a machine slow enough to take that long.
    assert purged() - before < 512


def test_mmap_blocks_are_page_aligned_and_huge_ones_2mib_aligned():
    page = alloc.empty(10, dtype=np.uint8, allocator="mmap", alignment=1)
    assert page.ctypes.data % 4096 == 0
    assert alloc.stats("mmap")["mapped"] >= 4096
    huge = alloc.zeros(4 << 20, dtype=np.uint8, allocator="mmap-huge")
    assert huge.ctypes.data % (2 << 20) == 0
    huge[::4096] = 1
    assert int(huge.sum()) == 1024
    assert "anon_huge_pages" in alloc.stats("mmap-huge")


def test_threads_allocating_at_once_keep_the_books_straight(name):
    before = _counts(name)

    def work():
        with alloc.use(name):  # each thread installs the handler in its own context
            for i in range(300):
                a = alloc.empty(1 + i * 37, dtype=np.uint8, allocator=name)
                b = np.ones(1 + i * 13)
                a[-1] = 1
                del a, b

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    after = _counts(name)
    assert after["owned_allocs"] - before["owned_allocs"] == 1200
    assert after["owned_frees"] - before["owned_frees"] == 1200
    assert after["owned_live_bytes"] == before["owned_live_bytes"]
    assert after["handler_allocs"] - before["handler_allocs"] == after["handler_frees"] - before["handler_frees"] >= 1200


@pytest.mark.parametrize(("shape", "alignment"), [(64.0, 64), ((8.0, 8), 64), (64, 64.0), (64, True)])
def test_a_planned_request_does_not_pass_values_that_only_equal_it(shape, alignment):
    """Requests are planned once and cached, but 64.0 == 64 must not borrow the plan of 64: numpy and
    alloc refuse float sizes, cached or not (True is an int: alignment True means 1, as before)."""
    alloc.empty(64, allocator="libc")
    alloc.empty((8, 8), allocator="libc")
    if isinstance(alignment, bool):
        assert alloc.owner(alloc.empty(shape, allocator="libc", alignment=alignment)).alignment == 16
        return
    with pytest.raises(TypeError, match="integer"):
        alloc.empty(shape, allocator="libc", alignment=alignment)


def test_a_repeated_request_is_served_from_its_plan_without_planning_again(monkeypatch):
    """The C helper looks requests up in the plans (alloc.empty ~2x np.empty, not 3-4x): planning
    again would raise here, also after more requests than the plans keep (the oldest go). A dtype
    object that only equals the planned one (metadata) and an unhashable dtype argument are planned
    as given."""
    from pyguts.alloc import arrays

    plain, tagged = np.dtype("f8"), np.dtype("f8", metadata={"unit": "m"})
    assert plain == tagged and hash(plain) == hash(tagged)
    for n in range(arrays._PLANS_MAX + 10):
        alloc.empty(n, allocator="libc", alignment=32)
    alloc.empty(4, plain, allocator="libc")
    with monkeypatch.context() as patched:
        patched.setattr(arrays, "_plan", None)   # not callable: any planning fails
        assert alloc.empty(4, plain, allocator="libc").dtype is plain
        assert alloc.zeros(4, plain, allocator="libc").sum() == 0
    assert alloc.empty(4, tagged, allocator="libc").dtype.metadata == {"unit": "m"}
    spec = {"names": ["x"], "formats": ["f8"]}
    assert [alloc.empty(2, spec, allocator="libc").dtype.names for _ in range(2)] == [("x",), ("x",)]


@pytest.mark.parametrize("alignment", [32, 64, 256, 512])
def test_plain_libraries_over_allocate_for_alignment_and_free_what_they_took(alignment):
    """libc and tcmalloc take alignments of 32-256 B as malloc(n + alignment) (glibc's memalign is
    7x slower) and free the library's own pointer; 512 B still goes through memalign. Every byte is
    usable, the books balance."""
    for name in [n for n in ("libc", "tcmalloc") if n in alloc.available()]:
        before = _counts(name)
        arrays = [alloc.zeros(n, np.uint8, allocator=name, alignment=alignment) for n in (1, 63, 4096, 70000)]
        for a in arrays:
            assert a.ctypes.data % alignment == 0 and not a.any()
            a[:] = 0xAB   # the whole block is writable: nothing of the library's lives in it
        del arrays, a
        after = _counts(name)
        assert after["owned_frees"] - before["owned_frees"] == 4 and after["owned_live_bytes"] == before["owned_live_bytes"]
