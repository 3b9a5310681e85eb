"""The distributions as a user gets them: an sdist holding everything `make test` and `make tour` use,
a wheel built from that sdist with one top-level package, the kernels and examples inside, working
from a fresh virtual environment outside the repository."""

from __future__ import annotations

import email
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile

import pytest

import pyguts

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: The distribution's name: "pyguts" on the package index is an unrelated project (issue 16).
DIST = "cpython-guts"
#: What the sdist must hold besides the package, whether or not git is at hand to list the rest.
SDIST_NEEDS = ("LICENSE", "README.md", "SAFETY.md", "Makefile", "pyproject.toml", "MANIFEST.in",
               ".ci/current-pythons.sh", "tests/unit/test_architecture.py", "tests/integration/test_packaging.py",
               "examples/01_c_kernel.py", "examples/tour.ipynb", "gpu_kernels/magnitude.cu",
               "gpu_kernels/cpu_shim.h", "benchmarks/run.py", "pyguts/alloc/shim.c", "pyguts/_ndarray.c",
               "pyguts/isolation/_crash.c", "pyguts/py.typed")
#: Tracked files an sdist leaves out on purpose.
SDIST_SKIPS = {".gitignore"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, object]:
    """``python -m build``: the sdist, then the wheel built from it, and what the build printed."""
    pytest.importorskip("build", reason="needs the build package (pip install build; in the [test] extra)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    [sdist] = out.glob("cpython_guts-*.tar.gz")
    [wheel] = out.glob("cpython_guts-*.whl")
    return {"sdist": sdist, "wheel": wheel, "log": done.stdout + done.stderr}


def _sdist_names(sdist: pathlib.Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def _tracked_files() -> list[str] | None:
    """Files git tracks in this checkout; None outside a git checkout (an unpacked sdist, say)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, timeout=60)
    return done.stdout.split() if done.returncode == 0 else None


def test_the_build_warns_of_nothing_deprecated(dists):
    lines = [line for line in dists["log"].splitlines() if "deprecat" in line.lower()]
    assert not lines, "\n".join(lines)


def test_the_sdist_holds_every_tracked_file_and_no_bytecode(dists):
    names = _sdist_names(dists["sdist"])
    assert [n for n in SDIST_NEEDS if n not in names] == []
    tracked = _tracked_files()
    if tracked is not None:
        missing = [n for n in tracked if n not in names and n not in SDIST_SKIPS and (ROOT / n).exists()]
        assert missing == [], f"tracked files missing from the sdist (add them to MANIFEST.in): {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]


def test_the_metadata_names_the_distribution_its_license_and_pythons(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        [meta_name] = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(whl.read(meta_name))
        licenses = [n for n in whl.namelist() if ".dist-info/licenses/" in n]
        top_level = whl.read(meta_name.replace("METADATA", "top_level.txt")).decode().split()
    assert meta["Name"] == DIST and meta["Version"] == pyguts.__version__
    assert meta["License-Expression"] == "MIT" and meta["License"] is None   # PEP 639, no legacy field
    assert meta.get_all("License-File") == ["LICENSE"] and [n.rsplit("/", 1)[1] for n in licenses] == ["LICENSE"]
    pythons = [c.rsplit(" ", 1)[1] for c in meta.get_all("Classifier") if c.startswith("Programming Language :: Python :: 3.")]
    assert pythons == [f"3.{minor}" for minor in range(10, 16)]
    assert meta["Requires-Python"] == ">=3.10"
    assert top_level == ["pyguts"]


def test_the_wheel_holds_one_top_level_package_with_its_data(dists):
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"pyguts"}
    for needed in ("pyguts/device/gpu_kernels/magnitude.cu", "pyguts/device/gpu_kernels/cpu_shim.h",
                   "pyguts/alloc/shim.c", "pyguts/_ndarray.c", "pyguts/isolation/_crash.c",
                   "pyguts/tour/examples/01_c_kernel.py",
                   "pyguts/py.typed"):
        assert needed in names, needed


def test_an_installed_wheel_finds_its_kernels_and_shim_outside_the_repository(dists, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(dists["wheel"])], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    code = ("import importlib.metadata, pyguts, numpy as np\n"
            "from pyguts import device, alloc\n"
            "from pyguts.device import gpu_kernels\n"
            "assert 'site-packages' in gpu_kernels.__file__, gpu_kernels.__file__\n"
            f"assert importlib.metadata.version({DIST!r}) == pyguts.__version__\n"
            "x, y, out = np.full(4, 3.0), np.full(4, 4.0), np.zeros(4)\n"
            "device.cpu_reference('magnitude').magnitude_f64(x, y, out)   # the .cu built for the CPU\n"
            "print(sorted(gpu_kernels.names()), out.tolist(), int(alloc.zeros(8, 'u1', allocator='libc').sum()),\n"
            "      type(pyguts.view(b'x').base).__name__)   # made by the shipped _ndarray.c\n"
            "import ctypes, pyguts.isolation as iso\n"
            "print('string_at' in [f.name for f in iso.isolate(ctypes.string_at, 0).native_frames])   # _crash.c\n")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("]", 1)[0] == "['magnitude', 'momentum', 'reduce'", done.stdout
    assert "[5.0, 5.0, 5.0, 5.0] 0 Holder\nTrue\n" in done.stdout, done.stdout
    command = str(env / "bin" / "pyguts")
    done = subprocess.run([command, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith(f"pyguts {pyguts.__version__} from "), done.stdout
    assert os.path.join("site-packages", "pyguts") in done.stdout, done.stdout
    # The tour runs the example scripts shipped inside the package.
    done = subprocess.run([command, "tour", "--step", "bytes_mutation"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0 and "tour: 1 steps: 1 ok" in done.stdout, done.stdout + done.stderr
