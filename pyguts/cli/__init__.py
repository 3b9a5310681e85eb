"""The ``pyguts`` command line: one module per subcommand, each with ``register`` and ``run``.

Conventions every subcommand keeps: results on stdout, errors and progress on stderr; ``--json``
output is one JSON document even when the command fails (``{"error": ...}`` then); the exit status
is the command's own even when the reader of stdout goes away early (``pyguts ... | head -1``).
Only the subcommands that load jemalloc (``NEEDS_STATIC_TLS = True`` in their module: ``tour``,
``doctor``) restart the program to set GLIBC_TUNABLES; ``--help``, ``--version`` and the rest start
once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from typing import Iterator, Sequence

import pyguts

#: Subcommand modules under pyguts.cli; each defines register(subparsers) and run(args) -> int.
COMMANDS = ("inspect", "tour", "leaks", "doctor")
#: Exit status when stdout broke somewhere its command could not carry on from (Python's own, at exit).
EXIT_STDOUT_BROKEN = 120


def version_line() -> str:
    """``pyguts 0.1.0 from /path/to/pyguts (CPython 3.11.7)``: which pyguts, where, on which Python."""
    import platform

    where = os.path.dirname(os.path.abspath(pyguts.__file__))
    return f"pyguts {pyguts.__version__} from {where} ({platform.python_implementation()} {platform.python_version()})"


class _PrintVersion(argparse.Action):
    """``--version``: :func:`version_line` as it is (argparse's own version action wraps long paths)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyguts", description="Look at, and carefully change, CPython's memory.")
    parser.add_argument("--version", action=_PrintVersion,
                        help="print pyguts' version, where it is installed and the Python running it, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"pyguts.cli.{name}")
        sub_parser = module.register(sub)
        sub_parser.set_defaults(run=module.run, needs_static_tls=getattr(module, "NEEDS_STATIC_TLS", False))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Started as a program (``argv`` None), a command that loads jemalloc first makes sure it will
    be loadable (a restart with GLIBC_TUNABLES set, see SAFETY.md); nothing else restarts.
    """
    args = build_parser().parse_args(argv)
    if argv is None and args.needs_static_tls:
        from pyguts.alloc.registry import ensure_static_tls

        ensure_static_tls()
    with stdout_outlives_its_reader():
        try:
            return int(args.run(args) or 0)
        except BrokenPipeError:  # written around sys.stdout (its .buffer, say): the outcome is unknown
            return EXIT_STDOUT_BROKEN


def to_devnull(stream) -> None:
    """Point ``stream``'s descriptor at /dev/null (after its reader went away), so no later write or
    flush fails; a stream without a descriptor (in memory) is left as it is."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


class _OutlivesReader:
    """sys.stdout, but a closed pipe sends the rest to /dev/null instead of raising BrokenPipeError.

    So a command reaches its own exit status after ``| head -1`` (Python's docs on SIGPIPE point the
    descriptor at /dev/null the same way, so the flush at exit cannot fail either).
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            to_devnull(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            to_devnull(self._stream)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def stdout_outlives_its_reader() -> Iterator[None]:
    """While inside, writes to a stdout whose reader went away are dropped instead of raising."""
    original = sys.stdout
    if original is None:
        yield
        return
    guarded = sys.stdout = _OutlivesReader(original)
    try:
        yield
    finally:
        guarded.flush()   # what is still buffered, while a broken pipe can still be caught
        if sys.stdout is guarded:
            sys.stdout = original
