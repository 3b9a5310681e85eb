"""The checks behind ``pyguts doctor``: one plain :class:`Check` per component, never an exception.

Sections, in order: core (interpreter, layout rows, live layout checks, numpy's NEP 49 handler
API), compilers (gcc, g++ and a real cached :func:`pyguts.native.build`, nvcc and PTX for sm_80),
allocators (each registry entry loaded for real, and jemalloc's static-TLS fix), libraries (GSL
through :func:`pyguts.native.load`, Cython, cppyy), gpu (numba, its CUDA target, CuPy, the driver
and device) and isolation (fork, pidfd, an :func:`pyguts.isolate` round trip, faulthandler in a
crashed child). Each check catches its own errors: a check that fails is a finding ("broken").
Loading is real and, as everywhere in pyguts, permanent: allocators and libraries stay loaded.

>>> found = {c.name: c for c in checks(sections=("core",))}
>>> found["live layout checks"].status, exit_status(list(found.values()))
('ok', 0)
>>> summary_line(list(found.values())).startswith("pyguts doctor: core ok")
True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pyguts import _compat

#: Section names in the order they are checked and printed.
from pyguts.device import probe as probe
SECTIONS = ("core", "compilers", "allocators", "libraries", "gpu", "isolation")
#: Values of :attr:`Check.status`; "info" is an optional extra, reported without judgement.
STATUSES = ("ok", "missing", "broken", "info")

FIX_REPORT_LAYOUT = ("do not read or write object memory with pyguts on this interpreter; report the "
                     "build (python -VV and the message) so its layout rows can be added")
FIX_NUMBA = "pip install numba (the cpython-guts[numba] extra): the tour's numba step and numba.cuda kernels use it"
FIX_NUMPY = "pip install --upgrade 'numpy>=1.22' (NEP 49 handlers need numpy 1.22 or later)"
FIX_GSL = "apt-get install libgsl-dev (or your system's GSL package)"
#: The PTX target checked, the oldest that CUDA 13 and the tour's kernels still build for.
PTX_ARCH = "sm_80"
_PROBE_CU = 'extern "C" __global__ void pyguts_probe(float *x) { x[threadIdx.x] *= 2.0f; }\n'


@dataclass(frozen=True)
class Check:
    """One finding: which component, its status, what was found, and the fix when it is not ok."""

    section: str
    name: str
    status: str            # one of STATUSES
    found: str
    fix: str = ""
    elapsed_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True unless the component is missing or broken."""
        return self.status in ("ok", "info")


def _run(section: str, name: str, fn: Callable[[], tuple]) -> Check:
    """Run one check function returning (status, found[, fix[, extra]]); an exception is a finding."""
    start = time.perf_counter()
    try:
        status, found, *rest = fn()
    except BaseException as exc:  # noqa: BLE001 - the doctor must report, never crash (SystemExit too)
        if isinstance(exc, KeyboardInterrupt):
            raise
        status, found, rest = "broken", f"the check itself failed: {type(exc).__name__}: {exc}", []
    fix, extra = (list(rest) + ["", {}])[:2]
    return Check(section, name, status, found, fix, round((time.perf_counter() - start) * 1e3, 1), extra)


# --- core ------------------------------------------------------------------------------------------

def _interpreter() -> tuple:
    from pyguts.objects import layouts

    build = "free-threaded (GIL disabled)" if _compat.GIL_DISABLED else "GIL enabled"
    flags = "".join((", debug build" if _compat.DEBUG_BUILD else "", ", Py_TRACE_REFS" if _compat.TRACE_REFS else ""))
    found = (f"CPython {platform.python_version()} ({_compat.BUILD_NAME}, {build}, "
             f"{_compat.POINTER_SIZE * 8}-bit pointers{flags}) at {sys.executable}")
    if _compat.POINTER_SIZE != 8 or _compat.TRACE_REFS or _compat.VERSION < layouts.OLDEST:
        return ("broken", found, "use a 64-bit CPython %d.%d or newer (default or free-threaded build, "
                                 "without Py_TRACE_REFS)" % layouts.OLDEST)
    return "ok", found


