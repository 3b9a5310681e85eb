"""What a test needs from this machine, probed for real, and the named skip when it is missing.

Each probe does what the code under test will do: ``dlopen()`` the library (in a fresh interpreter,
so this one loads nothing), ask the compiler where it would find a library to link. A test skips
only where the thing is really missing here, never on a switch or a guess from a package list;
where it is present, the test runs and its failures are failures. Every reason starts with
``needs_<thing>:``, says what failed and what to install (Debian package names, as the Makefile's
``APT_PACKAGES``).

Imported by name from the test modules: pytest puts ``tests/`` on ``sys.path`` for
``tests/conftest.py`` (the default "prepend" import mode).

>>> unloadable("libc.so.6")
''
>>> unloadable("libpyguts-no-such-library.so.0").startswith("libpyguts-no-such-library.so.0: cannot open")
True
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys

import pytest

#: thing -> (libraries a fresh interpreter must dlopen, in order, each RTLD_GLOBAL so that the next
#: finds its symbols; what to install). A bare name is looked up as the linker would (``find_library``).
LIBRARIES = {
    "jemalloc": (("libjemalloc.so.2",), "apt-get install libjemalloc2"),
    # pyguts.native.load("gsl") loads libgslcblas first, globally: a libgsl built without a CBLAS needs it.
    "gsl": (("gslcblas", "gsl"), "apt-get install libgsl-dev"),
    "cairo": (("libcairo.so.2",), "apt-get install libcairo2"),
}

#: Loads each argument in turn; prints the first failure and exits 1. glibc's refusal for want of
#: static TLS room (Debian's jemalloc without GLIBC_TUNABLES) means the library is there: not a failure.
_DLOPEN = """
import ctypes, ctypes.util, sys
for name in sys.argv[1:]:
    path = name if ".so" in name else ctypes.util.find_library(name)
    try:
        if path is None:
            raise OSError(f"lib{name}: not found by ctypes.util.find_library({name!r})")
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        if "static TLS" not in str(exc):
            print(exc)
            sys.exit(1)
"""
#: Seconds a probe may take (a fresh interpreter and a dlopen: tens of ms; generous on a busy machine).
PROBE_TIMEOUT_S = 60


@functools.lru_cache(maxsize=None)
def unloadable(*names: str) -> str:
    """'' when a fresh interpreter here can ``dlopen()`` each of ``names`` in turn, else why not.

    ``names`` are sonames (``libcairo.so.2``) or bare library names (``gsl``, found as the linker
    would). Run in a child: this process loads nothing and keeps no state from the probe.
    """
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _DLOPEN, *names], capture_output=True,
                          text=True, timeout=PROBE_TIMEOUT_S)
    if done.returncode == 0:
        return ""
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return lines[-1] if lines else f"the dlopen() probe exited with status {done.returncode}"


@functools.lru_cache(maxsize=None)
def unlinkable(name: str) -> str:
    """'' when the C compiler finds ``lib<name>.so`` to link against (``-l<name>``), else why not.

    ``cc -print-file-name`` answers with the full path when its search finds the file, with the bare
    name when it does not (a distribution's ``-dev`` package ships these links).
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (cc/gcc) on PATH"
    found = subprocess.run([cc, f"-print-file-name=lib{name}.so"], capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT_S).stdout.strip()
    return "" if found.startswith("/") else f"{cc} finds no lib{name}.so to link with -l{name}"


def library_reason(thing: str) -> str:
    """The skip reason when ``thing`` (a key of :data:`LIBRARIES`) cannot be loaded here, else ''."""
    names, install = LIBRARIES[thing]
    why = unloadable(*names)
    return f"needs_{thing}: {why} ({install})" if why else ""


def library(thing: str) -> pytest.MarkDecorator:
    """``skipif`` marker: skip with the reason when ``thing`` (a key of :data:`LIBRARIES`) cannot be loaded."""
    reason = library_reason(thing)
    return pytest.mark.skipif(bool(reason), reason=reason or f"needs_{thing}")


def linked(thing: str) -> pytest.MarkDecorator:
    """``skipif`` marker for a build that links ``thing``'s libraries (``-lgsl -lgslcblas``): each must
    load and be found by the compiler's linker search (the ``-dev`` package's links)."""
    names, install = LIBRARIES[thing]
    why = unloadable(*names) or next(filter(None, (unlinkable(n) for n in names if ".so" not in n)), "")
    reason = f"needs_{thing}: {why} ({install})" if why else ""
    return pytest.mark.skipif(bool(reason), reason=reason or f"needs_{thing}")


def require_library(thing: str) -> None:
    """Skip the running test (or module, at import) when ``thing`` cannot be loaded here."""
    reason = library_reason(thing)
    if reason:
        pytest.skip(reason, allow_module_level=True)


def allocator_reason(name: str) -> str:
    """The skip reason when the library behind pyguts allocator ``name`` is not installed here, else ''.

    Installed means a fresh interpreter can ``dlopen()`` one of the registry's candidates (or is
    refused only for static TLS room); pyguts' own loader is not asked, so a bug there fails.
    """
    from pyguts.alloc import registry

    spec = registry.SPECS[name]
    whys = [unloadable(soname) for soname in dict.fromkeys(soname for soname, _ in spec.candidates() if soname)]
    if whys and all(whys):
        return f"needs_{name}: {'; '.join(whys)} ({spec.install_hint()})"
    return ""


def refusal_reason(name: str, exc: BaseException) -> str:
    """The skip reason for pyguts refusing allocator ``name`` with ``exc`` here, or '' when that is a failure.

    A skip: the library is not installed (:func:`allocator_reason`), or Debian's jemalloc is refused
    for static TLS room in a process started without the fix (plain ``pytest``; ``make test`` sets it).
    Any other refusal is a failure: the library is there.
    """
    from pyguts.alloc import registry

    reason = allocator_reason(name)
    if not reason and "static TLS" in str(exc) and not registry.static_tls_in_effect():
        reason = f"needs_static_tls: {exc}"
    return reason


def load_allocator(name: str):
    """``pyguts.alloc.load(name)``, or skip the test where :func:`refusal_reason` says so."""
    from pyguts.alloc import registry
    from pyguts.errors import AllocatorUnavailable

    try:
        return registry.load(name)
    except AllocatorUnavailable as exc:
        reason = refusal_reason(name, exc)
        if reason:
            pytest.skip(reason)
        raise
