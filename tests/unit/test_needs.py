"""tests/needs.py, the probes behind the suite's ``needs_<thing>`` skips: they must say no when a thing is missing."""

from __future__ import annotations

import doctest

import needs  # tests/needs.py
import pytest


def test_docstring_examples_run():
    result = doctest.testmod(needs)
    assert result.attempted > 0 and result.failed == 0


def test_a_missing_library_is_named_with_the_loaders_words():
    assert needs.unloadable("libc.so.6", "m") == ""   # a soname, then a bare name found as the linker would
    assert "not found by ctypes.util.find_library('pyguts-no-such-lib')" in needs.unloadable("pyguts-no-such-lib")
    # The first that fails is reported, whatever loaded before it.
    assert needs.unloadable("libc.so.6", "libpyguts-nope.so.1").startswith("libpyguts-nope.so.1: cannot open")


def test_linking_needs_the_library_where_the_compiler_looks():
    if needs.unlinkable("c").startswith("no C compiler"):
        pytest.skip("needs_cc: no C compiler on PATH (apt-get install gcc)")
    assert needs.unlinkable("c") == ""   # libc6-dev's libc.so, which every C build links
    assert needs.unlinkable("pyguts-no-such-lib").endswith("finds no libpyguts-no-such-lib.so to link with "
                                                          "-lpyguts-no-such-lib")


def test_a_missing_allocator_library_is_a_skip_and_any_other_refusal_a_failure(monkeypatch):
    from pyguts.alloc import registry
    from pyguts.errors import AllocatorUnavailable

    assert needs.allocator_reason("libc") == "" and needs.allocator_reason("mmap") == ""
    refused = AllocatorUnavailable("allocator 'libc' is broken here")
    assert needs.refusal_reason("libc", refused) == ""   # libc is installed: a refusal is a bug
    monkeypatch.setattr(needs, "unloadable", lambda *names: f"{names[0]}: cannot open shared object file")
    assert needs.allocator_reason("mimalloc") == (
        "needs_mimalloc: libmimalloc.so.3: cannot open shared object file; libmimalloc.so.2: cannot open "
        f"shared object file ({registry.SPECS['mimalloc'].install_hint()})")
    assert needs.refusal_reason("mimalloc", refused).startswith("needs_mimalloc: ")
