"""isolate(trivial) round trip against multiprocessing (fork) and a fresh interpreter.

What one isolated call costs, measured the way a user pays it: one fresh process per call.
Baseline: a bare ``os.fork`` + pipe + ``waitpid`` round trip (the floor any fork-based tool pays in
this process). Candidates: ``isolate`` (goal, issue 17: within 1.2x the floor), a ``fork``-context
``Process`` with a ``Pipe`` for the result, ``multiprocessing.get_context("fork").Pool(1)`` created,
``apply``d once and closed for every call (the multiprocessing way to get the same per-call
isolation), and ``subprocess.run`` of ``python -c pass``. A reused pool is shown for scale only: it
forks once, so it isolates nothing.

The native crash handler's cost (issue 18: within 1.05x): the same round trip with the handler
switched off, as isolate ran before it, against the default, in one interleaved comparison.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

from pyguts.isolation import isolate, native


#: The trivial function: a builtin, so multiprocessing can pickle it by name from this
#: module (loaded by run.py without a sys.modules entry) and every contender runs the same call.
_trivial = int


def _bare_fork() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"x")
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)


def _send_trivial(conn) -> None:
    conn.send(_trivial())
    conn.close()


def run(h) -> None:
    ctx = multiprocessing.get_context("fork")

    def pool_per_call() -> None:
        with ctx.Pool(1) as pool:
            pool.apply(_trivial)

    def process_and_pipe() -> None:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_send_trivial, args=(child,))
        proc.start()
        child.close()
        parent.recv()
        proc.join()
        parent.close()

    def python_c_pass() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    h.compare("isolate round trip", ("bare os.fork+pipe+waitpid (floor)", _bare_fork), {
        "pyguts isolate(trivial)": lambda: isolate(_trivial),
        "mp fork Process+Pipe": process_and_pipe,
        "mp fork Pool(1).apply, pool per call": pool_per_call,
        "subprocess python -c pass": python_c_pass,
    }, repeat=15, goal={"pyguts isolate(trivial)": 1.2})

    def without_native_handler() -> None:
        saved = native._install, native._why_not
        native._install, native._why_not = None, "switched off by the benchmark"
        try:
            isolate(_trivial)
        finally:
            native._install, native._why_not = saved

    native.installer()  # (built before timing)
    h.compare("isolate: native crash handler", ("without the handler (as before issue 18)", without_native_handler),
              {"with it (the default)": lambda: isolate(_trivial)}, repeat=61,   # (one call a sample:
              goal={"with it (the default)": 1.05})                               # a 5% goal needs many)
    # Last, and apart: a live pool keeps threads in this process, and forking a threaded
    # process is what the others must not do.
    reused = ctx.Pool(1)
    try:
        h.compare("isolate vs a reused pool",
                  ("mp fork Pool reused (no isolation)", lambda: reused.apply(_trivial)),
                  {"pyguts isolate(trivial)": lambda: isolate(_trivial)}, repeat=7)
    finally:
        reused.close()
        reused.join()
