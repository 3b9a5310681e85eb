"""The wheel as a user gets it: one top-level package, the kernels and examples inside, working
from a fresh virtual environment outside the repository."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [found] = out.glob("pyguts-*.whl")
    return found


def test_the_wheel_holds_one_top_level_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"pyguts"}
    for needed in ("pyguts/device/gpu_kernels/magnitude.cu", "pyguts/device/gpu_kernels/cpu_shim.h",
                   "pyguts/alloc/shim.c", "pyguts/tour/examples/01_c_kernel.py", "pyguts/py.typed"):
        assert needed in names, needed


def test_an_installed_wheel_finds_its_kernels_and_shim_outside_the_repository(wheel, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code = ("import pyguts, numpy as np\n"
            "from pyguts import device, alloc\n"
            "from pyguts.device import gpu_kernels\n"
            "assert 'site-packages' in gpu_kernels.__file__, gpu_kernels.__file__\n"
            "x, y, out = np.full(4, 3.0), np.full(4, 4.0), np.zeros(4)\n"
            "device.cpu_reference('magnitude').magnitude_f64(x, y, out)   # the .cu built for the CPU\n"
            "print(sorted(gpu_kernels.names()), out.tolist(), int(alloc.zeros(8, 'u1', allocator='libc').sum()))\n")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("]", 1)[0] == "['magnitude', 'reduce'", done.stdout
    assert "[5.0, 5.0, 5.0, 5.0] 0" in done.stdout, done.stdout
    # The tour runs the example scripts shipped inside the package.
    done = subprocess.run([str(env / "bin" / "pyguts"), "tour", "--step", "bytes_mutation"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0 and "tour: 1 steps: 1 ok" in done.stdout, done.stdout + done.stderr
