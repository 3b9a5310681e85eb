"""Write examples/tour.ipynb from the example scripts and execute it, so it is stored with its outputs.

Each ``examples/NN_*.py`` becomes one section: its docstring the markdown cell, the rest of the
script the code cell (so the notebook and the scripts cannot drift apart); a few extra cells show
what Jupyter draws (a diagram, an isolated call's outcome). The kernel is this interpreter's
``python3`` kernel (ipykernel), started with GLIBC_TUNABLES set for jemalloc and PYTHONHASHSEED=0
so the printed hashes are the same on every run (the tests also run it without GLIBC_TUNABLES).

Regenerate:  .venv/bin/python examples/make_notebook.py
Check only:  .venv/bin/python examples/make_notebook.py --check   (cells match the scripts; no kernel)
"""

from __future__ import annotations

import argparse
import ast
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

from pyguts.alloc.registry import static_tls_environ

HERE = pathlib.Path(__file__).resolve().parent
NOTEBOOK = HERE / "tour.ipynb"

INTRO = """# The pyguts tour

The teaching notebook pyguts grew from, section by section, each now done safely with pyguts' public
API: C from Python, Python from C (GSL), C++, Cython, CUDA, numba, jemalloc-backed arrays, then the
interpreter itself — any memory as numpy, "immutable" bytes changed in place, reference counts, and the
type swap that used to kill the kernel, now refused, then forced in a child whose crash is shown as data.

Every code cell is also a script in `examples/` (`python examples/01_c_kernel.py`, ...). This notebook
is generated and executed by `python examples/make_notebook.py`; timings and addresses are from the
machine that ran it last.

Every section runs in a Jupyter started the normal way. Only the jemalloc section needs more: Debian's
libjemalloc2 loads only into a process started with `GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096`.
Start Jupyter with it (`GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096 jupyter lab`), or install a
kernel that sets it, once, and pick "Python 3 (pyguts)":

    python -m ipykernel install --user --name pyguts --display-name "Python 3 (pyguts)" \\
        --env GLIBC_TUNABLES glibc.rtld.optional_static_tls=4096

(`pyguts.tour.kernel_install_command()` gives that command.) Without it, the jemalloc section says so
and shows the same calls with the next allocator that loads."""

#: Cells after a section (by its script's number): what Jupyter draws from pyguts' results.
EXTRA = {
    # the same object drawn as memory (pyguts.diagram renders as SVG here)
    8: ("### The same object as a diagram\n\nFields as boxes with their offsets and values, pointers as "
        "arrows: `ob_type` to the type object. From a shell: `pyguts inspect \"b'Hello, world!'\" --svg b.svg`.",
        "pyguts.diagram(b)"),
    10: ("### A list as a diagram\n\nThe list points to a separate item array (`ob_item`) of `allocated` "
         "slots, which point to the items. Only the list's own type is drawn as a box (`types=\"all\"` draws "
         "every type): the others are named in each title. Counts that need a word get one: shared small ints "
         "and singletons, immortal objects (3.12+), 3.11's static objects. `print(d)` gives the same as text.",
         'items = [1, "two", 3.0, [4]]\npyguts.diagram(items)'),
    # the crash report as Jupyter shows it (Outcome._repr_html_)
    11: ("### The outcome as Jupyter shows it\n\nAn `Outcome` displays as a table with the child's "
         "faulthandler text; `repr(out)` is one line, `out.describe()` a paragraph.",
         "out"),
}


def scripts() -> list[pathlib.Path]:
    return sorted(HERE.glob("[0-9][0-9]_*.py"))


def section(path: pathlib.Path) -> tuple[str, str]:
    """(markdown, code) of one script: the docstring and the code after it."""
    text = path.read_text()
    tree = ast.parse(text)
    doc = ast.get_docstring(tree)
    if not doc:
        raise SystemExit(f"{path.name} must start with a module docstring (the section's text)")
    title, _, body = doc.partition("\n")
    body = "\n".join(ln for ln in body.strip().splitlines() if not ln.startswith("Run: ")).strip()
    number = int(path.name[:2])
    markdown = f"## {number}. {title}\n\n{body}\n\nScript: `examples/{path.name}`"
    code = "\n".join(text.splitlines()[tree.body[0].end_lineno:]).strip()
    return markdown, code


def build() -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_markdown_cell(INTRO)]
    for path in scripts():
        markdown, code = section(path)
        cells += [nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell(code)]
        extra = EXTRA.get(int(path.name[:2]))
        if extra:
            cells += [nbformat.v4.new_markdown_cell(extra[0]), nbformat.v4.new_code_cell(extra[1])]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for number, cell in enumerate(nb.cells):  # stable ids: regenerating changes only what changed
        cell["id"] = f"cell-{number:02d}"
    return nb


def kernel_env() -> dict[str, str]:
    return dict(static_tls_environ(), PYTHONHASHSEED="0")


def execute(nb: nbformat.NotebookNode, timeout: int = 600, env: dict[str, str] | None = None,
            kernel_name: str = "python3") -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel (this interpreter's python3) from the repository root, with
    ``env`` as its whole environment (default: :func:`kernel_env`)."""
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
                            resources={"metadata": {"path": str(HERE.parent)}})
    client.execute(env=kernel_env() if env is None else env)
    root = str(HERE.parent) + os.sep
    for cell in nb.cells:  # this checkout's location is noise to readers: paths relative to the repository
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = output["text"].replace(root, "")
    return nb


def check() -> int:
    """0 if the stored notebook's cells are the scripts' current text, else 1 with what differs."""
    stored = nbformat.read(NOTEBOOK, as_version=4)
    fresh = build()
    stale = [c.source.splitlines()[0] for c, s in zip(fresh.cells, stored.cells) if c.source != s.source]
    if len(fresh.cells) != len(stored.cells) or stale:
        print(f"{NOTEBOOK.name} is out of date ({len(stored.cells)} cells stored, {len(fresh.cells)} expected; "
              f"differing: {stale}); run: python examples/make_notebook.py")
        return 1
    print(f"{NOTEBOOK.name} is up to date: {len(fresh.cells)} cells from {len(scripts())} scripts")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the stored cells with the scripts; run nothing")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    start = time.perf_counter()
    nb = execute(build())
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({len(nb.cells)} cells), executed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
