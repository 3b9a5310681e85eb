"""Allocator libraries by name: how to load each, what to install when it is missing.

Libraries are opened ``RTLD_LOCAL`` and their functions are called through the handle, so loading
one never replaces the process's own ``malloc``. A loaded allocator is kept for the life of the
process and never ``dlclose``d: arrays and numpy handlers may still point into it at exit.

jemalloc gets the knobs numpy's default (glibc) behaviour calls for, scoped to pyguts' blocks:

- an arena of pyguts' own (``Allocator.arena``, every pyguts block is made there), whose
  ``oversize_threshold`` is lifted: jemalloc otherwise purges every freed block of 8 MiB or more at
  once, so each new one faults all its pages in again (an 8 MiB ``np.ones`` ran 7-17x numpy's time).
  Freed blocks now follow the arena's decay (jemalloc's default: back to the OS within ~10 s), as
  glibc keeps freed blocks under its mmap threshold for reuse;
- ``tcache_max:8388608`` (:data:`JEMALLOC_CONF`): freed blocks up to 8 MiB (jemalloc's largest
  thread-cache size) wait in the thread's cache for the next request of their size, as glibc
  serves blocks up to its mmap threshold (which rises to 32 MiB as mmapped blocks are freed) from
  its heap. jemalloc's default stops at 32 KiB: a 64 KiB ``np.empty`` ran 2.5x numpy's, and an
  8 MiB one 1.4x from the arena (1.02-1.13x cached). Memory held is what the arena kept before (its
  dirty pages), now in the thread's cache, which jemalloc's own cache GC drains as the thread
  allocates. Debian sid's 5.3.1 snapshot takes the option but still reports ``opt.tcache_max``
  as 32 KiB.
  A start-up option, set only while pyguts itself first loads the library; a ``MALLOC_CONF`` of the
  user's comes after it and wins, and a jemalloc already running (``LD_PRELOAD``) keeps its own.

>>> "libc" in available() and "mmap" in available()
True
>>> load("libc").name
'libc'
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from dataclasses import dataclass, field

from pyguts.alloc import shim
from pyguts.errors import AllocatorUnavailable

#: Start-up options for a jemalloc pyguts loads itself (see the module docstring).
JEMALLOC_CONF = "tcache_max:8388608"
#: ``arena.<i>.oversize_threshold`` of pyguts' jemalloc arena: no block size is purged at once.
JEMALLOC_OVERSIZE = 1 << 62
#: mallocx's MALLOCX_ARENA(i) flag (jemalloc/jemalloc_macros.h).
_MALLOCX_ARENA_SHIFT = 20
#: jemalloc's ``int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)``.
MALLCTL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                           ctypes.c_void_p, ctypes.c_size_t)

#: What fixes Debian's libjemalloc2 "cannot allocate memory in static TLS block" at dlopen().
STATIC_TLS_TUNABLE = "glibc.rtld.optional_static_tls=4096"
STATIC_TLS_FIX = (f"start the process with GLIBC_TUNABLES={STATIC_TLS_TUNABLE} in its environment "
                  "(or LD_PRELOAD=libjemalloc.so.2); glibc reads it only at start-up, so it cannot be "
                  "set from inside a running interpreter — `make test`, `make tour` and the `pyguts` "
                  "command set it themselves")
#: In the environment of a process pyguts re-executed for static TLS, so that it never loops.
REEXEC_MARK = "PYGUTS_STATIC_TLS_REEXEC"


def static_tls_in_effect() -> bool:
    """Whether this process started with room for jemalloc's static TLS (GLIBC_TUNABLES or LD_PRELOAD)."""
    return ("glibc.rtld.optional_static_tls=" in os.environ.get("GLIBC_TUNABLES", "")
            or "jemalloc" in os.environ.get("LD_PRELOAD", ""))


