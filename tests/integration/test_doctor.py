"""``pyguts doctor``: every component listed, real checks, exit 1 only for a broken core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import needs  # tests/needs.py
import pytest

from pyguts import _compat, doctor
from pyguts.objects import structs
from pyguts.device.probe import NVCC_FALLBACKS
from pyguts.cli import main

#: What the doctor must list, by section, in order (written out: dropping a component fails here).
EXPECTED = {
    "core": ["interpreter", "layout rows", "live layout checks", "numpy NEP 49 handler API", "C array helper"],
    "compilers": ["gcc", "g++", "nvcc"],
    "allocators": ["jemalloc", "mimalloc", "tcmalloc", "libc", "mmap", "mmap-huge", "jemalloc TLS fix"],
    "libraries": ["libgsl", "libgslcblas", "Cython", "cppyy"],
    "gpu": ["numba", "numba CUDA target", "NVVM", "CuPy", "NVRTC", "driver", "device"],
    "isolation": ["fork", "pidfd", "isolate round trip", "faulthandler", "native frames"],
}
ALL_NAMES = [name for names in EXPECTED.values() for name in names]
FIELDS = {"section", "name", "status", "found", "fix", "elapsed_ms", "extra"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _doctor_subprocess(*args: str, env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess:
    """``python -m pyguts doctor ARGS`` (the real program, re-exec included); with ``prelude``, that
    code first, then the CLI's main (no re-exec)."""
    command = [sys.executable, "-m", "pyguts", "doctor", *args]
    if prelude:
        code = prelude + "\nimport sys\nfrom pyguts.cli import main\nsys.exit(main(sys.argv[1:]))"
        command = [sys.executable, "-c", code, "doctor", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def _clean_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "PYGUTS_STATIC_TLS_REEXEC", "CC", "CXX", "NVCC")}
    env.update(changes)
    return env


def _rows(text: str) -> dict[str, str]:
    """name -> its status column, from the human table."""
    out = {}
    for line in text.splitlines():
        for name in ALL_NAMES:
            status = line[len(name):].split()[0] if line.startswith(name + " ") else ""
            if status in ("ok", "MISSING", "BROKEN", "info"):
                out.setdefault(name, status)
    return out


def _fix_after(text: str, name: str) -> str:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
    nxt = lines[index + 1].strip() if index + 1 < len(lines) else ""
    return nxt[3:] if nxt.startswith("-> ") else ""


def test_doctor_lists_every_component_with_a_fix_for_what_is_not_ok(capsys):
    assert main(["doctor"]) == 0  # the core is sound on every interpreter the tests run on
    text = capsys.readouterr().out
    rows = _rows(text)
    assert list(rows) == ALL_NAMES, text
    assert [line[3:-3] for line in text.splitlines() if line.startswith("== ")] == list(EXPECTED)
    for name, status in rows.items():
        if status in ("MISSING", "BROKEN"):
            assert _fix_after(text, name), f"{name} is {status} without a '-> fix' line:\n{text}"
    assert text.rstrip().splitlines()[-1].startswith("pyguts doctor: core ok; ")
    assert rows["live layout checks"] == "ok" and rows["fork"] == "ok" and rows["isolate round trip"] == "ok"


