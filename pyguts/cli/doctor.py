"""``pyguts doctor``: every component pyguts uses, whether it works here, and what to do when not.

Sections: core, compilers, allocators, libraries, gpu, isolation (the checks live in
:mod:`pyguts.doctor`; this module only prints). Exit status: 1 when the core is broken (layout
rows or live layout checks disagree with the interpreter, numpy's NEP 49 handler API unusable),
else 0, even with extras missing; ``--strict`` also exits 1 when anything is missing or broken.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from pyguts import doctor

_LABEL = {"ok": "ok", "missing": "MISSING", "broken": "BROKEN", "info": "info"}


def register(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "doctor", help="check the interpreter and layout, compilers, allocators, GSL, GPU tooling and fork",
        description="Check every component pyguts uses (core, compilers, allocators and the jemalloc "
                    "TLS fix, GSL/Cython/cppyy, numba/CuPy/driver/device, fork isolation) and say "
                    "what to do about anything missing. Exit status 1 only when the core is broken "
                    "(layout mismatch, numpy handler API missing), unless --strict.")
    parser.add_argument("--json", action="store_true",
                        help="print the checks as a JSON list of {section, name, status, found, fix, ...}")
    parser.add_argument("--strict", action="store_true",
                        help="also exit 1 if anything is missing or broken (default: only a broken core)")
    parser.add_argument("--section", action="append", choices=doctor.SECTIONS,
                        help="check only this section (repeatable; default: all)")
    return parser


def render(found: list[doctor.Check]) -> str:
    """The human table: a header per section, one row per check, "-> fix" under what is not ok."""
    width = max(len(c.name) for c in found)
    lines, section = [], None
    for c in found:
        if c.section != section:
            section = c.section
            lines.append(f"== {section} ==")
        lines.append(f"{c.name:<{width}}  {_LABEL.get(c.status, c.status):<7}  {c.found}")
        if c.fix and c.status != "ok":
            lines.append(f"{'':<{width}}  {'':7}  -> {c.fix}")
    lines.append(doctor.summary_line(found))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    found = doctor.checks(tuple(args.section) if args.section else doctor.SECTIONS)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=2, default=str))
    else:
        print(render(found))
    return doctor.exit_status(found, strict=args.strict)
