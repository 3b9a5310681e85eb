"""``pyguts leaks MODULE:FUNCTION [--runs N]``: does calling FUNCTION() leak? Exit status 1 when it does."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Exit statuses: no leak, leak found, the target could not be found or called.
EXIT_CLEAN, EXIT_LEAKING, EXIT_USAGE = 0, 1, 2


def register(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("leaks", help="check whether calling MODULE:FUNCTION() leaks",
                            description="Call MODULE:FUNCTION() repeatedly on this (release) interpreter and "
                                        "report refcount, object, memory and fd growth per call. "
                                        "Exit status 1 when it leaks.")
    parser.add_argument("target", metavar="MODULE:FUNCTION",
                        help="an importable module and a callable in it that takes no arguments, "
                             "e.g. mypkg.samples:parse_one (the current directory is importable)")
    parser.add_argument("--runs", type=int, default=None, metavar="N",
                        help="rounds that must all grow before growth counts as a leak (default 3)")
    parser.add_argument("--warmup", type=int, default=None, metavar="CALLS",
                        help="calls before measuring (default: at least 8)")
    return parser


def resolve(target: str):
    """The callable named by ``MODULE:FUNCTION`` (FUNCTION may be dotted: ``mod:Class.method``).

    >>> resolve("os.path:join").__name__
    'join'
    """
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"target must be MODULE:FUNCTION, got {target!r}; write e.g. mypkg.mod:func")
    if "" not in sys.path:   # like `python -m`: modules in the current directory are importable
        sys.path.insert(0, "")
    obj = importlib.import_module(module_name)
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no attribute path {attr_path!r} (no {part!r}); "
                             f"check the name after the colon") from None
    if not callable(obj):
        raise ValueError(f"{target} must be callable, got {type(obj).__name__}; name a function")
    return obj


def run(args: argparse.Namespace) -> int:
    from pyguts import leaks

    try:
        fn = resolve(args.target)
    except (ValueError, ImportError) as exc:
        print(f"pyguts leaks: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = leaks.check(fn, runs=args.runs, warmup=args.warmup)
    except Exception as exc:   # a bad --runs/--warmup, or the function itself raised: no verdict
        print(f"pyguts leaks: checking {args.target} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(report)
    return EXIT_LEAKING if report.leaking else EXIT_CLEAN
