"""Every modelled field against the C compiler: offsetof/sizeof on each interpreter's own headers."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from pyguts import _compat
from pyguts.objects import layouts, structs

PROBED_VERSIONS = [(3, 10), (3, 11), (3, 12), (3, 13), (3, 14), (3, 15)]


def _pyenv_root() -> str:
    if os.environ.get("PYENV_ROOT"):
        return os.environ["PYENV_ROOT"]
    try:
        return subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.expanduser("~/.pyenv")


def _include_dir(version: tuple[int, int]) -> tuple[str, list[str]] | None:
    """(headers, extra compiler flags) of an installed CPython ``version``: the running one's, else
    pyenv's, else the system's (Debian's, inside the chroot `make test` provisions), else that chroot's
    seen from outside it (its multiarch pyconfig.h found after the host's own headers)."""
    if _compat.VERSION == version and not _compat.GIL_DISABLED:
        return sysconfig.get_paths()["include"], []
    name = "python%d.%d" % version
    pattern = os.path.join(_pyenv_root(), "versions", "%d.%d.*" % version, "include", name)
    found = sorted(p for p in glob.glob(pattern) if os.path.exists(os.path.join(p, "Python.h")))
    if found:
        return found[-1], []
    if os.path.exists(os.path.join("/usr/include", name, "Python.h")):
        return os.path.join("/usr/include", name), []
    cache = os.environ.get("PYGUTS_CACHE") or os.path.expanduser("~/.cache/pyguts")
    chroot = os.path.join(cache, "sid", "usr", "include")
    if os.path.exists(os.path.join(chroot, name, "Python.h")):
        return os.path.join(chroot, name), ["-idirafter", chroot]
    return None


def _probe_source(models: dict[str, type], state_bits, debug_offsets=None) -> str:
    lines = [
        "#define Py_BUILD_CORE 1   /* the internal headers: frozendict, _Py_DebugOffsets */",
        "#include <Python.h>",
        "#if PY_VERSION_HEX < 0x030B0000",
        "#include <longintrepr.h>",
        "#endif",
        "#if PY_VERSION_HEX >= 0x030F0000",
        "#include <internal/pycore_dict.h>",
        "#endif",
        "#if PY_VERSION_HEX >= 0x030E0000",
        "#include <internal/pycore_debug_offsets.h>",
        "#elif PY_VERSION_HEX >= 0x030D0000",
        "#include <internal/pycore_runtime.h>",
        "#endif",
        "#include <stdio.h>",
        "#include <string.h>",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "int main(void) {",
        '  printf("digit - %zu %zu\\n", (size_t)0, sizeof(digit));',
    ]
    for name, model in models.items():
        lines.append(f'  printf("{name} - 0 %zu\\n", sizeof({name}));')
        for flat, cpath in model._c_paths_.items():
            lines.append(f'  printf("{name} {flat} %zu %zu\\n", offsetof({name}, {cpath}), '
                         f"sizeof((({name} *)0)->{cpath}));")
    for bits in state_bits:
        lines += [
            "  { PyASCIIObject o; uint32_t w; memset(&o, 0, sizeof o);",
            f"    o.state.{bits.name} = (unsigned)-1; memcpy(&w, &o.state, sizeof w);",
            f'    printf("state {bits.name} %u 0\\n", (unsigned)w); }}',
        ]
    if debug_offsets is not None:
        lines.append('  printf("_Py_DebugOffsets - 0 %zu\\n", sizeof(_Py_DebugOffsets));')
        for entry in debug_offsets.names():
            lines.append(f'  printf("_Py_DebugOffsets {entry} %zu 8\\n", offsetof(_Py_DebugOffsets, {entry}));')
    lines += [
        "#if defined(Py_GIL_DISABLED)",
        '  printf("immortal - %llu 0\\n", (unsigned long long)_Py_IMMORTAL_REFCNT_LOCAL);',
        "#elif defined(_Py_IMMORTAL_REFCNT)",
        '  printf("immortal - %llu 0\\n", (unsigned long long)_Py_IMMORTAL_REFCNT);',
        "#elif defined(_Py_IMMORTAL_INITIAL_REFCNT)",
        '  printf("immortal - %llu 0\\n", (unsigned long long)_Py_IMMORTAL_INITIAL_REFCNT);',
        "#endif",
        "  return 0;", "}",
    ]
    return "\n".join(lines) + "\n"


def run_probe(include: str, models: dict[str, type], state_bits, tmp_path, defines=(), debug_offsets=None) -> dict:
    """Compile and run the probe; {(model, field): (offset, size)} plus 'state'/'immortal' rows, and
    '_Py_DebugOffsets' rows when ``debug_offsets`` (a layouts.DebugOffsetsRow) is given."""
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        pytest.skip("needs_cc: no C compiler to check layouts against offsetof (apt-get install gcc)")
    src = tmp_path / "probe.c"
    exe = tmp_path / "probe"
    src.write_text(_probe_source(models, state_bits, debug_offsets))
    build = subprocess.run([cc, "-std=gnu11", "-w", *defines, "-I", include, str(src), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        model, field, a, b = line.split()
        result[(model, field)] = (int(a), int(b))
    return result


def compare(models: dict[str, type], state_bits, rule, probe: dict, debug_offsets=None) -> list[str]:
    import ctypes

    wrong = []
    if debug_offsets is not None:   # the cookie (8 bytes), then one uint64_t per entry in the row's order
        names = debug_offsets.names()
        if probe[("_Py_DebugOffsets", "-")][1] != 8 + 8 * len(names):
            wrong.append(f"sizeof(_Py_DebugOffsets): C {probe[('_Py_DebugOffsets', '-')][1]}, "
                         f"pyguts {8 + 8 * len(names)}")
        wrong += [f"_Py_DebugOffsets.{name}: C offset {probe[('_Py_DebugOffsets', name)][0]}, pyguts {8 + 8 * i}"
                  for i, name in enumerate(names) if probe[("_Py_DebugOffsets", name)][0] != 8 + 8 * i]
    for name, model in models.items():
        got = ctypes.sizeof(model)
        if probe[(name, "-")][1] != got:
            wrong.append(f"sizeof({name}): C {probe[(name, '-')][1]}, pyguts {got}")
        for flat in model._c_paths_:
            field = getattr(model, flat)
            want = probe[(name, flat)]
            if (field.offset, field.size) != want:
                wrong.append(f"{name}.{flat} (C {model._c_paths_[flat]}): C offset/size {want}, "
                             f"pyguts {(field.offset, field.size)}")
    for bits in state_bits:
        want = probe[("state", bits.name)][0]
        if want != ((1 << bits.width) - 1) << bits.shift:
            wrong.append(f"state.{bits.name}: C mask {want:#x}, pyguts shift {bits.shift} width {bits.width}")
    immortal = probe.get(("immortal", "-"))
    if immortal is not None and rule.immortal == "none":
        wrong.append(f"headers define an immortal refcount {immortal[0]:#x}; table says none")
    if immortal is not None and rule.immortal == "equal" and immortal[0] != rule.value:
        wrong.append(f"immortal refcount: C {immortal[0]:#x}, table {rule.value:#x}")
    if immortal is not None and rule.immortal == "sign32" and not immortal[0] & (1 << 31):
        wrong.append(f"immortal refcount {immortal[0]:#x} lacks bit 31")
    return wrong


CASES = [(v, build) for v in PROBED_VERSIONS for build in ("default", "freethreaded") if v >= (3, 13) or build == "default"]


@pytest.mark.parametrize("version,build", CASES, ids=["%d.%d%s" % (*v, "t" * (b != "default")) for v, b in CASES])
def test_table_rows_match_offsetof(version, build, tmp_path):
    """The table's rows for each installed interpreter equal its headers, free-threaded (3.13t+) too,
    and so does the table's layout of CPython's own _Py_DebugOffsets (3.13+)."""
    found = _include_dir(version)
    if found is None:
        pytest.skip(f"needs_cpython_headers: CPython {version[0]}.{version[1]} is not installed (no headers found under pyenv, "
                    "/usr/include or the Debian chroot of `make test`)")
    include, flags = found
    models = structs.build_models(version, build)
    bits = layouts.state_bits_for(version, build)
    defines = ["-DPy_GIL_DISABLED=1"] if build == "freethreaded" else []
    debug = layouts.debug_offsets_row_for(version) if version >= (3, 13) else None
    probe = run_probe(include, models, bits, tmp_path, [*defines, *flags], debug)
    assert probe[("digit", "-")][1] == 4
    assert compare(models, bits, layouts.refcount_rule_for(version, build), probe, debug) == []


@pytest.mark.every_python
def test_running_interpreter_models_match_offsetof(tmp_path):
    """The models pyguts uses right now equal this interpreter's own headers."""
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        pytest.skip(f"needs_cpython_headers: no Python.h under {include} (install the interpreter's development headers)")
    defines = ["-DPy_GIL_DISABLED=1"] if _compat.GIL_DISABLED else []
    bits = layouts.state_bits_for(_compat.VERSION, structs.BUILD)
    debug = layouts.debug_offsets_row_for(_compat.VERSION) if _compat.VERSION >= (3, 13) else None
    probe = run_probe(include, structs.MODELS, bits, tmp_path, defines, debug)
    assert probe[("digit", "-")][1] == sys.int_info.sizeof_digit
    rule = layouts.refcount_rule_for(_compat.VERSION, structs.BUILD)
    assert compare(structs.MODELS, bits, rule, probe, debug) == []


def test_compiler_verified_names_only_what_this_probe_checks():
    """layouts.COMPILER_VERIFIED (shown by `pyguts doctor`) claims no version the probe above cannot check."""
    assert layouts.COMPILER_VERIFIED <= set(CASES)
