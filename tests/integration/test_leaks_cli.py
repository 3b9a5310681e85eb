"""Front ends of pyguts.leaks: ``pyguts leaks MODULE:FUNCTION`` and ``@pytest.mark.no_leaks`` / ``--pyguts-leaks``.

The CLI runs in-process through its own ``register``/``run``, and as a real program (``python -m
pyguts``) where what is tested is the process's: progress on stderr, Ctrl-C (a real SIGINT), a
reader that closes the pipe. The marker runs through ``pytester`` with the plugin from its pytest11
entry point, once under pytest-xdist (``-n 2``). Every test runs with the other core busy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from pyguts.alloc.registry import static_tls_environ
from pyguts.cli import leaks as cli_leaks

pytest_plugins = ["pytester"]

HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_leaks_corpus_tests", HERE / "test_leaks_corpus.py")
_corpus_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_corpus_tests)

# Verdicts differ by version (immortal objects, freelists): the tests that judge run on every CPython;
# what the CLI does as a process (progress, Ctrl-C, closed pipes) does not, and runs on the default one.
pytestmark = pytest.mark.usefixtures("cpu_hog")
every_python = pytest.mark.every_python

#: Seconds a child CLI run may take before the test gives up on it (a busy machine starts slowly).
CHILD_TIMEOUT_S = 120
#: A progress line on stderr.
PROGRESS_LINE = re.compile(r"^pyguts leaks: \S+: \d+ calls in \d+\.\d s of a \S+ s budget")

#: Targets for the CLI, written into a module of a temporary directory.
TARGETS = '''
import os, sys, time
KEPT = []

def leak():
    KEPT.append([0])

def clean():
    len("x")

def boom():
    raise RuntimeError("broken on purpose")

def slow_leak():
    time.sleep(0.1)
    KEPT.append([0])

def slow_until_told():
    """Slow and leaking; once the file named by $CLI_BLOCK exists, a call sleeps until interrupted."""
    time.sleep(0.1)
    KEPT.append([0])
    if os.path.exists(os.environ["CLI_BLOCK"]):
        time.sleep(3600)

def blocks_at_once():
    """Says it started (creates $CLI_STARTED), then sleeps until interrupted: still warming up."""
    open(os.environ["CLI_STARTED"], "w").close()
    time.sleep(3600)
'''


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> pathlib.Path:
    """A directory holding the compiled leakcorpus module (importable as ``leakcorpus``)."""
    dest = tmp_path_factory.mktemp("leakcorpus_cli")
    _corpus_tests.build_leakcorpus(dest)
    return dest


@pytest.fixture
def targets(tmp_path, monkeypatch) -> pathlib.Path:
    """A directory with the module ``clitargets`` (TARGETS), importable in-process and by children."""
    (tmp_path / "clitargets.py").write_text(TARGETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "clitargets", raising=False)
    return tmp_path


def _main(argv: list[str]) -> int:
    """The subcommand under a parser of our own, as pyguts.cli wires it."""
    parser = argparse.ArgumentParser(prog="pyguts")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_leaks.register(sub).set_defaults(run=cli_leaks.run)
    args = parser.parse_args(argv)
    return args.run(args)


def _child_env(*dirs: pathlib.Path, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, dirs), os.environ.get("PYTHONPATH", "")]),
            **extra}


def _pyguts(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyguts", "leaks", *args]


# --- the CLI in-process ---------------------------------------------------------------------------

# target, exit status, text the output must hold
CLI_CASES = [
    ("leakcorpus:leak_list", 1, "LEAKS (container)"),
    ("leakcorpus:leak_fd", 1, "LEAKS (fd)"),
    ("leakcorpus:leak_raw_malloc", 1, "native-memory"),
    ("leakcorpus:clean_fd", 0, "no leak found"),
    ("leakcorpus:clean_containers", 0, "no leak found"),
]


@every_python
@pytest.mark.parametrize("target, status, text", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_in_process(corpus_dir, monkeypatch, capsys, target, status, text):
    monkeypatch.syspath_prepend(str(corpus_dir))
    monkeypatch.delitem(sys.modules, "leakcorpus", raising=False)
    assert _main(["leaks", target]) == status
    out = capsys.readouterr().out
    assert text in out and target.replace(":", ".") in out


@every_python
def test_cli_runs_option_sets_the_windows(targets, capsys):
    """A leak needs ``runs`` consecutive growing windows: 9 is more than the default run measures."""
    assert _main(["leaks", "clitargets:leak", "--json"]) == 1
    default = json.loads(capsys.readouterr().out)
    assert _main(["leaks", "clitargets:leak", "--json", "--runs", "9"]) == 1
    longer = json.loads(capsys.readouterr().out)
    assert len(default["windows"]) < 9 <= len(longer["windows"]), (default["windows"], longer["windows"])


@pytest.mark.parametrize("argv, message", [
    (["leaks", "no_colon_here"], "must be MODULE:FUNCTION"),
    (["leaks", "os:no_such_function"], "no 'no_such_function'"),
    (["leaks", "no_such_module_xyz:f"], "No module named 'no_such_module_xyz'"),
    (["leaks", "os:sep"], "must be callable"),
    (["leaks", "os:getpid", "--runs", "1"], "runs must be at least 2"),
    (["leaks", "os:getpid", "--budget", "0"], "--budget must be a number of seconds > 0, got 0.0"),
    (["leaks", "os:getpid", "--budget", "inf"], "--budget must be a number of seconds > 0, got inf"),
    (["leaks", "os:abort_not"], "no 'abort_not'"),
])
def test_cli_refuses_bad_targets_with_status_2(argv, message, capsys):
    assert _main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert _main([*argv, "--json"]) == 2
    captured = capsys.readouterr()
    assert message in json.loads(captured.out)["error"]


def test_cli_reports_a_raising_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "raiser.py").write_text("def f():\n    raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _main(["leaks", "raiser:f"]) == 2
    assert "RuntimeError: broken on purpose" in capsys.readouterr().err


def test_cli_a_module_that_fails_to_import_is_status_2_not_a_leak(tmp_path, monkeypatch, capsys):
    """Status 1 means "leaks": an import that raises something other than ImportError is no verdict."""
    (tmp_path / "badimport.py").write_text("raise RuntimeError('fails at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "badimport", raising=False)
    assert _main(["leaks", "badimport:f", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": "importing badimport:f failed: RuntimeError: fails at import"}


@every_python
def test_cli_json_is_the_reports_dict(targets, capsys):
    assert _main(["leaks", "clitargets:leak", "--json"]) == 1
    leaking = json.loads(capsys.readouterr().out)
    assert leaking["leaking"] is True and leaking["decided"] is True and "container" in leaking["kinds"]
    assert leaking["function"] == "clitargets.leak" and ["list", 1.0] in leaking["grown_types"]
    assert "gc:list" in leaking["evidence"]
    assert _main(["leaks", "clitargets:clean", "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["leaking"] is False and clean["decided"] is True and clean["kinds"] == []
    assert _main(["leaks", "clitargets:boom", "--json"]) == 2
    assert json.loads(capsys.readouterr().out) == {
        "error": "checking clitargets:boom failed: RuntimeError: broken on purpose"}


def test_cli_json_has_no_nan():
    """Strict JSON has no NaN or Infinity: such floats become null."""
    text = cli_leaks._json({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}})
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": {"d": None}}
    assert "NaN" not in text and "Infinity" not in text


@every_python
def test_cli_budget_option_reaches_the_check(targets, capsys):
    """A slow leak (0.1 s a call) cannot be decided in 0.5 s: the report says so, naming that budget."""
    assert _main(["leaks", "clitargets:slow_leak", "--budget", "0.5", "--warmup", "1", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["decided"] is False
    assert any("budget of 0.5 s" in note for note in report["notes"]), report["notes"]
    assert "no verdict within the budget of 0.5 s; raise it, e.g. --budget 2" in captured.err


# --- the CLI as a process -------------------------------------------------------------------------

def test_python_dash_m_pyguts_leaks(corpus_dir):
    """Through the real entry: ``python -m pyguts leaks`` (needs "leaks" in pyguts.cli.COMMANDS)."""
    env = _child_env(corpus_dir)
    leaking = subprocess.run(_pyguts("leakcorpus:leak_fd"), capture_output=True, text=True, env=env,
                             timeout=CHILD_TIMEOUT_S)
    assert leaking.returncode == 1, leaking.stdout + leaking.stderr
    assert "LEAKS (fd)" in leaking.stdout
    clean = subprocess.run(_pyguts("leakcorpus:clean_fd", "--runs", "4"), capture_output=True, text=True,
                           env=env, timeout=CHILD_TIMEOUT_S)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no leak found" in clean.stdout


def test_progress_on_stderr_only_past_a_second(targets):
    """A check of well under a second prints no progress; a longer one a line a second, at most."""
    quick = subprocess.run(_pyguts("clitargets:clean", "--json"), capture_output=True, text=True,
                           env=_child_env(targets), timeout=CHILD_TIMEOUT_S)
    assert quick.returncode == 0, quick.stderr
    assert json.loads(quick.stdout)["elapsed_ms"] < 1000 and quick.stderr == ""
    slow = subprocess.run(_pyguts("clitargets:slow_leak", "--warmup", "1", "--budget", "4", "--json"),
                          capture_output=True, text=True, env=_child_env(targets), timeout=CHILD_TIMEOUT_S)
    assert slow.returncode in (0, 1), slow.stderr
    elapsed_s = json.loads(slow.stdout)["elapsed_ms"] / 1000
    progress = [line for line in slow.stderr.splitlines() if PROGRESS_LINE.match(line)]
    assert elapsed_s > 1.5, elapsed_s   # 0.1 s a call, windows of 1, 2, 4, 8 ... calls within 4 s
    assert 1 <= len(progress) <= elapsed_s + 1, slow.stderr
    assert "clitargets.slow_leak" in progress[0] and "of a 4 s budget" in progress[0]


def _interruptible(args: list, env: dict) -> subprocess.Popen:
    """Start ``args`` with SIGINT at its default, as from a terminal: in a test run started in the
    background of a non-interactive shell SIGINT is ignored, and a child keeps that (Python then
    never installs its KeyboardInterrupt handler)."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_prints_the_partial_report_and_exits_130(targets, as_json):
    """SIGINT once the first progress line is out: the partial report on stdout, status 130."""
    block = targets / "block"
    args = _pyguts("clitargets:slow_until_told", "--warmup", "1", "--budget", "600", *(["--json"] * as_json))
    proc = _interruptible(args, _child_env(targets, CLI_BLOCK=str(block)))
    try:
        first = proc.stderr.readline()
        assert PROGRESS_LINE.match(first), first + proc.stderr.read()
        block.touch()   # from now on a call blocks, so the check is surely still running when SIGINT comes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    if as_json:
        report = json.loads(out)
        assert report["interrupted"] is True and report["decided"] is False
        assert report["function"] == "clitargets.slow_until_told" and report["calls"] >= 2
    else:
        assert out.startswith("pyguts leaks: interrupted (Ctrl-C) after "), out
        assert "the partial report follows, not a verdict" in out and "clitargets.slow_until_told" in out


