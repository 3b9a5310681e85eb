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
    # 3.14 splits the refcount word (ob_overflow, ob_flags) and caches the hash (ob_hash)
    assert names[0] == "ob_refcnt" and names[-1] == "ob_item"
    assert names.index("ob_type") < names.index("ob_size") < names.index("ob_item")


def test_inspect_bad_expression_exits_2_saying_so_on_stderr(capsys):
    assert main(["inspect", "1 +"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("pyguts inspect: cannot evaluate '1 +': SyntaxError")


def test_inspect_json_of_a_bad_expression_is_still_json(capsys):
    assert main(["inspect", "--json", "undefined_name"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": captured.err.strip().removeprefix("pyguts inspect: ")}
    assert "NameError" in captured.err


def test_inspect_evaluates_with_numpy_as_np_and_pyguts(capsys):
    assert main(["inspect", "np.arange(3)"]) == 0
    assert "<class 'numpy.ndarray'>" in capsys.readouterr().out
    assert main(["inspect", "--json", "(numpy.float64(1), pyguts.refcount)"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "PyTupleObject"


def test_inspect_help_names_what_the_expression_can_use(capsys):
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "np (numpy), numpy (numpy), pyguts (pyguts)" in text and "builtins" in text


@pytest.mark.parametrize("expr", ["float('nan')", "float('-inf')", "[1.5, 'two', None]"])
def test_inspect_json_is_strict_json(capsys, expr):
    assert main(["inspect", "--json", expr]) == 0

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    record = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert record["fields"][0]["name"] == "ob_refcnt"


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


def test_inspect_svg_writes_a_diagram_and_still_prints_the_table(capsys, tmp_path):
    import xml.etree.ElementTree as ET

    path = tmp_path / "hello.svg"
    assert main(["inspect", "(b'Hello, world!', 1000)", "--svg", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ob_item" in _fields(out) and f"to {path}" in out.splitlines()[-1]
    texts = [t.text for t in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert "ob_sval" in texts and "ob_item[1]" in texts
    assert any(t.startswith("type bytes at 0x") for t in texts) and any(t.startswith("int at 0x") for t in texts)


def test_inspect_svg_with_json_keeps_stdout_json(capsys, tmp_path):
    assert main(["inspect", "--json", "b'ab'", "--svg", str(tmp_path / "d.svg")]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["model"] == "PyBytesObject" and "wrote a memory diagram" in captured.err
    assert record["svg"]["path"] == str(tmp_path / "d.svg") and record["svg"]["boxes"] >= 2
    assert (tmp_path / "d.svg").read_text(encoding="utf-8").startswith("<svg")


def test_inspect_svg_to_an_unwritable_path_exits_2(capsys, tmp_path):
    assert main(["inspect", "1", "--svg", str(tmp_path / "missing" / "d.svg")]) == 2
    captured = capsys.readouterr()
    assert "ob_refcnt" in captured.out and "cannot write the diagram" in captured.err


def test_inspect_json_with_an_unwritable_svg_path_carries_the_error(capsys, tmp_path):
    assert main(["inspect", "--json", "b'ab'", "--svg", str(tmp_path / "missing" / "d.svg")]) == 2
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["model"] == "PyBytesObject" and record["error"].startswith("cannot write the diagram")
    assert "svg" not in record and "cannot write the diagram" in captured.err
