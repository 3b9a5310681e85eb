"""Freeing memory with the wrong allocator: fatal when done by hand, impossible through pyguts.alloc.

Each case runs in a child made with os.fork (the parent waits with os.waitpid), so the crash of the
control case is observed as a signal instead of killing pytest.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import os
import signal
import traceback

import numpy as np
import pytest

import pyguts.alloc as alloc
from pyguts.alloc import shim

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs_fork: os.fork is missing")

FOREIGN = ["jemalloc", "mimalloc", "tcmalloc", "mmap"]


def _in_child(fn) -> tuple[int | None, int | None, str]:
    """Run ``fn()`` in a forked child: (exit status or None, signal or None, child's error text)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_fd)
        code = 0
        try:
            fn()
        except BaseException:
            os.write(write_fd, traceback.format_exc().encode())
            code = 1
        finally:
            os.close(write_fd)
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status), text
    return os.WEXITSTATUS(status), None, text


@pytest.mark.crash_prone
@pytest.mark.parametrize("name", FOREIGN)
def test_control_raw_free_with_libc_kills_the_process(name, require_allocator):
    """What the API prevents: glibc's free() on another allocator's pointer aborts the process."""
    require_allocator(name)

    def wrong_free():
        faulthandler.disable()  # the abort is expected: no traceback dump into pytest's output
        os.close(2)  # nor glibc's "free(): invalid pointer"
        libc = ctypes.CDLL("libc.so.6")
        libc.free.argtypes = [ctypes.c_void_p]
        keep = alloc.zeros(64, dtype=np.uint8, allocator=name)
        victim = alloc.zeros(64, dtype=np.uint8, allocator=name)
        libc.free(alloc.owner(victim).addr)
        del keep

    code, sig, text = _in_child(wrong_free)
    assert sig in (signal.SIGABRT, signal.SIGSEGV), (code, sig, text)


@pytest.mark.every_python
@pytest.mark.parametrize("name", FOREIGN)
def test_api_always_frees_through_the_allocator_that_allocated(name, require_allocator):
    require_allocator(name)
    other = "libc"

    def attempt():
        counts = lambda n: shim.counts(alloc.load(n).ctx)  # noqa: E731
        with alloc.use(name):
            numpy_owned = [np.arange(100.0), np.concatenate([np.ones(5), np.zeros(5)])]
        mine0, other0 = counts(name), counts(other)  # the temporaries above are gone already
        block_owned = alloc.zeros(1000, allocator=name)
        block = alloc.owner(block_owned)
        # every way the API offers to change who frees the memory is refused
        for attr, value in (("allocator", other), ("_ctx", alloc.load(other).ctx)):
            try:
                setattr(block, attr, value)
            except AttributeError:
                pass
            else:
                raise AssertionError(f"Block.{attr} could be reassigned")
        # die while another allocator's handler is current
        with alloc.use(other):
            assert alloc.handler_name(numpy_owned[0]) == f"pyguts-{name}"
            del numpy_owned, block_owned, block
            gc.collect()
        mine1, other1 = counts(name), counts(other)
        assert mine1["handler_frees"] - mine0["handler_frees"] == 2, (mine0, mine1)
        assert mine1["owned_frees"] - mine0["owned_frees"] == 1, (mine0, mine1)
        assert other1["handler_frees"] == other0["handler_frees"], (other0, other1)
        assert other1["owned_frees"] == other0["owned_frees"], (other0, other1)
        # the allocator is still healthy after those frees
        again = alloc.zeros(1000, allocator=name)
        again[...] = 1.0
        assert again.sum() == 1000.0

    code, sig, text = _in_child(attempt)
    assert (code, sig) == (0, None), text
