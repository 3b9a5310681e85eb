"""``pytest --pyguts-leaks`` over a real C extension's own test suite: a release that leaked, and the fix.

The package is ujson (UltraJSON). 5.8.0 leaks a new ``"null"`` string on every ``dumps`` of a dict
with a ``None`` key; 5.9.0 fixed it (ultrajson PR #614, "Use lowercase strings for bool dict keys",
merged 2023-11-18: "Fix memory leak of the "null" string when handling None dict key"). 5.9.0 also
stopped leaking the digits of every int beyond 64 bits that ``dumps`` encodes (objToJSON.c: 5.8.0
never released what ``PyNumber_ToBase`` returned). Two leaks that ujson's suite exercises live on in
5.9.0 and were fixed later: decoding such an int leaks its digit buffer (JSONtoObj.c, freed from
5.12.0), and a ``default=`` that keeps returning an unserialisable object leaks it (fixed in 6.0.0).
Each was measured here, test by test over both suites (each body called up to 3,000 times between
full ``gc.collect()``): 1, 4, 3 and 12 blocks per call on the releases that have them, none on those
that fixed them, and no other test of either suite grows once CPython's type cache (4096 entries,
filled by bodies that define a class per call) is full.

For each release this creates a virtual environment once (the release, pytest and this checkout's
pyguts, editable) and takes ``tests/`` from the release's sdist, all cached under
``pyguts.native.cache_folder("realworld")``; pip reads its index from its own configuration. It then
runs the suite twice: plainly (every test must pass) and with ``--pyguts-leaks``, timing both, and
prints which tests pyguts failed. Exit status 0 only when every test meets ``EXPECTED`` on both
releases: the leaks above are flagged where they exist and nothing else is (a flag elsewhere is a
false alarm, a verified leak let through is a miss); 1 otherwise, 2 when the set-up failed. Each
suite takes ~5 s plainly and minutes with ``--pyguts-leaks``. The first run also downloads ~40 MB
(numpy, cffi and psutil come with pyguts) and takes a minute or two more.

Usage: python benchmarks/leaks_realworld.py [--pyguts PATH] [--repeat N] [--fresh]
(not a ``bench_`` section of ``make bench``: it needs the package index once and takes minutes).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

PACKAGE = "ujson"
LEAKING, FIXED = "5.8.0", "5.9.0"
SUITE = "tests/test_ujson.py"
#: Runs ujson's own tracemalloc loop in a child interpreter (seconds per call); it tests the child,
#: so repeating it in this process measures nothing of ujson and only costs minutes.
DESELECT = ("test_no_memory_leak_encoding_errors",)
#: (test name pattern, leaks on LEAKING, leaks on FIXED, why); None: the test is not in that suite.
#: Every test that matches no row must pass the leak check on both releases.
EXPECTED = (
    (r"test_encode_none_key$", True, None,
     "dumps({None: ...}) leaks a new 'null' str per call; fixed in 5.9.0 (ultrajson PR #614)"),
    (r"test_encode_dict_key_ref_counting\[False-None\]$", True, False,
     "the same 'null' leak (PR #614) in a test whose body runs gc.collect() (slow: ~12 ms a call)"),
    (r"test_encode_special_keys$", None, False, "5.9.0's test of PR #614 (None, True, False keys)"),
    (r"test_encode_decode_big_int\[encode-", True, False,
     "dumps of an int beyond 64 bits leaks its digits (PyNumber_ToBase's result); fixed in 5.9.0"),
    (r"test_encode_decode_big_int\[decode-", True, True,
     "loads of an int beyond 64 bits leaks its digit buffer (JSONtoObj.c); fixed only in 5.12.0"),
    (r"test_default_function$", True, True,
     "default= returning an unserialisable object until the depth limit leaks it; fixed in 6.0.0"),
)
#: A pytest run that takes longer than this is stuck (the leak run takes ~15 s to a few minutes).
RUN_TIMEOUT_S = 1800
HERE = pathlib.Path(__file__).resolve().parent


def log(message: str) -> None:
    print(f"leaks_realworld: {message}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    """One test's result in the leak run: "pass", "skip", "leak" (pyguts failed it), "broke"."""

    name: str
    status: str
    verdict: str = ""   # the first line of pyguts' report, or of the failure


@dataclass
class Release:
    version: str
    plain_s: list[float] = field(default_factory=list)
    leaks_s: list[float] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    plain_failed: list[str] = field(default_factory=list)


