"""The C and C++ compilers pyguts builds with, found once per call ($CC / $CXX first).

numpy-free on purpose: the isolation package builds its crash handler with it in a parent that
must not import numpy (its BLAS starts a thread, and a parent with threads must not fork).
"""

from __future__ import annotations

import os
import shlex
import shutil

from pyguts.errors import BuildError

#: Compiler looked up when $CC / $CXX is unset, first found wins.
DEFAULT_COMPILERS = {"c": ("cc", "gcc", "clang"), "c++": ("c++", "g++", "clang++")}
ENV_VAR = {"c": "CC", "c++": "CXX"}
INSTALL_HINT = {
    "c": "install a C compiler (Debian/Ubuntu: apt-get install gcc; Fedora: dnf install gcc; "
         "macOS: xcode-select --install) or point $CC at one",
    "c++": "install a C++ compiler (Debian/Ubuntu: apt-get install g++; Fedora: dnf install "
           "gcc-c++; macOS: xcode-select --install) or point $CXX at one",
}


def find_compiler(language: str) -> list[str]:
    """The compiler command for ``language`` ("c" or "c++"), honouring $CC / $CXX.

    >>> find_compiler("c")[0].endswith(("cc", "gcc", "clang"))
    True
    """
    if language not in ENV_VAR:
        raise ValueError(f"language must be 'c' or 'c++', got {language!r}; pass language='c' or 'c++'")
    var = ENV_VAR[language]
    configured = os.environ.get(var)
    candidates = [shlex.split(configured)] if configured else [[c] for c in DEFAULT_COMPILERS[language]]
    for command in candidates:
        found = shutil.which(command[0]) if command else None
        if found:
            return [found, *command[1:]]
    tried = f"${var}={configured!r}" if configured else "/".join(DEFAULT_COMPILERS[language])
    raise BuildError(f"a {language.upper()} compiler is needed to build native code, but none was "
                     f"found (tried {tried}); {INSTALL_HINT[language]}")
