"""pyguts.native.build with the real compilers: cache, concurrency, C++, errors, OpenMP."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import needs  # tests/needs.py
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


#: A kernel whose slow way is chosen by the test: with ``slow_team`` set, a team of more than one
#: thread sleeps 50 ms in each thread; otherwise one thread alone does (more than a loaded machine's
#: scheduler delays a team by).
TEAM_CDEF = "void work(double *x, int n, int slow_team); int threads_used(void);"
TEAM_SOURCE = """
#include <omp.h>
#include <time.h>
static int used;
void work(double *x, int n, int slow_team) {
    #pragma omp parallel
    {
        int team = omp_get_num_threads();
        #pragma omp single
        used = team;
        if ((team > 1) == (slow_team != 0)) {
            struct timespec t = {0, 50 * 1000 * 1000};
            nanosleep(&t, 0);
        }
        #pragma omp for
        for (int i = 0; i < n; i++) x[i] += 1.0;
    }
}
int threads_used(void) { return used; }
"""


@pytest.mark.parametrize("slow_team", [True, False], ids=["team slower", "one thread slower"])
def test_threads_true_runs_each_call_the_way_measured_faster(cache, slow_team):
    """A team is not always faster (a busy machine, small calls): each size class of calls gets the
    way that measured faster, and the caller's OpenMP setting is left as it was."""
    lib = native.build(TEAM_CDEF, TEAM_SOURCE, threads=True, name="team", lengths={"x": "n"})
    team = lib.lib._pyguts_omp_get()
    if team < 2:
        pytest.skip("needs_cpus: OpenMP offers one thread here (one CPU or OMP_NUM_THREADS=1): nothing to choose")
    x = np.zeros(1000)
    trials = 2 * native.team.TRIALS
    for _ in range(trials + 5):
        lib.work(x, slow_team=slow_team)
    assert x[0] == trials + 5
    want = 1 if slow_team else team
    assert native.team_choices(lib.work) == {x.nbytes.bit_length(): want}
    assert lib.threads_used() == want          # the last call ran the faster way
    assert lib.lib._pyguts_omp_get() == team   # and the thread's setting is restored


def test_team_choice_follows_a_change_of_speed(cache):
    """A choice is tried again now and then: when the other way becomes faster, it is taken."""
    lib = native.build(TEAM_CDEF, TEAM_SOURCE, threads=True, name="team", lengths={"x": "n"})
    if lib.lib._pyguts_omp_get() < 2:
        pytest.skip("needs_cpus: OpenMP offers one thread here (one CPU or OMP_NUM_THREADS=1): nothing to choose")
    x = np.zeros(10)
    for _ in range(2 * native.team.TRIALS + 1):
        lib.work(x, slow_team=True)
    assert set(native.team_choices(lib.work).values()) == {1}
    team = lib.lib._pyguts_omp_get()
    for calls in range(1, 3 * native.team.RETRY + 1):   # the team is now the fast way: a retry finds it
        # (at the first retry, RETRY calls on; should a loaded machine delay that team, at the second)
        lib.work(x, slow_team=False)
        if set(native.team_choices(lib.work).values()) == {team}:
            break
    assert set(native.team_choices(lib.work).values()) == {team}, f"still one thread after {calls} calls"


@needs.linked("gsl")
def test_libraries_are_linked(cache):
    lib = native.build("double gamma5(void);", """
        double gsl_sf_gamma(double x);
        double gamma5(void) { return gsl_sf_gamma(5.0); }
    """, libraries=["gsl", "gslcblas", "m"])
    assert lib.gamma5() == 24.0


# --- the cache trusts only its permissions (issue 14, item 9) ---------------------------------------

ANSWER_CDEF = "int answer(void);"


@pytest.fixture
def answer(request):
    """C source returning 42, unique to the test: no module of it is loaded in this process yet."""
    return f"/* {request.node.nodeid} */ int answer(void) {{ return 42; }}"


def _build_in_subprocess(cache: pathlib.Path, source: str, **popen) -> pathlib.Path:
    """Build ``source`` in a fresh process (this one never loads it); the path of the cached module."""
    script = (f"from pyguts import native; lib = native.build({ANSWER_CDEF!r}, {source!r}); "
              f"assert lib.answer() == 42; print(lib.path)")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYGUTS_CACHE_DIR": str(cache)},
                          capture_output=True, text=True, timeout=120, **popen)
    assert done.returncode == 0, done.stderr
    return pathlib.Path(done.stdout.strip())


def _compile_module(modname: str, source: str, out: pathlib.Path) -> None:
    """An extension module named ``modname`` (what the cache would load) made by hand."""
    import cffi
    from cffi.recompiler import make_c_source

    from pyguts import _compat

    ffi = cffi.FFI()
    ffi.cdef(ANSWER_CDEF)
    c_file = out.with_suffix(".c")
    make_c_source(ffi, modname, source, str(c_file), verbose=False)
    subprocess.run(["cc", "-shared", "-fPIC", f"-I{_compat.PY_INCLUDE}", "-o", str(out), str(c_file)],
                   check=True, capture_output=True)


