"""Checked calls: numpy arrays for pointer parameters, checked against the declared C types (private).

For each declared function a small Python function is generated (like attrs generates
``__init__``): its fast path costs a class test, a dtype identity test, one flags read and cffi's
``from_buffer`` per array; anything unusual goes to :func:`convert`, which accepts the other
forms (None, cdata, :class:`Pointer`, :class:`Callback`, bytes) or raises an error naming the
parameter, the C type, what was got and what to do. C is never called with an argument that
failed a check. cffi releases the GIL around the call.

Lengths tied with ``lengths=`` are checked against the buffer cffi exported (``len`` of the
``from_buffer`` cdata), not against what the object says of itself, and C receives the very int
that was checked: anything with ``__index__`` is converted once, as ``int.__index__(operator.index(n))``
(cffi itself would use ``__int__``, and an ``int`` subclass may lie in its comparisons).
"""

from __future__ import annotations

import keyword
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import cffi
import cffi.cparser
import numpy as np

from pyguts.native.pointers import CHECKED_CALL, PENDING, Callback, Pointer, raise_pending

_FLOATS = {"float": "f4", "double": "f8", "long double": "g",
           "float _Complex": "c8", "double _Complex": "c16"}


@dataclass
class Param:
    name: str           # the Python argument name (C name, renamed if a Python keyword)
    kind: str           # "array", "func", "other" (pointer to pointer...), "scalar"
    ctype: Any          # cffi ctype of the parameter
    const: bool = False
    dtypes: tuple[np.dtype, ...] = ()   # accepted dtypes of an "array" (empty: any)
    buffer_cdecl: str = "char[]"        # from_buffer type
    align: int = 1
    unit: int = 1                       # bytes per counted element for lengths=
    length: str | None = None           # name of the integer parameter tied to this array


@dataclass
class Signature:
    name: str
    params: list[Param]
    filled: dict[str, list[str]] = field(default_factory=dict)  # length param -> tied arrays


def param_info(cdef: str) -> dict[str, list[tuple[str | None, bool]]]:
    """Per declared function, its parameters' (name, pointee-is-const), from the cdef's C syntax."""
    # cffi's own parser (the one ffi.cdef uses) gives pycparser declarations with names and
    # qualifiers; the ctypes cffi builds drop both.
    ast, _, _ = cffi.cparser.Parser()._parse(cdef)
    out: dict[str, list[tuple[str | None, bool]]] = {}
    for decl in ast.ext:
        func = getattr(decl, "type", None)
        if type(decl).__name__ != "Decl" or type(func).__name__ != "FuncDecl" or not decl.name:
            continue
        params = []
        for p in (func.args.params if func.args else []):
            if type(p).__name__ == "EllipsisParam":
                continue
            inner = getattr(p.type, "type", None)
            const = type(p.type).__name__ == "PtrDecl" and "const" in (getattr(inner, "quals", None) or [])
            params.append((p.name, const))
        out[decl.name] = params
    return out


def array_dtypes(ffi: cffi.FFI, item: Any) -> tuple[np.dtype, ...]:
    if item.kind == "void":
        return ()
    if item.kind in ("struct", "union"):
        return ()
    cname = item.cname
    if cname in _FLOATS:
        return (np.dtype(_FLOATS[cname]),)
    if cname == "_Bool":
        return (np.dtype(np.bool_),)
    if cname == "char":
        return (np.dtype(np.int8), np.dtype(np.uint8))  # plain char: either signedness
    size = ffi.sizeof(item)
    try:
        signed = int(ffi.cast(item, -1)) < 0
    except TypeError:
        signed = False
    return (np.dtype(f"{'i' if signed else 'u'}{size}"),)