def test_ctrl_c_before_any_window_says_there_is_no_report(targets):
    started = targets / "started"
    proc = _interruptible(_pyguts("clitargets:blocks_at_once"), _child_env(targets, CLI_STARTED=str(started)))
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, out + err
    assert out == "pyguts leaks: interrupted (Ctrl-C) before the first measuring window: no partial report yet\n"
    assert "Traceback" not in err


@pytest.mark.parametrize("target, status, as_json", [("clitargets:leak", 1, False), ("clitargets:leak", 1, True),
                                                     ("clitargets:clean", 0, False)], ids=["leak", "leak-json", "clean"])
def test_status_stays_when_the_reader_has_gone(targets, target, status, as_json):
    """The read end is closed before the report is written: the write fails with EPIPE, the status
    is still the verdict's, and nothing is said about the broken pipe."""
    proc = subprocess.Popen(_pyguts(target, *(["--json"] * as_json)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_child_env(targets))
    proc.stdout.close()
    try:
        with proc.stderr:
            err = proc.stderr.read().decode()
        proc.wait(CHILD_TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == status, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize("shell, first_line", [
    ("{cmd} | head -1", "pyguts.leaks: clitargets.leak LEAKS (container): "),
    ("{cmd} --json | head -1", '{"function": "clitargets.leak", "leaking": true, '),
    ("exec >&-; {cmd}", ""),   # started with stdout closed
])
def test_status_1_through_a_shell_pipeline(targets, shell, first_line):
    cmd = " ".join(map(_quote, _pyguts("clitargets:leak")))
    # With the static-TLS fix in the environment no restart (pyguts.cli.main) comes before the command.
    env = static_tls_environ(_child_env(targets))
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {shell.format(cmd=cmd)}"], capture_output=True,
                          text=True, env=env, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(first_line) and done.stdout.count("\n") == (1 if first_line else 0), done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


# --- pytest marker ------------------------------------------------------------------------------

MARKED_TESTS = '''
import os
import pytest

KEPT = []

class Payload:
    pass

PAYLOAD = Payload()

@pytest.mark.no_leaks
def test_keeps_a_reference():
    KEPT.append(PAYLOAD)

@pytest.mark.no_leaks(runs=4)
def test_clean_with_runs():
    assert sum([1, 2, 3]) == 6

@pytest.fixture
def watch():
    return "a fixture named like a parameter of pyguts.leaks.check"

@pytest.mark.no_leaks
def test_clean_with_fixtures(tmp_path, request, watch):
    assert tmp_path.is_dir() and request.node is not None and watch.startswith("a fixture")

def test_unmarked_leak():
    KEPT.append([0])

@pytest.mark.no_leaks
def test_fails_on_its_own():
    assert 1 == 2, "the body's own failure"
'''


def _run_marked(pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_marked=source)
    return pytester.runpytest("--strict-markers", "-p", "no:cacheprovider", *args)


@every_python
def test_marker_fails_leaking_tests_only(pytester):
    result = _run_marked(pytester, MARKED_TESTS)
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*test_keeps_a_reference*",
        "leaks (reference): *test_marked.Payload at 0x* +1 ref per call*",
        "evidence that counts*",
        "  object test_marked.Payload <test_marked.Payload object at 0x*>: +1 ref per call",
        "*LEAKS (reference)*",
    ])
    result.stdout.fnmatch_lines(["*the body's own failure*"])
    result.stdout.fnmatch_lines(["FAILED *test_keeps_a_reference - Failed: leaks (ref*"])
    assert "test_clean_with_runs" not in result.stdout.str()


