"""`pyguts tour`: every example script as a step, whole and one at a time, and what a missing tool does."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import needs  # tests/needs.py
import pytest

from pyguts import tour
from pyguts.cli import main

#: For each step, what its script must print here (every tool the Makefile installs is present).
FINDINGS = {
    "c_kernel": r"max \|C - numpy\| = 0 on n=1,000,000(.|\n)*refused: dtype of argument 'y'",
    "gsl": r"at x=2 by gsl_deriv_central: 14\.0000000000\d* \(exact: 14\)(.|\n)*ValueError: cannot evaluate"
           r"(.|\n)*NativeError \(GSL code 16, 'overflow'\) instead of abort\(\)",
    "cpp": r"agree to 1e-12: True",
    "cython": r"max \|Cython - numpy\| = 0\b",
    "cuda": r"CPU build of magnitude\.cu: max \|CPU - numpy\| = 0\b(.|\n)*path: (GPU|CPU build \+ PTX)",
    # (the simulator computes as numpy does; a GPU fuses x*x + y*y into an FMA: a last bit or two)
    "numba": r"max \|numba - numpy\| = 0\b(.|\n)*@cuda\.jit(.|\n)*max \|(kernel - numpy\| = 0\b|GPU - numpy\| = \S+ \([0-2] ulp)",
    "jemalloc": r"jemalloc stats\.allocated: +[\d,]+ -> +[\d,]+(.|\n)*data from 'pyguts-jemalloc'"
                r"(.|\n)*live bytes in jemalloc 0\b",
    "raw_memory": r"ob_sval +48 65 6c 6c 6f(.|\n)*b'any memory at all'(.|\n)*is not mapped",
    "bytes_mutation": r"ob_shash reset to -1(.|\n)*hash\(b\) == hash\(b'Mello, world!'\): True",
    "refcounts": r"1000 refcount\(\) and 3 referrers\(\) calls later: 1 \(was 1\b",
    "type_swap": r"is refused:\n.*__dict__(.|\n)*status='crashed', signal=\d+ \(SIGSEGV\)(.|\n)*in forced_swap"
                 r"(.|\n)*this interpreter lives on",
}
#: Steps whose system library is missing here (tests/needs.py): what they print then, and their status.
WITHOUT = {
    "gsl": (needs.library_reason("gsl"), r"unavailable: OSError: library 'gsl' .*apt-get install libgsl-dev", "unavailable"),
    "jemalloc": (needs.allocator_reason("jemalloc"), r"jemalloc cannot be loaded in this process: .*apt-get install "
                 r"libjemalloc2(.|\n)*so this section goes on with (?P<other>\w+)(.|\n)*live bytes in (?P=other) 0\b", "ok"),
}


def _expected(name: str) -> tuple[str, str]:
    """What step ``name`` must print here (a regular expression) and its status."""
    missing, finding, status = WITHOUT.get(name, ("", "", ""))
    return (finding, status) if missing else (FINDINGS[name], "ok")


def test_every_step_has_a_finding_to_check():
    assert [s.name for s in tour.STEPS] == list(FINDINGS)


def test_every_numbered_example_is_a_step_in_notebook_order():
    scripts = sorted(p.name for p in tour.examples_folder().iterdir() if re.fullmatch(r"\d\d_\w+\.py", p.name))
    assert [s.script for s in tour.STEPS] == scripts


def test_the_examples_are_found_as_a_package():
    folder = pathlib.Path(str(tour.examples_folder()))
    assert (folder / "__init__.py").is_file() and (folder / "11_type_swap.py").is_file()


@pytest.mark.slow
@pytest.mark.every_python  # the tour reads interpreter structs: every supported CPython must walk it
def test_the_whole_tour_through_the_console_script(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # the command arranges jemalloc itself
    done = subprocess.run([sys.executable, "-m", "pyguts", "tour"], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)  # outside the repository: the scripts are found
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    unavailable = []
    for number, step in enumerate(tour.STEPS, 1):
        finding, status = _expected(step.name)
        assert f"=== [{number}/{len(tour.STEPS)}] {step.name}:" in out
        assert f"--- {step.name}: {status}" in out, out
        body = out.split(f"{step.name}: {step.title} ===")[1].split(f"--- {step.name}:")[0]
        assert re.search(finding, body), f"{step.name} printed:\n{body}"
        unavailable += [step.name] if status == "unavailable" else []
    listed = f" ({', '.join(unavailable)})" if unavailable else ""
    assert (f"tour: {len(tour.STEPS)} steps: {len(tour.STEPS) - len(unavailable)} ok, {len(unavailable)} "
            f"unavailable{listed}, 0 FAILED") in out


@pytest.mark.parametrize("name", [s.name for s in tour.STEPS])
def test_each_step_runs_alone(name, capsys):
    finding, status = _expected(name)
    assert main(["tour", "--step", name]) == 0
    out = capsys.readouterr().out
    assert re.search(finding, out), out
    assert out.count("=== [") == 1 and f"--- {name}: {status}" in out


def test_a_missing_tool_is_reported_with_its_fix_and_the_tour_goes_on():
    # Cython really absent for this child: `import Cython` raises ImportError there.
    child = textwrap.dedent("""
        import sys
        sys.modules["Cython"] = None
        from pyguts import tour
        sys.exit(tour.run(["cpp", "cython", "bytes_mutation"]))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    cython = done.stdout.split("cython: Cython ===")[1].split("--- cython:")[0]
    assert cython.strip() == "skipped: Cython is not installed (pip install cython)", cython  # said once, by 04
    assert "--- cython: unavailable" in done.stdout and "--- bytes_mutation: ok" in done.stdout
    assert "tour: 3 steps: 2 ok, 1 unavailable (cython), 0 FAILED" in done.stdout


