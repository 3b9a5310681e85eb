"""What importing pyguts and having its pytest plugin installed cost, in fresh processes.

Baselines: ``import numpy`` (what any pyguts user has loaded anyway) for the imports; a one-test
pytest session with the plugin disabled (``-p no:pyguts``) for the plugin. Each sample is one fresh
interpreter, timed interleaved with its baseline. Goals (issue 13): ``import pyguts`` <= 1.1x
``import numpy``; the plugin within 5 % of ``-p no:pyguts``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

#: Fresh interpreters per contender (interleaved); each costs ~50-700 ms.
IMPORT_RUNS = 15
PYTEST_RUNS = 21


def _run(argv: list[str], cwd: str | None = None) -> None:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)


def run(harness) -> None:
    python = sys.executable
    imports = {f"import {name}": (lambda name=name: _run([python, "-c", f"import {name}"]))
               for name in ("pyguts", "pyguts.leaks", "pyguts.isolation", "pyguts.objects.structs")}
    harness.compare("import (fresh interpreter)", ("import numpy", lambda: _run([python, "-c", "import numpy"])),
                    imports, repeat=IMPORT_RUNS)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "test_one.py"), "w") as f:
            f.write("def test_one():\n    assert True\n")
        base = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_one.py"]
        harness.compare("pytest: one test", ("-p no:pyguts", lambda: _run([*base, "-p", "no:pyguts"], tmp)),
                        {"pyguts plugin loaded": lambda: _run(base, tmp)}, repeat=PYTEST_RUNS)