@every_python
def test_option_checks_every_test(pytester):
    result = _run_marked(pytester, MARKED_TESTS, "--pyguts-leaks")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(["*test_unmarked_leak*", "leaks (container): *gc:list +1 object per call*",
                                 "  type list: +1 object per call", "*LEAKS (container)*"])


OPT_OUT_TESTS = '''
import pytest

pytestmark = pytest.mark.no_leaks
KEPT = []

@pytest.mark.no_leaks(check=False)
def test_unchecked_in_a_checked_module():
    KEPT.append([0])

def test_checked_by_the_module_mark():
    KEPT.append([0])

@pytest.mark.no_leaks(check=False)
class TestUnchecked:
    def test_unchecked_by_its_class(self):
        KEPT.append([0])

    @pytest.mark.no_leaks
    def test_checked_again(self):
        KEPT.append([0])
'''


@every_python
@pytest.mark.parametrize("option", [(), ("--pyguts-leaks",)], ids=["marked", "option"])
def test_check_false_leaves_a_test_unchecked(pytester, option):
    """The closest no_leaks mark wins: a test's own over its class's over its module's, and over the option."""
    result = _run_marked(pytester, OPT_OUT_TESTS, *option)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines_random(["FAILED *::test_checked_by_the_module_mark - *",
                                        "FAILED *::TestUnchecked::test_checked_again - *"])


