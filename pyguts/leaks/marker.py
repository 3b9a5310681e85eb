"""pytest side of :mod:`pyguts.leaks`: what ``@pytest.mark.no_leaks`` and ``--pyguts-leaks`` do.

:mod:`pyguts.pytest_plugin` registers the marker and the options and calls :func:`run` for a test
that asks: its body is run by :func:`pyguts.leaks.check` (warm-up, then windows of doubling call
counts, hundreds to thousands of calls within the time budget), with the same fixture values each
time, so it must be repeatable; fixtures are set up once. The test fails with the leak report when
the body leaks. The marker's keywords, all optional::

    @pytest.mark.no_leaks(budget=5)            # seconds the check may take (default 2, or
    def test_parse_does_not_leak():            # --pyguts-leaks-budget / pyguts_leaks_budget)
        parse(b"...")

    @pytest.mark.no_leaks(check=False)         # not checked, even under --pyguts-leaks
    def test_fills_a_cache(): ...

    @pytest.mark.no_leaks(filter_fn=lambda e: e.name != "functools._lru_list_elem")
    def test_cached_lookup(): ...

``filter_fn`` (like pytest-memray's) is called with each piece of :class:`Evidence` of a leak and
returns True when it counts; the test passes when none counts. ``runs=N`` is passed to the check.
The closest marker wins (a test's own over its class's and module's).
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest

from pyguts import leaks

MARKER = "no_leaks"
#: The marker's keywords and what each must be (for the message that refuses others).
KEYWORDS = {"check": "True or False", "budget": "a number of seconds > 0", "runs": "an int >= 2",
            "filter_fn": "a callable taking an Evidence and returning True when it counts"}
#: Units of signals that count memory: the gc types and allocation sites of the report name where
#: that memory went, so they stand for it when there are any.
_MEMORY_UNITS = ("block", "B")


@dataclass(frozen=True)
class Evidence:
    """One piece of a leak report's evidence, as ``filter_fn`` sees it.

    ``kind`` is "object" (an existing object whose refcount grew: ``name`` is its type, ``repr``
    its repr), "type" (a gc-tracked type whose new objects were kept: ``name`` is the type), "site"
    (where kept memory was allocated: ``name`` is "file:line") or "signal" (growth that names no
    thing: fds, or memory and total references when nothing more specific was found).

    >>> str(Evidence("site", "/src/cache.py:12", 54.0, "B"))
    'site /src/cache.py:12: +54 B per call'
    """

    kind: str
    name: str
    per_call: float
    unit: str
    repr: str = ""

    def __str__(self) -> str:
        thing = f"{self.kind} {self.name}" + (f" {self.repr}" if self.repr else "")
        return f"{thing}: {_fmt(self.per_call)} {self.unit} per call"


def evidence_of(report) -> list[Evidence]:
    """Every piece of evidence of ``report`` (a :class:`pyguts.leaks.LeakReport`) a filter can set aside.

    Per-object and per-type signals are their objects and types. A leaking signal that counts
    memory (blocks, bytes) is evidence of its own only when the report names no gc type and no
    site; a total of references ("refs:all", a debug build's "totalrefs") only when it names
    nothing at all. Signals that never decide alone (resident bytes) are not evidence.
    """
    found = [Evidence("object", g.type_name, g.growth_per_call, "ref", g.repr) for g in report.grown_objects]
    found += [Evidence("type", name, per_call, "object") for name, per_call in report.grown_types]
    found += [Evidence("site", s.location, s.nbytes_per_call, "B") for s in report.sites]
    supporting = getattr(leaks, "SUPPORTING", ())
    for s in report.signals:
        if s.state != "leak" or s.name.startswith(("refcount:", "gc:")) or s.name in supporting:
            continue
        if s.unit in _MEMORY_UNITS:
            named = report.grown_types or report.sites
        elif s.unit == "ref":
            named = report.grown_objects or report.grown_types or report.sites
        else:
            named = ()
        if not named:
            found.append(Evidence("signal", s.name, s.per_call, s.unit))
    return found


def counted(evidence: list[Evidence], filter_fn: Callable | None) -> list[Evidence]:
    """What still counts after ``filter_fn``. Kept memory is named twice, by its gc types and by its
    allocation sites: it counts while both still hold something that counts, so a filter of either
    kind ("ignore lists", "ignore allocations from cache.py") sets it aside.

    >>> found = [Evidence("type", "list", 1, "object"), Evidence("site", "cache.py:3", 56, "B")]
    >>> counted(found, lambda e: e.name != "list")
    []
    >>> [e.kind for e in counted(found, None)]
    ['type', 'site']
    """
    if filter_fn is None:
        return list(evidence)
    kept = [e for e in evidence if filter_fn(e)]
    views = [kind for kind in ("type", "site") if any(e.kind == kind for e in evidence)]
    if len(views) == 2 and not all(any(e.kind == kind for e in kept) for kind in views):
        kept = [e for e in kept if e.kind not in views]
    return kept


def options(marker, nodeid: str) -> dict:
    """The marker's keywords, checked (``marker`` None: the defaults); a bad one fails the test."""
    if marker is None:
        return {}
    where = f"@pytest.mark.{MARKER} on {nodeid}"
    takes = ", ".join(f"{name}= ({what})" for name, what in KEYWORDS.items())
    if marker.args:
        pytest.fail(f"{where} takes keywords only ({takes}), got arguments {marker.args!r}; to leave a test "
                    f"unchecked write @pytest.mark.{MARKER}(check=False)", pytrace=False)
    unknown = sorted(set(marker.kwargs) - set(KEYWORDS))
    if unknown:
        pytest.fail(f"{where} got unknown keywords {', '.join(unknown)}; it takes {takes}", pytrace=False)
    kw = dict(marker.kwargs)
    bad = []
    if not isinstance(kw.get("check", True), bool):
        bad.append("check")
    budget = kw.get("budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not budget > 0 or not math.isfinite(budget)):
        bad.append("budget")
    runs = kw.get("runs")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 2):
        bad.append("runs")
    if kw.get("filter_fn") is not None and not callable(kw["filter_fn"]):
        bad.append("filter_fn")
    if bad:
        got = ", ".join(f"{name}={kw[name]!r} must be {KEYWORDS[name]}" for name in bad)
        pytest.fail(f"{where}: {got}; e.g. @pytest.mark.{MARKER}(budget=5)", pytrace=False)
    return kw


def run(pyfuncitem: pytest.Function, marker, default_budget: float | None = None) -> bool | None:
    """Run the test body under the leak check (``marker``: its closest no_leaks mark, or None under
    ``--pyguts-leaks``); True when it ran, None to let pytest call the body itself (unchecked)."""
    kw = options(marker, pyfuncitem.nodeid)
    if not kw.get("check", True):
        return None
    testfunction = pyfuncitem.obj
    if inspect.iscoroutinefunction(testfunction) or inspect.isasyncgenfunction(testfunction):
        return None   # an async test's body is a coroutine: let its own plugin run it, unchecked
    names = inspect.signature(testfunction).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names if name in pyfuncitem.funcargs}

    def test_body():   # not check(fn, **kwargs): a fixture called "runs" or "watch" must not collide
        testfunction(**kwargs)

    test_body.__module__, test_body.__qualname__ = testfunction.__module__, testfunction.__qualname__
    budget = default_budget if kw.get("budget") is None else kw["budget"]
    report = leaks.check(test_body, runs=kw.get("runs"), watch=tuple(kwargs.values()), budget=budget)
    if report.leaking:
        _judge(report, kw.get("filter_fn"))
    elif not report.decided:
        budget = leaks.DEFAULT_BUDGET_S if budget is None else budget
        warnings.warn(pytest.PytestWarning(
            f"{pyfuncitem.nodeid}: the leak check found no leak but could not decide within its budget of "
            f"{budget:g} s ({report.calls} calls); raise it with @pytest.mark.{MARKER}(budget=...) or "
            f"--pyguts-leaks-budget"))
    return True


def _judge(report, filter_fn: Callable | None) -> None:
    """Fail the test unless ``filter_fn`` sets aside all the evidence of the leak in ``report``."""
    evidence = evidence_of(report)
    left = counted(evidence, filter_fn)
    if filter_fn is not None and evidence and not left:
        return
    headline = getattr(report, "evidence", "") if filter_fn is None else "; ".join(map(str, left))
    lines = [f"leaks ({', '.join(report.kinds)}): {headline}"]
    if left:
        lines.append(f"evidence that counts (@pytest.mark.{MARKER}(filter_fn=...) is called with each; the "
                     f"test passes when it returns False for all):")
        lines += [f"  {e}" for e in left]
    set_aside = [e for e in evidence if all(e is not kept for kept in left)]
    if set_aside:
        lines.append("set aside by filter_fn:")
        lines += [f"  {e}" for e in set_aside]
    lines += ["", str(report)]
    pytest.fail("\n".join(lines), pytrace=False)


def _fmt(x: float) -> str:
    return f"{x:+.3g}" if x != int(x) else f"{int(x):+d}"
