"""Loading allocators in fresh processes: the jemalloc static-TLS trap and its two fixes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import needs  # tests/needs.py
import pytest

from pyguts.alloc import STATIC_TLS_TUNABLE
from pyguts.alloc.registry import static_tls_environ

pytestmark = needs.library("jemalloc")

_PROBE = """
import json, sys
import numpy  # loaded first, as in real use: its own libraries take static TLS too
import pyguts.alloc as alloc
from pyguts.errors import AllocatorUnavailable
out = {"available": alloc.available()}
try:
    a = alloc.zeros(1000, allocator="jemalloc")
    out["jemalloc"] = [a.nbytes, alloc.stats("jemalloc")["allocated"] >= a.nbytes]
except AllocatorUnavailable as exc:
    out["error"] = [type(exc).__name__, isinstance(exc, OSError), str(exc)]
print(json.dumps(out))
"""


def _probe(**extra_env: str) -> dict:
    """Run the probe in a child whose environment has neither fix unless ``extra_env`` adds one."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    env.update(extra_env)
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_without_the_fix_jemalloc_raises_with_the_exact_fix():
    out = _probe()
    assert "jemalloc" not in out, "Debian's libjemalloc2 loaded without the fix: the trap this guards moved"
    kind, is_oserror, message = out["error"]
    assert kind == "AllocatorUnavailable" and is_oserror
    assert "cannot allocate memory in static TLS block" in message
    assert f"GLIBC_TUNABLES={STATIC_TLS_TUNABLE}" in message and "LD_PRELOAD" in message
    assert "jemalloc" not in out["available"]
    assert {"mimalloc", "tcmalloc", "libc", "mmap"} <= set(out["available"])


def test_glibc_tunable_at_start_fixes_it():
    out = _probe(GLIBC_TUNABLES=STATIC_TLS_TUNABLE)
    assert "error" not in out, out.get("error")
    assert out["jemalloc"] == [8000, True] and "jemalloc" in out["available"]


def test_ld_preload_fixes_it():
    out = _probe(LD_PRELOAD="libjemalloc.so.2")
    assert "error" not in out, out.get("error")
    assert out["jemalloc"][0] == 8000


def test_ensure_static_tls_restarts_a_script_once_so_jemalloc_loads():
    code = ("import os, pyguts.alloc as alloc\n"
            "print('start', os.getpid(), flush=True)\n"
            "alloc.ensure_static_tls()\n" + _PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "PYGUTS_STATIC_TLS_REEXEC")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:2]] == ["start", "start"]  # once before the restart, once after
    assert lines[0].split()[1] == lines[1].split()[1]  # execve: the same process, replaced
    assert json.loads(lines[2])["jemalloc"][0] == 8000
    marked = dict(env, PYGUTS_STATIC_TLS_REEXEC="1")  # already restarted once: never loops
    proc = subprocess.run([sys.executable, "-c", code], env=marked, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("start ") and "error" in json.loads(lines[1])


_CONF_PROBE = """
import json, os
import pyguts.alloc as alloc
alloc.load("jemalloc")
print(json.dumps(os.environ.get("MALLOC_CONF")))
"""


@pytest.mark.parametrize("users, running, applied", [
    ("confirm_conf:true", False, ["tcache_max:8388608", "confirm_conf:true"]),   # pyguts' option, then the user's
    ("confirm_conf:true,tcache_max:65536", False, ["tcache_max:8388608", "confirm_conf:true", "tcache_max:65536"]),
    ("confirm_conf:true", True, ["confirm_conf:true"]),   # a jemalloc already running keeps its own options
], ids=["pyguts' option", "the user's MALLOC_CONF wins", "LD_PRELOADed jemalloc untouched"])
def test_jemalloc_start_up_options_for_pyguts_own_jemalloc_only(users, running, applied):
    """jemalloc applies its MALLOC_CONF settings in order (the last wins) and, with confirm_conf,
    says so on stderr as it starts: pyguts' option goes first, and only into a jemalloc it starts."""
    env = {k: v for k, v in static_tls_environ().items() if k not in ("MALLOC_CONF", "LD_PRELOAD")}
    env["MALLOC_CONF"] = users
    if running:
        env["LD_PRELOAD"] = "libjemalloc.so.2"
    proc = subprocess.run([sys.executable, "-c", _CONF_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == users   # MALLOC_CONF is as the user left it
    assert re.findall(r"-- Set conf value: (\S+)", proc.stderr) == applied, proc.stderr
