"""The tour's steps, one per example script, and the walk through them that reports each one's status."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import os
import runpy
import sys
import time
import traceback
from typing import TYPE_CHECKING, Iterator, Sequence

from pyguts.errors import AllocatorUnavailable, BuildError, DeviceUnavailable
from pyguts.tour.unavailable import StepUnavailable

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: Errors that mean "a tool is missing here", not "pyguts is broken": the step is unavailable, with the text.
_MISSING = (AllocatorUnavailable, BuildError, DeviceUnavailable, ImportError, OSError)
#: Where the scripts are once installed (pyproject.toml maps the repository's examples/ to it).
EXAMPLES_PACKAGE = "pyguts.tour.examples"


def examples_folder() -> Traversable:
    """The folder of the example scripts, the package ``pyguts.tour.examples`` (which is why this is not ``examples``).

    >>> (examples_folder() / "01_c_kernel.py").is_file()
    True
    """
    return importlib.resources.files(EXAMPLES_PACKAGE)


@dataclasses.dataclass(frozen=True)
class Step:
    """One section of the notebook: ``name`` (for ``--step``), ``title``, its ``script`` in :func:`examples_folder`."""

    name: str
    title: str
    script: str

    def run(self) -> None:
        """Run the script in this process as ``python <script>`` would, with ``__name__ == "__main__"``."""
        with importlib.resources.as_file(examples_folder() / self.script) as path, _kept_process():
            runpy.run_path(str(path), run_name="__main__")


@contextlib.contextmanager
def _kept_process() -> Iterator[None]:
    """Keep a script's ``pyguts.alloc.ensure_static_tls()`` from restarting the tour's whole process.

    Standalone, 07_jemalloc.py restarts itself once with GLIBC_TUNABLES set. Inside the tour that
    would replace the caller (``pyguts tour`` has set it up already; a program calling :func:`run`
    has not): mark the restart as done, so the step says why jemalloc cannot load, with the fix, and
    goes on with another allocator instead.
    """
    from pyguts.alloc.registry import REEXEC_MARK

    saved = os.environ.get(REEXEC_MARK)
    os.environ[REEXEC_MARK] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[REEXEC_MARK]
        else:
            os.environ[REEXEC_MARK] = saved


#: The tour's steps, in the notebook's order: examples/01_c_kernel.py ... 11_type_swap.py.
STEPS = (
    Step("c_kernel", "C from Python: a magnitude kernel against numpy", "01_c_kernel.py"),
    Step("gsl", "Python from C: GSL's derivative calls a Python function", "02_gsl_callback.py"),
    Step("cpp", "ROOT's C++ one-liner", "03_cpp_inline.py"),
    Step("cython", "Cython", "04_cython_bridge.py"),
    Step("cuda", "CUDA: gpu_kernels/magnitude.cu", "05_cuda.py"),
    Step("numba", "numba, on the CPU and as a CUDA kernel", "06_numba.py"),
    Step("jemalloc", "numpy arrays in jemalloc's memory", "07_jemalloc.py"),
    Step("raw_memory", "any memory as numpy: an object's bytes, field by field", "08_raw_memory.py"),
    Step("bytes_mutation", "changing 'immutable' bytes: refcounts and hashes before and after", "09_bytes_mutation.py"),
    Step("refcounts", "reference counts, exactly: who holds them, immortal objects", "10_refcounts.py"),
    Step("type_swap", "the type swap that killed the kernel", "11_type_swap.py"),
)


def _outcome(step: Step) -> str:
    """Run ``step``, print why if it did not succeed, and return its status: ok, unavailable or FAILED."""
    try:
        step.run()
    except StepUnavailable:  # the script has printed why and what to install
        return "unavailable"
    except _MISSING as exc:
        print(f"unavailable: {type(exc).__name__}: {exc}\n`pyguts doctor` says what to install for each part")
        return "unavailable"
    except SystemExit as exc:  # sys.exit() in a script: as its exit status would be read
        if exc.code in (None, 0):
            return "ok"
        print(f"FAILED: {step.script} exited with {exc.code!r}")
        return "FAILED"
    except Exception:  # a bug: show it, keep touring, fail at the end
        print(f"FAILED:\n{traceback.format_exc()}")
        return "FAILED"
    return "ok"


def run(names: Sequence[str] | None = None, steps: Sequence[Step] = STEPS) -> int:
    """Run the steps named (default: all, in order); 1 if a step failed for a reason other than a missing tool.

    ``steps`` is the population to choose from (the tour's own by default).
    """
    chosen = [s for s in steps if not names or s.name in names]
    results: dict[str, list[str]] = {"ok": [], "unavailable": [], "FAILED": []}
    for number, step in enumerate(chosen, 1):
        print(f"\n=== [{number}/{len(chosen)}] {step.name}: {step.title} ===", flush=True)
        start = time.perf_counter()
        status = _outcome(step)
        sys.stdout.flush()
        results[status].append(step.name)
        print(f"--- {step.name}: {status} ({time.perf_counter() - start:.1f} s)")
    summary = ", ".join(f"{len(v)} {k}" + (f" ({', '.join(v)})" if v and k != "ok" else "")
                        for k, v in results.items())
    print(f"\ntour: {len(chosen)} steps: {summary}")
    return 1 if results["FAILED"] else 0
