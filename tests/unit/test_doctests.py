"""Docstring examples are tests: every module with a ``>>>`` in pyguts and gpu_kernels runs, and the README's too."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re

import pytest

pytestmark = pytest.mark.every_python  # the examples must hold on every supported interpreter

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: Every module whose source holds an example, found by reading the files (a new one cannot be missed).
#: Folders of the repository and the package each one is installed as (see pyproject.toml).
PACKAGES = {"pyguts": "pyguts", "gpu_kernels": "pyguts.device.gpu_kernels"}
MODULES = sorted(
    ".".join((PACKAGES[folder], *path.relative_to(ROOT / folder).with_suffix("").parts)).removesuffix(".__init__")
    for folder in PACKAGES for path in (ROOT / folder).rglob("*.py")
    if re.search(r"^\s*>>> ", path.read_text(encoding="utf-8"), re.MULTILINE))


def test_the_modules_with_examples_are_found():
    assert {"pyguts", "pyguts.objects.structs", "pyguts.objects.diagrams", "pyguts.alloc",
            "pyguts.device.gpu_kernels"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_readme_examples_run():
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lstrip("#").strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", ["README.md", "SAFETY.md"])
def test_links_between_the_documents_resolve(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#([\w\-]+))?\)", text)
    assert links or doc == "SAFETY.md"
    for target, anchor in links:
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"{doc} links to {target}, which does not exist"
        if anchor:
            headings = [ln for ln in (ROOT / target).read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
            assert anchor in {_anchor(h) for h in headings}, f"{doc} links to {target}#{anchor}: no such heading"
