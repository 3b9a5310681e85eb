"""Ratio benchmarks: every candidate is timed beside its baseline in the same run.

Absolute times on shared machines are noise; the ratio of two medians measured interleaved
(baseline, candidate, baseline, candidate, ...) is what the figures in notes and README use.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

#: Target duration of one timed batch; the batch size is calibrated to reach it.
BATCH_NS = 2_000_000


def _calibrate(fn: Callable[[], object]) -> int:
    fn()  # warm-up: a first call may import or build (pyguts' names are imported on first use)
    number = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        if time.perf_counter_ns() - start >= BATCH_NS or number >= 1 << 20:
            return number
        number *= 2


def _batch_ns(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - start) / number


@dataclass
class Row:
    group: str
    name: str
    median_ns: float
    ratio: float  # median_ns / the group's baseline median_ns


@dataclass
class Fact:
    """A measured yes/no or value (not a time): what a peer did when asked, on one interpreter."""

    peer: str
    python: str
    checked: str
    result: str


@dataclass
class Harness:
    repeat: int = 31
    rows: list[Row] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)

    def fact(self, peer: str, checked: str, result: str) -> Fact:
        """Record and print one measured fact, tagged with the running interpreter's version."""
        fact = Fact(peer, platform.python_version(), checked, result)
        self.facts.append(fact)
        print(f"fact {fact.peer:<16} py{fact.python:<8} {fact.checked:<46} {fact.result}", flush=True)
        return fact

    def compare(self, group: str, baseline: tuple[str, Callable[[], object]],
                candidates: dict[str, Callable[[], object]], *, repeat: int | None = None) -> list[Row]:
        """Time ``candidates`` and ``baseline`` interleaved; record and print median ns and ratios."""
        named = [baseline, *candidates.items()]
        numbers = [_calibrate(fn) for _, fn in named]
        samples: list[list[float]] = [[] for _ in named]
        for _ in range(repeat or self.repeat):
            for i, (_, fn) in enumerate(named):
                samples[i].append(_batch_ns(fn, numbers[i]))
        medians = [statistics.median(s) for s in samples]
        rows = [Row(group, name, med, med / medians[0]) for (name, _), med in zip(named, medians)]
        self.rows.extend(rows)
        for row in rows:
            print(f"{row.group:<28} {row.name:<40} {_fmt_ns(row.median_ns):>12} {row.ratio:>8.2f}x", flush=True)
        return rows


def _fmt_ns(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} us"
    return f"{ns / 1e6:.2f} ms"
