"""``pyguts tour``: a walk through an object's memory (the full notebook tour comes later)."""

from __future__ import annotations

import argparse

#: Objects the tour shows, as expressions (what the notebook looks at first).
TOUR_EXPRESSIONS = ("b'Hello, world!'", "2**70", "'héllo'", "(1, 'two', 3.0)", "3.25")


def register(sub) -> argparse.ArgumentParser:
    return sub.add_parser("tour", help="walk through the memory of a few objects",
                          description="Show, field by field, how CPython lays out a few objects.")


def run(args: argparse.Namespace) -> int:
    from pyguts.cli import inspect

    for expr in TOUR_EXPRESSIONS:
        print(f"\n$ pyguts inspect {expr!r}")
        status = inspect.run(argparse.Namespace(expr=expr, json=False))
        if status:
            return status
    return 0
