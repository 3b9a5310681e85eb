"""``pyguts doctor``: which GPU tooling this machine has (nvcc, driver, device, CuPy, numba) and how to get the rest."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil


def register(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("doctor", help="report nvcc, the NVIDIA driver and devices, CuPy and numba's CUDA target",
                            description="Check the GPU tooling pyguts.device uses and say what to do about "
                                        "anything missing. Everything but the GPU runs is tested without one.")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if anything is missing (default: report only, exit 0)")
    return parser


def checks() -> list:
    """The doctor's records, in the order printed (plain :class:`pyguts._device_probe.Tool` values)."""
    from pyguts import _device_probe as probe

    return [probe.nvcc(), *probe.driver_tools(), probe.cupy_tool(), probe.numba_tool()]


def run(args: argparse.Namespace) -> int:
    tools = checks()
    if args.json:
        print(json.dumps([dataclasses.asdict(t) for t in tools], indent=2))
    else:
        width = max(len(t.name) for t in tools)
        for t in tools:
            print(f"{t.name:<{width}}  {'ok     ' if t.ok else 'MISSING'}  {t.detail}")
            if not t.ok and t.fix:
                print(f"{'':<{width}}  {'':7}  -> {t.fix}")
        gxx = "found" if shutil.which("g++") else "MISSING (apt-get install g++)"
        nvcc = "found" if tools[0].ok else "MISSING"
        gpu = all(t.ok for t in tools[1:4])
        print(f"GPU runs (CuPy): {'possible' if gpu else 'not possible here'}. Without a GPU: CPU "
              f"reference runs of gpu_kernels/ need g++ ({gxx}), PTX builds need nvcc ({nvcc}).")
    return 1 if args.strict and any(not t.ok for t in tools) else 0
