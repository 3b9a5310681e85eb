"""Native frames in crash reports: where in C an isolated child died.

In the child, ``_crash.c`` (compiled on first use in the parent, see :func:`installer`) catches
the fatal signals in front of faulthandler and writes the crashing thread's return addresses, the
fault address and the ``/proc/self/maps`` lines that hold them to the fault pipe. Here those lines are taken out of faulthandler's text and symbolized:
each address becomes its shared object, the ELF address in it, the function (from the object's
symbol table, or its dynamic one when stripped) and, where the object has debug info and binutils'
``addr2line`` is installed, the file and line.

The same handler runs on every CPython, so the frames come as the same data everywhere, with the
fault address that CPython's own C-stack dump (3.14+) lacks; that dump is switched off where this
handler runs (it would start with the handler's frames). Where no C compiler is found, crash
reports have no native frames, :func:`why_not` says why, and 3.14+ still prints its C stack as
text in faulthandler's output.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import pathlib
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from pyguts import _toolchain

SOURCE_PATH = pathlib.Path(__file__).with_name("_crash.c")
#: Every line of the record starts with this.
PREFIX = "pyguts-native: "
#: Addresses below this are "near NULL" (Linux's default vm.mmap_min_addr: nothing maps there).
NEAR_NULL = 65536

_install: Callable[[int], int] | None = None
_why_not: str | None = None


def installer() -> Callable[[int], int] | None:
    """The child's ``pg_crash_install(fd)``, compiled on first use in this (parent) process, or None.

    A plain shared object, built with the C compiler ($CC, cc, gcc or clang) in a private
    temporary folder and loaded with ctypes (~0.1 s once per process). Not through
    :func:`pyguts.native.build`: that imports numpy, whose BLAS starts threads, and a parent with
    threads is what a fork must not copy (SAFETY.md, "fork() and threads").
    """
    global _install, _why_not
    if _install is None and _why_not is None:
        try:
            _install = _build()
        except Exception as exc:  # noqa: BLE001 - any failure: crash reports without native frames
            _why_not = f"{type(exc).__name__}: {exc}"
    return _install


def _build() -> Callable[[int], int]:
    command = _toolchain.find_compiler("c")
    with tempfile.TemporaryDirectory(prefix="pyguts-crash-") as tmp:   # (0700, removed after loading)
        out = os.path.join(tmp, "pyguts_crash.so")
        done = subprocess.run([*command, "-shared", "-fPIC", "-O2", "-o", out, str(SOURCE_PATH)],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise OSError(f"{' '.join(command)} failed on {SOURCE_PATH.name}: {done.stderr.strip()[-2000:]}")
        install = ctypes.CDLL(out).pg_crash_install
    install.argtypes, install.restype = [ctypes.c_int], ctypes.c_int
    return install


def why_not() -> str | None:
    """Why :func:`installer` gave None (after it was called), else None."""
    return _why_not


@dataclass(frozen=True)
class NativeFrame:
    """One native frame of the crashing thread, innermost first.

    ``object`` is the shared object or executable holding ``address`` ("" when no mapping held it),
    ``offset`` the address in that object as ``addr2line``/``objdump`` take it; ``function`` and
    ``function_offset`` come from its symbol table (None when it has no symbol there); ``file``,
    ``line`` and ``inlined`` from its debug info (None without): ``inlined`` is the function
    ``addr2line`` names at that line where it is not ``function`` (a function inlined there, or
    the demangled name).
    """

    address: int
    object: str = ""
    offset: int | None = None
    function: str | None = None
    function_offset: int | None = None
    file: str | None = None
    line: int | None = None
    inlined: str | None = None

    @property
    def name(self) -> str | None:
        """``function`` without a compiler clone's suffix: "string_at.lto_priv.0", "f.cold",
        "f.part.0" are "string_at", "f", "f" (the name to look for in a report)."""
        return self.function.split(".", 1)[0] if self.function else None

    def __str__(self) -> str:
        where = self.function or "??"
        if self.function and self.function_offset is not None:
            where += f"+{self.function_offset:#x}"
        if self.inlined:
            where += f" in {self.inlined}"
        if self.file:
            where += f" at {self.file}:{self.line}"
        obj = os.path.basename(self.object) if self.object else "not in a mapped file"
        if self.offset is not None:
            obj += f"+{self.offset:#x}"
        return f"{self.address:#014x} {where} ({obj})"


@dataclass(frozen=True)
class Crash:
    """What the child's handler wrote: raw addresses and the maps lines that hold them."""

    signal: int
    code: int
    address: int
    pc: int
    thread: int
    frames: tuple[int, ...]
    maps: tuple[tuple[int, int, str, int, str], ...]   # (start, end, perms, file offset, path)
    whole: bool                                           # the "end" line arrived

    def mapping(self, address: int) -> tuple[int, int, str, int, str] | None:
        for m in self.maps:
            if m[0] <= address < m[1]:
                return m
        return None


