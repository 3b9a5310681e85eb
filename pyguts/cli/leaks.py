"""``pyguts leaks MODULE:FUNCTION``: does calling FUNCTION() leak? Exit status 1 when it does.

The report goes to stdout (``--json``: ``report.as_dict()`` as JSON), progress to stderr: one line a
second once a check has run for a second, in a terminal and in a CI log alike. Exit statuses: 0 no
leak found, 1 leak (also when the reader of stdout went away early, as in ``| head -1``), 2 no
verdict (the target could not be found or called, a bad option value: with ``--json`` stdout then
holds ``{"error": ...}``), 130 interrupted (Ctrl-C; the partial report is printed, not a verdict).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time

from pyguts.cli import to_devnull

#: Exit statuses: no leak, leak found, no verdict (target or options unusable), interrupted (128 + SIGINT).
EXIT_CLEAN, EXIT_LEAKING, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Progress lines start once a check has run this long, and come at most this often.
PROGRESS_AFTER_S = 1.0
PROGRESS_EVERY_S = 1.0


def register(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("leaks", help="check whether calling MODULE:FUNCTION() leaks",
                            description="Call MODULE:FUNCTION() repeatedly on this (release) interpreter and "
                                        "report refcount, object, memory and fd growth per call. "
                                        "Exit status 0: no leak found, 1: leaks, 2: no verdict (bad target "
                                        "or option), 130: interrupted.")
    parser.add_argument("target", metavar="MODULE:FUNCTION",
                        help="an importable module and a callable in it that takes no arguments, "
                             "e.g. mypkg.samples:parse_one (the current directory is importable)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="seconds the check may take before it ends undecided (default 2), in CPU time "
                             "of the calling thread (half the wall time where that is more)")
    parser.add_argument("--runs", type=int, default=None, metavar="N",
                        help="consecutive windows that must all grow, keeping their slope, for a leak (default 3)")
    parser.add_argument("--warmup", type=int, default=None, metavar="CALLS",
                        help="calls before measuring (default: at least 8)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON (on an error: {\"error\": ...} and exit status 2)")
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
    try:
        return _run(args)
    except KeyboardInterrupt as exc:   # before or after the check proper: nothing measured to show
        return _interrupted(args, getattr(exc, "report", None))


def _run(args: argparse.Namespace) -> int:
    from pyguts import leaks

    if args.budget is not None and not 0 < args.budget < math.inf:
        return _error(args, f"--budget must be a number of seconds > 0, got {args.budget!r}; pass e.g. --budget 10")
    try:
        fn = resolve(args.target)
    except Exception as exc:   # not found, or its module failed to import: no verdict, never status 1
        return _error(args, str(exc) if isinstance(exc, (ValueError, ImportError))
                      else f"importing {args.target} failed: {type(exc).__name__}: {exc}")
    budget_s = args.budget if args.budget is not None else leaks.DEFAULT_BUDGET_S
    try:
        report = leaks.check(fn, runs=args.runs, warmup=args.warmup, budget=args.budget,
                             progress=_Progress(budget_s))
    except KeyboardInterrupt as exc:   # pyguts.leaks.Interrupted carries the partial report
        return _interrupted(args, getattr(exc, "report", None))
    except Exception as exc:   # a bad --runs/--warmup, or the function itself raised: no verdict
        return _error(args, f"checking {args.target} failed: {type(exc).__name__}: {exc}")
    _print(_json(report.as_dict()) if args.json else str(report))
    if not report.decided:
        _print(f"pyguts leaks: no verdict within the budget of {budget_s:g} s; "
               f"raise it, e.g. --budget {4 * budget_s:g}", sys.stderr)
    return EXIT_LEAKING if report.leaking else EXIT_CLEAN


class _Progress:
    """The check's ``progress`` callback: a line on stderr a second, once the check ran for a second."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.next_s = time.monotonic() + PROGRESS_AFTER_S

    def __call__(self, report) -> None:
        now = time.monotonic()
        if now < self.next_s:
            return
        self.next_s = now + PROGRESS_EVERY_S
        line = (f"pyguts leaks: {report.function}: {report.calls} calls in {report.elapsed_ms / 1000:.1f} s "
                f"of a {self.budget_s:g} s budget of CPU time")
        if report.evidence:
            line += f"; growing so far: {report.evidence}"
        _print(line, sys.stderr)


def _interrupted(args: argparse.Namespace, report) -> int:
    if report is None:
        text = "interrupted (Ctrl-C) before the first measuring window: no partial report yet"
        _print(_json({"interrupted": True, "error": text}) if args.json else f"pyguts leaks: {text}")
    elif args.json:
        _print(_json({**report.as_dict(), "interrupted": True}))
    else:
        _print(f"pyguts leaks: interrupted (Ctrl-C) after {report.calls} calls in {report.elapsed_ms / 1000:.1f} s; "
               f"the partial report follows, not a verdict\n{report}")
    return EXIT_INTERRUPTED


def _error(args: argparse.Namespace, message: str) -> int:
    _print(f"pyguts leaks: {message}", sys.stderr)
    if args.json:
        _print(_json({"error": message}))
    return EXIT_USAGE


def _json(data: dict) -> str:
    return json.dumps(_finite(data))   # one line: `| head -1` still gets the whole document


def _finite(value):
    """``value`` with NaN and infinities as None: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _print(text: str, stream=None) -> None:
    """Print and flush; a reader that went away (``| head -1``) ends the output, not the verdict."""
    stream = sys.stdout if stream is None else stream
    if stream is None:   # started with the descriptor closed
        return
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        # Point the descriptor at /dev/null so the flush at exit does not fail again (Python's docs
        # on SIGPIPE); the caller still returns the verdict's status.
        to_devnull(stream)
