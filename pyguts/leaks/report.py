"""Plain records of a leak check (:func:`pyguts.leaks.check`) and their text form.

The records hold strings and numbers only, never the objects measured, so a report can be kept
without keeping anything alive. They can be built by hand:

>>> from pyguts.leaks.report import LeakReport, Signal
>>> r = LeakReport(function="f", leaking=True, decided=True, kinds=("fd",), windows=(16, 32, 64),
...                calls=120, elapsed_ms=1.0, signals=(Signal("fds", "fd", (16, 32, 64), 0, 1.0, "leak"),))
>>> r.growth["fds"]
1.0
>>> r.evidence
'fds +1 fd per call over 112 calls'
>>> print(r)
pyguts.leaks: f LEAKS (fd): 112 calls measured in 3 windows (120 with warm-up) in 1.0 ms
  fd: file descriptors opened and not closed
  per call (growth per window of 16, 32, 64 calls):
    fds                                      +1 fd     [16, 32, 64]  <- leak
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

#: Decision states of one signal.
LEAK, CLEAN, UNDECIDED = "leak", "clean", "undecided"

#: What each leak kind means, for the text report.
KIND_HELP = {
    "reference": "references added to existing objects (refcount bumps)",
    "container": "new gc-tracked objects kept alive (lists, dicts, tuples, instances ...)",
    "object": "new Python objects gc does not track (int, bytes, str, atomic tuples ...)",
    "large-buffer": "large memory buffers (>= 64 KiB per call)",
    "native-memory": "C allocator (malloc) memory not owned by Python objects",
    "fd": "file descriptors opened and not closed",
}


@dataclass(frozen=True)
class Signal:
    """One measured quantity: its per-round deltas (k calls per round) and the decision on them."""

    name: str          # "blocks", "malloc_nbytes", "gc:list", "refcount:<label>", ...
    unit: str          # "block", "B", "fd", "ref", "object"
    deltas: tuple      # growth per window, after subtracting the check's own overhead
    floor: float       # growth per window up to this much is noise
    per_call: float    # growth per call over the last windows (the slope)
    state: str         # LEAK, CLEAN or UNDECIDED


@dataclass(frozen=True)
class GrownObject:
    """An existing object whose reference count grew on every round (the object itself is not kept)."""

    repr: str
    type_name: str
    addr: int
    growth_per_call: float


@dataclass(frozen=True)
class AllocationSite:
    """Where the memory that kept growing was allocated (from a tracemalloc pass, when a leak is located)."""

    location: str
    nbytes_per_call: float
    blocks_per_call: float


@dataclass(frozen=True)
class LeakReport:
    """The answer of :func:`pyguts.leaks.check`: does it leak, what, how much per call, and the evidence."""

    function: str
    leaking: bool
    decided: bool
    kinds: tuple
    windows: tuple                     # calls per measured window (doubling)
    calls: int                         # calls in all, warm-up included
    elapsed_ms: float
    signals: tuple = ()
    grown_objects: tuple = ()
    grown_types: tuple = ()            # (type name, new objects per call), gc-tracked only
    sites: tuple = ()
    notes: tuple = field(default=())

    @property
    def growth(self) -> dict:
        """Per-call growth of every signal, by signal name."""
        return {s.name: s.per_call for s in self.signals}

    def signal(self, name: str) -> Signal | None:
        """The signal called ``name``, or None."""
        for s in self.signals:
            if s.name == name:
                return s
        return None

    @property
    def evidence(self) -> str:
        """One line: the leaking signals with their slopes (empty when nothing leaks)."""
        measured = sum(self.windows)
        parts = [f"{s.name} {_fmt(s.per_call)} {s.unit} per call" for s in self.signals
                 if s.state == LEAK and not s.name.startswith("refcount:")]   # named below, with the object
        parts += [f"{g.type_name} at 0x{g.addr:x} {_fmt(g.growth_per_call)} ref per call" for g in self.grown_objects]
        return "; ".join(parts) + (f" over {measured} calls" if parts else "")

    def as_dict(self) -> dict:
        """Every field as plain JSON-serialisable values (lists for tuples, dicts for records)."""
        data = dataclasses.asdict(self)
        data["evidence"] = self.evidence
        return data

    def __str__(self) -> str:
        verdict = ("LEAKS (%s)" % ", ".join(self.kinds)) if self.leaking else "no leak found"
        if not self.decided:
            verdict += " (undecided)"
        measured = sum(self.windows)
        lines = [f"pyguts.leaks: {self.function} {verdict}: {measured} calls measured in {len(self.windows)} windows"
                 f" ({self.calls} with warm-up) in {self.elapsed_ms:.1f} ms"]
        for kind in self.kinds:
            lines.append(f"  {kind}: {KIND_HELP.get(kind, kind)}")
        shown = [s for s in self.signals if s.state != CLEAN or not s.name.startswith(("gc:", "refcount:"))]
        if shown:
            sizes = ", ".join(map(str, self.windows[:3])) + (f" ... {self.windows[-1]}" if len(self.windows) > 4
                                                            else "".join(f", {w}" for w in self.windows[3:]))
            lines.append(f"  per call (growth per window of {sizes} calls):")
            for s in shown:
                mark = {LEAK: "  <- leak", UNDECIDED: "  <- undecided"}.get(s.state, "")
                lines.append(f"    {s.name:<34} {_fmt(s.per_call):>8} {s.unit:<6} {_fmt_deltas(s.deltas)}{mark}")
        if self.grown_types:
            lines.append("  new gc-tracked objects kept per call:")
            lines += [f"    {name:<40} {_fmt(per_call)}" for name, per_call in self.grown_types]
        if self.grown_objects:
            lines.append("  objects whose refcount grew (per call):")
            lines += [f"    {g.type_name} at 0x{g.addr:x}: {g.repr}  {_fmt(g.growth_per_call)}"
                      for g in self.grown_objects]
        if self.sites:
            lines.append("  top allocation sites (tracemalloc, per call):")
            lines += [f"    {s.location}: {_fmt(s.nbytes_per_call)} B in {_fmt(s.blocks_per_call)} blocks"
                      for s in self.sites]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        """One line: the function, the verdict and the calls measured (``print(report)`` says the rest).

        >>> LeakReport("f", True, True, ("reference",), (64, 128), 200, 1.0)
        <LeakReport f: LEAKS (reference), 192 calls>
        """
        verdict = ("LEAKS (%s)" % ", ".join(self.kinds)) if self.leaking else "no leak found"
        doubt = "" if self.decided else " (undecided)"
        return f"<LeakReport {self.function}: {verdict}{doubt}, {sum(self.windows)} calls>"

    def _repr_html_(self) -> str:
        """Jupyter's view: the verdict, what each kind means, the signal table, the objects and sites, the notes."""
        from html import escape

        verdict = ("LEAKS (%s)" % ", ".join(self.kinds)) if self.leaking else "no leak found"
        colour = "#b03a2e" if self.leaking else "#1e7b34" if self.decided else "#b9770e"
        out = [f'<div class="pyguts-leak-report"><p><b>pyguts.leaks: {escape(self.function)}</b> '
               f'<b style="color:{colour}">{escape(verdict)}{"" if self.decided else " (undecided)"}</b>: '
               f"{sum(self.windows)} calls measured in {len(self.windows)} windows ({self.calls} with warm-up) "
               f"in {self.elapsed_ms:.1f} ms</p>"]
        if self.kinds:
            out.append("<ul>" + "".join(f"<li><b>{escape(k)}</b>: {escape(KIND_HELP.get(k, k))}</li>"
                                        for k in self.kinds) + "</ul>")

        def table(head, rows) -> str:
            cells = "".join(f'<th style="text-align:left">{escape(h)}</th>' for h in head)
            body = "".join("<tr>" + "".join(f'<td style="text-align:left">{c}</td>' for c in row) + "</tr>"
                           for row in rows)
            return f"<table><tr>{cells}</tr>{body}</table>"

        shown = [s for s in self.signals if s.state != CLEAN or not s.name.startswith(("gc:", "refcount:"))]
        if shown:
            states = {LEAK: "#b03a2e", UNDECIDED: "#b9770e", CLEAN: "#1e7b34"}
            out.append(table(("signal", "per call", "unit", "growth per window", "noise floor", "state"), [
                (escape(s.name), escape(_fmt(s.per_call)), escape(s.unit), escape(_fmt_deltas(s.deltas)),
                 escape(f"{s.floor:g}"), f'<b style="color:{states.get(s.state, "#000")}">{escape(s.state)}</b>')
                for s in shown]))
            hidden = len(self.signals) - len(shown)
            if hidden:
                out.append(f"<p>{hidden} more signals (gc counts, refcounts of the objects passed) are clean.</p>")
            out.append("<p>windows (calls): " + escape(", ".join(map(str, self.windows))) + "</p>")
        if self.grown_types:
            out.append("<p>new gc-tracked objects kept per call:</p>"
                       + table(("type", "per call"), [(escape(n), escape(_fmt(c))) for n, c in self.grown_types]))
        if self.grown_objects:
            out.append("<p>objects whose refcount grew:</p>" + table(("object", "address", "per call"), [
                (escape(f"{g.type_name}: {g.repr}"), f"0x{g.addr:x}", escape(_fmt(g.growth_per_call)))
                for g in self.grown_objects]))
        if self.sites:
            head = ("where", "bytes per call", "blocks per call")
            out.append("<p>top allocation sites (tracemalloc):</p>" + table(head, [
                (escape(s.location), escape(_fmt(s.nbytes_per_call)), escape(_fmt(s.blocks_per_call)))
                for s in self.sites]))
        if self.notes:
            out.append("<ul>" + "".join(f"<li>note: {escape(n)}</li>" for n in self.notes) + "</ul>")
        return "".join(out) + "</div>"


def _fmt(x: float) -> str:
    return f"{x:+.3g}" if x != int(x) else f"{int(x):+d}"


def _fmt_deltas(deltas) -> str:
    shown = [str(int(d)) if d == int(d) else f"{d:g}" for d in deltas]
    if len(shown) > 8:
        shown = shown[:3] + ["..."] + shown[-4:]
    return "[" + ", ".join(shown) + "]"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`pyguts.leaks.check`: ``report`` is what was measured until then (undecided)."""

    def __init__(self, report: LeakReport):
        super().__init__("leak check interrupted")
        self.report = report
