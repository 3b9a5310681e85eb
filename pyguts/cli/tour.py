"""``pyguts tour``: every section of the teaching notebook, one step each, running its example script (pyguts.tour)."""

from __future__ import annotations

import argparse

#: The jemalloc step loads jemalloc, which needs GLIBC_TUNABLES from start-up (pyguts.cli).
NEEDS_STATIC_TLS = True


def register(sub) -> argparse.ArgumentParser:
    from pyguts.tour import STEPS

    parser = sub.add_parser("tour", help="walk through the teaching notebook's sections, step by step",
                            description="C, GSL, C++, Cython, CUDA, numba and jemalloc from Python, then CPython's "
                                        "own memory: views, mutation, reference counts, and a type swap whose crash "
                                        "is caught. Each step runs one of the example scripts (pyguts.tour.examples). "
                                        "Steps: " + ", ".join(s.name for s in STEPS) + ".")
    parser.add_argument("--step", action="append", choices=[s.name for s in STEPS], metavar="NAME",
                        help="run only this step (repeatable); one of: %(choices)s")
    return parser


def run(args: argparse.Namespace) -> int:
    from pyguts import tour

    return tour.run(args.step)
