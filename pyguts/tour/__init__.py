"""The tour: every section of the teaching notebook pyguts grew from, run from its example script.

C from Python, Python from C (GSL), C++, Cython, CUDA, numba, jemalloc-backed arrays, then the
interpreter itself: any memory as numpy, "immutable" bytes changed in place, reference counts,
and the type swap that used to kill the kernel, now refused, then forced in a child whose crash is
shown as data. Each section exists once, as a script in the repository's ``examples/``
(installed as ``pyguts.tour.examples``); a step runs its script in this process and the script
prints what it did and found. A step whose tools are missing says why and what to install, and
the tour goes on. In Jupyter, :func:`kernel_install_command` installs a kernel in which jemalloc
loads (without it the jemalloc section says so and goes on with another allocator).

>>> [step.name for step in STEPS][:3]
['c_kernel', 'gsl', 'cpp']
>>> STEPS[0].script
'01_c_kernel.py'
"""

from __future__ import annotations

from pyguts.tour.kernel import kernel_install_command, static_tls_hint
from pyguts.tour.neighbours import surrounded_bytes
from pyguts.tour.steps import STEPS, Step, examples_folder, run
from pyguts.tour.unavailable import StepUnavailable, skip

__all__ = ["STEPS", "Step", "StepUnavailable", "examples_folder", "kernel_install_command", "run", "skip",
           "static_tls_hint", "surrounded_bytes"]
