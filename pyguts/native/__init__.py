"""Native calls: C and C++ built at run time, existing shared libraries, Python callbacks from C.

Everything rides on cffi. :func:`build` compiles in cffi's API mode with the real compiler and
caches the module on disk (see :func:`cache_dir`); :func:`load` opens an existing library in
cffi's ABI mode. Both return a :class:`Library` whose attributes are *checked* calls: numpy arrays
go straight to pointer parameters after their dtype, C-contiguity, alignment, writability (for
non-const pointers) and, with ``lengths=``, length were checked; no function of yours runs
with an argument that fails a check (alignment is tested in a generated C wrapper, where it is
free). cffi releases the GIL during every call. :func:`callback` turns a Python function into
a C function pointer whose exceptions are re-raised in the Python caller once C returns.

>>> import numpy
>>> lib = build("double dot(const double *a, const double *b, size_t n);",
...             '''double dot(const double *a, const double *b, size_t n) {
...                    double s = 0; for (size_t i = 0; i < n; i++) s += a[i] * b[i]; return s; }''',
...             lengths={"a": "n", "b": "n"})
>>> lib.dot(numpy.arange(3.0), numpy.ones(3))
3.0
"""

from __future__ import annotations

import ctypes.util
import os
import pathlib
from typing import Any, Callable, Iterable

import cffi

from pyguts.native.compiler import CHECK_PREFIX, DEFAULT_FLAGS, MISALIGNED_HOOK, build_module, cache_dir, cache_folder, parse_cdef
from pyguts.native.calls import make_wrapper, misaligned_error, param_info, signature
from pyguts.native import team
from pyguts.native.pointers import Callback, Pointer, address_of, callback, park, pointer, raise_pending
from pyguts.native.team import team_choices
from pyguts.errors import BuildError, NativeError

__all__ = ["DEFAULT_FLAGS", "BuildError", "Callback", "Library", "NativeError", "Pointer",
           "address_of", "build", "cache_dir", "cache_folder", "callback", "load", "pointer", "raise_pending",
           "team_choices"]

#: Libraries whose dependencies must be opened RTLD_GLOBAL first: libgsl needs the CBLAS symbols
#: of libgslcblas (the notebook's "libgslcblas.so not found"). Debian's libgsl.so.27 links it,
#: other builds leave it to the application.
KNOWN_DEPENDENCIES: dict[str, tuple[str, ...]] = {"gsl": ("gslcblas",)}

_GSL_HANDLER_CDEF = """
typedef void gsl_error_handler_t(const char *reason, const char *file, int line, int gsl_errno);
gsl_error_handler_t *gsl_set_error_handler(gsl_error_handler_t *new_handler);
"""

_global_handles: list[Any] = []      # RTLD_GLOBAL dependencies, open for the process's life
_gsl_handlers: dict[str, Any] = {}   # by library path: the recording handler C keeps calling


class Library:
    """The declared functions of a built or loaded library, as checked calls.

    ``ffi`` is the library's cffi FFI (for ``ffi.new`` of declared structs), ``lib`` the raw,
    unchecked cffi library, ``path`` the shared object, ``cache_hit`` whether :func:`build`
    reused an earlier build. Declared variables and constants are read through ``lib``. (No
    ``__getattr__`` here on purpose: it would slow every attribute read, i.e. every call, by ~40 ns.)

    >>> lib = build("int add(int a, int b);", "int add(int a, int b) { return a + b; }")
    >>> lib.add(2, 3), sorted(lib.functions)
    (5, ['add'])
    """

    def __init__(self, ffi: cffi.FFI, lib: Any, cdef: str, *, path: str, cache_hit: bool,
                 lengths: dict[str, str] | None = None, threads: bool = False) -> None:
        self.ffi, self.lib, self.path, self.cache_hit = ffi, lib, path, cache_hit
        self.functions: dict[str, Callable[..., Any]] = {}
        lengths = dict(lengths or {})
        used: set[str] = set()
        # Functions that build() wrapped in C alignment checks, numbered as align_checks did.
        in_c = sorted(n[len(CHECK_PREFIX):] for n in dir(lib) if n.startswith(CHECK_PREFIX))
        sigs = {}
        for fname, info in param_info(cdef).items():
            cfunc = getattr(lib, fname)
            ctype = ffi.typeof(cfunc)
            if ctype.kind != "function" or ctype.ellipsis:
                self.functions[fname] = cfunc  # variadic: cffi's own conversions only
                continue
            sigs[fname] = sig = signature(ffi, fname, ctype, info, lengths)
            used.update(p.name for p in sig.params if p.length)
            if fname in in_c:
                cfunc = getattr(lib, CHECK_PREFIX + fname)
            self.functions[fname] = make_wrapper(ffi, sig, cfunc, align_in_c=fname in in_c)
            if threads:
                self.functions[fname] = team.with_team_choice(
                    self.functions[fname], lib._pyguts_omp_get, lib._pyguts_omp_set)
        if in_c:
            def misaligned(fid: int, index: int, addr: int) -> None:
                park(misaligned_error(sigs[in_c[fid]], index, addr))

            ffi.def_extern(name=MISALIGNED_HOOK)(misaligned)
        unknown = set(lengths) - used
        if unknown:
            raise ValueError(f"lengths= names {sorted(unknown)}, which are not pointer parameters of "
                             f"any declared function tied to an integer parameter; use the parameter "
                             f"names of the cdef")
        self.__dict__.update(self.functions)

    def __repr__(self) -> str:
        return f"<pyguts.native.Library {self.path} functions={sorted(self.functions)}>"


