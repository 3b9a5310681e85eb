"""`pyguts tour`: every notebook section as a step, whole and one at a time, and what a missing tool does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from pyguts import tour
from pyguts.cli import main

#: For each step, a line it must print here (every tool the Makefile installs is present).
FINDINGS = {
    "c_kernel": r"max \|C - numpy\| = 0\b",
    "gsl": r"at x=2: 14\.0000000000 .*\n.*ValueError: callback refuses.*\n.*NativeError\('overflow'\)",
    "cpp": r"dot = (\S+), numpy \1",
    "cython": r"max \|Cython - numpy\| = 0\b",
    "cuda": r"CPU \(g\+\+ via cpu_shim\.h.*max \|out - numpy\| = 0\b",
    "numba": r"max \|numba - numpy\| = 0\b(.|\n)*max \|(simulated kernel|GPU) - numpy\| = 0\b",
    "jemalloc": r"jemalloc stats\.allocated +[\d,]+ -> +[\d,]+\n(.|\n)*'pyguts-jemalloc'",
    "raw_memory": r"ob_sval +48 65 6c 6c 6f(.|\n)*b'any memory at all'(.|\n)*is not mapped",
    "bytes_mutation": r"ob_shash reset to -1(.|\n)*hash\(b\) == hash\(b'Jello, world!'\): True",
    "type_swap": r"is refused: .*__dict__(.|\n)*status='crashed' signal=SIGSEGV(.|\n)*in _forced_swap",
}


def test_every_step_has_a_finding_to_check():
    assert [s.name for s in tour.STEPS] == list(FINDINGS)


@pytest.mark.slow
@pytest.mark.every_python  # the tour reads interpreter structs: every supported CPython must walk it
def test_the_whole_tour_through_the_console_script():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # the command arranges jemalloc itself
    done = subprocess.run([sys.executable, "-m", "pyguts", "tour"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for number, step in enumerate(tour.STEPS, 1):
        assert f"=== [{number}/{len(tour.STEPS)}] {step.name}:" in out
        assert f"--- {step.name}: ok" in out, out
        body = out.split(f"{step.name}: {step.title} ===")[1].split(f"--- {step.name}:")[0]
        assert re.search(FINDINGS[step.name], body), f"{step.name} printed:\n{body}"
    assert f"tour: {len(tour.STEPS)} steps: {len(tour.STEPS)} ok, 0 unavailable, 0 FAILED" in out


@pytest.mark.parametrize("name", [s.name for s in tour.STEPS])
def test_each_step_runs_alone(name, capsys):
    assert main(["tour", "--step", name]) == 0
    out = capsys.readouterr().out
    assert re.search(FINDINGS[name], out), out
    assert out.count("=== [") == 1 and "tour: 1 steps: 1 ok" in out


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
    assert "unavailable: Cython is not installed; to run this step: pip install cython" in done.stdout
    assert "--- bytes_mutation: ok" in done.stdout
    assert "tour: 3 steps: 2 ok, 1 unavailable (cython), 0 FAILED" in done.stdout


def test_a_broken_step_fails_the_tour_but_not_the_steps_after_it(monkeypatch, capsys):
    def broken():
        raise RuntimeError("a bug in a step")

    def missing():
        raise OSError("libfoo.so: cannot open shared object file")

    steps = (tour.Step("broken", "a bug", broken), tour.Step("missing", "a missing library", missing),
             *(s for s in tour.STEPS if s.name == "bytes_mutation"))
    monkeypatch.setattr(tour, "STEPS", steps)
    assert tour.run() == 1
    out = capsys.readouterr().out
    assert "FAILED:\nTraceback" in out and "RuntimeError: a bug in a step" in out
    assert "unavailable: OSError: libfoo.so: cannot open shared object file" in out and "pyguts doctor" in out
    assert "--- bytes_mutation: ok" in out
    assert "tour: 3 steps: 1 ok, 1 unavailable (missing), 1 FAILED (broken)" in out


def test_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tour", "--step", "nope"])
    assert exc.value.code == 2
    assert "c_kernel" in capsys.readouterr().err
