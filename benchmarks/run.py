"""Run every benchmarks/bench_*.py (or those named) and print ratios against their baselines.

Usage: python benchmarks/run.py [NAME ...]   e.g. `python benchmarks/run.py core`

Rows with a goal print it and "ok" or "MISSED"; the last lines count the goals held and list the misses.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Harness  # noqa: E402


def main(argv: list[str]) -> int:
    wanted = set(argv)
    harness = Harness()
    print(f"{'group':<28} {'name':<40} {'median':>12} {'ratio':>9}")
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.run(harness)
    print(harness.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
