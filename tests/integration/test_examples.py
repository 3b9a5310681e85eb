"""Every examples/*.py runs to exit 0 and prints its key finding; examples/tour.ipynb executes headless without errors."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

import needs  # tests/needs.py
import pytest

from pyguts import tour
from pyguts.alloc.registry import REEXEC_MARK, static_tls_environ

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
NOTEBOOK = EXAMPLES / "tour.ipynb"
#: The scripts; __init__.py only makes the folder the package pyguts.tour.examples once installed.
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "__init__.py")

#: script -> a line (part) its output must contain: the finding it exists to show.
EXPECTED = {
    "01_c_kernel.py": "max |C - numpy| = 0 on n=1,000,000",
    "02_gsl_callback.py": "gsl_sf_gamma(1000) raised NativeError (GSL code 16, 'overflow') instead of abort()",
    "03_cpp_inline.py": "agree to 1e-12: True",
    "04_cython_bridge.py": "max |Cython - numpy| = 0 on n=1,000,000",
    "05_cuda.py": "CPU build of magnitude.cu: max |CPU - numpy| = 0",
    "06_numba.py": "max |numba - numpy| = 0",
    "07_jemalloc.py": "after del a, b, block: pyguts' live bytes in jemalloc 0",
    "08_raw_memory.py": "ob_type == id(bytes): True",
    "09_bytes_mutation.py": "hash(b) == hash(b'Mello, world!'): True, b in {b'Mello, world!'}: True",
    "10_refcounts.py": "1000 refcount() and 3 referrers() calls later: 1 (was 1",
    "11_type_swap.py": "status='crashed', signal=11 (SIGSEGV)",
    "make_notebook.py": "tour.ipynb is up to date",
}
#: Arguments per script: the notebook generator only checks the stored cells (the notebook test executes it).
ARGS = {"make_notebook.py": ["--check"]}
#: Scripts that may take more than a few seconds (a first Cython build, numba's simulator in a child).
SLOW = {"04_cython_bridge.py", "06_numba.py"}
#: script -> (module it needs, what the script prints without it): the script must say so and exit 0.
OPTIONAL = {
    "04_cython_bridge.py": ("Cython", "skipped: Cython is not installed (pip install cython)"),
    "make_notebook.py": ("nbclient", None),  # a maintainer's tool: needs the [test] extra
}
#: script -> the system library it needs (tests/needs.py): where that is missing, the script stops
#: naming the install and the test skips with the reason.
LIBRARY = {"02_gsl_callback.py": "gsl"}
#: script -> (allocator, what it prints without that allocator's library): it goes on with another.
FALLBACK = {"07_jemalloc.py": ("jemalloc", "so this section goes on with ")}
#: Scripts that force an unsafe operation (in an isolated child): also run by `make test-forked`.
CRASH_PRONE = {"11_type_swap.py"}
#: Second findings that must be there too, where the path taken depends on the machine.
ALSO = {
    "04_cython_bridge.py": ("first call",),
    "05_cuda.py": ("path: ",),
    "06_numba.py": ("@cuda.jit",),
    "11_type_swap.py": ("swap_type(b, DifferentClass) is refused", "this interpreter lives on"),
}


def _env() -> dict[str, str]:
    """The children's environment: the static-TLS tunable for jemalloc set from the start (as `make test` does)."""
    return static_tls_environ()


def _plain_env() -> dict[str, str]:
    """An environment as a Jupyter started the normal way gives its kernels: no static-TLS fix of any kind."""
    return {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", REEXEC_MARK)}


def _jemalloc_needs_static_tls() -> bool:
    """Whether libjemalloc.so.2 is installed and refuses to load without the fix (Debian's does): the
    oracle for what the jemalloc section must print in a plain environment."""
    probe = "import ctypes; ctypes.CDLL('libjemalloc.so.2')"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_plain_env(), timeout=60)
    return done.returncode != 0 and "static TLS" in done.stderr


def test_every_script_has_an_expected_line():
    assert SCRIPTS, f"no scripts found in {EXAMPLES}"
    assert sorted(EXPECTED) == SCRIPTS, "add each new examples/*.py to EXPECTED (and remove deleted ones)"
    numbered = [s for s in SCRIPTS if s[:2].isdigit()]
    assert [int(s[:2]) for s in numbered] == list(range(1, len(numbered) + 1)), numbered


def test_the_package_marker_is_a_docstring_only():
    tree = ast.parse((EXAMPLES / "__init__.py").read_text())
    assert len(tree.body) == 1 and ast.get_docstring(tree), "examples/__init__.py: a docstring, nothing to run"


@pytest.mark.every_python  # 08-11 read interpreter structs: every supported CPython must run them
@pytest.mark.parametrize("script", [
    pytest.param(s, marks=[m for m, names in ((pytest.mark.slow, SLOW), (pytest.mark.crash_prone, CRASH_PRONE))
                           if s in names]) for s in SCRIPTS])
