"""``pyguts inspect EXPR``: the memory of the object a Python expression evaluates to."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def register(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("inspect", help="show the memory of the object EXPR evaluates to",
                            description="Evaluate a Python expression and show its object's memory: "
                                        "every field with offset, size, raw bytes, value and meaning.")
    parser.add_argument("expr", help="a Python expression, e.g. \"b'Hello, world!'\"")
    parser.add_argument("--json", action="store_true", help="print the fields as JSON")
    parser.add_argument("--svg", metavar="FILE", help="also write a memory diagram (boxes and pointer arrows) "
                                                      "as SVG to FILE")
    return parser


def run(args: argparse.Namespace) -> int:
    from pyguts.objects.explain import explain

    try:
        obj = eval(args.expr, {"__builtins__": __builtins__})  # noqa: S307 - evaluating the user's expression is the point
    except Exception as exc:  # any error in the user's expression
        print(f"pyguts inspect: cannot evaluate {args.expr!r}: {type(exc).__name__}: {exc}")
        return 2
    report = explain(obj)
    if args.json:
        record = dataclasses.asdict(report)
        for field in record["fields"]:
            field["raw"] = field["raw"].hex()
            field["value"] = field["value"] if isinstance(field["value"], (int, float, list)) else repr(field["value"])
        print(json.dumps(record, indent=2))
    else:
        print(report)
    if args.svg:
        from pyguts.objects.diagrams import diagram

        picture = diagram(obj)
        try:
            picture.save(args.svg)
        except OSError as exc:
            print(f"pyguts inspect: cannot write the diagram to {args.svg!r}: {exc}; pass a writable path")
            return 2
        # With --json, stdout stays pure JSON.
        print(f"wrote a memory diagram ({len(picture.boxes)} boxes, {len(picture.arrows)} arrows) to {args.svg}",
              file=sys.stderr if args.json else sys.stdout)
    return 0