FILTERED_TESTS = '''
import os
import pytest

KEPT = []
HERE = os.path.abspath(__file__)

class Payload:
    pass

PAYLOAD = Payload()

def not_from_this_file(evidence):
    return not evidence.name.startswith(HERE + ":")

@pytest.mark.no_leaks(filter_fn=lambda e: e.name != "list")
def test_list_growth_set_aside_by_type():
    KEPT.append([0])

@pytest.mark.no_leaks(filter_fn=not_from_this_file)
def test_str_growth_set_aside_by_file():
    KEPT.append(str(len(KEPT)) * 3)

@pytest.mark.no_leaks(filter_fn=lambda e: "Payload" not in e.repr)
def test_reference_set_aside_by_repr():
    KEPT.append(PAYLOAD)

@pytest.mark.no_leaks(filter_fn=lambda e: True)
def test_everything_counts():
    KEPT.append([0])

@pytest.mark.no_leaks(filter_fn=lambda e: "Payload" not in e.repr)
def test_only_part_set_aside():
    KEPT.append(PAYLOAD)
    KEPT.append([0])

@pytest.mark.no_leaks(filter_fn=lambda e: e.kind != "signal")
def test_an_fd_is_a_signal():
    os.open(os.devnull, os.O_RDONLY)
'''


