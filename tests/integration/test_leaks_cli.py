"""Front ends of pyguts.leaks: ``pyguts leaks MODULE:FUNCTION`` and ``@pytest.mark.no_leaks`` / ``--pyguts-leaks``.

The CLI runs in-process through its own ``register``/``run`` and once through ``python -m pyguts``;
the marker runs through ``pytester`` with the plugin module loaded by ``-p pyguts.leaks.marker``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from pyguts.cli import leaks as cli_leaks

pytest_plugins = ["pytester"]

HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_leaks_corpus_tests", HERE / "test_leaks_corpus.py")
_corpus_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_corpus_tests)

PLUGIN = ("-p", "pyguts.leaks.marker")

pytestmark = pytest.mark.every_python


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> pathlib.Path:
    """A directory holding the compiled leakcorpus module (importable as ``leakcorpus``)."""
    dest = tmp_path_factory.mktemp("leakcorpus_cli")
    _corpus_tests.build_leakcorpus(dest)
    return dest


def _main(argv: list[str]) -> int:
    """The subcommand under a parser of our own, as pyguts.cli wires it."""
    parser = argparse.ArgumentParser(prog="pyguts")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_leaks.register(sub).set_defaults(run=cli_leaks.run)
    args = parser.parse_args(argv)
    return args.run(args)


# target, exit status, text the output must hold
CLI_CASES = [
    ("leakcorpus:leak_list", 1, "LEAKS (container)"),
    ("leakcorpus:leak_fd", 1, "LEAKS (fd)"),
    ("leakcorpus:leak_raw_malloc", 1, "native-memory"),
    ("leakcorpus:clean_fd", 0, "no leak found"),
    ("leakcorpus:clean_containers", 0, "no leak found"),
]


@pytest.mark.parametrize("target, status, text", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_in_process(corpus_dir, monkeypatch, capsys, target, status, text):
    monkeypatch.syspath_prepend(str(corpus_dir))
    monkeypatch.delitem(sys.modules, "leakcorpus", raising=False)
    assert _main(["leaks", target]) == status
    out = capsys.readouterr().out
    assert text in out and target.replace(":", ".") in out


def test_cli_runs_option_sets_the_rounds(corpus_dir, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(corpus_dir))
    assert _main(["leaks", "leakcorpus:leak_list", "--runs", "5"]) == 1
    assert int(re.search(r" (\d+) rounds x ", capsys.readouterr().out).group(1)) >= 5
    assert _main(["leaks", "leakcorpus:clean_fd", "--runs", "6"]) == 0
    assert int(re.search(r" (\d+) rounds x ", capsys.readouterr().out).group(1)) >= 6


@pytest.mark.parametrize("argv, message", [
    (["leaks", "no_colon_here"], "must be MODULE:FUNCTION"),
    (["leaks", "os:no_such_function"], "no 'no_such_function'"),
    (["leaks", "no_such_module_xyz:f"], "No module named 'no_such_module_xyz'"),
    (["leaks", "os:sep"], "must be callable"),
    (["leaks", "os:getpid", "--runs", "1"], "runs must be at least 2"),
    (["leaks", "os:abort_not"], "no 'abort_not'"),
])
def test_cli_refuses_bad_targets_with_status_2(argv, message, capsys):
    assert _main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_reports_a_raising_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "raiser.py").write_text("def f():\n    raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _main(["leaks", "raiser:f"]) == 2
    assert "RuntimeError: broken on purpose" in capsys.readouterr().err


def test_python_dash_m_pyguts_leaks(corpus_dir):
    """Through the real entry: ``python -m pyguts leaks`` (needs "leaks" in pyguts.cli.COMMANDS)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(corpus_dir), os.environ.get("PYTHONPATH", "")])}
    leaking = subprocess.run([sys.executable, "-m", "pyguts", "leaks", "leakcorpus:leak_fd"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert leaking.returncode == 1, leaking.stdout + leaking.stderr
    assert "LEAKS (fd)" in leaking.stdout
    clean = subprocess.run([sys.executable, "-m", "pyguts", "leaks", "leakcorpus:clean_fd", "--runs", "4"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no leak found" in clean.stdout


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


def test_marker_fails_leaking_tests_only(pytester):
    pytester.makepyfile(test_marked=MARKED_TESTS)
    result = pytester.runpytest(*PLUGIN, "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*test_keeps_a_reference leaks:*",
        "*LEAKS (reference)*",
        "*Payload at 0x*",
    ])
    result.stdout.fnmatch_lines(["*the body's own failure*"])
    assert "test_clean_with_runs leaks" not in result.stdout.str()


def test_option_checks_every_test(pytester):
    pytester.makepyfile(test_marked=MARKED_TESTS)
    result = pytester.runpytest(*PLUGIN, "--pyguts-leaks", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(["*test_unmarked_leak leaks:*", "*LEAKS (container)*", "*list*"])


def test_marker_is_declared_and_validated(pytester):
    result = pytester.runpytest(*PLUGIN, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.no_leaks(runs=None):*"])
    pytester.makepyfile(test_bad='''
import pytest
@pytest.mark.no_leaks(5)
def test_x():
    pass
''')
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*takes only runs=N*"])


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
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_fd leaks:*", "*LEAKS (fd)*"])


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
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider")
    if "isolated" not in pytester.runpytest("--markers").stdout.str():
        pytest.skip("the isolation plugin (pyguts.pytest_plugin) is not installed in this environment")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*LEAKS (container)*"])