def test_json_has_every_check_with_its_fields(capsys):
    assert main(["doctor", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == ALL_NAMES
    assert [r["section"] for r in records] == [s for s, names in EXPECTED.items() for _ in names]
    for r in records:
        assert set(r) == FIELDS and r["status"] in doctor.STATUSES and r["found"], r
        assert r["status"] in ("ok", "info") or r["fix"], r
    by_name = {r["name"]: r for r in records}
    assert f"CPython {_compat.BUILD_NAME}" in by_name["layout rows"]["found"]
    assert by_name["interpreter"]["found"].startswith(f"CPython {sys.version.split()[0]} ")


@pytest.mark.every_python
def test_the_layout_rows_say_how_they_were_verified():
    from pyguts.objects import layouts

    found = {c.name: c for c in doctor.checks(("core",))}
    rows = found["layout rows"]
    assert rows.status == "ok" and "compiler-verified against this version's headers" in rows.found
    assert (layouts.NEWEST >= _compat.VERSION >= layouts.OLDEST) and (_compat.VERSION, structs.BUILD) in \
        layouts.COMPILER_VERIFIED
    assert ("_Py_DebugOffsets" in rows.found) == (_compat.VERSION >= (3, 13))
    assert found["live layout checks"].status == "ok" and "models agree" in found["live layout checks"].found


def test_strict_fails_on_anything_missing_and_sections_select():
    found = doctor.checks(("core", "isolation"))
    assert [c.name for c in found] == EXPECTED["core"] + EXPECTED["isolation"]
    assert doctor.exit_status(found) == 0
    assert doctor.exit_status(found, strict=True) == (0 if all(c.ok for c in found) else 1)
    missing = doctor.Check("gpu", "CuPy", "missing", "not installed", "pip install cupy")
    assert doctor.exit_status([*found, missing]) == 0 and doctor.exit_status([*found, missing], strict=True) == 1
    assert "1 missing (CuPy)" in doctor.summary_line([*found, missing])


@pytest.mark.every_python
def test_a_wrong_layout_in_use_breaks_the_core_and_exits_1(monkeypatch, capsys):
    # The models of another version (3.14 tuples are 8 bytes longer; on 3.14+, 3.13's are shorter):
    # the live checks compare integers first, so the wrong models never follow a pointer.
    other = (3, 13) if _compat.VERSION >= (3, 14) else (3, 14)
    monkeypatch.setattr(structs, "MODELS", structs.build_models(other, structs.BUILD, _compat.DIGIT_SIZE))
    assert main(["doctor", "--section", "core"]) == 1
    text = capsys.readouterr().out
    assert _rows(text)["live layout checks"] == "BROKEN"
    assert "LayoutMismatchError" in text and "tuple.__basicsize__" in text
    assert _fix_after(text, "live layout checks").startswith("do not read or write object memory")
    assert "core BROKEN" in text.splitlines()[-1]


#: As tests/unit/test_objects_structs.py does: a bare pyguts package (its __init__ imports structs), then the
#: bytes row loses ob_shash before pyguts.objects.structs is first imported (by whatever runs next).
WRONG_BYTES_ROW = textwrap.dedent(f"""
    import dataclasses, sys, types
    pkg = types.ModuleType("pyguts")
    pkg.__path__ = [{os.path.dirname(structs.__file__)!r}]
    sys.modules["pyguts"] = pkg
    import pyguts.objects.layouts as L
    L.ROWS = tuple(dataclasses.replace(r, fields=tuple(m for m in r.fields if m.name != "ob_shash"))
                   if r.model == "PyBytesObject" else r for r in L.ROWS)
""")


@pytest.mark.every_python
def test_a_wrong_layout_row_at_import_is_reported_not_raised():
    done = _doctor_subprocess(env=_clean_env(PYGUTS_STATIC_TLS_REEXEC="1"), prelude=WRONG_BYTES_ROW)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    rows = _rows(done.stdout)
    assert list(rows) == ALL_NAMES and rows["live layout checks"] == "BROKEN"
    assert "bytes.__basicsize__" in done.stdout and "core BROKEN" in done.stdout


def test_missing_compilers_say_so_with_the_fix_and_exit_0():
    done = _doctor_subprocess(env=_clean_env(PATH=""))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(done.stdout)
    assert rows["gcc"] == "MISSING" and _fix_after(done.stdout, "gcc") == "apt-get install gcc"
    assert rows["g++"] == "MISSING" and _fix_after(done.stdout, "g++") == "apt-get install g++"
    fallback = next((p for p in NVCC_FALLBACKS if os.access(p, os.X_OK)), None)
    assert rows["nvcc"] == "MISSING", done.stdout
    if fallback:  # nvcc_path() looks in the usual install places, but nvcc needs a host compiler
        assert fallback in done.stdout and "apt-get install g++" in _fix_after(done.stdout, "nvcc")
    else:
        assert "CUDA toolkit" in _fix_after(done.stdout, "nvcc")
    # pyguts.alloc's shim is built per compiler: what says "install gcc" is every allocator whose
    # library is here (without mimalloc's, its row asks for the library first).
    for name in ("libc", "mmap", *(["mimalloc"] if not needs.allocator_reason("mimalloc") else [])):
        assert rows[name] == "MISSING" and _fix_after(done.stdout, name).startswith("apt-get install gcc")
    assert rows["live layout checks"] == "ok" and "core ok" in done.stdout


@needs.library("jemalloc")
def test_jemalloc_tls_status_follows_glibc_tunables():
    runs = {}
    for label, env in (("no fix, no re-exec", _clean_env(PYGUTS_STATIC_TLS_REEXEC="1")),
                       ("re-exec", _clean_env())):
        done = _doctor_subprocess("--json", "--section", "allocators", env=env)
        assert done.returncode == 0, done.stderr
        runs[label] = {r["name"]: r for r in json.loads(done.stdout)}
    without, reexec = runs["no fix, no re-exec"], runs["re-exec"]
    assert without["jemalloc TLS fix"]["status"] == "missing"
    assert without["jemalloc TLS fix"]["extra"]["pyguts_would_reexec"] is False
    assert "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096" in without["jemalloc TLS fix"]["fix"]
    assert without["jemalloc"]["status"] == "missing" and "static TLS" in without["jemalloc"]["found"]
    assert reexec["jemalloc TLS fix"]["status"] == "ok" and "re-exec" in reexec["jemalloc TLS fix"]["found"]
    assert reexec["jemalloc"]["status"] == "ok" and "libjemalloc.so.2" in reexec["jemalloc"]["found"]


def test_a_check_that_raises_is_a_broken_finding(monkeypatch):
    def boom() -> tuple:
        raise OSError("no /proc here")

    monkeypatch.setattr(doctor, "_pidfd", boom)
    found = {c.name: c for c in doctor.checks(("isolation",))}
    assert found["pidfd"].status == "broken" and "OSError: no /proc here" in found["pidfd"].found
    assert found["fork"].status == "ok" and doctor.exit_status(list(found.values())) == 0


def test_the_native_frames_row_crashes_a_child_for_real_and_says_why_when_unbuilt(monkeypatch):
    from pyguts.isolation import native

    row = {c.name: c for c in doctor.checks(("isolation",))}["native frames"]
    assert row.status == "ok" and "string_at among them" in row.found, row.found
    monkeypatch.setattr(native, "_install", None)
    monkeypatch.setattr(native, "_why_not", "BuildError: no C compiler found")
    row = {c.name: c for c in doctor.checks(("isolation",))}["native frames"]
    assert row.status == "missing" and "no C compiler found" in row.found and "gcc" in row.fix


@pytest.mark.every_python
def test_import_pyguts_survives_a_layout_mismatch_but_nothing_reads_memory():
    # The wrong row is in place before the real pyguts/__init__ runs (the bare package is dropped first).
    prelude = WRONG_BYTES_ROW + textwrap.dedent("""
        del sys.modules["pyguts"]
        import pyguts
        from pyguts.errors import LayoutMismatchError
        try:
            pyguts.view(b"x")
        except LayoutMismatchError as exc:
            print("refused:", exc)
        try:
            import pyguts.objects.memory
        except LayoutMismatchError:
            print("pyguts.objects.memory refused too")
    """)
    done = _doctor_subprocess("--section", "core", env=_clean_env(PYGUTS_STATIC_TLS_REEXEC="1"), prelude=prelude)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused: pyguts.view is unavailable: " in done.stdout and "bytes.__basicsize__" in done.stdout
    assert "pyguts.objects.memory refused too" in done.stdout
    assert "core BROKEN" in done.stdout.splitlines()[-1]


def test_nvrtc_and_nvvm_rows_compile_for_real_and_name_the_extra_when_missing(monkeypatch):
    """CuPy's wheels leave NVRTC out and numba's built-in CUDA target finds NVVM only in a toolkit:
    doctor compiles a tiny kernel with each, and says which extra brings what is missing."""
    from pyguts.device import nvrtc, probe

    tool = probe.nvrtc_tool()
    if nvrtc.library()[0] is not None:   # `make test` installs it (the nvrtc extra)
        assert tool.ok and tool.detail.startswith("NVRTC ") and "compiles" in tool.detail, tool
    monkeypatch.setattr(nvrtc, "candidates", lambda: [])
    nvrtc.library.cache_clear()
    try:
        missing = probe.nvrtc_tool()
    finally:
        nvrtc.library.cache_clear()
    assert not missing.ok and "no libnvrtc found" in missing.detail and "cupy-cuda12x[ctk]" in missing.fix

    import numba
    from numba import cuda

    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)   # (another test may have switched the simulator on)

    def no_nvvm(*args, **kwargs):
        raise RuntimeError("libNVVM cannot be found. Do `conda install cudatoolkit`")
    monkeypatch.setattr(cuda, "compile_ptx", no_nvvm)
    broken = probe.nvvm_tool()
    assert not broken.ok and "libNVVM cannot be found" in broken.detail and "numba-cuda[cu12]" in broken.fix