def test_the_jemalloc_step_never_restarts_the_process_that_runs_the_tour():
    # 07_jemalloc.py restarts itself with GLIBC_TUNABLES set when run alone; in a program without the
    # fix that calls tour.run (a Jupyter kernel started the normal way is one), the step must say why
    # jemalloc cannot load and how to fix it, go on with another allocator, and keep the process.
    from pyguts.alloc.registry import REEXEC_MARK

    child = textwrap.dedent(f"""
        import os, sys
        from pyguts import tour
        status = tour.run(["jemalloc"])
        print("mark after the tour:", os.environ.get({REEXEC_MARK!r}))
        sys.exit(status)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", REEXEC_MARK)}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("=== [1/1] jemalloc") == 1, out  # a restart would print the header again
    assert "mark after the tour: None" in out and "--- jemalloc: ok" in out, out
    # the oracle: does libjemalloc.so.2 refuse to load without the fix here (Debian's does)?
    probe = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL('libjemalloc.so.2')"],
                           capture_output=True, text=True, timeout=60, env=env)
    if probe.returncode != 0 and "static TLS" in probe.stderr:
        assert "jemalloc cannot be loaded in this process" in out and f"in Jupyter: {tour.static_tls_hint()}" in out
        assert re.search(r"goes on with (mimalloc|tcmalloc|libc)(.|\n)*data from 'pyguts-(mimalloc|tcmalloc|libc)'",
                         out), out
    elif probe.returncode == 0:
        assert "data from 'pyguts-jemalloc'" in out, out


#: Stand-in scripts: (name, source, the status the tour must give it, what it must print for it).
STAND_INS = (
    ("broken", 'raise RuntimeError("a bug in a step")', "FAILED",
     "FAILED:\nTraceback (most recent call last):"),
    ("missing", 'raise OSError("libfoo.so: cannot open shared object file")', "unavailable",
     "unavailable: OSError: libfoo.so: cannot open shared object file\n`pyguts doctor` says what to install"),
    ("skipped", 'from pyguts.tour import skip\nskip("libfoo is not installed", "apt-get install libfoo-dev")',
     "unavailable", "skipped: libfoo is not installed (apt-get install libfoo-dev)\n--- skipped: unavailable"),
    ("exits", "import sys\nsys.exit(3)", "FAILED", "FAILED: exits.py exited with 3"),
    ("done_early", "import sys\nprint('done early')\nsys.exit()", "ok", "done early\n--- done_early: ok"),
)


def test_each_outcome_of_a_script_gets_its_status_and_the_tour_goes_on(monkeypatch, tmp_path, capsys):
    for name, source, _, _ in STAND_INS:
        (tmp_path / f"{name}.py").write_text(source + "\n")
    real = next(s for s in tour.STEPS if s.name == "bytes_mutation")
    shutil.copy(pathlib.Path(str(tour.examples_folder())) / real.script, tmp_path)
    monkeypatch.setattr(tour.steps, "examples_folder", lambda: tmp_path)
    steps = [tour.Step(name, name, f"{name}.py") for name, *_ in STAND_INS] + [real]
    assert tour.run(steps=steps) == 1
    out = capsys.readouterr().out
    for name, _, status, shown in STAND_INS:
        assert f"--- {name}: {status}" in out and shown in out, (name, out)
    assert "RuntimeError: a bug in a step" in out
    skipped = out.split("=== [3/6] skipped: skipped ===")[1].split("--- skipped:")[0]
    assert skipped.strip() == "skipped: libfoo is not installed (apt-get install libfoo-dev)"  # said once
    assert "--- bytes_mutation: ok" in out
    assert ("tour: 6 steps: 2 ok, 2 unavailable (missing, skipped), 2 FAILED (broken, exits)") in out


def test_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tour", "--step", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "c_kernel" in err and "refcounts" in err