def _layout_rows() -> tuple:
    from pyguts.objects import debug_offsets, layouts

    build = "freethreaded" if _compat.GIL_DISABLED else "default"
    table = min(_compat.VERSION, layouts.NEWEST)
    rows = layouts.rows_for(table, build)  # LookupError: reported as broken by _run
    extra = {"rows": {name: "%d.%d-%s %s" % (*row.since, "%d.%d" % row.until if row.until else "now", row.header)
                      for name, row in sorted(rows.items())}}
    debug = " and checked against CPython's _Py_DebugOffsets" if debug_offsets.read() else ""
    if _compat.VERSION > layouts.NEWEST:
        return ("info", f"CPython {_compat.BUILD_NAME} is newer than the layout table (ends at %d.%d): its rows are "
                        f"candidates, each model used only once the live checks{debug} confirm every field"
                % layouts.NEWEST, "update pyguts; `pyguts doctor --json` lists the refused models", extra)
    found = f"{len(rows)} rows for CPython {_compat.BUILD_NAME} ({build}) from pyguts/objects/layouts.py"
    if (_compat.VERSION, build) in layouts.COMPILER_VERIFIED:
        return "ok", found + f"; compiler-verified against this version's headers{debug}", "", extra
    return ("info", found + f"; NOT compiler-verified on this version (live-checked{debug})",
            "run `python -m pytest tests/integration/test_objects_layouts_probe.py` with this interpreter "
            "(needs its Python.h) to check every row against offsetof/sizeof", extra)


def _live_layout() -> tuple:
    from pyguts.objects import debug_offsets, live_checks
    from pyguts.errors import LayoutMismatchError

    try:
        from pyguts.objects import structs  # importing runs the live checks once
    except LayoutMismatchError as exc:
        return "broken", f"LayoutMismatchError: {exc}", FIX_REPORT_LAYOUT
    # ... and again now, against the models in use
    in_use = {name: m for name, m in structs.MODELS.items() if not isinstance(m, structs.RefusedModel)}
    debug = debug_offsets.read()
    verdict = live_checks.verify(in_use, debug)
    if verdict.wrong:
        return "broken", "LayoutMismatchError: " + "; ".join(verdict.wrong), FIX_REPORT_LAYOUT
    found = (f"{len(in_use)} models agree with the running interpreter (live facts: sizes, type slots, known "
             f"objects' fields{'; _Py_DebugOffsets' if debug else ''})")
    if structs.REFUSED:
        return ("info", found + f"; refused here: {', '.join(structs.REFUSED)}",
                "; ".join(f"{name}: {why}" for name, why in structs.REFUSED.items()))
    return "ok", found


def _numpy_handler_api() -> tuple:
    try:
        import numpy
    except Exception as exc:  # noqa: BLE001 - any import failure means the same fix
        return "broken", f"numpy does not import: {type(exc).__name__}: {exc}", FIX_NUMPY
    from pyguts.alloc import handler

    try:
        handler.api_functions()
    except Exception as exc:  # noqa: BLE001 - RuntimeError (table differs), AttributeError (no _ARRAY_API)
        return "broken", f"numpy {numpy.__version__}: NEP 49 handler API unusable: {exc}", FIX_NUMPY
    return ("ok", f"numpy {numpy.__version__}: PyDataMem_SetHandler/GetHandler at C API slots "
                  f"{handler.SET_HANDLER_SLOT}/{handler.GET_HANDLER_SLOT}")


def _array_helper() -> tuple:
    from pyguts import _ndarray

    if _ndarray.functions() is None:
        return ("missing", f"pyguts/_ndarray.c is not built ({_ndarray.why_not()}): views and payloads are made "
                           "through __array_interface__ (~3x slower), and pyguts.alloc cannot make arrays",
                "install a C compiler and this Python's headers (e.g. apt-get install gcc python3-dev)")
    return "ok", f"numpy arrays over object memory and owned blocks are made in C ({_ndarray.SOURCE_PATH.name})"


