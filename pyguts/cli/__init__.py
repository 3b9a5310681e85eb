"""The ``pyguts`` command line: one module per subcommand, each with ``register`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Debian's libjemalloc2 can be dlopen()ed only if glibc reserved static TLS at start-up (SAFETY.md).
from pyguts.alloc.registry import ensure_static_tls

#: Subcommand modules under pyguts.cli; each defines register(subparsers) and run(args) -> int.
COMMANDS = ("inspect", "tour", "leaks", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyguts", description="Look at, and carefully change, CPython's memory.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"pyguts.cli.{name}")
        sub_parser = module.register(sub)
        sub_parser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Started as a program (``argv`` None), it first makes sure jemalloc will be loadable.
    """
    if argv is None:
        ensure_static_tls()
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # `pyguts inspect ... | head`
        sys.stderr.close()
        return 0
