"""Shared fixtures of the integration tests."""

from __future__ import annotations

import needs  # tests/needs.py
import pytest


@pytest.fixture
def require_allocator():
    """Call with an allocator name: skips (``needs_<name>``) where its library is not installed here,
    or (``needs_static_tls``) where Debian's jemalloc lacks the start-up fix; fails on anything else."""
    return needs.load_allocator