def signature(ffi: cffi.FFI, fname: str, ctype: Any, info: list[tuple[str | None, bool]],
              lengths: dict[str, str]) -> Signature:
    """The checked-call description of one function from its cffi ctype and cdef names."""
    params = []
    for i, arg in enumerate(ctype.args):
        cname, const = info[i] if i < len(info) else (None, False)
        name = cname or f"arg{i}"
        if keyword.iskeyword(name) or name.startswith("_"):
            name += "_"  # keywords are not Python names; "_x" could shadow the wrapper's own names
        while name in (p.name for p in params):
            name += f"_{i}"
        param = Param(name, "scalar", arg, const)
        if arg.kind == "function":
            param.kind = "func"
        elif arg.kind == "pointer" and arg.item.kind in ("primitive", "void", "struct", "union"):
            item = arg.item
            param.kind = "array"
            param.dtypes = array_dtypes(ffi, item)
            if item.kind != "void":
                param.buffer_cdecl = ffi.getctype(item, "[]")
                param.align = ffi.alignof(item)
                param.unit = ffi.sizeof(item)
        elif arg.kind == "pointer":
            param.kind = "other"
        params.append(param)
    sig = Signature(fname, params)
    by_name = {p.name: p for p in params}
    for array, length in lengths.items():
        if array not in by_name or length not in by_name:
            continue  # lengths may name parameters of other functions
        if by_name[array].kind != "array" or by_name[length].kind != "scalar":
            raise ValueError(f"lengths={{{array!r}: {length!r}}} must tie a pointer parameter to an "
                             f"integer parameter of {fname}(), got {by_name[array].ctype.cname!r} and "
                             f"{by_name[length].ctype.cname!r}; fix lengths=")
        by_name[array].length = length
        sig.filled.setdefault(length, []).append(array)
    return sig


class _Slow(Exception):
    """Leave the fast path; :func:`convert` redoes every check with full messages."""


def make_wrapper(ffi: cffi.FFI, sig: Signature, cfunc: Callable[..., Any], *,
                 align_in_c: bool = False) -> Callable[..., Any]:
    """Generate the checked Python function that calls ``cfunc``.

    With ``align_in_c`` the C wrapper ``cfunc`` tests pointer alignment itself (see
    ``_native_build.align_checks``), which saves numpy's flags object (~30 ns) per array here.
    """
    ns: dict[str, Any] = {"_nd": np.ndarray, "_fb": ffi.from_buffer, "_Slow": _Slow, "_c": cfunc,
                          "_int": as_int,
                          "_Cb": Callback, "_pending": PENDING, "_raise_pending": raise_pending,
                          "_convert": lambda args: convert(ffi, sig, args),
                          "_explain": lambda exc, args: explain(ffi, sig, exc, args)}
    names = [p.name for p in sig.params]
    sig_parts, seen_default, late = [], False, set()
    for p in sig.params:
        if p.name in sig.filled:
            sig_parts.append(f"{p.name}=None")
            seen_default = True
        elif seen_default:
            sig_parts.append(f"{p.name}=_Slow")  # required, but after a fillable one
            late.add(p.name)
        else:
            sig_parts.append(p.name)
    body = []
    for i, p in enumerate(sig.params):
        if p.kind == "array":
            # No class test: only numpy arrays (and numpy scalars) carry a numpy dtype object,
            # flags and the buffer protocol together; anything else raises here -> _convert.
            if len(p.dtypes) == 1:
                ns[f"_dt{i}"] = p.dtypes[0]
                test = [f"{p.name}.dtype is not _dt{i}"]
            elif not p.dtypes and p.ctype.item.kind == "void":
                test = [f"{p.name}.__class__ is not _nd", f"{p.name}.dtype.hasobject"]
            else:
                test = ["True"]  # several dtypes (char), structs: checked in full by _convert
            if p.align > 1 and not align_in_c:
                test.append(f"not {p.name}.flags.aligned")
            ns[f"_ct{i}"] = ffi.typeof(p.buffer_cdecl)
            body.append(f"if {' or '.join(test)}: raise _Slow")
            body.append(f"_a{i} = _fb(_ct{i}, {p.name}{'' if p.const else ', True'})")
        elif p.kind == "func":
            body.append(f"if {p.name}.__class__ is not _Cb: raise _Slow")
            body.append(f"_a{i} = {p.name}.cdata")
        elif p.kind == "other":
            body.append("raise _Slow")
        elif p.name in late:
            body.append(f"if {p.name} is _Slow: raise _Slow")
    for length, arrays in sig.filled.items():
        # The filled or converted value goes to a local: the slow path must see the caller's own
        # arguments. Sizes are those of the exported buffers (len of the from_buffer cdata).
        i = names.index(length)
        sizes = [f"len(_a{names.index(a)})" for a in arrays]
        body.append(f"_a{i} = {length}")
        body.append(f"if _a{i} is None:")
        body.append(f"    _a{i} = {sizes[0]}")
        if len(sizes) > 1:
            body.append(f"    if {' or '.join(f'{s} != _a{i}' for s in sizes[1:])}: raise _Slow")
        body.append("else:")
        body.append(f"    if _a{i}.__class__ is not int: _a{i} = _int(_a{i})")
        body.append(f"    if {' or '.join(f'{s} < _a{i}' for s in sizes)}: raise _Slow")
    converted = [f"_a{i}" if p.kind in ("array", "func") or p.name in sig.filled else p.name
                 for i, p in enumerate(sig.params)]
    tuple_src = "(" + "".join(f"{n}, " for n in converted) + ")"
    args_src = "(" + "".join(f"{n}, " for n in names) + ")"
    lines = [f"def {sig.name}({', '.join(sig_parts)}):", "    try:"]
    lines += [f"        {b}" for b in body] or ["        pass"]
    lines += ["    except Exception:",
              f"        {tuple_src} = _convert({args_src})" if converted else "        pass",
              "    try:",
              f"        _r = _c({', '.join(converted)})",
              "    except (TypeError, OverflowError) as _e:",
              f"        _explain(_e, {args_src})",
              "        raise",
              "    if _pending:",
              "        _raise_pending()",
              "    return _r"]
    source = "\n".join(lines)
    exec(compile(source, f"{CHECKED_CALL} {sig.name}>", "exec"), ns)
    wrapper = ns[sig.name]
    wrapper.__doc__ = f"Checked call of C {ffi.getctype(ffi.typeof(cfunc), sig.name)}."
    wrapper.__pyguts_source__ = source
    return wrapper


