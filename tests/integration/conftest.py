"""Shared fixtures of the integration tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def require_allocator():
    """Call with an allocator name: skips (needs_<name>) when it cannot load here — but fails when
    the static-TLS fix is in the environment, since then jemalloc must load."""
    import pyguts.alloc as alloc
    from pyguts.errors import AllocatorUnavailable

    def require(name: str) -> None:
        try:
            alloc.load(name)
        except AllocatorUnavailable as exc:
            if alloc.STATIC_TLS_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
                raise
            pytest.skip(f"needs_{name}: {exc}")

    return require
