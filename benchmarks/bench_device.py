"""pyguts.device without a GPU: the CPU build of gpu_kernels/magnitude.cu, and the cost of launch()'s checks.

Groups (ratios against the first row of each group, measured interleaved in one run):
- magnitude.cu on the CPU, 1e6 float64: baseline is numpy's expression ``sqrt(x*x + y*y)``; then
  the same .cu built through cpu_shim.h at <<<1, 1>>> (a plain loop), <<<64, 1>>> (64 blocks in
  turn, grid-stride) and <<<4, 2>>> (OpenMP teams of 2 threads per block).
- checks per launch: baseline is pyguts.native's checked call of the CPU build at n=1 (its
  checks plus a C call); then device.plan() on three hand-built __cuda_array_interface__ objects
  (what launch() adds before CuPy's own launch, ~µs against a GPU launch's ~5-10 µs).
"""

from __future__ import annotations

import numpy as np

from pyguts import device

N = 1_000_000


class _Fake:
    def __init__(self, addr: int, n: int) -> None:
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": "<f8", "data": (addr, False),
                                         "version": 3, "strides": None, "stream": None}


def run(h) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(N), rng.standard_normal(N)
    out = np.empty(N)
    ref = device.cpu_reference("magnitude")

    def numpy_expr():
        np.sqrt(x * x + y * y, out=out)

    h.compare("device: magnitude.cu on the CPU, 1e6 f64", ("numpy sqrt(x*x+y*y)", numpy_expr), {
        "cpu_reference <<<1,1>>>": lambda: ref.magnitude_f64(x, y, out, grid=1, block=1),
        "cpu_reference <<<64,1>>>": lambda: ref.magnitude_f64(x, y, out, grid=64, block=1),
        "cpu_reference <<<4,2>>> (OpenMP teams)": lambda: ref.magnitude_f64(x, y, out, grid=4, block=2),
    }, repeat=9)

    one = np.ones(1)
    spec = device.kernels("magnitude")["magnitude_f64"]
    fakes = (_Fake(0x7F0000001000, 1), _Fake(0x7F0000002000, 1), _Fake(0x7F0000003000, 1))
    call = ref.library.functions["pyguts_cpu_magnitude_f64"]
    h.compare("device: checks per launch, n=1", ("native checked call, CPU build", lambda: call(1, 1, one, one, one)), {
        "device.plan (3 CAI arrays)": lambda: device.plan(spec, fakes),
        "cpu_reference call (lock + status)": lambda: ref.magnitude_f64(one, one, one, grid=1, block=1),
    })