def misaligned_error(sig: Signature, index: int, addr: int) -> ValueError:
    """The error for argument ``index`` found misaligned (by the C wrapper) at ``addr``."""
    p = sig.params[index]
    return ValueError(f"{argument_text(sig, p)} must be aligned to {p.align} bytes for "
                      f"'{p.ctype.cname}', got address 0x{addr:x}; pass {p.name}.copy() (the "
                      f"function did not run)")


def _param(sig: Signature, name: str) -> Param:
    return next(p for p in sig.params if p.name == name)


def argument_text(sig: Signature, p: Param) -> str:
    return f"argument {p.name!r} of {sig.name}()"


def convert(ffi: cffi.FFI, sig: Signature, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Check and convert every argument; raises TypeError/ValueError explaining the first problem."""
    values = dict(zip((p.name for p in sig.params), args))
    out = []
    counts: dict[str, int | None] = {}
    for p, value in zip(sig.params, args):
        if value is _Slow:
            raise TypeError(f"{sig.name}() missing required argument {p.name!r} "
                            f"({p.ctype.cname})")
        if p.kind == "array":
            arg, count = _convert_array(ffi, sig, p, value)
            counts[p.name] = count
        elif p.kind == "func":
            arg = _convert_func(ffi, sig, p, value)
        elif p.kind == "other":
            arg = _convert_other(ffi, sig, p, value)
        else:
            arg = value
        out.append(arg)
    names = [p.name for p in sig.params]
    for length, arrays in sig.filled.items():
        known = {a: counts[a] for a in arrays if counts[a] is not None}
        given = values[length]
        unit = "bytes" if _param(sig, arrays[0]).unit == 1 else "elements"
        if given is not None:
            given = out[names.index(length)] = _length(sig, _param(sig, length), arrays, given)
        elif not known:
            raise TypeError(f"{sig.name}() needs {length!r}: it can be filled only from an array "
                            f"of known length in {arrays}, got none; pass {length}= explicitly")
        else:
            sizes = set(known.values())
            if len(sizes) > 1:
                got = ", ".join(f"{a}: {n}" for a, n in known.items())
                raise ValueError(f"arrays tied to {length!r} of {sig.name}() must have the same "
                                 f"length when {length} is omitted, got {got} {unit}; pass arrays of "
                                 f"equal length or {length}= explicitly")
            given = out[names.index(length)] = sizes.pop()
        for a, n in known.items():
            if n < given:
                got = "None (a NULL pointer, so 0)" if values[a] is None else n
                raise ValueError(f"{argument_text(sig, _param(sig, a))} must have at least {length}={given} "
                                 f"{unit} (lengths={{{a!r}: {length!r}}}), got {got}; pass a longer "
                                 f"array or a smaller {length}")
    return tuple(out)


def as_int(value: Any) -> int:
    """``value`` as an exact int through ``__index__`` (TypeError if it has none): what C receives."""
    return int.__index__(operator.index(value))


def _length(sig: Signature, p: Param, arrays: list[str], value: Any) -> int:
    try:
        return as_int(value)
    except TypeError:
        raise TypeError(f"{argument_text(sig, p)} must be an integer (int, numpy integer or any object "
                        f"with __index__): it is the length of {', '.join(map(repr, arrays))} "
                        f"(lengths=), got {type(value).__name__} {value!r}; pass an integer, e.g. "
                        f"int({p.name})") from None


def _convert_array(ffi: cffi.FFI, sig: Signature, p: Param, value: Any) -> tuple[Any, int | None]:
    cname = ("const " if p.const else "") + p.ctype.cname
    if value is None:
        return ffi.NULL, 0  # NULL points to zero elements: fine only where the length is 0
    if isinstance(value, Pointer):
        if value.dtype is not None and value.dtype.hasobject:
            raise _not_plain(sig, p, f"a Pointer to dtype {value.dtype}")
        if value.readonly and not p.const:
            raise ValueError(f"{argument_text(sig, p)} is a read-only Pointer but '{cname}' is not const "
                             f"(C may write); pass pointer() of a writable array")
        if p.dtypes and value.dtype is not None and value.dtype not in p.dtypes:
            raise TypeError(f"dtype of {argument_text(sig, p)} must be {p.dtypes[0]} to match '{cname}', "
                            f"got a Pointer to {value.dtype}; pass pointer(arr.astype(numpy.{p.dtypes[0]}))")
        return ffi.cast(p.ctype, value.addr), value.nbytes // p.unit
    if isinstance(value, ffi.CData):
        return value, None  # the caller's own cdata: cffi checks its type
    if isinstance(value, str) and p.const and p.ctype.item.cname == "char":
        value = value.encode()
    if isinstance(value, bytes):
        if not p.const:
            raise TypeError(f"{argument_text(sig, p)} is '{cname}' (not const, C may write) but got "
                            f"immutable bytes; pass a bytearray or a numpy array")
        return value, len(value) // p.unit
    if isinstance(value, (bytearray, memoryview)) and not p.dtypes:
        view = memoryview(value)
        if "O" in re.sub(r":[^:]*:", "", view.format):  # PEP 3118 'O': object pointers (names stripped)
            raise _not_plain(sig, p, f"a memoryview of format {view.format!r}")
        buffer = ffi.from_buffer(p.buffer_cdecl, value, not p.const)
        return buffer, len(buffer)
    if not isinstance(value, np.ndarray):
        want = f"numpy.{p.dtypes[0]}" if p.dtypes else "numpy.uint8"
        raise TypeError(f"{argument_text(sig, p)} must be a numpy array for '{cname}', got "
                        f"{type(value).__name__}; pass numpy.asarray({p.name}, dtype={want})")
    check_dtype(ffi, sig, p, value)
    if not value.flags.c_contiguous:
        raise ValueError(f"{argument_text(sig, p)} must be C-contiguous to be passed as '{cname}', got "
                         f"strides {value.strides} for shape {value.shape}; pass "
                         f"numpy.ascontiguousarray({p.name})")
    addr = value.__array_interface__["data"][0]
    if addr % p.align:
        raise ValueError(f"{argument_text(sig, p)} must be aligned to {p.align} bytes for '{cname}', got "
                         f"address 0x{addr:x}; pass {p.name}.copy()")
    if not p.const and not value.flags.writeable:
        raise ValueError(f"{argument_text(sig, p)} must be writable: '{cname}' is not const, so C may write "
                         f"to it, got a read-only array; pass {p.name}.copy() or declare the "
                         f"parameter const")
    buffer = ffi.from_buffer(p.buffer_cdecl, value, not p.const)
    return buffer, len(buffer)


def _not_plain(sig: Signature, p: Param, got: str) -> TypeError:
    cname = ("const " if p.const else "") + p.ctype.cname
    return TypeError(f"{argument_text(sig, p)} must be plain data to be passed as '{cname}', got {got}, "
                     f"whose items are pointers numpy manages (Python objects or variable-width strings): "
                     f"C writing them corrupts the interpreter; pass numbers or fixed-width bytes, e.g. "
                     f"numpy.asarray({p.name}, dtype=float)")


def check_dtype(ffi: cffi.FFI, sig: Signature, p: Param, value: np.ndarray) -> None:
    cname = ("const " if p.const else "") + p.ctype.cname
    if value.dtype.hasobject:
        raise _not_plain(sig, p, f"dtype {value.dtype}")
    if p.dtypes:
        if value.dtype in p.dtypes and value.dtype.isnative:
            return
        want = p.dtypes[0]
        if value.dtype.newbyteorder("=") in p.dtypes:
            raise TypeError(f"dtype of {argument_text(sig, p)} must be native-endian {want} to match "
                            f"'{cname}', got {value.dtype.str}; pass {p.name}.astype(numpy.{want})")
        raise TypeError(f"dtype of {argument_text(sig, p)} must be {want} to match '{cname}', got "
                        f"{value.dtype}; pass {p.name}.astype(numpy.{want})")
    item = p.ctype.item
    if item.kind in ("struct", "union") and value.dtype.itemsize != ffi.sizeof(item):
        raise TypeError(f"dtype of {argument_text(sig, p)} must have itemsize {ffi.sizeof(item)} to match "
                        f"'{cname}', got {value.dtype} (itemsize {value.dtype.itemsize}); pass an "
                        f"array of a matching structured dtype")


def _convert_func(ffi: cffi.FFI, sig: Signature, p: Param, value: Any) -> Any:
    if value is None:
        return ffi.NULL
    if isinstance(value, Callback):
        return value.cdata
    if isinstance(value, ffi.CData):
        return value
    hint = ("wrap it once with pyguts.native.callback(...) and keep the result alive"
            if callable(value) else "pass a pyguts.native.callback(...)")
    raise TypeError(f"{argument_text(sig, p)} must be a C function pointer '{p.ctype.cname}', got "
                    f"{type(value).__name__}; {hint}")


def _convert_other(ffi: cffi.FFI, sig: Signature, p: Param, value: Any) -> Any:
    if value is None:
        return ffi.NULL
    if isinstance(value, ffi.CData):
        return value
    if isinstance(value, Pointer):
        return ffi.cast(p.ctype, value.addr)
    raise TypeError(f"{argument_text(sig, p)} must be cdata of type '{p.ctype.cname}' (from lib.ffi.new) or "
                    f"a pyguts.native.Pointer, got {type(value).__name__}")


def explain(ffi: cffi.FFI, sig: Signature, exc: Exception, args: tuple[Any, ...]) -> None:
    """Re-raise cffi's conversion error of a scalar argument, naming the parameter."""
    for p, value in zip(sig.params, args):
        if p.kind != "scalar" or value is None and p.name in sig.filled:
            continue
        if p.ctype.kind not in ("primitive", "enum"):
            continue
        try:
            ffi.new(ffi.getctype(p.ctype, "*"), value)
        except (TypeError, OverflowError) as inner:
            raise type(inner)(f"{argument_text(sig, p)} must convert to C '{p.ctype.cname}', got "
                              f"{type(value).__name__} {value!r} ({inner}); pass a value of that "
                              f"C type") from exc