def expectation(name: str, version: str) -> tuple[bool, str]:
    """(should pyguts flag ``name`` on ``version``, why); unlisted tests must not be flagged."""
    for pattern, on_leaking, on_fixed, why in EXPECTED:
        if re.search(pattern, name):
            expected = on_leaking if version == LEAKING else on_fixed
            if expected is None:
                raise RuntimeError(f"EXPECTED says {name!r} is not in the {PACKAGE} {version} suite, but it "
                                   f"ran there; fix the row {pattern!r}")
            return expected, why
    return False, ""


def _pip(python: pathlib.Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "--quiet", *args], check=True)


def prepare(version: str, pyguts: pathlib.Path, root: pathlib.Path,
            fresh: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """The release's venv python and its suite folder, made once under ``root`` and reused."""
    home = root / f"{PACKAGE}-{version}-py{sys.version_info[0]}.{sys.version_info[1]}"
    venv, suite = home / "venv", home / "suite"
    python = venv / "bin" / "python"
    try:
        import pytest
        pytest_req = f"pytest=={pytest.__version__}"   # the same pytest the project's tests use
    except ImportError:
        pytest_req = "pytest"
    want = {"release": f"{PACKAGE}=={version}", "pytest": pytest_req, "pyguts": str(pyguts)}
    stamp = home / "installed.json"
    if fresh and home.exists():
        shutil.rmtree(home)
    have = json.loads(stamp.read_text()) if stamp.exists() and python.exists() else {}
    if have and have != want and {k: v for k, v in have.items() if k != "pyguts"} == \
            {k: v for k, v in want.items() if k != "pyguts"}:
        log(f"{venv}: pyguts from {pyguts} instead of {have['pyguts']}")
        _pip(python, "install", "--no-deps", "-e", str(pyguts))
        stamp.write_text(json.dumps(want))
    elif have != want:
        log(f"creating {venv} with {want['release']}, {pytest_req} and pyguts from {pyguts}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _pip(python, "install", want["release"], pytest_req, "-e", str(pyguts))
        stamp.write_text(json.dumps(want))
    if not (suite / SUITE).exists():
        log(f"fetching the {PACKAGE} {version} sdist for its tests/")
        sdists = home / "sdist"
        _pip(python, "download", "--no-deps", "--no-binary", ":all:", "--dest", str(sdists), want["release"])
        _extract_tests(sdists / f"{PACKAGE}-{version}.tar.gz", f"{PACKAGE}-{version}/tests/", suite)
        # pins pytest's rootdir here, so no configuration of a folder above changes the run
        (suite / "pytest.ini").write_text("[pytest]\n")
    return python, suite


def _extract_tests(sdist: pathlib.Path, prefix: str, suite: pathlib.Path) -> None:
    """The files under ``prefix`` in the sdist, written below ``suite/tests``."""
    suite.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        if not members:
            raise RuntimeError(f"{sdist} has no {prefix}: the sdist must ship the test suite")
        for member in members:
            relative = pathlib.PurePosixPath(member.name[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                raise RuntimeError(f"{sdist} holds an unsafe path {member.name!r}; delete the file and rerun")
            target = suite / "tests" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())


def _pytest(python: pathlib.Path, suite: pathlib.Path, junit: pathlib.Path, *extra: str) -> float:
    argv = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini", "--rootdir", ".",
            f"--junitxml={junit}", SUITE, *(f"--deselect={SUITE}::{name}" for name in DESELECT), *extra]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=suite, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1) or not junit.exists():   # 1: some tests failed, read them below
        raise RuntimeError(f"pytest exited {done.returncode} in {suite} ({' '.join(argv[3:])}); its output "
                           f"ends:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return elapsed


def _read_junit(junit: pathlib.Path) -> dict[str, Outcome]:
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if case.find("skipped") is not None:
            outcomes[name] = Outcome(name, "skip")
        elif failure is None:
            outcomes[name] = Outcome(name, "pass")
        else:
            text = failure.text or failure.get("message", "")
            report = [line.strip() for line in text.splitlines() if line.strip().startswith("pyguts.leaks")]
            first = report[0] if report else (text.strip().splitlines() or ["(no message)"])[-1]
            outcomes[name] = Outcome(name, "leak" if report else "broke", first)
    return outcomes


def measure(version: str, pyguts: pathlib.Path, root: pathlib.Path, repeat: int, fresh: bool) -> Release:
    python, suite = prepare(version, pyguts, root, fresh)
    release = Release(version)
    junit = suite / "junit.xml"
    for i in range(repeat):
        log(f"{PACKAGE} {version}: plain run {i + 1}/{repeat}")
        release.plain_s.append(_pytest(python, suite, junit))
        release.plain_failed = [o.name for o in _read_junit(junit).values() if o.status not in ("pass", "skip")]
        log(f"{PACKAGE} {version}: --pyguts-leaks run {i + 1}/{repeat} ({release.plain_s[-1]:.1f} s plain)")
        release.leaks_s.append(_pytest(python, suite, junit, "--pyguts-leaks"))
        release.outcomes = _read_junit(junit)
    return release


def judge(release: Release) -> tuple[list[str], list[str], list[str]]:
    """(flagged as expected, false alarms, misses) as printable lines; plain failures are neither."""
    expected, false_alarms, misses = [], [], []
    for name, outcome in sorted(release.outcomes.items()):
        if name in release.plain_failed or outcome.status == "skip":
            continue
        should, why = expectation(name, release.version)
        flagged = outcome.status in ("leak", "broke")
        if flagged and should:
            expected.append(f"{name}: {outcome.verdict}  [{why}]")
        elif flagged:
            false_alarms.append(f"{name}: {outcome.status}: {outcome.verdict}")
        elif should:
            misses.append(f"{name}: passed, but {why}")
    return expected, false_alarms, misses


def report(releases: list[Release]) -> bool:
    print(f"pytest --pyguts-leaks over {PACKAGE}'s own suite ({SUITE}, without {', '.join(DESELECT)}), "
          f"CPython {sys.version.split()[0]}")
    print(f"{'release':<9} {'tests':>6} {'plain':>9} {'--pyguts-leaks':>15} {'flagged':>8} {'expected':>9} "
          f"{'false alarms':>13} {'missed':>7}")
    ok = True
    for release in releases:
        expected, false_alarms, misses = judge(release)
        flagged = sum(o.status in ("leak", "broke") for o in release.outcomes.values())
        print(f"{release.version:<9} {len(release.outcomes):>6} {statistics.median(release.plain_s):>8.1f}s "
              f"{statistics.median(release.leaks_s):>14.1f}s {flagged:>8} {len(expected):>9} "
              f"{len(false_alarms):>13} {len(misses):>7}")
        for title, lines in (("flagged as expected", expected), ("FALSE ALARM", false_alarms),
                             ("MISSED", misses), ("failed without pyguts (not judged)", release.plain_failed)):
            for line in lines:
                print(f"  {release.version} {title}: {line}")
        ok = ok and not false_alarms and not misses
    if len(releases[0].leaks_s) > 1:
        print(f"times are medians of {len(releases[0].leaks_s)} runs each")
    print("verdict: " + ("OK: every verified leak flagged, nothing else" if ok else
                         "FAILED: see the FALSE ALARM and MISSED lines above"))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyguts", type=pathlib.Path, default=HERE.parent,
                        help="the pyguts checkout to install, editable, in each venv (default: this one)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per release (median reported)")
    parser.add_argument("--fresh", action="store_true", help="delete and rebuild the cached venvs and suites")
    args = parser.parse_args(argv)
    from pyguts.native import cache_folder

    root = cache_folder("realworld")
    try:
        releases = [measure(version, args.pyguts.resolve(), root, max(1, args.repeat), args.fresh)
                    for version in (LEAKING, FIXED)]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as exc:
        log(f"could not set up or run the {PACKAGE} suites under {root}: {exc}; pip's own message is "
            f"above (each release needs a wheel for this CPython or gcc for its sdist, and a package index)")
        return 2
    return 0 if report(releases) else 1


def run(h) -> None:
    """benchmarks/run.py section: the same comparison, its results recorded as facts."""
    try:
        from pyguts.native import cache_folder

        root = cache_folder("realworld")
        releases = [measure(version, HERE.parent, root, 1, False) for version in (LEAKING, FIXED)]
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        print(f"leaks_realworld: skipped: could not set up or run the {PACKAGE} suites ({exc}); "
              f"run `python benchmarks/leaks_realworld.py` to see why")
        return
    for release in releases:
        expected, false_alarms, misses = judge(release)
        h.fact(f"{PACKAGE} {release.version}", "--pyguts-leaks: expected / false alarms / missed",
               f"{len(expected)} / {len(false_alarms)} / {len(misses)}")
        h.fact(f"{PACKAGE} {release.version}", "suite time: plain, --pyguts-leaks",
               f"{release.plain_s[0]:.1f} s, {release.leaks_s[0]:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
