"""Every examples/*.py runs to exit 0 and prints its key finding; examples/tour.ipynb executes headless without errors."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest

from pyguts.alloc.registry import static_tls_environ

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
    module, without = OPTIONAL.get(script, (None, None))
    missing = module is not None and importlib.util.find_spec(module) is None
    if missing and without is None:
        pytest.skip(f"needs_{module.lower()}: {module} is not installed (pip install -e '.[test]')")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *ARGS.get(script, [])], capture_output=True,
                          text=True, env=_env(), timeout=300, cwd=EXAMPLES.parent)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    print(f"{script}: {elapsed:.2f} s")
    if missing:  # the script's own skip path ran: check it, then report the skip
        assert without in done.stdout, f"{script} did not print {without!r}:\n{done.stdout}"
        pytest.skip(f"needs_{module.lower()}: {without}")
    for expected in (EXPECTED[script], *ALSO.get(script, ())):
        assert expected in done.stdout, f"{script} did not print {expected!r}:\n{done.stdout}"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s[:2].isdigit()])
def test_example_is_documented(script):
    text = (EXAMPLES / script).read_text()
    assert text.startswith('"""') and f"Run: python examples/{script}" in text, script
    assert 30 <= len(text.splitlines()) <= 80, f"{script}: keep examples short and readable"


def test_python3_kernel_is_this_interpreter():
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    assert km.kernel_spec.language == "python"
    assert km.format_kernel_cmd()[0] == sys.executable, "the python3 kernelspec must start this interpreter"


#: Notebook section (by its script) -> text its code cell's output must contain.
NOTEBOOK_EXPECTED = {
    "01_c_kernel.py": "max |C - numpy| = 0",
    "02_gsl_callback.py": "instead of abort()",
    "07_jemalloc.py": "data from 'pyguts-jemalloc'",
    "09_bytes_mutation.py": "b in {b'Mello, world!'}: True",
    "11_type_swap.py": "SIGSEGV",
}


def _cell_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.slow
def test_notebook_executes_headless():
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import make_notebook
    finally:
        sys.path.remove(str(EXAMPLES))
    assert make_notebook.check() == 0, "examples/tour.ipynb is stale: run python examples/make_notebook.py"
    assert [p.name for p in make_notebook.scripts()] == [s for s in SCRIPTS if s[:2].isdigit()]  # no __init__.py
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.get("outputs") is not None for c in stored.cells if c.cell_type == "code")
    assert "SIGSEGV" in _cell_text(stored.cells[-1]), "the stored notebook must show the crash report"

    start = time.perf_counter()
    nb = make_notebook.execute(nbformat.read(NOTEBOOK, as_version=4), timeout=300)
    print(f"tour.ipynb executed in {time.perf_counter() - start:.1f} s")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, [f"{o['ename']}: {o['evalue']}" for o in errors]
    code_cells = {}
    for markdown, code in zip(nb.cells, nb.cells[1:]):
        if markdown.cell_type == "markdown" and code.cell_type == "code" and "Script: `examples/" in markdown.source:
            code_cells[markdown.source.split("Script: `examples/")[1].split("`")[0]] = code
    assert sorted(code_cells) == [s for s in SCRIPTS if s[:2].isdigit()]
    for script, expected in NOTEBOOK_EXPECTED.items():
        assert expected in _cell_text(code_cells[script]), (script, _cell_text(code_cells[script]))
    assert "status='crashed'" in _cell_text(code_cells["11_type_swap.py"])
    svgs = [o["data"]["image/svg+xml"] for c in nb.cells for o in c.get("outputs", []) if "image/svg+xml" in o.get("data", {})]
    assert len(svgs) == 1 and "ob_sval" in svgs[0] and "type bytes at 0x" in svgs[0], "the diagram cell draws b"


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