def test_example_runs(script):
    expected, missing = [EXPECTED[script], *ALSO.get(script, ())], ""
    module, without = OPTIONAL.get(script, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        if without is None:
            pytest.skip(f"needs_{module.lower()}: {module} is not installed (pip install -e '.[test]')")
        expected, missing = [without], f"needs_{module.lower()}: {without}"   # the script's own skip path
    allocator, fallback = FALLBACK.get(script, (None, None))
    if allocator is not None and needs.allocator_reason(allocator):
        expected, missing = [fallback], needs.allocator_reason(allocator)
    library_missing = needs.library_reason(LIBRARY[script]) if script in LIBRARY else ""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *ARGS.get(script, [])], capture_output=True,
                          text=True, env=_env(), timeout=300, cwd=EXAMPLES.parent)
    elapsed = time.perf_counter() - start
    if library_missing:   # the load raises, naming what to install
        assert done.returncode == 1 and "apt-get install" in done.stderr, done.stdout + done.stderr
        pytest.skip(library_missing)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    print(f"{script}: {elapsed:.2f} s")
    for line in expected:
        assert line in done.stdout, f"{script} did not print {line!r}:\n{done.stdout}"
    if missing:   # what ran is the path without the tool: checked, and the test says what it lacked
        pytest.skip(missing)


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s[:2].isdigit()])
def test_example_is_documented(script):
    text = (EXAMPLES / script).read_text()
    assert text.startswith('"""') and f"Run: python examples/{script}" in text, script
    assert 30 <= len(text.splitlines()) <= 80, f"{script}: keep examples short and readable"


