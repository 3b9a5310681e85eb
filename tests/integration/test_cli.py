"""The conventions every `pyguts` command keeps: --version, results on stdout and errors on stderr,
exit statuses kept when the reader of stdout goes away early, and a restart for GLIBC_TUNABLES only
for the commands that load jemalloc (each subcommand: test_cli_inspect.py, test_doctor.py, ...)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pyguts
from pyguts.cli import COMMANDS, main

#: Printed once per start of the interpreter by the probe below: a restart (execve) prints it again.
STARTED = "started pyguts.cli"
#: Runs the CLI as the `pyguts` program does (argv None), after saying that this interpreter started.
_PROBE = f"import sys; print({STARTED!r}, flush=True); from pyguts.cli import main; sys.exit(main())"


def _environ_without_the_fix() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}


def _starts(*args: str) -> tuple[int, subprocess.CompletedProcess]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=300,
                          env=_environ_without_the_fix())
    return done.stdout.count(STARTED), done


def test_version_says_which_pyguts_from_where_on_which_python(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "20")   # a narrow terminal must not wrap the path
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"pyguts {pyguts.__version__} from {os.path.dirname(pyguts.__file__)} (")
    assert line.endswith(f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro})"), line


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("inspect", "1"), ("leaks", "--help"),
                                  ("doctor", "--help"), ("tour", "--help")])
def test_commands_that_do_not_load_jemalloc_start_once(args):
    starts, done = _starts(*args)
    assert done.returncode == 0, done.stderr
    assert starts == 1, f"pyguts {' '.join(args)} restarted itself:\n{done.stdout}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the restart for GLIBC_TUNABLES is Linux-only")
def test_doctor_restarts_once_with_the_static_tls_fix():
    starts, done = _starts("doctor", "--section", "allocators", "--json")
    assert starts == 2, done.stdout[:2000]
    assert '"reexec_marker": true' in done.stdout and "glibc.rtld.optional_static_tls=4096" in done.stdout


def test_help_imports_no_command_engine():
    code = ("import sys\nfrom pyguts.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'cffi', 'pyguts.doctor', 'pyguts.alloc', 'pyguts.objects') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]
    assert all(name in done.stdout for name in COMMANDS)


def test_doctor_help_names_every_section(capsys):
    from pyguts import doctor

    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert [s for s in doctor.SECTIONS if f"{s} (" not in text and f"{s}," not in text] == []


def test_usage_errors_go_to_stderr(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--section", "nonsense"])
    captured = capsys.readouterr()
    assert exc.value.code == 2 and captured.out == ""
    assert "invalid choice: 'nonsense'" in captured.err and "'allocators'" in captured.err


def _closed_early(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``python -m pyguts ARGS`` with stdout a pipe whose reader closes it after the first bytes."""
    with subprocess.Popen([sys.executable, "-m", "pyguts", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as child:
        first = child.stdout.read(16)
        child.stdout.close()
        err = child.stderr.read().decode()
        return subprocess.CompletedProcess(args, child.wait(timeout=300), first, err)


#: Output far beyond any pipe's buffer, so the writer meets the closed pipe (exit 0, then exit 2).
_BIG = "tuple(range(200_000))"


@pytest.mark.parametrize(("args", "status"), [(["inspect", "--json", _BIG], 0),
                                               (["inspect", "--json", _BIG, "--svg", "/nonexistent/d.svg"], 2)])
def test_a_reader_going_away_keeps_the_exit_status(args, status):
    done = _closed_early(args)
    assert done.stdout, "the command printed nothing before the reader left"
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
