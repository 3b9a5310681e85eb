"""`pyguts inspect`, in-process and through `python -m pyguts` (the tour: test_tour.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyguts import _compat
from pyguts.cli import main


def _fields(text: str) -> dict[str, tuple[int, str]]:
    """{field: (offset, rest of the line)} from inspect's table."""
    out = {}
    for line in text.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            out[parts[2]] = (int(parts[0]), line)
    return out


@pytest.mark.every_python
@pytest.mark.skipif(_compat.GIL_DISABLED, reason="offsets quoted for the default build")
def test_inspect_hello_world_through_python_m():
    done = subprocess.run([sys.executable, "-m", "pyguts", "inspect", "b'Hello, world!'"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    fields = _fields(done.stdout)
    assert [(name, fields[name][0]) for name in ("ob_refcnt", "ob_type", "ob_size", "ob_shash", "ob_sval")] == [
        ("ob_refcnt", 0), ("ob_type", 8), ("ob_size", 16), ("ob_shash", 24), ("ob_sval", 32)]
    assert " 13 " in fields["ob_size"][1] and "len = 13" in fields["ob_size"][1]
    assert "<class 'bytes'>" in fields["ob_type"][1]
    assert "b'Hello, world!'" in fields["ob_sval"][1]


def test_inspect_json(capsys):
    assert main(["inspect", "--json", "(1, 2)"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "PyTupleObject"
    names = [f["name"] for f in record["fields"]]
    assert names[:3] == ["ob_refcnt", "ob_type", "ob_size"] and names[-1] == "ob_item"


def test_inspect_bad_expression_exits_2(capsys):
    assert main(["inspect", "1 +"]) == 2
    assert "cannot evaluate" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_console_script_arranges_static_tls_for_jemalloc():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run([sys.executable, "-m", "pyguts", "tour", "--step", "jemalloc"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    if "cannot open shared object" in done.stdout or "apt-get install" in done.stdout:
        pytest.skip("needs_jemalloc: libjemalloc2 is not installed")
    assert "jemalloc stats.allocated" in done.stdout and "'pyguts-jemalloc'" in done.stdout, done.stdout
