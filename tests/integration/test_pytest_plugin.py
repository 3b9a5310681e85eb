"""The pyguts pytest plugin through pytester, on the installed pytest: markers, reports, inertness."""

from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata

import pytest

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.every_python, pytest.mark.crash_prone]

#: pytest-forked 1.7.5 works on these pytest releases and reports "EXITED with status 3" for every
#: test from 9.2.0 on (it calls _pytest.runner.runtestprotocol in the child); measured, see SAFETY.md.
PYTEST_FORKED_BROKEN_FROM = (9, 2)

HEADER = "import ctypes, os, sys, pytest\n\n"


def _pytest_version() -> tuple[int, int]:
    return tuple(int(p) for p in pytest.__version__.split(".")[:2])  # type: ignore[return-value]


def _run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_sample=HEADER + body)
    return pytester.runpytest("-p", "no:cacheprovider", "-rA", *args)


def test_plugin_is_loaded_and_declares_its_markers(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.isolated(timeout=None): run the test body in a forked child*",
        "@pytest.mark.crashes(*signals, timeout=None): the test body runs in a forked child and must die*",
    ])


def test_unmarked_tests_run_in_the_pytest_process(pytester):
    result = _run(pytester, """
def test_plain():
    assert os.getpid() == %d

@pytest.mark.isolated
def test_marked():
    assert os.getpid() != %d
""" % (os.getpid(), os.getpid()))
    result.assert_outcomes(passed=2)


def test_failure_in_the_child_is_reported_with_pytests_own_rendering(pytester):
    result = _run(pytester, """
@pytest.mark.isolated
def test_compare():
    left = [1, 2, 3]
    print("said in the child")
    assert left == [1, 2, 4]
""")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        ">       assert left == [1, 2, 4]",
        "E       assert [1, 2, 3] == [1, 2, 4]",
        "*Captured stdout call*",
        "said in the child",
    ])


def test_segfault_in_an_isolated_test_is_a_failure_and_the_run_goes_on(pytester):
    result = _run(pytester, """
@pytest.mark.isolated
def test_null_read():
    ctypes.string_at(0)

def test_after():
    pass
""")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*killed by SIGSEGV (signal 11)*",
        "*fault address: 0x0, NULL*",
        "*native frames of the crashing thread (most recent call first):*",
        "*#0 *(libc.so*",
        "*string_at*(_ctypes*",
        "*Fatal Python error: Segmentation fault*",
        '*File "*test_sample.py", line * in test_null_read*',
    ])


def test_timeout_marker_kills_a_hung_test_and_shows_where_it_hung(pytester):
    result = _run(pytester, """
@pytest.mark.isolated(timeout=0.5)
def test_spin():
    while True:
        pass
""")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*did not finish within 0.5s and was killed*", "*line * in test_spin*"])


def test_crashes_marker_passes_only_on_the_named_signal(pytester):
    result = _run(pytester, """
@pytest.mark.crashes("SIGSEGV")
def test_segv():
    ctypes.string_at(0)

@pytest.mark.crashes("SIGABRT", "SIGSEGV")
def test_abort_or_segv():
    os.abort()

@pytest.mark.crashes("SIGSEGV")
def test_returns():
    pass

@pytest.mark.crashes("SIGSEGV")
def test_aborts_instead():
    os.abort()

@pytest.mark.crashes("SIGSEGV")
def test_raises_instead():
    assert 2 + 2 == 5

@pytest.mark.crashes("SIGNOTHING")
def test_bad_name():
    pass
""")
    result.assert_outcomes(passed=2, failed=4)
    result.stdout.fnmatch_lines_random([
        "*expected the test body to die with SIGSEGV; the test body returned normally*",
        "*expected the test body to die with SIGSEGV; the isolated child * was killed by SIGABRT*",
        "*Fatal Python error: Aborted*",
        "*expected the test body to die with SIGSEGV; the test body raised instead:*",
        "E       assert (2 + 2) == 5",
        "*@pytest.mark.crashes takes signal names or numbers, got 'SIGNOTHING'*",
        "*pyguts expected crash (SIGSEGV)*",
    ])


