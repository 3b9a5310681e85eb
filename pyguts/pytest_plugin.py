"""pytest plugin: run marked tests in a forked child, expect crashes by signal name, check for leaks.

Registered through the ``pytest11`` entry point ``pyguts``; it changes nothing, and imports neither
pyguts.isolation nor pyguts.leaks, unless a test carries one of its markers or the run passes
``--pyguts-isolate`` or ``--pyguts-leaks`` (``@pytest.mark.no_leaks``, its keywords and
``--pyguts-leaks-budget``: see :mod:`pyguts.leaks.marker`)::

    @pytest.mark.isolated(timeout=10)          # body runs in a forked child (pyguts.isolate)
    def test_force_write(): ...

    @pytest.mark.crashes("SIGSEGV")            # passes only if the body dies with SIGSEGV
    def test_null_read():
        ctypes.string_at(0)

Fixtures are set up and torn down in the pytest process; only the test body (``item.runtest()``)
runs in the child, so what the body changes in fixture objects does not come back. A failure in the
child is reported with pytest's own rendering of the child's traceback; a crash or a timeout
becomes a failure that shows the child's faulthandler traceback and its output.
Only pytest's public API is used (pytest-forked's use of internals broke on pytest 9.2).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pluggy
import pytest

from pyguts.errors import ChildCrashed

if TYPE_CHECKING:
    from pyguts.isolation import Outcome

# Inert until asked: pyguts.isolation and pyguts.leaks are imported inside the hooks of the tests
# that use them, so a pytest run in an environment with pyguts installed pays nothing for them.
LEAKS_MARKER = "no_leaks"
LEAKS_OPTION = "--pyguts-leaks"
#: The default time budget of every leak check (seconds), as an option and as an ini setting.
LEAKS_BUDGET_OPTION = "--pyguts-leaks-budget"
LEAKS_BUDGET_INI = "pyguts_leaks_budget"

MARKERS = (
    "no_leaks(check=True, budget=None, filter_fn=None, runs=None): run the test body repeatedly with "
    "pyguts.leaks.check and fail with its report when it leaks references, objects, memory or file "
    "descriptors; budget: seconds the check may take (default --pyguts-leaks-budget, else 2); "
    "filter_fn(evidence): True when a piece of evidence counts (the test passes when none does); "
    "check=False: leave the test unchecked, also under --pyguts-leaks",
    "isolated(timeout=None): run the test body in a forked child with pyguts.isolate; a crash, exit "
    "or timeout (seconds) becomes an ordinary failure showing the child's faulthandler traceback "
    "(also spelled pyguts_isolated, which is pyguts' even where pytest-isolated owns 'isolated')",
    "pyguts_isolated(timeout=None): pyguts' isolated marker under a name no other plugin uses",
    "pyguts_crashes(*signals, timeout=None): pyguts' crashes marker under a name no other plugin uses",
    "crashes(*signals, timeout=None): the test body runs in a forked child and must die with one of "
    "these signals (names like 'SIGSEGV' or numbers; SIGSEGV when none is given); it fails if the "
    "body returns, raises or dies otherwise, showing what happened",
)

#: Where this plugin keeps what the child reported until the report is made (one object per item).
_CHILD_REPORT = pytest.StashKey["_ChildReport"]()
#: Directories whose frames are machinery (pytest, pluggy, pyguts), hidden from child tracebacks.
_PYTEST_DIRS = tuple(os.path.dirname(os.path.dirname(m.__file__)) + os.sep + name for m, name in
                     ((pytest, "_pytest"), (pytest, "pytest"), (pluggy, "pluggy")) if m.__file__)
_MACHINERY_DIRS = _PYTEST_DIRS + (os.path.dirname(os.path.abspath(__file__)) + os.sep,)


@dataclass
class _Plan:
    timeout: float | None
    expect_signals: frozenset[int] | None  # None: plain isolation


@dataclass
class _ChildReport:
    longrepr: str | None = None
    sections: list[tuple[str, str]] = field(default_factory=list)
    skip_where: tuple[str, int] | None = None  # where the child called pytest.skip


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyguts")
    group.addoption("--pyguts-isolate", action="store_true", default=False,
                    help="run every test body in a forked child (as if marked @pytest.mark.isolated)")
    group.addoption(LEAKS_OPTION, action="store_true", default=False,
                    help="check every test for refcount, memory and fd leaks (as if marked no_leaks)")
    group.addoption(LEAKS_BUDGET_OPTION, default=None, metavar="SECONDS",
                    help="seconds each leak check may take unless its marker says budget= (default: the "
                         f"{LEAKS_BUDGET_INI} ini setting, else 2)")
    parser.addini(LEAKS_BUDGET_INI, "seconds each leak check may take unless its marker says budget= "
                  f"({LEAKS_BUDGET_OPTION} overrides it)", default=None)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    _leaks_budget(config)   # a bad value stops the run before the first test


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    marker = pyfuncitem.get_closest_marker(LEAKS_MARKER)
    if marker is None and not pyfuncitem.config.getoption(LEAKS_OPTION, default=False):
        return None
    from pyguts.leaks import marker as glue

    return glue.run(pyfuncitem, marker, _leaks_budget(pyfuncitem.config))


def _leaks_budget(config: pytest.Config) -> float | None:
    """The default budget of a leak check from the option or the ini setting (None: the check's own)."""
    value, where = config.getoption(LEAKS_BUDGET_OPTION, default=None), LEAKS_BUDGET_OPTION
    if value is None:
        value, where = config.getini(LEAKS_BUDGET_INI), LEAKS_BUDGET_INI
    if value is None or value == "":
        return None
    try:
        budget = float(value)
    except (TypeError, ValueError):
        budget = float("nan")
    if not 0 < budget < float("inf"):
        raise pytest.UsageError(f"{where} must be a number of seconds > 0, got {value!r}; "
                                f"e.g. {LEAKS_BUDGET_OPTION}=5")
    return budget


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    plan = _plan_for(item)
    if plan is None:
        return (yield)
    runtest = item.runtest
    item.runtest = lambda: _run_isolated(item, runtest, plan)  # type: ignore[method-assign]
    try:
        return (yield)
    finally:
        del item.runtest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    child = item.stash.get(_CHILD_REPORT, None)
    if child is not None and call.when == "call":
        del item.stash[_CHILD_REPORT]
        if report.failed and child.longrepr is not None:
            report.longrepr = child.longrepr
        if report.skipped and child.skip_where and isinstance(report.longrepr, tuple):
            report.longrepr = (*child.skip_where, report.longrepr[2])  # the child's line, not ours
        report.sections.extend(child.sections)
    return report


#: The pytest11 name of the published pytest-isolated plugin, whose marker is also called "isolated".
OTHER_ISOLATED_PLUGIN = "isolated"


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if _isolated_is_taken(config) and any(item.get_closest_marker("isolated") for item in items):
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            "pytest-isolated is installed and @pytest.mark.isolated is its marker here, so pyguts leaves "
            "it alone; for pyguts' forked isolation write @pytest.mark.pyguts_isolated"), stacklevel=2)


