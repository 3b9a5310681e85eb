"""A Jupyter kernel in which jemalloc loads: the kernel spec to install, and what to tell a user whose kernel lacks it.

Debian's libjemalloc2 can only be loaded by a process that started with
``GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096`` in its environment, and a Jupyter kernel
started the normal way has no such variable. A kernel spec can carry environment variables
(``"env"`` in its ``kernel.json``): ipykernel's own installer writes one.
"""

from __future__ import annotations

import shlex
import sys

#: The kernel spec's name (``jupyter kernelspec list``) and the name Jupyter's kernel menu shows.
KERNEL_NAME = "pyguts"
DISPLAY_NAME = "Python 3 (pyguts)"


def kernel_install_command(python: str | None = None, *, user: bool = True) -> list[str]:
    """The command that installs the kernel spec ``pyguts``: ``python`` (default: this interpreter)
    started with GLIBC_TUNABLES set for jemalloc. ``user=False`` leaves out ``--user`` (then pass
    ``--prefix`` or ``--sys-prefix`` yourself).

    >>> kernel_install_command("python")[:4]
    ['python', '-m', 'ipykernel', 'install']
    >>> kernel_install_command("python")[-3:]
    ['--env', 'GLIBC_TUNABLES', 'glibc.rtld.optional_static_tls=4096']
    """
    from pyguts.alloc.registry import STATIC_TLS_TUNABLE  # (on use: importing the tour loads no allocator code)

    return [python or sys.executable, "-m", "ipykernel", "install", *(["--user"] if user else []),
            "--name", KERNEL_NAME, "--display-name", DISPLAY_NAME, "--env", "GLIBC_TUNABLES", STATIC_TLS_TUNABLE]


def static_tls_hint() -> str:
    """What to do so that jemalloc loads in a notebook: start Jupyter with the variable, or install the kernel.

    >>> "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096 jupyter lab" in static_tls_hint()
    True
    """
    from pyguts.alloc.registry import STATIC_TLS_TUNABLE

    return (f"start Jupyter with GLIBC_TUNABLES={STATIC_TLS_TUNABLE} jupyter lab (or notebook), or install "
            f"a kernel that sets it, once: {shlex.join(kernel_install_command())}; then pick the kernel "
            f"{DISPLAY_NAME!r}")
