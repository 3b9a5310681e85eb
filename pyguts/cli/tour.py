"""``pyguts tour``: a walk through CPython's memory, one step per notebook section built so far."""

from __future__ import annotations

import argparse

#: Objects the first step shows, as expressions (what the notebook looks at first).
TOUR_EXPRESSIONS = ("b'Hello, world!'", "2**70", "'héllo'", "(1, 'two', 3.0)", "3.25")


def _objects() -> int:
    from pyguts.cli import inspect

    for expr in TOUR_EXPRESSIONS:
        print(f"\n$ pyguts inspect {expr!r}")
        status = inspect.run(argparse.Namespace(expr=expr, json=False))
        if status:
            return status
    return 0


def _jemalloc() -> int:
    """A jemalloc-backed array and jemalloc's own figures."""
    import numpy as np

    import pyguts.alloc as alloc
    from pyguts.errors import AllocatorUnavailable

    print("\n$ python -c 'pyguts.alloc.zeros((1000, 1000), allocator=\"jemalloc\")'")
    try:
        before = alloc.stats("jemalloc")
    except AllocatorUnavailable as exc:
        print(f"jemalloc unavailable here: {exc}")
        return 0
    a = alloc.zeros((1000, 1000), allocator="jemalloc")
    a += 1.5
    after = alloc.stats("jemalloc")
    block = alloc.owner(a)
    print(f"array {a.shape} {a.dtype}, {a.nbytes} bytes at {block.addr:#x} "
          f"(aligned to {block.alignment}), owner {block!r}")
    for key in ("allocated", "active", "resident", "mapped"):
        print(f"  jemalloc stats.{key:<10} {before[key]:>12,} -> {after[key]:>12,}")
    print(f"  process RSS              {before['rss']:>12,} -> {after['rss']:>12,}")
    with alloc.use("jemalloc"):
        b = np.sqrt(a)
    print(f"inside use('jemalloc'): numpy's own result array is allocated by {alloc.handler_name(b)!r}")
    return 0


def _cuda() -> int:
    """The same magnitude.cu on the GPU when there is one, else its CPU build and its PTX."""
    from pyguts.device import tour_summary

    print(tour_summary())
    return 0


#: The tour's steps, in order.
STEPS = {"objects": _objects, "cuda": _cuda, "jemalloc": _jemalloc}


def register(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("tour", help="walk through CPython's memory, step by step",
                            description="Show, step by step, how CPython lays out objects and what pyguts does with them.")
    parser.add_argument("--step", choices=list(STEPS), help="run only this step")
    return parser


def run(args: argparse.Namespace) -> int:
    steps = [args.step] if getattr(args, "step", None) else list(STEPS)
    status = 0
    for name in steps:
        print(f"\n=== {name} ===")
        status = STEPS[name]() or status
    return status
