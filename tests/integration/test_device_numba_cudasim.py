"""The numba magnitude and momentum kernels in numba's CUDA simulator, in its own process (NUMBA_ENABLE_CUDASIM is read at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

#: Runs in a fresh interpreter with NUMBA_ENABLE_CUDASIM=1; prints one JSON line of findings.
CHILD = textwrap.dedent("""
    import json
    import numpy as np
    import numba
    from numba import cuda
    from pyguts import device

    found = {"simulator": bool(numba.config.ENABLE_CUDASIM), "cases": []}
    for dtype in (np.float32, np.float64):
        for n in (1, 13, 37):  # odd sizes; 2 blocks x 4 threads: the grid-stride loop does the rest
            rng = np.random.default_rng(n)
            x, y = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
            expected = np.sqrt(x * x + y * y)
            ref = np.empty_like(x)
            suffix = "f32" if dtype is np.float32 else "f64"
            getattr(device.cpu_reference("magnitude"), "magnitude_" + suffix)(x, y, ref)
            host = device.numba_magnitude(x, y)
            on_device = device.numba_magnitude(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
            found["cases"].append({
                "dtype": np.dtype(dtype).name, "n": n, "out_dtype": host.dtype.name,
                "max_ulp_numpy": float(np.max(np.abs(host - expected) / np.spacing(expected))),
                "max_ulp_cpu_reference": float(np.max(np.abs(host - ref) / np.spacing(ref))),
                "device_equals_host": bool(np.array_equal(on_device, host)),
            })
    found["momentum"] = []
    for dtype in (np.float32, np.float64):  # the notebook's kernel, launched as numba users do
        rng = np.random.default_rng(5)
        px, py, pz = (rng.standard_normal(29).astype(dtype) for _ in range(3))
        p = np.full(29, np.nan, dtype)
        device.numba_momentum_kernel()[2, 4](px, py, pz, p)
        expected = np.sqrt(px * px + py * py + pz * pz)
        found["momentum"].append({"dtype": np.dtype(dtype).name,
                                  "max_ulp_numpy": float(np.max(np.abs(p - expected) / np.spacing(expected)))})
    try:
        device.numba_magnitude(np.ones(3), np.ones(3, np.float32))
    except TypeError as exc:
        found["dtype_error"] = str(exc)
    print(json.dumps(found))
""")


@pytest.mark.every_python
def test_numba_magnitude_in_the_simulator_equals_numpy():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["simulator"]
    assert len(found["cases"]) == 6
    for case in found["cases"]:
        assert case["out_dtype"] == case["dtype"], case
        assert case["max_ulp_numpy"] <= 1, case
        assert case["max_ulp_cpu_reference"] <= 1, case
        assert case["device_equals_host"], case
    assert "must be float32 or float64 with the dtype and shape of x" in found["dtype_error"]
    # The simulator runs the kernel as Python on numpy scalars: numpy's roundings, no FMA.
    assert [case["max_ulp_numpy"] for case in found["momentum"]] == [0.0, 0.0], found["momentum"]


def test_without_the_simulator_numba_says_why_or_runs():
    """No simulator, no GPU: DeviceUnavailable naming the reason (a GPU machine runs it instead)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    child = textwrap.dedent("""
        import numpy as np
        from pyguts import device
        from pyguts.errors import DeviceUnavailable
        try:
            out = device.numba_magnitude(np.array([3.0]), np.array([4.0]))
        except DeviceUnavailable as exc:
            print("unavailable:", exc)
        else:
            print("ran:", out.tolist())
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line == "ran: [5.0]" or (line.startswith("unavailable:") and "NUMBA_ENABLE_CUDASIM=1" in line), line