@every_python
def test_filter_fn_decides_which_evidence_counts(pytester):
    result = _run_marked(pytester, FILTERED_TESTS)
    result.assert_outcomes(passed=4, failed=2)
    out = result.stdout.str()
    for name in ("test_list_growth_set_aside_by_type", "test_str_growth_set_aside_by_file",
                 "test_reference_set_aside_by_repr", "test_an_fd_is_a_signal"):
        assert f"FAILED test_marked.py::{name}" not in out, out
    result.stdout.fnmatch_lines([
        "*_ test_everything_counts _*",
        "leaks (container): type list: +1 object per call; site *test_marked.py:*",
        "evidence that counts*",
        "  type list: +1 object per call",
        "  site *test_marked.py:*: +* B per call",
        "*_ test_only_part_set_aside _*",
        "leaks (*): type list: +1 object per call*",
        "evidence that counts*",
        "  type list: +1 object per call",
        "set aside by filter_fn:",
        "  object test_marked.Payload <test_marked.Payload object at 0x*>: +1 ref per call",
    ])


def test_evidence_and_what_counts():
    """The rules of filter_fn on hand-made reports (no measuring)."""
    from pyguts.leaks.marker import Evidence, counted, evidence_of
    from pyguts.leaks.report import AllocationSite, GrownObject, LeakReport, Signal

    def report(*signals, objects=(), types=(), sites=()):
        return LeakReport(function="f", leaking=True, decided=True, kinds=(), windows=(16, 32, 64), calls=120,
                          elapsed_ms=1.0, signals=signals, grown_objects=objects, grown_types=types, sites=sites)

    blocks = Signal("blocks", "block", (32, 64, 128), 2, 2.0, "leak")
    fds = Signal("fds", "fd", (16, 32, 64), 0, 1.0, "leak")
    rss = Signal("rss_nbytes", "B", (0, 0, 1 << 20), 1 << 20, 9000.0, "leak")
    refs = Signal("refs:all", "ref", (16, 32, 64), 0, 1.0, "leak")
    per_type = Signal("gc:list", "object", (16, 32, 64), 0, 1.0, "leak")
    quiet = Signal("malloc_nbytes", "B", (0, 0, 0), 0, 0.0, "clean")
    site = AllocationSite("/src/cache.py:3", 56.0, 1.0)
    obj = GrownObject("<P object at 0x10>", "m.P", 16, 1.0)

    # memory with nothing named is a signal of its own; resident bytes never decide alone; fds always count
    assert [str(e) for e in evidence_of(report(blocks, rss, fds, quiet))] == [
        "signal blocks: +2 block per call", "signal fds: +1 fd per call"]
    # named: the types and sites stand for the memory, the objects for the total of references
    found = evidence_of(report(blocks, per_type, refs, objects=(obj,), types=(("list", 1.0),), sites=(site,)))
    assert [(e.kind, e.name) for e in found] == [("object", "m.P"), ("type", "list"), ("site", "/src/cache.py:3")]
    assert found[0].repr == "<P object at 0x10>"
    # a total of references is a signal when nothing is named; memory is not, when a site names it
    assert [e.name for e in evidence_of(report(refs, fds))] == ["refs:all", "fds"]
    assert [e.name for e in evidence_of(report(blocks, refs, sites=(site,)))] == ["/src/cache.py:3"]
    # kept memory is set aside by its types or by its sites, not by half of one
    two_sites = found + [Evidence("site", "/src/other.py:9", 8.0, "B")]
    assert counted(two_sites, lambda e: e.kind != "object" and e.name != "list") == []
    assert [e.name for e in counted(two_sites, lambda e: "cache.py" not in e.name)] == [
        "m.P", "list", "/src/other.py:9"]
    assert counted(found, lambda e: False) == [] and counted(found, None) == found