def split(text: str) -> tuple[Crash | None, str]:
    """(the native record in the fault pipe's ``text``, or None; the rest: faulthandler's text)."""
    if PREFIX not in text:
        return None, text
    ours, rest = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith(PREFIX):
            ours.append(line[len(PREFIX):].rstrip("\n"))
        else:
            rest.append(line)
    try:
        crash = _parse(ours)
    except (ValueError, IndexError, KeyError):
        crash = None
    return (crash, "".join(rest)) if crash else (None, text)   # cut short mid-line, or not ours: text


def _parse(lines: list[str]) -> Crash | None:
    head = lines[0].split()
    if head[0] != "signal":
        return None
    fields = dict(zip(head[::2], head[1::2]))
    frames, maps = [], []
    for line in lines[1:]:
        kind, _, value = line.partition(" ")
        if kind == "frame":
            frames.append(int(value, 16))
        elif kind == "map":
            span, perms, offset, _dev, _inode, *path = value.split(None, 5)
            start, end = (int(x, 16) for x in span.split("-"))
            maps.append((start, end, perms, int(offset, 16), path[0] if path else ""))
    return Crash(int(fields["signal"]), int(fields["code"]), int(fields["address"], 16),
                 int(fields["pc"], 16), int(fields["thread"]), tuple(frames), tuple(maps),
                 lines[-1] == "end")


def fault_region(crash: Crash) -> str:
    """Where a SIGSEGV/SIGBUS address lies: NULL, near NULL, in which mapping, or in none ("" for
    other signals, whose address is the faulting instruction's)."""
    if crash.signal not in (signal.SIGSEGV, signal.SIGBUS):
        return ""
    addr = crash.address
    if addr == 0:
        return "NULL"
    if addr < NEAR_NULL:
        return f"near NULL ({addr:#x} bytes past it: a field of a NULL struct pointer?)"
    m = crash.mapping(addr)
    if m is None:
        return "not in any mapping (freed, unmapped or a wild pointer)"
    name = m[4] or "anonymous memory"
    return f"inside {name} ({m[2]}, at {addr - m[0]:#x} into the mapping at {m[0]:#x})"


def symbolize(crash: Crash) -> tuple[NativeFrame, ...]:
    """Each frame's object, ELF address, symbol and, with debug info and addr2line, file:line."""
    placed = []   # (address, object, ELF address, the address to look up)
    for address in crash.frames:
        m = crash.mapping(address)
        if m is None or not m[4].startswith("/"):
            placed.append((address, "", None, None))
            continue
        elf = _elf(m[4])
        vaddr = elf.vaddr(address - m[0] + m[3]) if elf else None
        # A return address points past its call: look up the call (the faulting pc is exact).
        at = None if vaddr is None else vaddr if address == crash.pc else vaddr - 1
        placed.append((address, m[4], vaddr, at))
    lines = _addr2line([(path, at) for _, path, _, at in placed if at is not None])
    frames = []
    for address, path, vaddr, at in placed:
        if at is None:
            frames.append(NativeFrame(address, path))
            continue
        symbol = _elf(path).symbol(at)
        function, function_offset = (symbol[0], vaddr - symbol[1]) if symbol else (None, None)
        source, file, line = lines.get((path, at), (None, None, None))
        if function is None:
            # addr2line's name: from debug info, or from a separate debug file's symbols. Not when
            # it is a symbol of ours that does not hold the address (addr2line names the nearest).
            if file or source not in _elf(path).names:
                function = source
            source = None
        frames.append(NativeFrame(address, path, vaddr, function, function_offset, file, line,
                                  source if source != function else None))
    return tuple(frames)


