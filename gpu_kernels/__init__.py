"""CUDA C kernel sources shipped with pyguts, one kernel family per ``.cu`` file.

Each file compiles with nvcc for the GPU and, through ``cpu_shim.h``, with g++ for the CPU, so
the same source is its own reference (:func:`pyguts.device.cpu_reference`).

>>> "magnitude" in names()
True
>>> "__global__ void magnitude_f64" in source("magnitude")
True
"""

from __future__ import annotations

import pathlib

#: The directory holding the ``.cu`` files and ``cpu_shim.h``.
DIRECTORY = pathlib.Path(__file__).resolve().parent

#: The header that lets a ``.cu`` file compile with g++ (see its comment).
SHIM = DIRECTORY / "cpu_shim.h"


def names() -> list[str]:
    """The kernel families shipped here (``.cu`` file names without the suffix), sorted.

    >>> names()[:1]
    ['magnitude']
    """
    return sorted(p.stem for p in DIRECTORY.glob("*.cu"))


def path(name: str) -> pathlib.Path:
    """The path of ``gpu_kernels/<name>.cu``; ``FileNotFoundError`` naming the choices if absent.

    >>> path("magnitude").name
    'magnitude.cu'
    """
    found = DIRECTORY / f"{name}.cu"
    if not found.is_file() or "/" in name or name.startswith("."):
        raise FileNotFoundError(f"no kernel family {name!r}: gpu_kernels/{name}.cu must exist, "
                                f"choices are {names()}; pass one of them")
    return found


def source(name: str) -> str:
    """The CUDA C text of ``gpu_kernels/<name>.cu``.

    >>> source("magnitude").count("__global__")
    2
    """
    return path(name).read_text()
