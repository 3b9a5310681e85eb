"""Reference-count helpers shared by the tests of arrays made in C."""

from __future__ import annotations

import sys
from typing import Callable


def total_growth(make: Callable[[], object], calls: int = 1000) -> int:
    """How much the debug build's total refcount (sys.gettotalrefcount) grew over ``calls`` calls of
    ``make`` (0 on a release build). Not 0 for numpy's own arrays: np.empty grows it by one per array
    on 3.14/3.15 debug builds, so pyguts' arrays are held to what numpy's cost, not to 0."""
    total = getattr(sys, "gettotalrefcount", None)
    if total is None:
        return 0
    for _ in range(10):
        make()
    before = total()
    for _ in range(calls):
        make()
    return total() - before
