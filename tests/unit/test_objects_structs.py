"""ctypes models: names, offsets, model choice, ownership, and refusal of unknown layouts."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import textwrap

import pytest

from pyguts import _compat
from pyguts.objects import layouts, structs
from pyguts.objects.structs import build_models, model_for, struct_of

pytestmark = pytest.mark.every_python

default_build = pytest.mark.skipif(_compat.GIL_DISABLED, reason="offsets quoted for the default (GIL) build")


def test_every_public_model_is_exported_and_cites_its_header():
    for name in layouts.PUBLIC_MODELS:
        model = getattr(structs, name)
        assert issubclass(model, ctypes.Structure)
        assert model._header_.startswith("Include/")
        assert model.ob_type.offset == structs.PyObject.ob_type.offset


@default_build
def test_bytes_offsets_on_64bit():
    M = structs.PyBytesObject
    got = [getattr(M, f).offset for f in ("ob_refcnt", "ob_type", "ob_size", "ob_shash", "ob_sval")]
    assert got == [0, 8, 16, 24, 32]
    assert M._c_paths_["ob_refcnt"] == "ob_base.ob_base.ob_refcnt"


@pytest.mark.parametrize("version,field,offset", [
    ((3, 11), "ob_digit", 24), ((3, 12), "lv_tag", 16), ((3, 12), "ob_digit", 24),
])
def test_int_layout_change_at_312(version, field, offset):
    model = build_models(version)["PyLongObject"]
    assert getattr(model, field).offset == offset
    assert ("lv_tag" in model._c_paths_) == (version >= (3, 12))


def test_str_data_start_moves_between_311_and_312():
    assert ctypes.sizeof(build_models((3, 11))["PyASCIIObject"]) == 48
    assert ctypes.sizeof(build_models((3, 12))["PyASCIIObject"]) == 40


def test_314_tuple_items_move_and_free_threaded_header_is_32_bytes():
    assert build_models((3, 13))["PyTupleObject"].ob_item.offset == 24
    assert build_models((3, 14))["PyTupleObject"].ob_item.offset == 32
    for version in ((3, 13), (3, 14)):
        ft = build_models(version, "freethreaded")
        assert ctypes.sizeof(ft["PyObject"]) == 32
        assert ft["PyObject"].ob_ref_shared.offset == 16


@pytest.mark.parametrize("version", [(3, 9), (3, 16), (2, 7)])
def test_table_refuses_uncovered_versions(version):
    with pytest.raises(LookupError, match="outside the layout table"):
        build_models(version)


@pytest.mark.parametrize("obj,model", [
    (b"x", "PyBytesObject"), (bytearray(b"x"), "PyByteArrayObject"), (10**30, "PyLongObject"),
    (True, "PyLongObject"), (1.5, "PyFloatObject"), (1j, "PyComplexObject"), ((1,), "PyTupleObject"),
    ([1], "PyListObject"), ({}, "PyDictObject"), (frozenset(), "PySetObject"), ("abc", "PyASCIIObject"),
    ("héllo", "PyCompactUnicodeObject"), (int, "PyTypeObject"), (object(), "PyObject"),
    (memoryview(b"x"), "PyVarObject"),
])
def test_model_for(obj, model):
    assert model_for(obj).__name__ == model


def test_subclass_instances_use_their_builtin_base_model():
    class B(bytes):
        pass

    s = struct_of(B(b"abc"))
    assert type(s).__name__ == "PyBytesObject" and s.ob_size == 3


def test_struct_of_reads_live_fields_and_keeps_the_object_alive():
    s = struct_of(bytes(range(5)) + b"tail")  # no other reference to the bytes exists
    gc.collect()
    assert s.ob_type == id(bytes)
    assert s.ob_size == 9
    assert ctypes.string_at(ctypes.addressof(s) + structs.PyBytesObject.ob_sval.offset, 9) == bytes(range(5)) + b"tail"
    held = sys.getrefcount(s._pyguts_owner)
    assert held == 2  # the struct instance alone (+ getrefcount's argument)


def _run(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``pyguts`` is a bare package (its __init__, which
    imports structs, does not run), so the code can patch facts before pyguts.objects.structs loads."""
    prelude = textwrap.dedent(f"""
        import sys, types
        pkg = types.ModuleType("pyguts")
        pkg.__path__ = [{os.path.dirname(structs.__file__)!r}]
        sys.modules["pyguts"] = pkg
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True)


def test_an_interpreter_older_than_the_table_is_refused():
    done = _run("""
        import pyguts._compat as c
        c.VERSION, c.BUILD_NAME = (3, 9), "3.9"
        try:
            import pyguts.objects.structs
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    assert "LayoutMismatchError" in done.stdout and "3.9" in done.stdout and "starts at 3.10" in done.stdout, \
        done.stderr


#: Run in a child: the layout tables end one minor version before the running interpreter (its own
#: rows, state bits, refcount rule and debug-offsets layout removed, the ones before extended), then
#: the real pyguts/__init__ imports. Prints what was enabled and refused, and whether the engines work.
PRETEND_OLDER_TABLE = """
    import ctypes, dataclasses, json
    import pyguts._compat as C, pyguts.objects.layouts as L
    prev = (C.VERSION[0], C.VERSION[1] - 1)

    def cut(rows):
        return tuple(dataclasses.replace(r, until=None) if r.until == C.VERSION else r
                     for r in rows if r.since <= prev)

    L.NEWEST = prev
    L.ROWS, L.STATE_BITS, L.REFCOUNT_RULES, L.DEBUG_OFFSETS = map(cut, (L.ROWS, L.STATE_BITS, L.REFCOUNT_RULES,
                                                                     L.DEBUG_OFFSETS))
    del sys.modules["pyguts"]
    import pyguts, pyguts.leaks
    from pyguts.errors import LayoutMismatchError
    out = {}
    try:
        from pyguts.objects import structs
        out["refused"] = structs.REFUSED
        out["enabled"] = {name: [ctypes.sizeof(m), *[(f, getattr(m, f).offset, getattr(m, f).size)
                                                      for f in m._c_paths_]]
                          for name, m in structs.MODELS.items() if name not in structs.REFUSED}
        for name in structs.REFUSED:
            try:
                getattr(structs, name).from_address
            except LayoutMismatchError as exc:
                out.setdefault("refusals", []).append(str(exc))
        out["bytes view"] = bytes(pyguts.view(b"abc")[-4:]).hex()
    except LayoutMismatchError as exc:
        out["error"] = str(exc)
    out["isolate"] = pyguts.isolate(sum, [1, 2]).value
    kept = []
    out["leaks"] = pyguts.leaks.check(kept.append, object()).leaking
    print(json.dumps(out))
"""


@pytest.mark.skipif((_compat.VERSION[0], _compat.VERSION[1] - 1) < layouts.OLDEST, reason="no older rows to pretend with")
def test_a_newer_interpreter_gets_exactly_the_models_the_live_checks_confirm():
    import json

    done = _run(PRETEND_OLDER_TABLE)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    # Never a wrong model: what is enabled equals this version's compiler-verified rows.
    for name, layout in out.get("enabled", {}).items():
        model = structs.MODELS[name]
        assert layout == [ctypes.sizeof(model), *[[f, getattr(model, f).offset, getattr(model, f).size]
                                                  for f in model._c_paths_]], name
    # Engines that read no object memory work either way.
    assert out["isolate"] == 3 and out["leaks"] is True
    if _compat.VERSION == (3, 15):
        # 3.15 grew bytearray and type objects by one pointer; the rest of the 3.14 rows still hold.
        assert set(out["refused"]) == {"PyByteArrayObject", "PyTypeObject"}
        assert "PyByteArrayObject" in out["refusals"][0] and "bytearray.__basicsize__" in out["refusals"][0]
        assert out["bytes view"] == "61626300"
    elif _compat.VERSION == (3, 14) and not _compat.GIL_DISABLED:
        # 3.14 split the refcount word: with the object header unconfirmed, nothing reads memory.
        assert "the object header" in out["error"]
    else:
        assert "error" in out or out["refused"], out   # PyTypeObject at least can never be confirmed


def test_a_wrong_row_is_caught_by_the_live_checks_not_used():
    # Drop ob_shash from the bytes row: every later field moves by 8 and the live checks must refuse.
    done = _run("""
        import dataclasses
        import pyguts.objects.layouts as L
        L.ROWS = tuple(dataclasses.replace(r, fields=tuple(m for m in r.fields if m.name != "ob_shash"))
                       if r.model == "PyBytesObject" else r for r in L.ROWS)
        try:
            import pyguts.objects.structs
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    assert "LayoutMismatchError" in done.stdout, done.stderr
    assert "bytes.__basicsize__" in done.stdout


def test_struct_of_is_read_only_unless_asked():
    b = bytes(bytearray(b"abc"))
    s = struct_of(b)
    with pytest.raises(AttributeError, match="read-only"):
        s.ob_size = 1
    assert type(s).ob_size.offset == structs.PyBytesObject.ob_size.offset and type(s).ob_size.size == 8
    assert isinstance(s, structs.PyBytesObject)
    t = (1, 2)
    assert struct_of(t).ob_item == (id(1),)  # arrays come back as copies, not live memory
    assert isinstance(struct_of({1}).smalltable, tuple)
    w = struct_of(b, writable=True)
    w.ob_shash = -1
    assert type(w) is structs.PyBytesObject