def _isolated_is_taken(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin(OTHER_ISOLATED_PLUGIN)


def _plan_for(item: pytest.Item) -> _Plan | None:
    crashes = item.get_closest_marker("pyguts_crashes") or item.get_closest_marker("crashes")
    isolated = item.get_closest_marker("pyguts_isolated")
    if isolated is None and not _isolated_is_taken(item.config):
        isolated = item.get_closest_marker("isolated")
    if crashes is not None:
        return _Plan(_timeout_of(crashes, isolated), _expected_signals(crashes.args or ("SIGSEGV",)))
    if isolated is not None:
        return _Plan(_timeout_of(isolated), None)
    if item.config.getoption("pyguts_isolate", False):
        return _Plan(None, None)
    return None


def _timeout_of(*marks: Any) -> float | None:
    for mark in marks:
        if mark is not None and mark.kwargs.get("timeout") is not None:
            return float(mark.kwargs["timeout"])
        if mark is not None and mark.name in ("isolated", "pyguts_isolated") and mark.args:
            return float(mark.args[0])
    return None


def _expected_signals(specs: tuple[Any, ...]) -> frozenset[int]:
    numbers = set()
    for spec in specs:
        if isinstance(spec, int):
            numbers.add(int(spec))
            continue
        name = str(spec).upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            numbers.add(int(signal.Signals[name]))
        except KeyError:
            known = ", ".join(sorted(s.name for s in signal.Signals))
            pytest.fail("@pytest.mark.crashes takes signal names or numbers, got %r; known names: %s"
                        % (spec, known), pytrace=False)
    return frozenset(numbers)


def _run_isolated(item: pytest.Item, runtest: Callable[[], None], plan: _Plan) -> None:
    """Parent side: fork, run the body, turn the child's outcome into pytest's terms."""
    from pyguts.isolation import isolate

    outcome = isolate(_child_body, item, runtest, timeout=plan.timeout)
    child = _ChildReport()
    item.stash[_CHILD_REPORT] = child
    if outcome.stdout:  # replay into pytest's capture: shown as "Captured stdout call"
        sys.stdout.write(outcome.stdout)
    if outcome.stderr:
        sys.stderr.write(outcome.stderr)
    if plan.expect_signals is not None:
        _judge_crash(outcome, plan.expect_signals, child)
        return
    if outcome.status == "ok":
        _raise_recorded(outcome.value, child)
        return
    child.longrepr = _describe(outcome)
    raise ChildCrashed(child.longrepr)


def _child_body(item: pytest.Item, runtest: Callable[[], None]) -> dict | None:
    """Child side: run the test; describe a failure as plain data (pytest's exceptions do not pickle)."""
    try:
        runtest()
    except (pytest.skip.Exception, pytest.xfail.Exception, pytest.fail.Exception,
            pytest.exit.Exception) as exc:
        kind = {pytest.skip.Exception: "skip", pytest.xfail.Exception: "xfail",
                pytest.exit.Exception: "exit"}.get(type(exc), "fail")
        return {"kind": kind, "msg": exc.msg, "pytrace": getattr(exc, "pytrace", True),
                "where": _caller_outside_pytest(exc), "longrepr": _render(item, exc)}
    except BaseException as exc:
        try:
            exc_pickle = pickle.dumps(exc)
        except BaseException:
            exc_pickle = None  # re-raised in the parent as an AssertionError naming the type
        try:
            message = str(exc)
        except BaseException as err:
            message = f"<str() of the {type(exc).__qualname__} raised {type(err).__qualname__}>"
        return {"kind": "error", "longrepr": _render(item, exc), "exc_pickle": exc_pickle,
                "type": type(exc).__qualname__, "message": message}
    return None


def _render(item: pytest.Item, exc: BaseException) -> str:
    """pytest's own failure text for ``exc`` (source lines, ``E`` lines, assertion details)."""
    try:
        return str(item.repr_failure(pytest.ExceptionInfo.from_exception(exc)))
    except Exception:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _caller_outside_pytest(exc: BaseException) -> tuple[str, int] | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_PYTEST_DIRS)]
    return (frames[-1].filename, frames[-1].lineno or 0) if frames else None