# --- compilers -------------------------------------------------------------------------------------

def _compiler(language: str, label: str) -> tuple:
    from pyguts import native
    from pyguts.native.compiler import find_compiler
    from pyguts.errors import BuildError

    try:
        command = find_compiler(language)
    except BuildError as exc:
        return "missing", str(exc), f"apt-get install {label}"
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=30, check=False)
    version = (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"
    linkage = 'extern "C" ' if language == "c++" else ""
    try:
        lib = native.build("int pyguts_doctor_probe(int x);",
                           f"{linkage}int pyguts_doctor_probe(int x) {{ return x + 1; }}",
                           language=language, name="pyguts_doctor_probe")
        answer = lib.pyguts_doctor_probe(41)
    except Exception as exc:  # noqa: BLE001 - BuildError, ImportError of the result...
        return "broken", f"{' '.join(command)}: {version}; native.build fails: {exc}", f"apt-get install {label}"
    if answer != 42:
        return "broken", f"{' '.join(command)}: the probe returned {answer!r}, want 42", f"apt-get install {label}"
    return "ok", (f"{' '.join(command)}: {version}; native.build works "
                  f"({'cached' if lib.cache_hit else 'built now'})")


def _nvcc() -> tuple:
    tool = probe.nvcc()
    if not tool.ok:
        return "missing", tool.detail, tool.fix
    path = probe.nvcc_path()
    host = shutil.which("g++") or shutil.which("gcc")  # nvcc preprocesses with it, even for --ptx
    if host is None:
        return "missing", f"{tool.detail}; but no host compiler (g++/gcc) on PATH, which nvcc needs even for PTX", \
            "apt-get install g++ (or pass nvcc -ccbin)"
    stat = os.stat(path)
    from pyguts.native import cache_folder

    key = repr((path, stat.st_mtime_ns, stat.st_size, host, os.stat(host).st_mtime_ns, PTX_ARCH, _PROBE_CU))
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
    marker = cache_folder("doctor") / f"nvcc-ptx-{key}.ok"  # only successes are cached
    if marker.exists():
        return "ok", f"{tool.detail}; emits PTX for {PTX_ARCH} (cached)"
    with tempfile.TemporaryDirectory(prefix="pyguts-doctor-") as tmp:
        src, out = os.path.join(tmp, "probe.cu"), os.path.join(tmp, "probe.ptx")
        with open(src, "w") as f:
            f.write(_PROBE_CU)
        done = subprocess.run([path, f"-arch={PTX_ARCH}", "--ptx", "-o", out, src],
                              capture_output=True, text=True, timeout=120, check=False)
        ptx = open(out).read() if os.path.exists(out) else ""
    if done.returncode != 0 or f".target {PTX_ARCH}" not in ptx:
        return ("broken", f"{tool.detail}; `nvcc -arch={PTX_ARCH} --ptx` failed: {done.stderr.strip()[-300:]}",
                "install a CUDA toolkit that targets sm_80 (CUDA 11.0 or later)")
    marker.touch()
    return "ok", f"{tool.detail}; emits PTX for {PTX_ARCH}"


# --- allocators ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _ldconfig() -> dict[str, str]:
    """soname -> path from the dynamic loader's cache (``ldconfig -p``); {} when unavailable."""
    tool = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                             if os.access(p, os.X_OK)), None)
    if tool is None:
        return {}
    done = subprocess.run([tool, "-p"], capture_output=True, text=True, timeout=30, check=False)
    found: dict[str, str] = {}
    for line in done.stdout.splitlines()[1:]:
        name, _, path = line.strip().partition(" => ")
        found.setdefault(name.split(" (")[0], path)
    return found


