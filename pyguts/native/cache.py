"""The native build cache on disk: private folders, modules verified by digest (private to native).

The cache trusts its folder's permissions, never its contents. Each module ``M.so`` has
``M.sha256``, the digest of its bytes written when it was built (:func:`publish`); a module is
loaded only when its bytes were just hashed and matched, else the caller rebuilds it
(:func:`load_verified`). Cache files are opened with ``O_NOFOLLOW`` and created
0600, folders 0700, whatever the umask; a cache folder someone else could write, or a folder
above it writable by others without the sticky bit, is refused before anything is read from it
(:func:`private_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import hashlib
import importlib.util
import os
import pathlib
import pwd
import re
import stat
import types
from typing import Iterator

from pyguts import _compat
from pyguts.errors import BuildError

#: Modes of what the cache creates, whatever the umask: only the owner can read, write or list.
DIR_MODE = 0o700
FILE_MODE = 0o600

_private_folders: set[str] = set()  # folders private_folder() accepted, by absolute path


def private_folder(path: pathlib.Path, *, owned: int) -> pathlib.Path:
    """``path``, its missing folders created 0700; BuildError if others could plant files in it.

    The ``owned`` last folders of ``path`` (the cache's own) must belong to this user and be
    writable by nobody else; every folder above them must not be writable by others unless it
    is sticky (like /tmp: others cannot rename or delete what is ours). Group write is fine when
    the group is the user's own private group (Fedora's and Debian's umask 002 setups).

    A folder found private stays trusted for the process: only its owner (this user) or the
    owner of a folder above it (trusted already: it could rename ours) can change that.
    """
    key = os.path.abspath(path)
    if key in _private_folders and os.path.isdir(key):
        return path
    missing, here = [], pathlib.Path(key)
    while not os.path.isdir(here):
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue  # a concurrent process made it; checked below like any other
        os.chmod(folder, DIR_MODE)  # mkdir's mode went through the umask
    real = pathlib.Path(os.path.realpath(path))
    for depth, folder in enumerate([real, *real.parents]):
        problem = _unsafe_folder(os.stat(folder), own=depth < owned)
        if problem:
            what = "native build cache folder" if depth < owned else "folder above the native build cache"
            raise BuildError(f"the {what} {folder} {problem}: whoever can write there can make this "
                             f"process load their code. Fix its permissions (chmod go-w, or chmod +t "
                             f"for a shared folder) or set $PYGUTS_CACHE_DIR to a folder only you can "
                             f"write (now {real})")
    _private_folders.add(key)
    return path


def _unsafe_folder(st: os.stat_result, *, own: bool) -> str | None:
    """Why a folder with this stat lets someone else plant files, or None."""
    if own and st.st_uid != os.geteuid():
        return f"belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or not own and st.st_mode & stat.S_ISVTX:
        return None
    if not st.st_mode & stat.S_IWOTH and _private_group(st.st_gid):  # looked up only here: NSS is slow
        return None
    who = "all users" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
    sticky = "" if own else " and is not sticky"
    return f"is writable by {who} (mode 0o{stat.S_IMODE(st.st_mode):o}){sticky}"


def _private_group(gid: int) -> bool:
    """Whether group ``gid`` is this user's private group: named after the user, no other member."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}


def digest_path(final: pathlib.Path) -> pathlib.Path:
    """Where the sha256 of module ``final`` is recorded."""
    return final.with_name(final.name.removesuffix(_compat.EXT_SUFFIX) + ".sha256")


def open_nofollow(path: pathlib.Path, flags: int) -> int:
    """os.open without following a symbolic link (BuildError naming it); new files FILE_MODE."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EMLINK):  # what O_NOFOLLOW gives on a link
            raise
        raise BuildError(f"{path} is a symbolic link, which the native build cache never makes there: "
                         f"something else put it there. Delete {path.parent} (it is only a cache) "
                         f"or set $PYGUTS_CACHE_DIR to a folder only you can write") from exc


@contextlib.contextmanager
def locked(path: pathlib.Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created FILE_MODE, never truncated)."""
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    try:
        os.fchmod(fd, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a concurrent builder finishes first, then we reuse it
        yield
    finally:
        os.close(fd)


def publish(built: pathlib.Path, final: pathlib.Path) -> None:
    """Move the module ``built`` (in a private build folder) to ``final``, with its digest."""
    os.chmod(built, FILE_MODE)  # the linker made it 0777 minus the umask
    digest = built.with_name("digest")
    fd = open_nofollow(digest, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, hashlib.sha256(built.read_bytes()).hexdigest().encode() + b"\n")
    finally:
        os.close(fd)
    # Atomic: readers see no file or the whole file. The module goes first: a reader that sees
    # the new module with the old digest retries under the lock, after this builder.
    os.replace(built, final)
    os.replace(digest, digest_path(final))


def load_verified(modname: str, final: pathlib.Path) -> types.ModuleType | None:
    """Import ``final`` as ``modname`` if its bytes match its digest; None if missing or not matching.

    The folder is private (:func:`private_folder`), so nobody else can swap the file between the
    check and dlopen.
    """
    try:
        fd = open_nofollow(digest_path(final), os.O_RDONLY)
        try:
            expected = os.read(fd, 128).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        fd = open_nofollow(final, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != expected:
            return None
    return load_module(modname, final)


def load_module(modname: str, final: pathlib.Path) -> types.ModuleType:
    """Load the extension module ``final`` as ``modname``."""
    spec = importlib.util.spec_from_file_location(modname, final)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError as exc:
        missing = re.search(r"undefined symbol: (\w+)", str(exc))
        final.unlink(missing_ok=True)  # never reuse a module that cannot load
        digest_path(final).unlink(missing_ok=True)
        if missing:
            raise BuildError(f"{missing.group(1)!r} is declared in the cdef but the source does not "
                             f"define it (or a library providing it is not in libraries=); define "
                             f"it, or pass libraries=[...]") from exc
        raise BuildError(f"the built module {final} does not load: {exc}") from exc
    return module
