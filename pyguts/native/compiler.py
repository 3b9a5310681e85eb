"""Compile cffi API-mode modules with the real compiler and cache them on disk (private to native).

The cache key is a hash of everything that changes the built file: the cdef, the source, the
language, the flags, the libraries, OpenMP, the compiler (its path and ``--version`` text), the
interpreter (version, ABI tag, headers) and cffi's version. A build happens under an exclusive
file lock and ends with an atomic ``os.replace``, so a second process building the same module
waits and then reuses it, and a reader never sees half a file.

What is on disk is trusted only as far as :mod:`pyguts.native.cache` checks it: a private
folder, and a module whose bytes match the digest recorded when it was built.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import types

import cffi
from cffi.recompiler import make_c_source

from pyguts import _compat
from pyguts._toolchain import find_compiler  # noqa: F401 - re-exported: native.compiler.find_compiler
from pyguts.native import cache
from pyguts.errors import BuildError
from pyguts.native import team

#: Bumped when the generated code or the compile command changes shape (invalidates old builds).
BUILD_FORMAT = 6

#: Flags that favour speed without changing results: -fno-math-errno lets gcc vectorise sqrt
#: (errno is never read back), unlike -ffast-math which changes rounding and NaN handling;
#: -ffp-contract=off keeps a*b+c two roundings (no FMA), so results equal numpy's.
DEFAULT_FLAGS = ("-O3", "-fno-math-errno", "-ffp-contract=off")

#: Added when the compiler accepts it: the CPU's full vector width (sqrt of 1e6 doubles: 2.2x the
#: memory bound with SSE2, 1.15x with AVX-512, measured). The CPU is part of the cache key.
NATIVE_FLAGS = ("-march=native",)

_SUFFIX = {"c": ".c", "c++": ".cpp"}

# The interpreter's headers and extension suffix (candidates for pyguts._compat).

#: Prefix of the generated C wrappers that check pointer alignment before the user's function
#: runs, and the extern "Python" hook they report a misaligned argument to (see align_checks).
CHECK_PREFIX = "_pyguts_chk_"
MISALIGNED_HOOK = "_pyguts_misaligned"

_BEGIN = "/* pyguts: user source begins */"
_END = "/* pyguts: user source ends */"

_modules: dict[str, types.ModuleType] = {}
_compiler_facts_cache: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {}


def cache_dir() -> pathlib.Path:
    """Directory of built modules: $PYGUTS_CACHE_DIR, else $XDG_CACHE_HOME/pyguts, else ~/.cache/pyguts.

    Built modules live in its ``native/`` folder; deleting the folder is always safe. Both must
    belong to you and be writable by nobody else, and no folder above them may be writable by
    others unless it is sticky (like /tmp); :func:`pyguts.native.build` refuses otherwise.

    >>> isinstance(cache_dir(), pathlib.Path)
    True
    """
    explicit = os.environ.get("PYGUTS_CACHE_DIR")
    if explicit:
        return pathlib.Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return base / "pyguts"


def cache_folder(name: str) -> pathlib.Path:
    """``cache_dir() / name``, created private (0700) and checked like the modules' folder."""
    return cache.private_folder(cache_dir() / name, owned=2)


def _compiler_facts(command: list[str]) -> tuple[str, tuple[str, ...]]:
    """(``--version`` text, the NATIVE_FLAGS it accepts), probed once per compiler file."""
    key = (command[0], os.stat(command[0]).st_mtime_ns)
    if key not in _compiler_facts_cache:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
        with tempfile.TemporaryDirectory(prefix="pyguts-probe-") as tmp:
            probe = pathlib.Path(tmp, "probe.c")
            probe.write_text("int pyguts_probe(void) { return 0; }\n")
            accepted = subprocess.run([*command, *NATIVE_FLAGS, "-c", "-o", str(probe.with_suffix(".o")),
                                       str(probe)], capture_output=True, check=False).returncode == 0
        _compiler_facts_cache[key] = (done.stdout + done.stderr, NATIVE_FLAGS if accepted else ())
    return _compiler_facts_cache[key]


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.machine() + " " + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in text.splitlines() if line.split(":")[0].strip() in wanted}))


