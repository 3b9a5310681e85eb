"""``pyguts doctor``: every component pyguts uses, whether it works here, and what to do when not.

Sections: core, compilers, allocators, libraries, gpu, isolation (the checks live in
:mod:`pyguts.doctor`; this module only prints). Exit status: 1 when the core is broken (layout
rows or live layout checks disagree with the interpreter, numpy's NEP 49 handler API unusable),
else 0, even with extras missing; ``--strict`` also exits 1 when anything is missing or broken.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import typing

if typing.TYPE_CHECKING:
    from pyguts import doctor

#: The allocators section loads jemalloc, which needs GLIBC_TUNABLES from start-up (pyguts.cli).
NEEDS_STATIC_TLS = True
_LABEL = {"ok": "ok", "missing": "MISSING", "broken": "BROKEN", "info": "info"}


class _Sections(collections.abc.Sequence):
    """pyguts.doctor.SECTIONS, imported only once argparse looks at them: pyguts.doctor loads numpy and
    the device probes, which ``pyguts --help`` and the other commands do not need. (No ``%(choices)s``
    in the help: argparse 3.14 expands help strings when an argument is added.)"""

    def __getitem__(self, index):
        from pyguts import doctor

        return doctor.SECTIONS[index]

    def __len__(self) -> int:
        from pyguts import doctor

        return len(doctor.SECTIONS)


def register(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "doctor", help="check the interpreter and layout, compilers, allocators, GSL, GPU tooling and fork",
        description="Check every component pyguts uses, by section: core (interpreter, layout, numpy's "
                    "handler API), compilers, allocators (and the jemalloc TLS fix), libraries (GSL, "
                    "Cython, cppyy), gpu (numba, CuPy, driver, device) and isolation (fork), and say "
                    "what to do about anything missing. Exit status 1 only when the core is broken "
                    "(layout mismatch, numpy handler API missing), unless --strict.")
    parser.add_argument("--json", action="store_true",
                        help="print the checks as a JSON list of {section, name, status, found, fix, ...}")
    parser.add_argument("--strict", action="store_true",
                        help="also exit 1 if anything is missing or broken (default: only a broken core)")
    parser.add_argument("--section", action="append", choices=_Sections(), metavar="SECTION",
                        help="check only this section, one of those named above (repeatable; default: all)")
    return parser


def render(found: list[doctor.Check]) -> str:
    """The human table: a header per section, one row per check, "-> fix" under what is not ok."""
    from pyguts import doctor

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
    from pyguts import doctor

    found = doctor.checks(tuple(args.section) if args.section else doctor.SECTIONS)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=2, default=str))
    else:
        print(render(found))
    return doctor.exit_status(found, strict=args.strict)