def test_marker_is_declared_and_validated(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.no_leaks(check=True, budget=None, filter_fn=None, runs=None):*"])
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.no_leaks(False)
def test_positional():
    pass

@pytest.mark.no_leaks(budgett=5)
def test_misspelt():
    pass

@pytest.mark.no_leaks(budget="5", runs=1.5)
def test_wrong_types():
    pass

@pytest.mark.no_leaks(check="no", filter_fn="list")
def test_more_wrong_types():
    pass

@pytest.mark.no_leaks(budget=0, runs=True)
def test_out_of_range():
    pass

@pytest.mark.no_leaks(budget=0.5, runs=3, check=True, filter_fn=None)
def test_good():
    pass
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=5)
    result.stdout.fnmatch_lines_random([
        "*@pytest.mark.no_leaks on test_bad.py::test_positional takes keywords only (check= (True or False), "
        "budget= (a number of seconds > 0), runs= (an int >= 2), filter_fn= (*)), got arguments (False,); "
        "to leave a test unchecked write @pytest.mark.no_leaks(check=False)",
        "*@pytest.mark.no_leaks on test_bad.py::test_misspelt got unknown keywords budgett; it takes check= *",
        "*test_wrong_types: budget='5' must be a number of seconds > 0, runs=1.5 must be an int >= 2; e.g. *",
        "*test_more_wrong_types: check='no' must be True or False, filter_fn='list' must be a callable *",
        "*test_out_of_range: budget=0 must be a number of seconds > 0, runs=True must be an int >= 2; *",
    ])
    assert "Traceback" not in result.stdout.str()


SLOW_LEAK = '''
import time
import pytest

KEPT = []

{mark}
def test_slow_leak():
    time.sleep(0.02)
    KEPT.append([0])
'''