def build_key(parts: dict[str, object], compiler: list[str]) -> str:
    """Hex digest naming one build: the parts, the compiler and the interpreter."""
    version, native = _compiler_facts(compiler)
    text = repr(sorted(parts.items())) + repr((
        BUILD_FORMAT, DEFAULT_FLAGS, compiler, version, native, native and _cpu_identity(),
        sys.version, sys.implementation.cache_tag, _compat.EXT_SUFFIX, _compat.PY_INCLUDE, cffi.__version__))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_module(cdef: str, source: str, *, language: str, flags: tuple[str, ...],
                 libraries: tuple[str, ...], threads: bool, name: str) -> tuple[types.ModuleType, bool]:
    """Build (or reuse) the cffi module for ``cdef``/``source``; returns (module, cache_hit)."""
    compiler = find_compiler(language)
    parts = {"cdef": cdef, "source": source, "language": language, "flags": tuple(flags),
             "libraries": tuple(libraries), "threads": bool(threads)}
    modname = f"_pyguts_native_{build_key(parts, compiler)}"
    if modname in _modules:
        return _modules[modname], True
    root = cache_folder("native")
    final = root / (modname + _compat.EXT_SUFFIX)
    module = cache.load_verified(modname, final)
    hit = module is not None
    if not hit:
        with cache.locked(root / (modname + ".lock")):
            module = cache.load_verified(modname, final)  # a concurrent builder may have finished it
            hit = module is not None
            if not hit:
                _compile(cdef, source, language=language, flags=flags, libraries=libraries,
                         threads=threads, name=name, modname=modname, compiler=compiler,
                         root=root, final=final)
                module = cache.load_verified(modname, final)
                if module is None:
                    raise BuildError(f"the module just built at {final} no longer matches its "
                                     f"digest: something else writes in {root}; set $PYGUTS_CACHE_DIR "
                                     f"to a folder only you can write")
    _modules[modname] = module
    return module, hit


def parse_cdef(cdef: str, name: str, error: type[Exception]) -> cffi.FFI:
    """An FFI with ``cdef`` declared; ``error`` (saying what must hold) if it does not parse."""
    ffi = cffi.FFI()
    try:
        ffi.cdef(cdef)
    except cffi.CDefError as exc:
        raise error(f"the cdef of {name!r} does not parse: {exc}; the cdef must be plain C "
                    "declarations of the functions and types to call") from exc
    return ffi


