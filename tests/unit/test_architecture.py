"""The floor plan holds: sub-packages share no private names, no name is both a module and a function,
the root and the pytest plugin import nothing until asked, and the wheel ships one top-level package."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import pyguts

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pyguts"
#: Folders outside pyguts/ that are installed inside it (pyproject.toml's package-dir).
MAPPED = {"pyguts.device.gpu_kernels": ROOT / "gpu_kernels", "pyguts.tour.examples": ROOT / "examples"}


def _module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _subpackage(module: str) -> str:
    """``pyguts.objects`` for ``pyguts.objects.refs``; the root's own modules are ``pyguts``."""
    parts = module.split(".")
    return f"pyguts.{parts[1]}" if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "pyguts"


def _private_imports(path: pathlib.Path) -> list[str]:
    """Imports in ``path`` of another sub-package's private module or name (``_x``, not dunders)."""
    mine = _subpackage(_module_name(path))
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyguts"):
            targets = [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [(alias.name, "") for alias in node.names if alias.name.startswith("pyguts")]
        else:
            continue
        for module, name in targets:
            full = f"{module}.{name}" if name else module
            if _subpackage(full) in (mine, "pyguts"):   # its own, or the root's shared modules
                continue
            private = [part for part in full.split(".") if part.startswith("_") and not part.startswith("__")]
            if private:
                found.append(f"{_module_name(path)}:{node.lineno} imports {full}")
    return found


def test_no_subpackage_imports_another_ones_private_names():
    found = [hit for path in SOURCES for hit in _private_imports(path)]
    assert found == []


def test_the_private_import_check_catches_one(tmp_path):
    bad = PACKAGE / "device" / "_architecture_probe.py"
    try:
        bad.write_text("from pyguts.native.calls import _param\nimport pyguts.alloc._hidden\n")
        assert len(_private_imports(bad)) == 2
    finally:
        bad.unlink()


def test_no_name_is_both_a_module_and_something_else():
    """After importing every module, each package attribute named like a submodule is that module."""
    for path in SOURCES:
        try:
            importlib.import_module(_module_name(path))
        except ImportError as exc:   # an optional dependency (cupy, numba) missing here
            pytest.skip(f"{_module_name(path)} needs what is not installed: {exc}")
    for path in SOURCES:
        name = _module_name(path)
        parent, _, leaf = name.rpartition(".")
        if parent:
            value = getattr(sys.modules[parent], leaf)
            assert value is sys.modules[name], f"{parent}.{leaf} is {value!r}, not the module {name}"
    assert not set(pyguts._HOMES) & {p.name for p in PACKAGE.iterdir()}, "a lazy name shadows a sub-package"


def test_pyproject_lists_every_package_once_and_one_top_level():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    start = text.index("packages = [")
    listed = set(ast.literal_eval(text[start + len("packages = "):text.index("]", start) + 1]))
    on_disk = {_module_name(init.parent / "__init__.py") for init in PACKAGE.rglob("__init__.py")} | set(MAPPED)
    assert listed == on_disk
    assert {name.split(".")[0] for name in listed} == {"pyguts"}
    assert all((folder / "__init__.py").exists() for folder in MAPPED.values())


def _modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.every_python
@pytest.mark.parametrize("code", ["import pyguts", "import pyguts.leaks", "import pyguts.isolation",
                                  "import pyguts.pytest_plugin", "import pyguts.native", "import pyguts.alloc"])
def test_importing_an_engine_loads_no_layout_checks(code):
    loaded = _modules_after(code)
    assert "pyguts.objects.structs" not in loaded and "numba" not in loaded and "llvmlite" not in loaded
    if code in ("import pyguts", "import pyguts.leaks", "import pyguts.isolation", "import pyguts.pytest_plugin"):
        assert "numpy" not in loaded
    if code in ("import pyguts", "import pyguts.pytest_plugin"):
        assert not {m for m in loaded if m.startswith("pyguts.") and m != "pyguts.errors"} - {
            "pyguts.pytest_plugin"}


@pytest.mark.every_python
def test_the_lazy_root_gives_every_public_name():
    code = ("import pyguts\n"
            "print(all(getattr(pyguts, n) is not None for n in pyguts.__all__), pyguts.native.__name__, "
            "pyguts.isolate.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "pyguts.native", "pyguts.isolation"], done.stderr
