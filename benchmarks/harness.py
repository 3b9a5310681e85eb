"""Ratio benchmarks: every candidate is timed beside its baseline in the same run.

Absolute times on shared machines are noise; the ratio of two medians measured interleaved
(baseline, candidate, baseline, candidate, ...) is what the figures in notes and README use.

A comparison may carry goals (the issue's targets, as the most a candidate's ratio may be): each
row then prints its goal and whether it holds, and :meth:`Harness.summary` lists every goal missed.
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
    goal: float | None = None  # the most ratio may be; None: no goal

    @property
    def holds(self) -> bool | None:
        return None if self.goal is None else self.ratio <= self.goal

    def line(self) -> str:
        verdict = "" if self.goal is None else f"  goal <= {self.goal:.2f}x {'ok' if self.holds else 'MISSED'}"
        return f"{self.group:<28} {self.name:<40} {_fmt_ns(self.median_ns):>12} {self.ratio:>8.2f}x{verdict}"


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
                candidates: dict[str, Callable[[], object]], *, repeat: int | None = None,
                goal: float | dict[str, float | None] | None = None) -> list[Row]:
        """Time ``candidates`` and ``baseline`` interleaved; record and print median ns and ratios.

        ``goal``: the most each candidate's ratio may be (one figure for all, or by name).
        """
        named = [baseline, *candidates.items()]
        numbers = [_calibrate(fn) for _, fn in named]
        samples: list[list[float]] = [[] for _ in named]
        for _ in range(repeat or self.repeat):
            for i, (_, fn) in enumerate(named):
                samples[i].append(_batch_ns(fn, numbers[i]))
        medians = [statistics.median(s) for s in samples]
        goals = goal if isinstance(goal, dict) else dict.fromkeys(candidates, goal)
        rows = [Row(group, name, med, med / medians[0], goals.get(name) if i else None)
                for i, ((name, _), med) in enumerate(zip(named, medians))]
        self.rows.extend(rows)
        for row in rows:
            print(row.line(), flush=True)
        return rows

    def summary(self) -> str:
        """How many goals held, and each one missed."""
        judged = [row for row in self.rows if row.goal is not None]
        missed = [row for row in judged if not row.holds]
        lines = [f"goals: {len(judged) - len(missed)} of {len(judged)} held"]
        lines += ["  missed: " + row.line().strip() for row in missed]
        return "\n".join(lines)


def _fmt_ns(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} us"
    return f"{ns / 1e6:.2f} ms"