def _mapped_path(soname: str) -> str:
    """Where ``soname`` is mapped in this process (/proc/self/maps), else the loader cache's path."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if line.rstrip().endswith("/" + soname):
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    return _ldconfig().get(soname, soname)


def _allocator(name: str) -> Callable[[], tuple]:
    def check() -> tuple:
        from pyguts import alloc
        from pyguts.alloc.registry import SPECS
        from pyguts.errors import AllocatorUnavailable, BuildError

        spec = SPECS[name]
        try:
            alloc.load(name)
            block = alloc.zeros(64, "u1", allocator=name)  # a real allocation, freed by the allocator
            if int(block.sum()) != 0:
                return "broken", f"{name}: a zeroed block came back non-zero", f"reinstall: {spec.install_hint()}"
            del block
        except BuildError as exc:
            return "missing", f"pyguts.alloc's C shim cannot be built: {exc}", \
                "apt-get install gcc (the shim is built once and cached per compiler)"
        except AllocatorUnavailable as exc:
            text = str(exc)
            found = [soname for soname, _ in spec.candidates() if soname in _ldconfig()]
            if spec.candidates() and not found and "static TLS" not in text:
                return "missing", f"{' or '.join(dict.fromkeys(s for s, _ in spec.candidates()))} not found: {text}", \
                    spec.install_hint()
            where = _ldconfig().get(found[0]) if found else spec.soname
            return "missing", f"found at {where} but not loadable in this process: {text}", (
                alloc.registry.STATIC_TLS_FIX if "static TLS" in text else spec.install_hint())
        soname = alloc.load(name).soname
        if soname is None:
            return "ok", f"{spec.doc}; loaded, 64-byte round trip ok" + _thp_mode(spec.huge)
        return "ok", f"{_mapped_path(soname)}: {spec.doc}; loaded, 64-byte round trip ok"
    return check


def _thp_mode(huge: bool) -> str:
    if not huge:
        return ""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f"; transparent huge pages: {f.read().strip()}"
    except OSError:
        return "; transparent huge pages: unknown (no /sys/kernel/mm/transparent_hugepage)"


def _jemalloc_tls() -> tuple:
    from pyguts.alloc import registry

    tunables = os.environ.get("GLIBC_TUNABLES", "")
    preload = os.environ.get("LD_PRELOAD", "")
    marked = bool(os.environ.get(registry.REEXEC_MARK))
    in_effect, would_reexec = registry.static_tls_in_effect(), registry.would_reexec()
    extra = {"GLIBC_TUNABLES": tunables, "LD_PRELOAD": preload, "reexec_marker": marked,
             "fix_in_effect": in_effect, "pyguts_would_reexec": would_reexec}
    if in_effect:
        how = (f"GLIBC_TUNABLES={tunables}" if "optional_static_tls" in tunables else f"LD_PRELOAD={preload}")
        by = " (set by the `pyguts` command's re-exec)" if marked and registry.STATIC_TLS_TUNABLE in tunables else ""
        return "ok", f"in effect since start-up: {how}{by}", "", extra
    reexec = ("would re-exec itself with it" if would_reexec
              else "will not re-exec (PYGUTS_STATIC_TLS_REEXEC is set)")
    found = ("not in effect: GLIBC_TUNABLES has no glibc.rtld.optional_static_tls and LD_PRELOAD has no "
             f"jemalloc; the `pyguts` command {reexec}")
    if not _ldconfig().get("libjemalloc.so.2"):
        return "info", found + "; libjemalloc.so.2 is not installed, so nothing needs it", "", extra
    return "missing", found, registry.STATIC_TLS_FIX, extra


# --- libraries -------------------------------------------------------------------------------------

def _gsl() -> tuple:
    import ctypes.util

    from pyguts import native

    if ctypes.util.find_library("gsl") is None:
        return "missing", "libgsl not found by the dynamic loader", FIX_GSL
    lib = native.load("gsl", "double gsl_sf_bessel_J0(double x);")
    value = lib.gsl_sf_bessel_J0(0.0)
    if value != 1.0:
        return "broken", f"{lib.path}: gsl_sf_bessel_J0(0) = {value!r}, want 1.0", FIX_GSL
    return "ok", (f"{_mapped_path(os.path.basename(lib.path))} via pyguts.native.load; "
                  "gsl_sf_bessel_J0(0) = 1.0, error handler installed")


def _gslcblas() -> tuple:
    import ctypes.util

    found = ctypes.util.find_library("gslcblas")
    if found is None:
        return "missing", "libgslcblas not found by the dynamic loader", FIX_GSL
    ctypes.CDLL(found).cblas_ddot  # noqa: B018 - the symbol libgsl needs
    return "ok", f"{_mapped_path(found)}: loads, exports cblas_ddot"


def _optional(dist: str, purpose: str) -> Callable[[], tuple]:
    def check() -> tuple:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "info", f"not installed (optional: {purpose})", f"pip install {dist}"
        return "info", f"{dist} {version} installed ({purpose})"
    return check


# --- gpu -------------------------------------------------------------------------------------------

def _from_tool(tool: probe.Tool, extra_text: str = "") -> tuple:
    return ("ok" if tool.ok else "missing", tool.detail + extra_text, "" if tool.ok else tool.fix, tool.extra)


def _numba() -> tuple:
    try:
        import numba
    except ImportError as exc:   # an extra since pyguts' core stopped needing it
        return "missing", f"numba does not import: {exc}", FIX_NUMBA
    return "ok", f"numba {numba.__version__} (llvmlite {importlib.metadata.version('llvmlite')})"


def _cupy() -> tuple:
    wheels = sorted({d.metadata["Name"] for d in importlib.metadata.distributions()
                     if (d.metadata["Name"] or "").lower().startswith("cupy")})
    if not wheels:
        return "missing", "CuPy is not installed (no cupy* distribution)", probe.FIX_CUPY
    tool = probe.cupy_tool()
    note = "; wheels: " + ", ".join(wheels) + (" (conflict: keep one)" if len(wheels) > 1 else "")
    return _from_tool(tool, note)


def _driver_and_device() -> list[tuple[str, Callable[[], tuple]]]:
    tools: dict[str, probe.Tool] = {}

    def get(name: str) -> tuple:
        if not tools:
            tools.update({t.name: t for t in probe.driver_tools()})
        return _from_tool(tools[name])
    return [("driver", lambda: get("driver")), ("device", lambda: get("device"))]


# --- isolation -------------------------------------------------------------------------------------

def _fork() -> tuple:
    if not _compat.HAS_FORK:
        return "missing", f"os.fork is not available on {sys.platform}", "use Linux or macOS for crash isolation"
    return "ok", f"os.fork available on {sys.platform}"


def _pidfd() -> tuple:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return "info", "os.pidfd_open absent: isolate polls for the child's exit instead", \
            "Python 3.9+ on Linux 5.3+ provides it"
    fd = opener(os.getpid())
    os.close(fd)
    return "ok", "os.pidfd_open works: isolate waits on the child's exit without polling"


def _isolate_round_trip() -> tuple:
    from pyguts.isolation import isolate

    if not _compat.HAS_FORK:
        return "missing", "needs os.fork", "use Linux or macOS for crash isolation"
    start = time.perf_counter()
    outcome = isolate(os.getpid)
    ms = (time.perf_counter() - start) * 1e3
    if not outcome.ok or outcome.value == os.getpid():
        return "broken", f"isolate(os.getpid): {outcome.describe()}", "report this: fork round trips must work"
    found = f"isolate(os.getpid) ran in child {outcome.value} and returned in {ms:.1f} ms"
    return "ok", found, "", {"round_trip_ms": round(ms, 2)}


def _segfault() -> bytes:
    return ctypes.string_at(0)  # NULL read: SIGSEGV in the child


def _faulthandler() -> tuple:
    from pyguts.isolation import isolate

    if not _compat.HAS_FORK:
        return "missing", "needs os.fork", "use Linux or macOS for crash isolation"
    outcome = isolate(_segfault, timeout=30)
    if outcome.status != "crashed" or "Fatal Python error" not in outcome.fault_traceback:
        return "broken", f"a NULL read in a child gave: {outcome.describe()}", \
            "report this: the child's faulthandler text should come back"
    return "ok", f"a NULL read in an isolated child came back as {outcome.signal_name} with its faulthandler trace"


def _native_frames() -> tuple:
    from pyguts.isolation import isolate, native

    if not _compat.HAS_FORK:
        return "missing", "needs os.fork", "use Linux or macOS for crash isolation"
    if native.installer() is None:
        return ("missing", f"the crash handler pyguts/isolation/_crash.c is not built ({native.why_not()}): "
                           "crash reports have the signal and the Python frames, not the C ones",
                "install a C compiler (apt-get install gcc)")
    outcome = isolate(_segfault, timeout=30)
    names = [f.name for f in outcome.native_frames]
    if outcome.fault_region != "NULL" or "string_at" not in names:
        return "broken", f"a NULL read in a child gave: {outcome.describe()}", \
            "report this: the child's native frames should name ctypes' string_at"
    lines = "; file:line from addr2line where debug info exists" if shutil.which("addr2line") else \
        "; no addr2line, so no file:line (apt-get install binutils)"
    return "ok", f"a NULL read in an isolated child names its C frames ({len(names)}, string_at among them){lines}"


# --- assembly --------------------------------------------------------------------------------------

def _table() -> dict[str, list[tuple[str, Callable[[], tuple]]]]:
    from pyguts.alloc.registry import SPECS

    return {
        "core": [("interpreter", _interpreter), ("layout rows", _layout_rows),
                 ("live layout checks", _live_layout), ("numpy NEP 49 handler API", _numpy_handler_api),
                 ("C array helper", _array_helper)],
        "compilers": [("gcc", lambda: _compiler("c", "gcc")), ("g++", lambda: _compiler("c++", "g++")),
                      ("nvcc", _nvcc)],
        "allocators": [*((name, _allocator(name)) for name in SPECS), ("jemalloc TLS fix", _jemalloc_tls)],
        "libraries": [("libgsl", _gsl), ("libgslcblas", _gslcblas),
                      ("Cython", _optional("Cython", "the tour's cython step")),
                      ("cppyy", _optional("cppyy", "the tour's C++ one-liner"))],
        "gpu": [("numba", _numba), ("numba CUDA target", lambda: _from_tool(probe.numba_tool())),
                ("NVVM", lambda: _from_tool(probe.nvvm_tool())),
                ("CuPy", _cupy), ("NVRTC", lambda: _from_tool(probe.nvrtc_tool())), *_driver_and_device()],
        "isolation": [("fork", _fork), ("pidfd", _pidfd), ("isolate round trip", _isolate_round_trip),
                      ("faulthandler", _faulthandler), ("native frames", _native_frames)],
    }


def checks(sections: tuple[str, ...] = SECTIONS) -> list[Check]:
    """Run the checks of ``sections`` (default: all, in :data:`SECTIONS` order) and return them."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"sections must be among {SECTIONS}, got {unknown}")
    table = _table()
    return [_run(section, name, fn) for section in SECTIONS if section in sections for name, fn in table[section]]


def exit_status(found: list[Check], *, strict: bool = False) -> int:
    """1 when a core check is broken (or, with ``strict``, anything is missing or broken), else 0."""
    if any(c.section == "core" and c.status == "broken" for c in found):
        return 1
    return 1 if strict and not all(c.ok for c in found) else 0


def summary_line(found: list[Check] | None = None) -> str:
    """One line: whether the core is sound and which components are missing or broken."""
    found = checks() if found is None else found
    core = "BROKEN" if exit_status(found) else "ok"
    missing = [c.name for c in found if c.status == "missing"]
    broken = [c.name for c in found if c.status == "broken"]
    ok = sum(c.status == "ok" for c in found)
    parts = [f"pyguts doctor: core {core}; {ok} ok"]
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing)})")
    if broken:
        parts.append(f"{len(broken)} broken ({', '.join(broken)})")
    return ", ".join(parts)