def _compile(cdef, source, *, language, flags, libraries, threads, name, modname, compiler,
             root: pathlib.Path, final: pathlib.Path) -> None:
    ffi = parse_cdef(cdef, name, BuildError)
    user_file = name + _SUFFIX[language]
    checks_cdef, checks_source = align_checks(ffi)
    if checks_cdef:
        ffi.cdef(checks_cdef)
    if threads:   # the team size of each call, set by pyguts.native.team
        ffi.cdef(team.CDEF)
        checks_source += team.SOURCE
    preamble = f"{_BEGIN}\n#line 1 \"{user_file}\"\n{source}\n{_END}\n{checks_source}"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=modname + ".build-", dir=root))
    os.chmod(tmp, cache.DIR_MODE)
    try:
        generated = tmp / (modname + _SUFFIX[language])
        make_c_source(ffi, modname, preamble, str(generated), verbose=False)
        _restore_line_numbers(generated)
        out = tmp / (modname + _compat.EXT_SUFFIX)
        openmp = ["-fopenmp"] if threads else []
        link = []
        for lib in libraries:
            if os.sep in lib:
                link += [lib, f"-Wl,-rpath,{os.path.dirname(os.path.abspath(lib))}"]
            else:
                link.append(f"-l{lib}")
        # A cdef function missing from a C source is an error now, not an import failure later.
        strict = ["-Werror=implicit-function-declaration"] if language == "c" else []
        native = _compiler_facts(compiler)[1]
        # Debug info as DWARF 4: binutils 2.40's addr2line reads a DWARF 5 line table's file 1 as
        # file 0, so a crash in the user's source (file 1, by the #line above) would be placed in
        # the generated file (pyguts.isolation.native symbolizes through addr2line). Its files are
        # named from "." rather than from this build folder, which is gone after the build.
        debug = set(flags) & {"-g", "-g2", "-g3", "-ggdb"}
        dwarf = ["-gdwarf-4"] if debug and not any(f.startswith("-gdwarf") for f in flags) else []
        dwarf += [f"-fdebug-prefix-map={tmp}=."] if debug else []
        command = [*compiler, "-shared", "-fPIC", *DEFAULT_FLAGS, *native, *strict, *openmp, *flags, *dwarf,
                   f"-I{_compat.PY_INCLUDE}", "-o", str(out), str(generated), *link, *openmp]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp)
        if done.returncode != 0:
            raise _build_error(done, command, user_file, name)
        cache.publish(out, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def align_checks(ffi: cffi.FFI) -> tuple[str, str]:
    """cdef and C source of wrappers that test pointer alignment in C, where it costs nothing.

    ``_pyguts_chk_f`` has f's signature; for a misaligned typed pointer it calls the extern
    "Python" hook (which parks a ValueError for the checked call to raise) and returns zero
    instead of calling ``f``. Wrapped functions are numbered in sorted name order.
    """
    try:
        from cffi import model
        declarations = ffi._parser._declarations  # cffi's parsed cdef, as its recompiler reads it
    except (AttributeError, ImportError):  # a cffi without it: Python checks alignment instead
        return "", ""
    cdefs, sources = [], []
    for name in sorted(k.split(" ", 1)[1] for k in declarations if k.startswith("function ")):
        tp = declarations["function " + name][0]
        checked = [i for i, arg in enumerate(tp.args)
                   if isinstance(arg, model.PointerType) and isinstance(arg.totype, model.PrimitiveType)
                   and ffi.alignof(arg.totype.name) > 1]
        if tp.ellipsis or not checked:
            continue
        fid = len(cdefs)
        params = ", ".join(arg.get_c_name(f" _p{i}") for i, arg in enumerate(tp.args)) or "void"
        head = tp.result.get_c_name(f" {CHECK_PREFIX}{name}({params})")
        void = isinstance(tp.result, model.VoidType)
        zero = "" if void else f" {CHECK_PREFIX}zero_{name}"
        call = f"{name}({', '.join(f'_p{i}' for i in range(len(tp.args)))})"
        lines = [] if void else [f"static {tp.result.get_c_name(zero)};"]
        lines.append(f"static {head} {{")
        for i in checked:
            lines.append(f"    if ((uintptr_t)_p{i} % __alignof__(*_p{i})) {{ "
                         f"{MISALIGNED_HOOK}({fid}, {i}, (uintptr_t)_p{i}); return{zero}; }}")
        lines.append(f"    {call}; return;" if void else f"    return {call};")
        lines.append("}")
        cdefs.append(head + ";")
        sources.append("\n".join(lines))
    if not cdefs:
        return "", ""
    hook = f"void {MISALIGNED_HOOK}(int fid, int index, uintptr_t addr)"
    cdef = f'extern "Python" {hook};\n' + "\n".join(cdefs)
    source = f"#include <stdint.h>\nstatic {hook};\n" + "\n".join(sources) + "\n"
    return cdef, source


def _restore_line_numbers(generated: pathlib.Path) -> None:
    # After the user's source, point diagnostics back at the generated file's own lines.
    lines = generated.read_text().split("\n")
    for i, line in enumerate(lines):
        if line == _END:
            lines[i] = f'#line {i + 2} "{generated.name}"'
            break
    generated.write_text("\n".join(lines))


def _build_error(done: subprocess.CompletedProcess, command: list[str], user_file: str,
                 name: str) -> BuildError:
    messages = done.stderr.strip() or done.stdout.strip()
    lines = sorted({int(n) for n in re.findall(rf"^{re.escape(user_file)}:(\d+):", messages, re.M)})
    where = (f"at line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))} of {user_file}"
             if lines else "in the generated wrapper: every function of the cdef must be defined "
                           "in the source with the same signature")
    error = BuildError(f"compiling {name!r} failed {where} (exit {done.returncode}); fix the source "
                       f"and build again. Compiler messages:\n{messages}")
    error.stderr = messages
    error.lines = lines
    error.command = command
    error.returncode = done.returncode
    return error