def static_tls_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: this process's) whose GLIBC_TUNABLES makes room for jemalloc.

    For starting children that load jemalloc; other tunables already set are kept.

    >>> static_tls_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"]
    'glibc.malloc.arena_max=2:glibc.rtld.optional_static_tls=4096'
    """
    env = dict(os.environ if environ is None else environ)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.rtld.optional_static_tls=" not in tunables:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, STATIC_TLS_TUNABLE)))
    return env


def would_reexec() -> bool:
    """Whether :func:`ensure_static_tls` would restart this process (Linux, fix not in effect, not done yet)."""
    return sys.platform.startswith("linux") and not os.environ.get(REEXEC_MARK) and not static_tls_in_effect()


def ensure_static_tls() -> None:
    """Restart this program once with GLIBC_TUNABLES set, so that jemalloc can be loaded later.

    glibc reads GLIBC_TUNABLES only at start-up; nothing done inside Python can replace it. Call it
    first thing in a script (the ``pyguts`` command does): the process is replaced by a fresh one
    with the same arguments. It does nothing where the fix is in effect, after one restart, off
    Linux, and inside a Jupyter kernel (which must not be replaced): there, start Jupyter with the
    variable set.
    """
    if not would_reexec() or "ipykernel" in sys.modules:
        return
    env = dict(static_tls_environ(), **{REEXEC_MARK: "1"})
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:   # None when the process started with that descriptor closed
            stream.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # cannot restart: carry on; loading jemalloc will then say how to fix it
        return



@dataclass(frozen=True)
class Spec:
    """How to load one allocator: shared object, Debian package, symbols by role, family."""

    name: str
    soname: str | None            # None: no library (mmap); "" : the C library itself
    package: str | None           # Debian package that ships soname
    family: int
    symbols: dict[str, str] = field(default_factory=dict)  # role -> symbol
    huge: bool = False
    doc: str = ""
    #: Its calloc clears reused memory with memset: pyguts clears blocks of 32 MiB and more by giving
    #: their pages back instead (shim.c, pg_lazy_zero), as numpy's default gets fresh pages there.
    lazy_zero: bool = False
    #: Other (soname, Debian package) pairs that serve too, tried in order after ``soname``.
    also: tuple[tuple[str, str], ...] = ()

    def candidates(self) -> tuple[tuple[str, str | None], ...]:
        """Every (soname, package) that can provide this allocator, preferred first."""
        return ((self.soname, self.package), *self.also) if self.soname is not None else ()

    def install_hint(self) -> str:
        """What to install: ``apt-get install libmimalloc3 (or libmimalloc2.0)``."""
        packages = [package for _, package in self.candidates() if package]
        if not packages:
            return "install the library"
        return f"apt-get install {packages[0]}" + "".join(f" (or {p})" for p in packages[1:])


_MALLOC_ROLES = ("malloc", "calloc", "realloc", "free", "memalign", "zalign")

#: The registry: one row per allocator name.
SPECS: dict[str, Spec] = {spec.name: spec for spec in (
    Spec("jemalloc", "libjemalloc.so.2", "libjemalloc2", shim.FAMILY_JEMALLOC,
         dict(malloc="malloc", calloc="calloc", realloc="rallocx", free="free",
              memalign="aligned_alloc", zalign="mallocx", mallctl="mallctl"),
         doc="jemalloc 5 (unprefixed symbols, called through its own handle, in an arena of pyguts' own)"),
    # Debian ships mimalloc 3 (trixie's successors) or 2 (bookworm); the symbols pyguts uses are in both.
    Spec("mimalloc", "libmimalloc.so.3", "libmimalloc3", shim.FAMILY_MIMALLOC,
         dict(malloc="mi_malloc", calloc="mi_calloc", realloc="mi_realloc", free="mi_free",
              memalign="mi_aligned_alloc", zalign="mi_zalloc_aligned", process_info="mi_process_info"),
         doc="Microsoft mimalloc (3 or 2)", also=(("libmimalloc.so.2", "libmimalloc2.0"),), lazy_zero=True),
    Spec("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4", shim.FAMILY_PLAIN,
         dict(malloc="tc_malloc", calloc="tc_calloc", realloc="tc_realloc", free="tc_free",
              memalign="tc_memalign", numeric_property="MallocExtension_GetNumericProperty"),
         doc="gperftools tcmalloc_minimal", also=(("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4t64"),),
         lazy_zero=True),
    Spec("libc", "libc.so.6", "libc6", shim.FAMILY_PLAIN,
         dict(malloc="malloc", calloc="calloc", realloc="realloc", free="free",
              memalign="aligned_alloc", mallinfo2="mallinfo2"),
         doc="the C library's malloc (glibc ptmalloc)"),
    Spec("mmap", None, None, shim.FAMILY_MMAP,
         doc="anonymous mmap per allocation: page-aligned, returned to the OS on free"),
    Spec("mmap-huge", None, None, shim.FAMILY_MMAP, huge=True,
         doc="mmap + madvise(MADV_HUGEPAGE): transparent huge pages where the kernel allows"),
)}


@dataclass(frozen=True, eq=False)
class Allocator:
    """A loaded allocator: its library handle, symbol addresses and the shim context (``ctx``)."""

    name: str
    spec: Spec
    library: ctypes.CDLL | None
    ctx: int                      # address of the shim's pg_ctx, never freed
    soname: str | None = None     # the shared object loaded (one of spec.candidates())
    arena: int | None = None      # jemalloc: the index of pyguts' own arena (mallctl "arena.<i>.*")

    def symbol(self, role: str) -> int | None:
        """Address of the library function playing ``role`` (e.g. "mallctl"), or None."""
        sym = self.spec.symbols.get(role)
        if self.library is None or sym is None:
            return None
        try:
            return ctypes.cast(getattr(self.library, sym), ctypes.c_void_p).value
        except AttributeError:
            return None

    def __repr__(self) -> str:
        where = self.soname or "kernel"
        return f"<pyguts Allocator {self.name!r} from {where} ctx=0x{self.ctx:x}>"

    def __reduce__(self):
        return (load, (self.name,))


_LOADED: dict[str, Allocator] = {}  # kept forever: handlers and arrays point into these
_LOCK = threading.Lock()


@contextlib.contextmanager
def _jemalloc_conf():
    """:data:`JEMALLOC_CONF` in ``MALLOC_CONF`` (the user's own after it, so theirs wins) while jemalloc
    starts: at dlopen (its constructor) or at its first call, whichever the build does; restored after."""
    users = os.environ.get("MALLOC_CONF")
    os.environ["MALLOC_CONF"] = ",".join(filter(None, (JEMALLOC_CONF, users)))
    try:
        yield
    finally:
        if users is None:
            del os.environ["MALLOC_CONF"]
        else:
            os.environ["MALLOC_CONF"] = users


def _jemalloc_arena(library: ctypes.CDLL) -> int:
    """A new jemalloc arena for pyguts' blocks, with no size purged at free (see the module docstring)."""
    mallctl = MALLCTL(ctypes.cast(library.mallctl, ctypes.c_void_p).value)
    index, size = ctypes.c_uint(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_uint))
    rc = mallctl(b"arenas.create", ctypes.byref(index), ctypes.byref(size), None, 0)
    if rc:
        raise AllocatorUnavailable(f"jemalloc's mallctl('arenas.create') must return 0, got errno {rc} "
                                   f"({os.strerror(rc)}); pick another allocator")
    threshold = ctypes.c_size_t(JEMALLOC_OVERSIZE)
    # jemalloc before 5.3 has no per-arena threshold: its blocks keep jemalloc's own policy.
    mallctl(f"arena.{index.value}.oversize_threshold".encode(), None, None,
            ctypes.byref(threshold), ctypes.sizeof(threshold))
    return index.value


