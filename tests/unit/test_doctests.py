"""Docstring examples are tests: every module with a ``>>>`` in pyguts and gpu_kernels runs, and the README's too."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re

import needs  # tests/needs.py
import pytest

from pyguts.alloc import registry
from pyguts.errors import AllocatorUnavailable

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


class _Runner(doctest.DocTestRunner):
    """A doctest runner that keeps, per docstring, the exception its first failing example raised."""

    def __init__(self) -> None:
        super().__init__(optionflags=doctest.ELLIPSIS)
        self.first_failure: dict[str, BaseException | None] = {}

    def report_failure(self, out, test, example, got):
        self.first_failure.setdefault(test.name, None)
        super().report_failure(out, test, example, got)

    def report_unexpected_exception(self, out, test, example, exc_info):
        self.first_failure.setdefault(test.name, exc_info[1])
        super().report_unexpected_exception(out, test, example, exc_info)


def _missing_allocator(exc: BaseException | None) -> str:
    """The skip reason when ``exc`` is pyguts refusing an allocator whose library is missing here."""
    found = re.match(r"allocator '([\w-]+)'", str(exc))
    if not isinstance(exc, AllocatorUnavailable) or not found or found[1] not in registry.SPECS:
        return ""
    return needs.refusal_reason(found[1], exc)


def _run(tests: list[doctest.DocTest], *, one_session: bool = False) -> None:
    """Run ``tests`` in order; fail on any failure, except a docstring whose first failure is an
    allocator missing here (tests/needs.py): that one's remaining examples cannot run, and the test
    is skipped with the reason once every other docstring has passed. ``one_session``: the tests
    share one namespace, cleared at the end only (as ``testmod`` clears each test's)."""
    runner = _Runner()
    for test in tests:
        runner.run(test, clear_globs=not one_session)
    if one_session and tests:
        tests[0].globs.clear()
    skipped = {name: _missing_allocator(exc) for name, exc in runner.first_failure.items()}
    failed = [name for name, reason in skipped.items() if not reason]
    assert runner.tries > 0 and not failed, f"examples failed in {failed} (their output is above)"
    if skipped:
        ran = len(tests) - len(skipped)
        pytest.skip("; ".join(f"{name}: {reason}" for name, reason in skipped.items())
                    + f" (the other {ran} docstrings with examples passed)")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    _run([t for t in doctest.DocTestFinder().find(module) if t.examples])


def _readme_blocks() -> list[doctest.DocTest]:
    """The README's ```python blocks as doctests in page order, sharing one namespace as one session."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    parser, globs, tests = doctest.DocTestParser(), {"__name__": "README"}, []
    for found in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        lineno = text.count("\n", 0, found.start(1))
        tests.append(parser.get_doctest(found[1], globs, f"README.md:{lineno + 1}", "README.md", lineno))
        tests[-1].globs = globs   # get_doctest copies the namespace; one session shares it
    prompts = len(re.findall(r"^>>> ", text, re.MULTILINE))
    assert sum(len(t.examples) for t in tests) == prompts, "every >>> of the README is in a ```python block"
    return tests


def test_readme_examples_run():
    _run(_readme_blocks(), one_session=True)


def _doctest(source: str, name: str) -> doctest.DocTest:
    return doctest.DocTestParser().get_doctest(source, {"AllocatorUnavailable": AllocatorUnavailable}, name, None, 0)


REFUSED = ">>> raise AllocatorUnavailable(\"allocator 'mimalloc' needs libmimalloc.so.3, which could not be loaded\")\n"


def test_a_wrong_example_fails_even_beside_a_missing_allocator(monkeypatch):
    monkeypatch.setattr(needs, "allocator_reason", lambda name: f"needs_{name}: not here")
    with pytest.raises(AssertionError, match=r"examples failed in \['wrong'\]"):
        _run([_doctest(REFUSED, "refused"), _doctest(">>> 1 + 1\n3\n", "wrong")])


def test_a_refused_allocator_skips_only_where_its_library_is_missing(monkeypatch):
    passing = _doctest(">>> 1 + 1\n2\n", "passing")
    monkeypatch.setattr(needs, "allocator_reason", lambda name: "")   # installed: the refusal is a bug
    with pytest.raises(AssertionError, match=r"examples failed in \['refused'\]"):
        _run([_doctest(REFUSED, "refused"), passing])
    monkeypatch.setattr(needs, "allocator_reason", lambda name: f"needs_{name}: not here")
    with pytest.raises(pytest.skip.Exception, match=r"refused: needs_mimalloc: not here \(the other 1 "):
        _run([_doctest(REFUSED, "refused"), passing])


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