def test_jemalloc_example_without_the_fix_says_why_and_goes_on_with_another_allocator():
    # As in a Jupyter kernel: no GLIBC_TUNABLES, and no restart (the mark says it was done already).
    env = dict(_plain_env(), **{REEXEC_MARK: "1"})
    done = subprocess.run([sys.executable, str(EXAMPLES / "07_jemalloc.py")], capture_output=True, text=True,
                          env=env, timeout=300, cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    if not _jemalloc_needs_static_tls():
        pytest.skip("needs_jemalloc: libjemalloc.so.2 is absent or loads without GLIBC_TUNABLES here "
                    "(Debian: apt-get install libjemalloc2)")
    assert "jemalloc cannot be loaded in this process:" in out and "static TLS" in out, out
    assert f"in Jupyter: {tour.static_tls_hint()}" in out
    name = out.split("so this section goes on with ")[1].split(":")[0]
    assert name in ("mimalloc", "tcmalloc", "libc"), out
    assert f"data from 'pyguts-{name}'" in out and f"after del a, b, block: pyguts' live bytes in {name} 0" in out


def test_python3_kernel_is_this_interpreter():
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    assert km.kernel_spec.language == "python"
    assert km.format_kernel_cmd()[0] == sys.executable, "the python3 kernelspec must start this interpreter"


#: Notebook section (by its script) -> text its code cell's output must contain.
NOTEBOOK_EXPECTED = {
    "01_c_kernel.py": "max |C - numpy| = 0",
    "02_gsl_callback.py": "instead of abort()",
    "08_raw_memory.py": "ob_type == id(bytes): True",
    "09_bytes_mutation.py": "b in {b'Mello, world!'}: True",
    "10_refcounts.py": "the tool adds no references of its own",
    "11_type_swap.py": "SIGSEGV",
}


def _cell_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _code_cells(nb) -> dict:
    """script name -> the code cell of its section (the cell after the markdown naming the script)."""
    cells = {}
    for markdown, code in zip(nb.cells, nb.cells[1:]):
        if markdown.cell_type == "markdown" and code.cell_type == "code" and "Script: `examples/" in markdown.source:
            cells[markdown.source.split("Script: `examples/")[1].split("`")[0]] = code
    return cells


def _displayed(nb, mime: str) -> list[str]:
    return [o["data"][mime] for c in nb.cells for o in c.get("outputs", []) if mime in o.get("data", {})]


def _make_notebook():
    pytest.importorskip("nbformat", reason="needs nbformat (pip install -e '.[test]')")
    pytest.importorskip("nbclient", reason="needs nbclient (pip install -e '.[test]')")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import make_notebook
    finally:
        sys.path.remove(str(EXAMPLES))
    return make_notebook


def test_the_stored_notebook_is_current_and_shows_every_result():
    make_notebook = _make_notebook()
    import nbformat

    assert make_notebook.check() == 0, "examples/tour.ipynb is stale: run python examples/make_notebook.py"
    assert [p.name for p in make_notebook.scripts()] == [s for s in SCRIPTS if s[:2].isdigit()]  # no __init__.py
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.get("outputs") for c in stored.cells if c.cell_type == "code"), "every code cell shows its output"
    assert not [o for c in stored.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    cells = _code_cells(stored)
    assert "SIGSEGV" in _cell_text(cells["11_type_swap.py"]), "the stored notebook must show the crash report"
    assert "data from 'pyguts-jemalloc'" in _cell_text(cells["07_jemalloc.py"]), "stored with jemalloc loaded"
    assert len(_displayed(stored, "image/svg+xml")) == 2 and len(_displayed(stored, "text/html")) == 1


def test_the_notebooks_kernel_advice_is_the_install_command():
    make_notebook = _make_notebook()
    shown = make_notebook.INTRO.split("python -m ipykernel install")[1].split("\n\n")[0]
    assert shlex.split("python -m ipykernel install" + shown.replace("\\\n", " ")) == \
        tour.kernel_install_command("python")


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_in_a_kernel_started_without_glibc_tunables():
    # Issue 16: a Jupyter started the normal way has no GLIBC_TUNABLES; every cell must run all the same.
    make_notebook = _make_notebook()
    import nbformat

    needs.require_library("gsl")   # its section raises without GSL, and a notebook stops at an error
    env = dict(_plain_env(), PYTHONHASHSEED="0")
    start = time.perf_counter()
    nb = make_notebook.execute(nbformat.read(NOTEBOOK, as_version=4), timeout=300, env=env)
    print(f"tour.ipynb executed in {time.perf_counter() - start:.1f} s")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, [f"{o['ename']}: {o['evalue']}" for o in errors]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell ran"
    code_cells = _code_cells(nb)
    assert sorted(code_cells) == [s for s in SCRIPTS if s[:2].isdigit()]
    for script, expected in NOTEBOOK_EXPECTED.items():
        assert expected in _cell_text(code_cells[script]), (script, _cell_text(code_cells[script]))
    jemalloc = _cell_text(code_cells["07_jemalloc.py"])
    if _jemalloc_needs_static_tls():  # Debian's: the section explains, gives the fix, and goes on
        hint = tour.static_tls_hint().replace(str(EXAMPLES.parent) + os.sep, "")  # execute() strips the checkout
        assert "cannot allocate memory in static TLS block" in jemalloc and f"in Jupyter: {hint}" in jemalloc
        assert "so this section goes on with" in jemalloc and "after del a, b, block: pyguts' live bytes in" in jemalloc
        assert "data from 'pyguts-jemalloc'" not in jemalloc
    else:
        assert "data from 'pyguts-" in jemalloc, jemalloc
    assert "status='crashed'" in _cell_text(code_cells["11_type_swap.py"])
    svgs = _displayed(nb, "image/svg+xml")
    assert len(svgs) == 2 and "ob_sval" in svgs[0] and "type bytes at 0x" in svgs[0], "the diagram cell draws b"
    assert "allocated" in svgs[1] and "PyObject *[4] at 0x" in svgs[1], "the second draws the list"
    [outcome] = _displayed(nb, "text/html")
    assert "isolate: crashed" in outcome and "SIGSEGV" in outcome and "child faulthandler output" in outcome


def test_the_kernel_spec_loads_jemalloc_in_a_jupyter_started_without_the_fix(tmp_path, monkeypatch):
    make_notebook = _make_notebook()
    import nbformat

    if not _jemalloc_needs_static_tls():
        pytest.skip("needs_jemalloc: libjemalloc.so.2 is absent or needs no fix here (Debian: apt-get install "
                    "libjemalloc2)")
    command = tour.kernel_install_command(user=False) + ["--prefix", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/pyguts/kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and spec["display_name"] == "Python 3 (pyguts)"
    assert spec["env"] == {"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=4096"}
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share/jupyter"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import pyguts.alloc as alloc\nprint(alloc.zeros(3, allocator='jemalloc').sum(), alloc.owner(alloc.zeros(3, "
        "allocator='jemalloc')).allocator)")])
    nb = make_notebook.execute(nb, timeout=120, env=_plain_env(), kernel_name="pyguts")
    assert _cell_text(nb.cells[0]).strip() == "0.0 jemalloc", nb.cells[0].outputs


def test_cython_example_says_why_without_cython():
    """The skip path of 04 where Cython is installed: hide it from a child interpreter, then run the script."""
    hide = ("import runpy, sys\n"
            "for name in ('Cython', 'Cython.Build', 'Cython.Build.Inline'):\n"
            "    sys.modules[name] = None  # import raises ImportError, as if not installed\n"
            "runpy.run_path(sys.argv[1], run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", hide, str(EXAMPLES / "04_cython_bridge.py")], capture_output=True,
                          text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == OPTIONAL["04_cython_bridge.py"][1]
