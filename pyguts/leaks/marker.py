"""pytest side of :mod:`pyguts.leaks`: what ``@pytest.mark.no_leaks`` and ``--pyguts-leaks`` do.

:mod:`pyguts.pytest_plugin` registers the marker and the option and calls :func:`run` for a test
that asks: its body is run by :func:`pyguts.leaks.check`, and the test fails with the leak report
when the body leaks. The body runs many times (warm-up and rounds, ~30-100 calls) with the same
fixture values, so it must be repeatable; fixtures are set up once. Example test::

    @pytest.mark.no_leaks(runs=4)
    def test_parse_does_not_leak():
        parse(b"...")
"""

from __future__ import annotations

import inspect

import pytest

from pyguts.leaks import check

MARKER = "no_leaks"


def run(pyfuncitem: pytest.Function, marker) -> bool | None:
    """Run the test body under the leak check (``marker`` is its no_leaks mark, or None under
    ``--pyguts-leaks``); True when it ran, None to let pytest call an async body itself."""
    testfunction = pyfuncitem.obj
    if inspect.iscoroutinefunction(testfunction) or inspect.isasyncgenfunction(testfunction):
        return None   # an async test's body is a coroutine: let its own plugin run it, unchecked
    runs = marker.kwargs.get("runs") if marker is not None else None
    if marker is not None and (marker.args or set(marker.kwargs) - {"runs"}):
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes only runs=N, got args {marker.args!r} and "
                                f"kwargs {marker.kwargs!r} on {pyfuncitem.nodeid}; write "
                                f"@pytest.mark.{MARKER}(runs=3)")
    names = inspect.signature(testfunction).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names if name in pyfuncitem.funcargs}

    def test_body():   # not check(fn, **kwargs): a fixture called "runs" or "watch" must not collide
        testfunction(**kwargs)

    test_body.__module__, test_body.__qualname__ = testfunction.__module__, testfunction.__qualname__
    report = check(test_body, runs=runs, watch=tuple(kwargs.values()))
    if report.leaking:
        pytest.fail(f"{pyfuncitem.nodeid} leaks:\n{report}", pytrace=False)
    return True