def build(cdef: str, source: str, *, language: str = "c", flags: Iterable[str] = (),
          libraries: Iterable[str] = (), threads: bool = False,
          lengths: dict[str, str] | None = None, name: str = "source") -> Library:
    """Compile C (or C++ with ``language="c++"``) now, or reuse the cached build; checked calls.

    ``cdef`` declares the functions to call (C syntax, parameter names used by ``lengths=`` and
    keyword calls). In C++ the declared functions need C linkage (``extern "C"``). The compile
    uses :data:`DEFAULT_FLAGS` (``-O3 -fno-math-errno``: vectorised, same results), then
    ``flags``; ``threads=True`` adds OpenMP (``-fopenmp``), and each call then runs with one thread or
    the whole team, whichever measured faster for calls of its size (:mod:`pyguts.native.team`,
    :func:`team_choices`). ``libraries`` are ``-l`` names or
    paths. ``lengths={"p": "n"}`` ties array ``p`` to integer parameter ``n`` (counted in
    elements of the pointed-to type, bytes for ``void *``): ``n`` may be omitted (filled from
    ``p``; arrays tied to the same ``n`` must then be equally long), and an array shorter than
    an explicit ``n`` is refused. Compile errors raise
    :class:`BuildError` with the compiler's messages and ``.lines``, line numbers in ``source``
    (reported as file ``name``.c).

    >>> lib = build("int twice(int x);", "int twice(int x) { return 2 * x; }")
    >>> lib.twice(21)
    42
    """
    flags, libraries = tuple(flags), tuple(libraries)
    module, hit = build_module(cdef, source, language=language, flags=flags, libraries=libraries,
                               threads=threads, name=name)
    return Library(module.ffi, module.lib, cdef, path=module.__file__, cache_hit=hit, lengths=lengths,
                   threads=threads)


def _find_library(name_or_path: str) -> str:
    if os.sep in name_or_path or pathlib.Path(name_or_path).exists():
        if not pathlib.Path(name_or_path).exists():
            raise OSError(f"no shared library at {name_or_path!r}; pass an existing path or a "
                          f"library name such as 'gsl'")
        return str(pathlib.Path(name_or_path).resolve())
    found = ctypes.util.find_library(name_or_path.removeprefix("lib"))
    if found is None:
        raise OSError(f"library {name_or_path!r} (lib{name_or_path.removeprefix('lib')}.so) not found "
                      f"by the dynamic loader; install it (e.g. apt-get install lib"
                      f"{name_or_path.removeprefix('lib')}-dev) or pass its path")
    return found


def load(name_or_path: str, cdef: str, *, lengths: dict[str, str] | None = None,
         dependencies: Iterable[str] | None = None) -> Library:
    """Open an existing shared library (a name like ``"gsl"`` or a path) with checked calls.

    ``dependencies`` (default: :data:`KNOWN_DEPENDENCIES` for the name, e.g. ``gslcblas`` for
    ``gsl``) are opened first with ``RTLD_GLOBAL`` so the library's undefined symbols resolve.
    A library exporting ``gsl_set_error_handler`` gets a handler that records the error instead
    of GSL's default ``abort()``: the checked call then raises :class:`NativeError`. That handler
    is process-wide, as GSL's is.

    >>> m = load("m", "double cos(double x);")
    >>> m.cos(0.0)
    1.0
    """
    ffi = parse_cdef(cdef, name_or_path, ValueError)
    base = os.path.basename(name_or_path).removeprefix("lib").split(".")[0]
    for dep in (KNOWN_DEPENDENCIES.get(base, ()) if dependencies is None else dependencies):
        try:
            dep_path = _find_library(dep)
        except OSError:
            if dependencies is not None:
                raise
            continue  # a known dependency the library may well link itself (Debian's libgsl does)
        _global_handles.append(ffi.dlopen(dep_path, ffi.RTLD_NOW | ffi.RTLD_GLOBAL))
    path = _find_library(name_or_path)
    try:
        lib = ffi.dlopen(path, ffi.RTLD_NOW)
    except OSError as exc:
        raise OSError(f"cannot open {path!r}: {exc}; if a symbol is undefined, pass the library "
                      f"providing it in dependencies=[...]") from exc
    _install_gsl_handler(path)
    try:
        return Library(ffi, lib, cdef, path=path, cache_hit=False, lengths=lengths)
    except AttributeError as exc:
        raise OSError(f"{path!r} lacks a function declared in the cdef: {exc}; declare only "
                      f"functions the library exports") from exc


def _install_gsl_handler(path: str) -> None:
    if path in _gsl_handlers:
        return
    ffi = cffi.FFI()
    ffi.cdef(_GSL_HANDLER_CDEF)
    lib = ffi.dlopen(path)
    try:
        set_handler = lib.gsl_set_error_handler
    except AttributeError:
        _gsl_handlers[path] = None
        return

    def record(reason: Any, file: Any, line: int, code: int) -> None:
        reason_s = ffi.string(reason).decode(errors="replace") if reason else ""
        file_s = ffi.string(file).decode(errors="replace") if file else ""
        park(NativeError(f"GSL reported error {code} ({reason_s}) at {file_s}:{line}; the call's "
                         f"arguments must lie in the function's domain and range, check them",
                         reason=reason_s, file=file_s, line=line, code=code))

    handler = ffi.callback("gsl_error_handler_t *", record)
    set_handler(handler)
    _gsl_handlers[path] = (ffi, lib, handler)
