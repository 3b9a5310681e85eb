"""The ``pyguts`` command line: one module per subcommand, each with ``register`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# Debian's libjemalloc2 can be dlopen()ed only if glibc reserved static TLS at start-up (SAFETY.md).
from pyguts.alloc._registry import STATIC_TLS_TUNABLE

#: Subcommand modules under pyguts.cli; each defines register(subparsers) and run(args) -> int.
COMMANDS = ("inspect", "tour", "leaks", "doctor")

_REEXEC_MARK = "PYGUTS_STATIC_TLS_REEXEC"


def _ensure_static_tls() -> None:
    """Re-exec this process once with GLIBC_TUNABLES set, so that jemalloc can be loaded later.

    glibc reads GLIBC_TUNABLES only at start-up; nothing done from inside Python can replace it.
    """
    if not sys.platform.startswith("linux") or os.environ.get(_REEXEC_MARK):
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.rtld.optional_static_tls=" in tunables or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    env = dict(os.environ, **{_REEXEC_MARK: "1",
                              "GLIBC_TUNABLES": ":".join(filter(None, (tunables, STATIC_TLS_TUNABLE)))})
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # cannot re-exec: carry on; loading jemalloc will then say how to fix it
        return


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
        _ensure_static_tls()
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # `pyguts inspect ... | head`
        sys.stderr.close()
        return 0
