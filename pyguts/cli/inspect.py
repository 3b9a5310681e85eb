"""``pyguts inspect EXPR``: the memory of the object a Python expression evaluates to.

EXPR is evaluated with Python's builtins and the names in :data:`NAMESPACE` (``np``/``numpy`` and
``pyguts``). Exit status 0, or 2 when EXPR cannot be evaluated, its object cannot be explained or
drawn, or the diagram cannot be written; the error goes to stderr, and with ``--json`` stdout still
holds one JSON object, carrying ``"error"`` then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

#: Exit statuses: shown, or nothing (or only part) could be shown.
EXIT_OK, EXIT_FAILED = 0, 2
#: The names EXPR can use besides the builtins: module attribute -> name in the expression.
NAMESPACE = {"numpy": ("np", "numpy"), "pyguts": ("pyguts",)}


def register(sub) -> argparse.ArgumentParser:
    names = ", ".join(f"{alias} ({module})" for module, aliases in NAMESPACE.items() for alias in aliases)
    parser = sub.add_parser("inspect", help="show the memory of the object EXPR evaluates to",
                            description="Evaluate a Python expression and show its object's memory: every field "
                                        "with offset, size, raw bytes, value and meaning. EXPR sees Python's builtins "
                                        f"and these names: {names}; import others inside it, e.g. "
                                        "\"__import__('decimal').Decimal('1.5')\". Exit status 0, or 2 when nothing "
                                        "(or only part) could be shown; errors go to stderr.")
    parser.add_argument("expr", help="a Python expression, e.g. \"b'Hello, world!'\" or \"np.arange(3)\"")
    parser.add_argument("--json", action="store_true",
                        help="print the fields as one JSON object (also on failure: it then has an \"error\")")
    parser.add_argument("--svg", metavar="FILE", help="also write a memory diagram (boxes and pointer arrows) "
                                                      "as SVG to FILE")
    return parser


def namespace() -> dict:
    """The globals EXPR is evaluated in: the builtins, numpy as ``np`` and ``numpy``, and ``pyguts``."""
    import builtins
    import importlib

    found: dict = {"__builtins__": builtins}
    for module, aliases in NAMESPACE.items():
        found.update(dict.fromkeys(aliases, importlib.import_module(module)))
    return found


def _jsonable(value: object) -> object:
    """Numbers as numbers (lists of them as lists), anything else, NaN and infinities too, as its repr."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return repr(value)


def _record(report) -> dict:
    record = dataclasses.asdict(report)
    for field in record["fields"]:
        field["raw"] = field["raw"].hex()
        field["value"] = _jsonable(field["value"])
    return record


def _fail(args: argparse.Namespace, message: str, record: dict | None = None) -> int:
    print(f"pyguts inspect: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({**(record or {}), "error": message}, indent=2))
    return EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    from pyguts.errors import PygutsError
    from pyguts.objects.explain import explain

    try:
        obj = eval(args.expr, namespace())  # noqa: S307 - evaluating the user's expression is the point
    except Exception as exc:  # any error in the user's expression
        return _fail(args, f"cannot evaluate {args.expr!r}: {type(exc).__name__}: {exc}; "
                           "EXPR must be a Python expression (see pyguts inspect --help for the names it can use)")
    try:
        report = explain(obj)
    except PygutsError as exc:   # e.g. the layout checks failed on this interpreter
        return _fail(args, f"cannot explain the {type(obj).__name__} object {args.expr!r} gives: {exc}")
    record = _record(report) if args.json else None
    if not args.json:
        print(report)
    if not args.svg:
        if args.json:
            print(json.dumps(record, indent=2))
        return EXIT_OK
    from pyguts.objects.diagrams import diagram

    try:
        picture = diagram(obj)
    except PygutsError as exc:
        return _fail(args, f"cannot draw the {type(obj).__name__} object {args.expr!r} gives: {exc}", record)
    try:
        picture.save(args.svg)
    except OSError as exc:
        return _fail(args, f"cannot write the diagram to {args.svg!r}: {exc}; pass a writable path", record)
    wrote = f"wrote a memory diagram ({len(picture.boxes)} boxes, {len(picture.arrows)} arrows) to {args.svg}"
    if args.json:   # stdout stays one JSON document; the note goes beside it
        record["svg"] = {"path": args.svg, "boxes": len(picture.boxes), "arrows": len(picture.arrows)}
        print(json.dumps(record, indent=2))
        print(wrote, file=sys.stderr)
    else:
        print(wrote)
    return EXIT_OK
