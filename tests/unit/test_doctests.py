"""Docstring examples are tests: every >>> in these modules runs."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["pyguts", "pyguts.layouts", "pyguts.structs", "pyguts.memory", "pyguts.refs", "pyguts.explain", "pyguts.diagrams", "pyguts.mutate", "pyguts.isolate",
           "pyguts.native", "pyguts.alloc", "pyguts.alloc._arrays", "pyguts.alloc._handler", "pyguts.alloc._stats", "pyguts.leaks",
           "pyguts.device", "pyguts._device_cai", "pyguts.tour", "gpu_kernels"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_readme_examples_run():
    import pathlib

    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    result = doctest.testfile(str(readme), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