def _open(spec: Spec) -> tuple[ctypes.CDLL | None, str | None]:
    """(library, the soname that loaded), trying each candidate in turn."""
    errors = []
    sonames = list(dict.fromkeys(soname for soname, _ in spec.candidates()))
    for soname in sonames:
        try:
            return ctypes.CDLL(soname, mode=ctypes.RTLD_LOCAL), soname
        except OSError as exc:
            text = str(exc)
            if "static TLS" in text:
                raise AllocatorUnavailable(
                    f"allocator {spec.name!r} must be loadable with dlopen(), got {text!r}: {STATIC_TLS_FIX}"
                ) from exc
            errors.append(text)
    if not errors:   # no library at all (mmap)
        return None, None
    names = " or ".join(sonames)
    raise AllocatorUnavailable(
        f"allocator {spec.name!r} needs {names}, which could not be loaded ({'; '.join(errors)}); "
        f"install it (Debian: {spec.install_hint()}) or pick another; pyguts.alloc.available() lists those that load")


def _load_spec(spec: Spec) -> Allocator:
    if spec.family != shim.FAMILY_JEMALLOC:
        return _load_opened(spec, *_open(spec), arena=None)
    with _jemalloc_conf():   # (arenas.create is jemalloc's first call: it has started by its end)
        library, soname = _open(spec)
        arena = _jemalloc_arena(library)
    return _load_opened(spec, library, soname, arena)


def _load_opened(spec: Spec, library: ctypes.CDLL | None, soname: str | None, arena: int | None) -> Allocator:
    addrs = {}
    for role in _MALLOC_ROLES:
        sym = spec.symbols.get(role)
        if library is None or sym is None:
            addrs[role] = None
            continue
        try:
            addrs[role] = ctypes.cast(getattr(library, sym), ctypes.c_void_p).value
        except AttributeError as exc:
            raise AllocatorUnavailable(
                f"allocator {spec.name!r} needs symbol {sym!r} in {soname}, which lacks it; "
                f"{spec.install_hint()} (a current release) or pick another allocator") from exc
    flags = 0 if arena is None else (arena + 1) << _MALLOCX_ARENA_SHIFT
    ctx = shim.shim().pg_ctx_new(*(addrs[r] or 0 for r in _MALLOC_ROLES), spec.family, int(spec.huge), flags,
                                 int(spec.lazy_zero))
    if not ctx:
        raise MemoryError(f"allocating the pyguts context for {spec.name!r} failed")
    return Allocator(spec.name, spec, library, ctx, soname, arena)


def load(name: str | Allocator) -> Allocator:
    """Load allocator ``name`` once per process (kept forever) and return it.

    >>> load("mmap").spec.soname is None
    True
    """
    if isinstance(name, Allocator):
        return name
    loaded = _LOADED.get(name)
    if loaded is not None:  # the common case, without the lock
        return loaded
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        spec = SPECS.get(name)
        if spec is None:
            raise AllocatorUnavailable(f"allocator name must be one of {sorted(SPECS)}, got {name!r}")
        allocator = _LOADED[name] = _load_spec(spec)
        return allocator


def available() -> list[str]:
    """Names of the allocators that load in this process, in registry order.

    >>> available()[-3:]
    ['libc', 'mmap', 'mmap-huge']
    """
    names = []
    for name in SPECS:
        try:
            load(name)
        except AllocatorUnavailable:
            continue
        names.append(name)
    return names
