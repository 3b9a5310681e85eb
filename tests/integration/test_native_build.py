"""pyguts.native.build with the real compilers: cache, concurrency, C++, errors, OpenMP."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pyguts import native

pytestmark = pytest.mark.every_python

MAG_CDEF = "void magnitude(const double *a, const double *b, const double *c, double *out, size_t n);"
MAG_SOURCE = """
#include <math.h>
void magnitude(const double *a, const double *b, const double *c, double *out, size_t n) {
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) out[i] = sqrt(a[i] * a[i] + b[i] * b[i] + c[i] * c[i]);
}
"""
MAG_LENGTHS = {"a": "n", "b": "n", "c": "n", "out": "n"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYGUTS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_env_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("PYGUTS_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert native.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("PYGUTS_CACHE_DIR")
    assert native.cache_dir() == tmp_path / "x" / "pyguts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert native.cache_dir() == tmp_path / "home" / ".cache" / "pyguts"


def test_second_build_hits_and_edit_rebuilds(cache):
    source = "int answer(void) { return 41; }"
    first = native.build("int answer(void);", source)
    assert (first.cache_hit, first.answer()) == (False, 41)
    assert pathlib.Path(first.path).parent == cache / "native"
    again = native.build("int answer(void);", source)
    assert again.cache_hit and again.path == first.path
    edited = native.build("int answer(void);", source.replace("41", "42"))
    assert (edited.cache_hit, edited.answer()) == (False, 42) and edited.path != first.path
    flagged = native.build("int answer(void);", source, flags=["-O1"])
    assert not flagged.cache_hit  # flags are part of the key


def _build_script(go_file: pathlib.Path) -> str:
    return textwrap.dedent(f"""
        import os, pathlib, sys, time
        import numpy as np
        from pyguts import native
        go = pathlib.Path({str(go_file)!r})
        while not go.exists():
            time.sleep(0.001)
        lib = native.build({MAG_CDEF!r}, {MAG_SOURCE!r}, lengths={MAG_LENGTHS!r})
        a = np.arange(4.0); out = np.empty(4)
        lib.magnitude(a, a, a, out)
        print(lib.cache_hit, round(float(out[2]) ** 2, 6))
    """)


def test_two_processes_build_at_once(cache, tmp_path):
    go = tmp_path / "go"
    script = _build_script(go)
    env = {**os.environ, "PYGUTS_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()  # both start building at the same moment
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    lines = sorted(out.strip() for out, _ in results)
    assert lines == ["False 12.0", "True 12.0"]  # one built, the other waited and reused it
    leftovers = [p.name for p in (cache / "native").iterdir() if ".build-" in p.name]
    assert leftovers == []
    # A third process finds the finished build on disk.
    go_done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             timeout=120)
    assert go_done.stdout.strip() == "True 12.0", go_done.stderr


def test_cpp_template_behind_extern_c(cache):
    lib = native.build("double total(const double *p, size_t n); int width(void);", """
        #include <numeric>
        #include <vector>
        template <typename T> T sum(const T *p, std::size_t n) { return std::accumulate(p, p + n, T(0)); }
        extern "C" double total(const double *p, size_t n) { return sum<double>(p, n); }
        extern "C" int width(void) { return (int)sizeof(std::vector<int>::value_type); }
    """, language="c++", lengths={"p": "n"})
    assert lib.total(np.arange(101.0)) == 5050.0
    assert lib.width() == 4


def test_compile_error_reports_user_line(cache):
    source = "int f(int x) {\n    int y = x;\n    return y +;\n}\n"
    with pytest.raises(native.BuildError) as info:
        native.build("int f(int x);", source, name="broken")
    error = info.value
    assert error.lines == [3]
    assert "broken.c:3:" in str(error) and "line 3 of broken.c" in str(error)


def test_cpp_compile_error_reports_user_line(cache):
    source = 'extern "C" int g(int x) {\n  return undefined_name + x;\n}\n'
    with pytest.raises(native.BuildError) as info:
        native.build("int g(int x);", source, language="c++")
    assert info.value.lines == [2]


def test_declared_but_undefined_function(cache):
    with pytest.raises(native.BuildError, match="'h'|h.*cdef"):
        native.build("int h(int x);", "int other(int x) { return x; }")


def test_missing_compiler_says_what_to_install(cache, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    with pytest.raises(native.BuildError, match=r"CC=.*/nonexistent/bin/cc.*apt-get install gcc"):
        native.build("int k(void);", "int k(void) { return 0; }")
    monkeypatch.setenv("CXX", "/nonexistent/bin/c++")
    with pytest.raises(native.BuildError, match=r"apt-get install g\+\+"):
        native.build("int k(void);", 'extern "C" int k(void) { return 0; }', language="c++")


def test_cdef_error_is_build_error(cache):
    with pytest.raises(native.BuildError, match="cdef"):
        native.build("int f(int x", "int f(int x) { return x; }")


def test_threads_openmp_matches_numpy(cache):
    lib = native.build(MAG_CDEF + "int max_threads(void);", MAG_SOURCE + """
#include <omp.h>
int max_threads(void) { return omp_get_max_threads(); }
""", threads=True, lengths=MAG_LENGTHS)
    assert lib.max_threads() >= 1
    a, b, c = np.random.default_rng(1).standard_normal((3, 100_001))
    out = np.empty_like(a)
    lib.magnitude(a, b, c, out)
    np.testing.assert_allclose(out, np.sqrt(a * a + b * b + c * c), rtol=1e-15)


def test_libraries_are_linked(cache):
    lib = native.build("double gamma5(void);", """
        double gsl_sf_gamma(double x);
        double gamma5(void) { return gsl_sf_gamma(5.0); }
    """, libraries=["gsl", "gslcblas", "m"])
    assert lib.gamma5() == 24.0
