"""pytest side of :mod:`pyguts.leaks`: ``@pytest.mark.no_leaks`` and ``--pyguts-leaks``.

A test marked ``@pytest.mark.no_leaks`` (optionally ``runs=N``) has its body run by
:func:`pyguts.leaks.check` and fails with the leak report when the body leaks; ``--pyguts-leaks``
marks every test. Inert otherwise. Only pytest's public API is used (hooks, markers, ``pytest.fail``).
The body runs many times (warm-up and rounds, ~30-100 calls) with the same fixture values, so it
must be repeatable; fixtures are set up once. Async tests are left to their own plugin, unchecked.

Standalone use: ``pytest -p pyguts._pytest_leaks``. Example test::

    @pytest.mark.no_leaks(runs=4)
    def test_parse_does_not_leak():
        parse(b"...")
"""

from __future__ import annotations

import inspect

import pytest

MARKER = "no_leaks"
OPTION = "--pyguts-leaks"
_MARKER_HELP = ("no_leaks(runs=None): run the test body repeatedly with pyguts.leaks.check and fail "
                "with its report when it leaks references, objects, memory or file descriptors")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyguts")
    group.addoption(OPTION, action="store_true", default=False,
                    help="check every test for refcount, memory and fd leaks (as if marked no_leaks)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None and not pyfuncitem.config.getoption(OPTION, default=False):
        return None
    testfunction = pyfuncitem.obj
    if inspect.iscoroutinefunction(testfunction) or inspect.isasyncgenfunction(testfunction):
        return None   # an async test's body is a coroutine: let its own plugin run it, unchecked
    runs = marker.kwargs.get("runs") if marker is not None else None
    if marker is not None and (marker.args or set(marker.kwargs) - {"runs"}):
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes only runs=N, got args {marker.args!r} and "
                                f"kwargs {marker.kwargs!r} on {pyfuncitem.nodeid}; write "
                                f"@pytest.mark.{MARKER}(runs=3)")
    from pyguts import leaks

    names = inspect.signature(testfunction).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names if name in pyfuncitem.funcargs}

    def test_body():   # not check(fn, **kwargs): a fixture called "runs" or "watch" must not collide
        testfunction(**kwargs)

    test_body.__module__, test_body.__qualname__ = testfunction.__module__, testfunction.__qualname__
    report = leaks.check(test_body, runs=runs, watch=tuple(kwargs.values()))
    if report.leaking:
        pytest.fail(f"{pyfuncitem.nodeid} leaks:\n{report}", pytrace=False)
    return True