def _raise_recorded(record: dict | None, child: _ChildReport) -> None:
    """Re-raise, in the pytest process, what the child's test body raised."""
    if record is None:
        return
    kind = record["kind"]
    if kind == "skip":
        child.skip_where = record["where"]
        pytest.skip(record["msg"] or "")
    if kind == "xfail":
        pytest.xfail(record["msg"] or "")
    if kind == "exit":
        pytest.exit(record["msg"] or "")
    first = (record.get("message") or record.get("msg") or "").strip().splitlines()
    child.longrepr = "%s: %s  [in an isolated child]\n\n%s" % (
        record.get("type", "Failed"), first[0] if first else "", record["longrepr"])
    if kind == "fail":
        pytest.fail(record["msg"] or "", pytrace=record["pytrace"])
    from pyguts.isolation import load_pickle  # a load that crashes dies in a trial child, not here

    try:
        exc = load_pickle(record["exc_pickle"]) if record["exc_pickle"] is not None else None
    except Exception:
        exc = None
    if isinstance(exc, BaseException):
        raise exc
    raise AssertionError("%s: %s" % (record.get("type"), record.get("message")))


def _judge_crash(outcome: Outcome, expected: frozenset[int], child: _ChildReport) -> None:
    from pyguts.isolation import signal_name

    names = " or ".join(sorted(signal_name(n) for n in expected))
    if outcome.status == "crashed" and outcome.signal in expected:
        child.sections.append(("pyguts expected crash (%s)" % outcome.signal_name,
                               _trim_fault(outcome.fault_traceback) or "(no faulthandler output)"))
        return
    record = outcome.value if outcome.status == "ok" else None
    if isinstance(record, dict) and record["kind"] in ("skip", "xfail", "exit"):
        _raise_recorded(record, child)
    if outcome.status == "ok":
        if record is None:
            got = "the test body returned normally"
        else:
            got = "the test body raised instead:\n\n" + record["longrepr"]
    else:
        got = _describe(outcome)
    child.longrepr = "expected the test body to die with %s; %s" % (names, got)
    raise ChildCrashed(child.longrepr)


def _describe(outcome: Outcome) -> str:
    text = outcome.describe()
    fault = outcome.fault_traceback.rstrip()
    return text.replace(fault, _trim_fault(fault)) if fault else text


def _trim_fault(text: str) -> str:
    """The child's faulthandler text without the frames of pytest, pluggy and pyguts themselves."""
    kept, hidden = [], 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith('File "') and stripped[6:].startswith(_MACHINERY_DIRS + ("<frozen ",)):
            hidden += 1
            continue
        if hidden and not stripped.startswith('File "'):
            kept.append("  (%d pytest/pyguts frames hidden)" % hidden)
            hidden = 0
        kept.append(line)
    if hidden:
        kept.append("  (%d pytest/pyguts frames hidden)" % hidden)
    return "\n".join(kept)
