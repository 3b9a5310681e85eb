"""numpy's own NEP 49 tests (numpy/_core/tests/test_mem_policy.py) pass under every pyguts handler.

They build a C extension of their own with numpy.testing.extbuild (meson and ninja, from the test
extra) and install, nest and restore handlers around ours, in threads and contexts too.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pyguts import alloc

NUMPY_TESTS = pathlib.Path(np.__file__).parent / "_core" / "tests" / "test_mem_policy.py"


def test_numpys_mem_policy_tests_pass_under_every_pyguts_handler(tmp_path):
    if not NUMPY_TESTS.exists():
        pytest.skip(f"needs_numpy_tests: this numpy ships without its tests ({NUMPY_TESTS} is missing)")
    # extbuild runs `meson` and `ninja` from PATH: the test extra installs them beside python
    path = os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])
    missing = [tool for tool in ("meson", "ninja") if shutil.which(tool, path=path) is None]
    if missing:
        pytest.skip(f"needs_meson: numpy's extbuild needs {' and '.join(missing)} (pip install meson ninja, "
                    f"as the test extra does)")
    env = dict(alloc.registry.static_tls_environ(), PATH=path,
               PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "numpy_under_pyguts", "-p", "no:cacheprovider",
                           f"--basetemp={tmp_path / 'numpy'}", str(NUMPY_TESTS)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = int(re.search(r"(\d+) passed", proc.stdout)[1])
    # the handlers of the child, whose environment lets jemalloc load where this process's may not
    handlers = len(subprocess.run([sys.executable, "-c", "import pyguts.alloc as a; print(*a.available())"],
                                  env=env, capture_output=True, text=True, timeout=120, check=True).stdout.split())
    assert passed >= 8 * handlers and passed % handlers == 0, tail   # numpy 2.x: 9 tests, 1 skipped as slow