def describe(frames: tuple[NativeFrame, ...]) -> str:
    return "\n".join(f"  #{i:<2} {frame}" for i, frame in enumerate(frames))


# --- ELF: program headers (file offset -> address) and function symbols; 64-bit little-endian.

class _Elf:
    def __init__(self, loads: list[tuple[int, int, int]], symbols: list[tuple[int, int, str]]) -> None:
        self.loads = loads          # (file offset, address, size in the file) of each PT_LOAD
        self.symbols = symbols      # (address, size, name) of each function, by address
        self.names = {name for _, _, name in symbols}

    def vaddr(self, offset: int) -> int | None:
        for off, addr, size in self.loads:
            if off <= offset < off + size:
                return offset - off + addr
        return None

    def symbol(self, vaddr: int) -> tuple[str, int] | None:
        import bisect

        i = bisect.bisect_right(self.symbols, (vaddr, float("inf"))) - 1
        while i >= 0:   # the innermost function that holds vaddr (symbols may nest or alias)
            start, size, name = self.symbols[i]
            if start <= vaddr < start + max(size, 1):
                return name, start
            if vaddr - start > 1 << 24:
                break
            i -= 1
        return None


@functools.lru_cache(maxsize=64)
def _elf(path: str) -> _Elf | None:
    """The object's tables, or None. The path comes from the child: only regular files are read
    (a FIFO would block), and a malformed file is no object."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _read_elf(data)
    except (OSError, ValueError, IndexError, struct.error):
        return None


def _read_elf(data: Any) -> _Elf | None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    loads = []
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:   # PT_LOAD
            loads.append((p_offset, p_vaddr, p_filesz))
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    # The full symbol table where the object has one, else the dynamic one (exported names).
    for wanted in (2, 11):   # SHT_SYMTAB, SHT_DYNSYM
        table = next((s for s in sections if s[1] == wanted), None)
        if table is not None:
            break
    symbols = []
    if table is not None:
        strtab = sections[table[6]]
        names, names_end = strtab[4], strtab[4] + strtab[5]
        for _name, info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", data[table[4]:table[4] + table[5]]):
            if info & 0xF in (2, 10) and shndx and value:   # STT_FUNC, STT_GNU_IFUNC; defined here
                end = data.find(b"\0", names + _name, names_end)
                symbols.append((value, size, data[names + _name:end].decode("utf-8", "replace")))
    symbols.sort()
    return _Elf(loads, symbols)


def _addr2line(lookup: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[str | None, str | None, int | None]]:
    """{(object, address): (function, file, line)} for those addr2line knows (none without it)."""
    tool = shutil.which("addr2line")
    found: dict[tuple[str, int], tuple[str | None, str | None, int | None]] = {}
    if tool is None:
        return found
    by_object: dict[str, list[int]] = {}
    for path, addr in lookup:
        by_object.setdefault(path, []).append(addr)
    running = []
    for path, addrs in by_object.items():   # one addr2line per object, all at once
        try:
            running.append((addrs, subprocess.Popen([tool, "-f", "-C", "-e", path, *(hex(a) for a in addrs)],
                                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                    text=True), path))
        except OSError:
            pass
    for addrs, proc, path in running:
        try:
            out = proc.communicate(timeout=30)[0].splitlines()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            continue
        for k, addr in enumerate(addrs):
            if 2 * k + 1 >= len(out):
                break
            function, place = out[2 * k], out[2 * k + 1]
            file, _, line = place.partition(" ")[0].rpartition(":")
            known = file not in ("", "??") and line.isdigit() and int(line) > 0
            if known or function != "??":   # (a separate debug file may name it without a line)
                found[(path, addr)] = (None if function == "??" else function,
                                       file if known else None, int(line) if known else None)
    return found
