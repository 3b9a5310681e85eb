"""Verdicts of pyguts.leaks.check on the corpus of issue 15, each check in a fresh process, repeated.

Runs every function of tests/integration/test_leaks_realistic.py (CASES: clean realistic functions
and planted leaks) ``--repeats`` times, each check in its own subprocess, optionally with a CPU hog
on another core, and prints per function: the expected verdict, the verdicts over the repeats, the
median time to a verdict and the median number of calls; then the false positives and the leaks
found. Exit status 1 on any wrong verdict (a clean function flagged or undecided, a leak missed or
reported under another kind).

Usage: python benchmarks/leaks_verdicts.py [--repeats 5] [--hog] [--budget S] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS_PATH = ROOT / "tests" / "integration" / "test_leaks_realistic.py"
CONFTEST_PATH = ROOT / "tests" / "conftest.py"
#: The corpus is imported under the name pytest gives it, so that its classes pickle.
CORPUS_NAME = "test_leaks_realistic"
#: Seconds one check (with its interpreter start-up) may take before it counts as an error.
CHECK_TIMEOUT_S = 300
CLEAN, LEAK, UNDECIDED, ERROR = "clean", "leak", "undecided", "error"


def load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def child(name: str, extension: str, budget: float | None) -> int:
    """Run one check in this (fresh) process; print its outcome as one line of JSON."""
    from pyguts import leaks

    corpus = load(CORPUS_NAME, CORPUS_PATH)
    if extension:
        corpus.load_leakplanted(pathlib.Path(extension))
    case = next(c for c in corpus.CASES if c.name == name)
    kwargs = {} if budget is None else {"budget": budget}
    report = leaks.check(case.fn, *case.args, **kwargs)
    verdict = LEAK if report.leaking else CLEAN if report.decided else UNDECIDED
    print(json.dumps({"verdict": verdict, "kinds": list(report.kinds), "elapsed_ms": report.elapsed_ms,
                      "calls": report.calls, "report": str(report)}))
    return 0


def run_check(name: str, extension: str, budget: float | None) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", name, "--extension", extension]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"verdict": ERROR, "report": f"the check ran past {CHECK_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"verdict": ERROR, "report": f"exit status {done.returncode}\n{done.stdout}{done.stderr}"}


def right(case, outcome: dict) -> bool:
    if case.kind is None:
        return outcome["verdict"] == CLEAN
    return outcome["verdict"] == LEAK and case.kind in outcome["kinds"]


def shown(case, outcome: dict) -> str:
    """A verdict as the table shows it: a leak of another kind than expected names its kinds."""
    if outcome["verdict"] == LEAK and (case.kind is None or case.kind not in outcome["kinds"]):
        return "leak(" + ",".join(outcome["kinds"]) + ")"
    return outcome["verdict"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", "-n", type=int, default=5, help="checks per function (default 5)")
    parser.add_argument("--hog", action="store_true", help="keep another core busy with a spinning child")
    parser.add_argument("--budget", type=float, default=None, help="seconds per check (check(budget=))")
    parser.add_argument("--only", nargs="+", default=(), metavar="NAME", help="only these functions")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--extension", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.extension, args.budget)

    corpus = load(CORPUS_NAME, CORPUS_PATH)
    cases = [c for c in corpus.CASES if not args.only or c.name in args.only]
    unknown = set(args.only) - {c.name for c in cases}
    if unknown:
        parser.error(f"--only must name corpus functions, got unknown {sorted(unknown)}; "
                     f"known: {', '.join(c.name for c in corpus.CASES)}")
    with tempfile.TemporaryDirectory(prefix="pyguts-leaks-verdicts-") as tmp, contextlib.ExitStack() as stack:
        extension = ""
        if any(c.needs == "leakplanted" for c in cases):
            try:
                extension = str(corpus.build_leakplanted(pathlib.Path(tmp)))
                corpus.load_leakplanted(pathlib.Path(extension))
            except RuntimeError as exc:
                print(f"leaks_verdicts: the C cases are skipped: {exc}", file=sys.stderr)
        if args.hog:
            stack.enter_context(load("pyguts_tests_conftest", CONFTEST_PATH).spinning_child())
        return report_table(corpus, cases, args, extension)


def report_table(corpus, cases, args, extension: str) -> int:
    print(f"pyguts.leaks verdicts: {len(cases)} functions x {args.repeats} checks, each in a fresh process, "
          f"Python {sys.version.split()[0]}, {'with' if args.hog else 'without'} a CPU hog"
          + ("" if args.budget is None else f", budget {args.budget} s"))
    print(f"{'function':<32} {'expected':<16} {'verdicts':<36} {'median ms':>10} {'calls':>7}")
    wrong, false_positives, clean_checks, found, leak_checks, skipped = [], 0, 0, 0, 0, []
    for case in cases:
        reason = corpus.missing(case)
        if reason:
            skipped.append(f"{case.name} ({reason})")
            continue
        outcomes = [run_check(case.name, extension, args.budget) for _ in range(args.repeats)]
        ok = [right(case, o) for o in outcomes]
        if case.kind is None:
            clean_checks += len(outcomes)
            false_positives += sum(o["verdict"] == LEAK for o in outcomes)
        else:
            leak_checks += len(outcomes)
            found += sum(ok)
        wrong += [(case, o) for o, good in zip(outcomes, ok) if not good]
        timed = [o for o in outcomes if "elapsed_ms" in o]
        ms = f"{statistics.median(o['elapsed_ms'] for o in timed):.1f}" if timed else "-"
        calls = f"{statistics.median(o['calls'] for o in timed):.0f}" if timed else "-"
        expected = "clean" if case.kind is None else f"leak({case.kind})"
        tally = collections.Counter(shown(case, o) for o in outcomes)   # in order of first appearance
        verdicts = ", ".join(f"{verdict} x{n}" for verdict, n in tally.items())
        print(f"{case.name:<32} {expected:<16} {verdicts:<36} {ms:>10} {calls:>7}" + ("" if all(ok) else "  <- wrong"),
              flush=True)
    for line in skipped:
        print(f"skipped: {line}")
    undecided = sum(o["verdict"] in (UNDECIDED, ERROR) for case, o in wrong if case.kind is None)
    print(f"false positives {false_positives}/{clean_checks}, undecided or failed on clean functions "
          f"{undecided}/{clean_checks}, leaks found {found}/{leak_checks}, wrong verdicts {len(wrong)}")
    seen = set()
    for case, outcome in wrong:   # the evidence of the first wrong verdict of each function
        if case.name not in seen:
            seen.add(case.name)
            print(f"\n--- {case.name}: expected {'clean' if case.kind is None else 'leak(' + case.kind + ')'}, "
                  f"got {shown(case, outcome)}\n{outcome['report']}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