def test_planted_module_under_the_cache_name_is_not_loaded(cache, tmp_path, answer):
    path = _build_in_subprocess(cache, answer)
    modname = path.name.split(".")[0]
    planted = tmp_path / "planted.so"
    _compile_module(modname, "int answer(void) { return 666; }", planted)
    os.replace(planted, path)  # same name, other bytes
    lib = native.build(ANSWER_CDEF, answer)
    assert lib.answer() == 42 and not lib.cache_hit  # rebuilt over it
    assert native.build(ANSWER_CDEF, answer).answer() == 42


def test_module_without_its_digest_is_not_loaded(cache, tmp_path, answer):
    path = _build_in_subprocess(cache, answer)
    for sidecar in path.parent.glob(path.name.split(".")[0] + ".sha256"):
        sidecar.unlink()
    planted = tmp_path / "planted.so"
    _compile_module(path.name.split(".")[0], "int answer(void) { return 666; }", planted)
    os.replace(planted, path)
    assert native.build(ANSWER_CDEF, answer).answer() == 42


def test_lock_file_symlink_is_not_followed(cache, tmp_path, answer):
    path = _build_in_subprocess(cache, answer)
    path.unlink()  # the next build takes the lock
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (path.parent / (path.name.split(".")[0] + ".lock")).unlink()
    (path.parent / (path.name.split(".")[0] + ".lock")).symlink_to(victim)
    try:
        native.build(ANSWER_CDEF, answer)
    except native.BuildError as exc:
        refused = str(exc)
    else:
        refused = ""
    assert victim.read_text() == "keep me"  # not truncated through the link
    assert re.search(r"\.lock is a symbolic link.*PYGUTS_CACHE_DIR", refused)


def test_cache_modes_do_not_depend_on_the_umask(tmp_path, answer):
    cache = tmp_path / "made" / "by" / "pyguts"
    path = _build_in_subprocess(cache, answer, umask=0)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o7777)
             for p in [tmp_path / "made", tmp_path / "made" / "by", *cache.rglob("*"), cache]}
    expected = {name: oct(0o700 if (tmp_path / name).is_dir() else 0o600) for name in modes}
    assert modes == expected
    assert path.parent == cache / "native"


@pytest.mark.parametrize("mode, where", [(0o777, "cache"), (0o770, "cache"), (0o777, "native"),
                                         (0o777, "above")],
                         ids=["cache-world", "cache-group", "native-world", "parent-world"])
def test_cache_writable_by_others_is_refused(tmp_path, monkeypatch, mode, where, answer):
    cache = tmp_path / "above" / "cache"
    (cache / "native").mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / "above", 0o755)
    folder = {"cache": cache, "native": cache / "native", "above": tmp_path / "above"}[where]
    os.chmod(folder, mode)
    if mode & 0o020 and not mode & 0o002:
        if os.geteuid() != 0:
            pytest.skip("needs_root: handing the folder to another group (chgrp) takes root")
        os.chown(folder, -1, 12345)  # a group that is not this user's private group
    monkeypatch.setenv("PYGUTS_CACHE_DIR", str(cache))
    with pytest.raises(native.BuildError, match=rf"{folder} is writable by .*PYGUTS_CACHE_DIR"):
        native.build(ANSWER_CDEF, answer)
    assert not list((cache / "native").iterdir())  # nothing read, built or written there


def test_sticky_shared_parent_is_fine(tmp_path, monkeypatch, answer):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename or delete what is ours
    monkeypatch.setenv("PYGUTS_CACHE_DIR", str(shared / "cache"))
    assert native.build(ANSWER_CDEF, answer).answer() == 42


def test_cache_owned_by_someone_else_is_refused(tmp_path, monkeypatch, answer):
    if os.geteuid() != 0:
        pytest.skip("needs_root: giving a folder to another user (chown) takes root")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 12345, -1)
    monkeypatch.setenv("PYGUTS_CACHE_DIR", str(cache))
    with pytest.raises(native.BuildError, match=r"belongs to uid 12345, not to you"):
        native.build(ANSWER_CDEF, answer)


def test_group_writable_private_group_is_fine(tmp_path, monkeypatch, answer):
    from pyguts.native.cache import _private_group

    if not _private_group(os.getegid()):
        pytest.skip("needs_private_group: this user's group is shared, not a user private group")
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o770)  # umask 002 on Fedora/Debian user-private-group setups
    monkeypatch.setenv("PYGUTS_CACHE_DIR", str(cache))
    assert native.build(ANSWER_CDEF, answer).answer() == 42