def test_skip_xfail_and_expected_exceptions_keep_their_meaning(pytester):
    result = _run(pytester, """
@pytest.mark.isolated
def test_skips():
    pytest.skip("not here")

@pytest.mark.isolated
def test_xfails():
    pytest.xfail("known")

@pytest.mark.xfail(raises=ValueError, strict=True)
@pytest.mark.isolated
def test_raises_expected():
    int("x")

@pytest.mark.isolated
def test_fails_explicitly():
    pytest.fail("explicit reason", pytrace=False)
""")
    result.assert_outcomes(skipped=1, xfailed=2, failed=1)
    result.stdout.fnmatch_lines_random(["SKIPPED [[]1[]] test_sample.py:6: not here", "*explicit reason*"])


def test_fixtures_are_set_up_in_the_parent_and_usable_in_the_child(pytester):
    result = _run(pytester, """
@pytest.fixture
def resource(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("from the parent")
    yield path
    assert path.read_text() == "written by the child"  # teardown runs in the parent

@pytest.mark.isolated
def test_uses(resource):
    assert resource.read_text() == "from the parent"
    resource.write_text("written by the child")
""")
    result.assert_outcomes(passed=1)


def test_option_isolates_every_test(pytester):
    body = "def test_where():\n    assert os.getpid() != %d\n" % os.getpid()
    _run(pytester, body).assert_outcomes(failed=1)
    _run(pytester, body, "--pyguts-isolate").assert_outcomes(passed=1)


@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX userland")
def test_pytest_forked_on_this_pytest(pytester):
    """Records which pytest releases pytest-forked 1.7.5 works with (see SAFETY.md)."""
    forked = metadata.version("pytest-forked")
    pytester.makepyfile(test_sample=HEADER + "def test_ok():\n    pass\n\n"
                        "def test_segv():\n    ctypes.string_at(0)\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pyguts", "--forked")
    if _pytest_version() >= PYTEST_FORKED_BROKEN_FROM and forked == "1.7.5":
        result.stdout.fnmatch_lines(["*running the test EXITED with status 3*"])
        result.assert_outcomes(failed=2)
    else:
        result.stdout.fnmatch_lines(["*running the test CRASHED with signal 11*"])
        result.assert_outcomes(passed=1, failed=1)


def test_python_executable_is_the_one_running(pytester):
    # The plugin relies on fork(): the child is this very interpreter, not a fresh one.
    result = _run(pytester, """
@pytest.mark.isolated
def test_same_interpreter():
    assert sys.executable == %r
""" % sys.executable)
    result.assert_outcomes(passed=1)


def test_namespaced_markers_fork_and_expect_crashes_too(pytester):
    result = _run(pytester, """
import ctypes

@pytest.mark.pyguts_isolated(timeout=30)
def test_marked():
    assert os.getpid() != %d

@pytest.mark.pyguts_crashes("SIGSEGV")
def test_null_read():
    ctypes.string_at(0)
""" % os.getpid())
    result.assert_outcomes(passed=2)


def test_where_pytest_isolated_owns_isolated_pyguts_leaves_it_and_says_so(pytester):
    # A plugin registered under pytest-isolated's pytest11 name, as installing pytest-isolated does.
    pytester.makeconftest("""
def pytest_configure(config):
    config.pluginmanager.register(object(), "isolated")
""")
    result = _run(pytester, """
@pytest.mark.isolated
def test_theirs():
    assert os.getpid() == %d   # not forked by pyguts

@pytest.mark.pyguts_isolated
def test_ours():
    assert os.getpid() != %d
""" % (os.getpid(), os.getpid()))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*pytest-isolated is installed*write @pytest.mark.pyguts_isolated*"])