@every_python
@pytest.mark.parametrize("mark, ini, args, budget", [
    ("@pytest.mark.no_leaks(budget=0.3)", "", (), "0.3"),
    ("", "0.3", ("--pyguts-leaks",), "0.3"),
    ("", "5", ("--pyguts-leaks", "--pyguts-leaks-budget=0.4"), "0.4"),
    ("@pytest.mark.no_leaks(budget=0.5)", "5", ("--pyguts-leaks-budget", "7"), "0.5"),
], ids=["marker", "ini", "option-over-ini", "marker-over-option"])
def test_budget_from_marker_option_and_ini(pytester, mark, ini, args, budget):
    """A slow leak (20 ms a call) is undecided within well under a second: the test passes with a
    warning naming the budget that was in force."""
    if ini:
        pytester.makeini(f"[pytest]\npyguts_leaks_budget = {ini}\n")
    result = _run_marked(pytester, SLOW_LEAK.format(mark=mark), "-W", "always::pytest.PytestWarning", *args)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([f"*test_slow_leak: the leak check found no leak but could not decide within "
                                 f"its budget of {budget} s (* calls); raise it with *"])


@pytest.mark.parametrize("args, ini, message", [
    (("--pyguts-leaks-budget=-1",), "", "--pyguts-leaks-budget must be a number of seconds > 0, got '-1'*"),
    ((), "soon", "pyguts_leaks_budget must be a number of seconds > 0, got 'soon'*"),
])
def test_bad_default_budget_stops_the_run(pytester, args, ini, message):
    if ini:
        pytester.makeini(f"[pytest]\npyguts_leaks_budget = {ini}\n")
    result = _run_marked(pytester, SLOW_LEAK.format(mark=""), *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


XDIST_TESTS = '''
import pytest

KEPT = []

@pytest.mark.no_leaks
def test_leaks():
    KEPT.append([0])

@pytest.mark.no_leaks
def test_clean():
    sorted([3, 1, 2])

@pytest.mark.no_leaks(filter_fn=lambda e: e.name != "list")
def test_leak_set_aside():
    KEPT.append([0])

def test_unmarked_leak():
    KEPT.append([0])

@pytest.mark.no_leaks(check=False)
def test_opted_out():
    KEPT.append([0])
'''


@every_python
def test_marker_under_xdist(pytester):
    """Each of two workers checks its own tests; the verdicts and messages are those of a plain run."""
    pytest.importorskip("xdist", reason="needs pytest-xdist (pip install pytest-xdist)")
    pytester.makepyfile(test_marked=XDIST_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--pyguts-leaks")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*2 workers*"])
    result.stdout.fnmatch_lines_random(["FAILED test_marked.py::test_leaks - Failed: leaks (con*",
                                        "FAILED test_marked.py::test_unmarked_leak - Failed: leaks (c*",
                                        "leaks (container): *gc:list +1 object per call*"])


@every_python
def test_marker_on_a_c_extension_leak(pytester, corpus_dir):
    pytester.syspathinsert(corpus_dir)
    pytester.makepyfile(test_c='''
import pytest
import leakcorpus

@pytest.mark.no_leaks
def test_fd():
    leakcorpus.leak_fd()

@pytest.mark.no_leaks
def test_clean_fd():
    leakcorpus.clean_fd()
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["leaks (fd): fds +1 fd per call*", "  signal fds: +1 fd per call", "*LEAKS (fd)*"])


@every_python
def test_marker_inside_an_isolated_test(pytester):
    """With the isolation plugin (pytest11 entry point): the check runs in the forked child."""
    pytester.makepyfile(test_iso='''
import pytest
KEPT = []

@pytest.mark.isolated
@pytest.mark.no_leaks
def test_leaks_in_child():
    KEPT.append([1])

@pytest.mark.isolated
@pytest.mark.no_leaks
def test_clean_in_child():
    len("x")
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    if "isolated" not in pytester.runpytest("--markers").stdout.str():
        pytest.skip("the isolation plugin (pyguts.pytest_plugin) is not installed in this environment")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*LEAKS (container)*"])
