"""How reports and outcomes look where users meet them: one short line in a REPL, HTML in Jupyter (issue 16)."""

from __future__ import annotations

import ctypes
import re
import time
import xml.etree.ElementTree as ET

import pytest

from pyguts import leaks
from pyguts.isolation import Outcome, isolate
from pyguts.leaks.report import KIND_HELP, GrownObject, LeakReport, Signal

#: A hand-made report with every part filled and text that must be escaped.
REPORT = LeakReport(
    function="f<x>", leaking=True, decided=True, kinds=("reference", "fd"), windows=(64, 128, 256, 512, 1024),
    calls=1990, elapsed_ms=12.5,
    signals=(Signal("fds", "fd", (64, 128, 256), 0, 1.0, "leak"),
             Signal("blocks", "block", (0, 1, 0), 2.0, 0.0, "clean"),
             Signal("refcount:<obj>", "ref", (64, 128, 256), 0, 1.0, "leak"),
             Signal("gc:list", "object", (0, 0, 0), 1.0, 0.0, "clean")),
    grown_objects=(GrownObject("<Thing & co>", "Thing", 0x1234, 1.0),),
    notes=("growth <stopped> at 300 calls",))


def _html(text: str) -> ET.Element:
    """The HTML parsed as XML: well-formed, every tag closed, every & and < escaped."""
    return ET.fromstring(text)


def _text(element: ET.Element) -> str:
    return "".join(element.itertext())


def test_leak_report_repr_is_one_line_with_verdict_kinds_and_calls():
    assert repr(REPORT) == "<LeakReport f<x>: LEAKS (reference, fd), 1984 calls>"
    clean = LeakReport("g", False, True, (), (64, 128), 200, 1.0)
    undecided = LeakReport("h", False, False, (), (64,), 80, 2000.0)
    assert repr(clean) == "<LeakReport g: no leak found, 192 calls>"
    assert repr(undecided) == "<LeakReport h: no leak found (undecided), 64 calls>"
    assert str(REPORT).startswith("pyguts.leaks: f<x> LEAKS")  # str() keeps the full text


def test_leak_report_html_shows_verdict_kinds_signals_objects_and_notes():
    page = REPORT._repr_html_()
    root = _html(page)
    text = _text(root)
    assert "pyguts.leaks: f<x>" in text and "LEAKS (reference, fd)" in text
    assert "1984 calls measured in 5 windows (1990 with warm-up)" in text
    for kind in REPORT.kinds:
        assert KIND_HELP[kind] in text
    rows = [[_text(td) for td in tr.iter("td")] for tr in root.iter("tr")]
    signal_rows = {r[0]: r for r in rows if len(r) == 6}
    # the same signals as the text report: clean gc:/refcount: ones are counted, not listed
    assert sorted(signal_rows) == ["blocks", "fds", "refcount:<obj>"]
    assert signal_rows["fds"] == ["fds", "+1", "fd", "[64, 128, 256]", "0", "leak"]
    assert "1 more signals" in text
    assert ["Thing: <Thing & co>", "0x1234", "+1"] in rows
    assert "note: growth <stopped> at 300 calls" in text
    assert "<stopped>" not in page and "&lt;stopped&gt;" in page


def test_leak_report_from_a_real_check_displays_in_jupyter():
    formatters = pytest.importorskip("IPython.core.formatters", reason="needs IPython (pip install 'cpython-guts[test]')")
    kept = []
    thing = object()
    report = leaks.check(kept.append, thing)  # one more reference to thing per call
    kept.clear()
    assert report.leaking, str(report)
    assert re.fullmatch(r"<LeakReport \S+: LEAKS \([a-z, -]*reference[a-z, -]*\), \d+ calls>", repr(report))
    data, _ = formatters.DisplayFormatter().format(report)
    assert data["text/plain"] == repr(report)
    assert "LEAKS" in _text(_html(data["text/html"]))


def _crash():
    ctypes.string_at(0)


def _fail():
    raise ValueError("bad <input> & more")


#: (function, args, status, what the one-line repr says after the status, text the HTML must show)
OUTCOMES = (
    (pow, (2, 10), "ok", r"1024", ["isolate: ok", "1024"]),
    (_fail, (), "raised", r"ValueError: bad <input> & more", ["ValueError: bad <input> & more", "child traceback",
                                                              'raise ValueError("bad <input> & more")']),
    (_crash, (), "crashed", r"SIGSEGV \(signal 11\)", ["SIGSEGV", "child faulthandler output", "Segmentation fault"]),
)


@pytest.mark.crash_prone
@pytest.mark.parametrize("fn, args, status, said, shown", OUTCOMES, ids=[o[2] for o in OUTCOMES])
def test_outcome_repr_and_html(fn, args, status, said, shown):
    out = isolate(fn, *args, timeout=60)
    assert out.status == status, out.describe()
    assert re.fullmatch(rf"<Outcome {status}: {said}, pid {out.pid}, \d+ ms>", repr(out)), repr(out)
    root = _html(out._repr_html_())
    text = _text(root)
    for part in shown:
        assert part in text, (part, text)
    assert out.describe().splitlines()[0] in text
    table = {_text(tr.find("th")): _text(tr.find("td")) for tr in root.iter("tr")}
    assert table["status"] == status and table["pid"] == str(out.pid)
    if status == "crashed":
        assert table["signal"] == "11 (SIGSEGV)"


def test_outcome_repr_of_a_timeout_and_of_a_long_multiline_message():
    slow = isolate(time.sleep, 30, timeout=0.5)
    assert slow.status == "timeout"
    assert re.fullmatch(rf"<Outcome timeout: killed after 0.5s, pid {slow.pid}, \d+ ms>", repr(slow))
    made = Outcome("raised", exc_type="RuntimeError", exc_message="line one\nline two " + "x" * 200, pid=7)
    line = repr(made)
    assert "\n" not in line and len(line) < 130 and line.startswith("<Outcome raised: RuntimeError: line one line two")
    assert repr(Outcome("lost", pid=9)) == "<Outcome lost, pid 9, 0 ms>"


def test_outcome_shows_the_childs_output_folded_unless_it_failed():
    ok = Outcome("ok", value=1, stdout="hello <world>\n", pid=3)
    page = ok._repr_html_()
    assert "<details><summary>child stdout" in page and "hello &lt;world&gt;" in page
    crashed = Outcome("crashed", signal=11, signal_name="SIGSEGV", stderr="boom\n", pid=4)
    assert "<details open=\"\"><summary>child stderr" in crashed._repr_html_()
    _html(page)
    _html(crashed._repr_html_())
