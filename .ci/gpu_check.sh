#!/usr/bin/env bash
# .ci/gpu_check.sh (`make gpu-check`): one-shot check of pyguts' GPU layer (gpu_kernels/*.cu via CuPy
# RawModule, numba.cuda, pyguts.device) on a machine with an NVIDIA GPU. Every step has a timeout; a
# failing step does not stop the others; the last lines are a summary table.
#
#   WITH A REGISTRY (once per checkout; `make gpu-check` does it when .gpukit/whl is missing):
#       bash .ci/gpu_check.sh --prepare .
#     adds /.gpukit/ to .git/info/exclude and downloads into .gpukit/ the few wheels an offline GPU
#     machine lacks (cffi + pycparser, numba-cuda as a fallback) plus the CPython 3.12 headers (used
#     only if that machine has no Python.h). About 3 MB.
#   ON THE GPU MACHINE (from the checkout root, with .gpukit/ carried along; ~3-5 min, hard cap
#     GPU_CHECK_BUDGET=480 s): `make gpu-check` (or bash .ci/gpu_check.sh)
#     writes $OUT/gpu_report.txt (everything) and $OUT/gpu_bench.json (the benchmark rows).
#   WITHOUT A GPU: the same steps run; each GPU step ends with "no device" and the script exits 0
#     (exit 1 only if a step FAILED for another reason).
#
# Facts this relies on (the H200 machine as described in 2026-11; not re-checked by this script):
#   the nvidia-h200 machine has NO network; python3 there is /opt/torch/.venv/bin/python3 (3.12.3) with
#   cupy-cuda13x 14.2.0, numba, numba-cuda, numpy 2.5.2, pytest, setuptools; driver 580 (CUDA 13.0);
#   nvcc 13.0, cuobjdump and nvdisasm. cffi (a pyguts dependency) is NOT in that image.
# Environment knobs: GPU_CHECK_BUDGET (s, default 480), GPU_CHECK_PYTHON, GPUKIT_SIZES (default
#   1e6,1e8), GPUKIT_DTYPES, GPUKIT_REPEAT (default 15), GPUKIT_PEAK_TBS (default 4.8).
set -u -o pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
KIT=${GPUKIT_DIR:-$PWD/.gpukit}   # the carried wheels and headers (--prepare makes it)

# --------------------------------------------------------------------------------------------- prepare
if [ "${1:-}" = "--prepare" ]; then
    REPO=$(readlink -f "${2:-$PWD}")
    [ -f "$REPO/pyproject.toml" ] && [ -d "$REPO/gpu_kernels" ] || { echo "not a pyguts checkout: $REPO"; exit 2; }
    mkdir -p "$REPO/.gpukit/whl"
    EXCL="$REPO/.git/info/exclude"
    if [ -d "$REPO/.git" ] && ! grep -qx '/.gpukit/' "$EXCL" 2>/dev/null; then echo '/.gpukit/' >>"$EXCL"; fi
    PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    for v in 3.12 3.11 3.13; do
        python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$v" \
            --implementation cp "${PLAT[@]}" -d "$REPO/.gpukit/whl" "cffi>=1.16" 2>&1 | grep -v '^WARNING: Location' || true
    done
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$REPO/.gpukit/whl" pycparser 2>&1 | grep -v '^WARNING: Location' || true
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLAT[@]}" -d "$REPO/.gpukit/whl" "numba-cuda==0.30.4" 2>&1 | grep -v '^WARNING: Location' || true
    INC=$(ls -d "$(pyenv root 2>/dev/null)"/versions/3.12.*/include/python3.12 2>/dev/null | head -1)
    if [ -n "$INC" ]; then tar -C "$(dirname "$INC")" -czf "$REPO/.gpukit/py312-include.tgz" python3.12; fi
    ls -la "$REPO/.gpukit" "$REPO/.gpukit/whl"
    du -sh "$REPO/.gpukit"
    echo "prepared. On the GPU machine, from the checkout root with .gpukit/ carried along: make gpu-check"
    exit 0
fi

# ------------------------------------------------------------------------------------- shared settings
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
REPORT=$OUT/gpu_report.txt
STATE=${GPUKIT_STATE:-/tmp/gpukit_state}
mkdir -p "$STATE"
pick_python() {
    if [ -n "${GPU_CHECK_PYTHON:-}" ]; then echo "$GPU_CHECK_PYTHON"
    elif [ -x /opt/torch/.venv/bin/python3 ]; then echo /opt/torch/.venv/bin/python3
    elif [ -x .venv/bin/python ]; then echo "$PWD/.venv/bin/python"
    else command -v python3; fi
}
PY=${PY:-$(pick_python)}
export OUT PY STATE PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# (each step reads "$STATE/env", the CPATH / plugin arguments the install step found: see --step)

# ------------------------------------------------------------------------------------- the steps (sub)
step_env() {
    echo "date: $(date -u +%FT%TZ)  host: $(hostname)  kernel: $(uname -r)  cpus: $(nproc)"
    echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
    if command -v nvidia-smi >/dev/null; then
        timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,compute_cap --format=csv 2>&1
        timeout 20 nvidia-smi 2>&1 | grep -m1 "CUDA Version" || true
    else
        echo "nvidia-smi: not found"
    fi
    for t in nvcc cuobjdump nvdisasm ptxas g++; do printf '%-10s %s\n' "$t" "$(command -v $t || echo '-') $($t --version 2>/dev/null | grep -m1 -E 'release|g\+\+' )"; done
    "$PY" - <<'EOF'
import importlib.metadata as md, os, sysconfig
names = ["numpy", "cffi", "pycparser", "psutil", "numba", "numba-cuda", "llvmlite", "cupy-cuda12x", "cupy-cuda13x",
         "cupy", "cuda-bindings", "cuda-core", "cuda-pathfinder", "nvidia-cuda-nvrtc", "nvidia-cuda-nvrtc-cu12",
         "pytest", "setuptools", "pyguts"]
for n in names:
    try:
        print(f"{n:24s} {md.version(n)}")
    except md.PackageNotFoundError:
        print(f"{n:24s} -")
inc = sysconfig.get_paths()["include"]
print("Python.h:", os.path.join(inc, "Python.h"), "present" if os.path.exists(os.path.join(inc, "Python.h")) else "MISSING")
EOF
    local drv; drv=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    if [ -z "$drv" ]; then echo "NOTE: no device (nvidia-smi shows no GPU)"; return 77; fi
    echo "NOTE: $drv, driver $(timeout 20 nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1), $($PY -c 'import sys; print("CPython", sys.version.split()[0])')"
}

step_install() {
    local tag whl notes=()
    tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    : >"$STATE/env"
    if ! "$PY" -c 'import cffi' 2>/dev/null; then
        whl=$(ls "$KIT"/whl/cffi-*-"$tag"-*.whl 2>/dev/null | head -1)
        if [ -n "$whl" ]; then
            "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile "$whl" "$KIT"/whl/pycparser-*.whl \
                && notes+=("cffi from carried wheel") || notes+=("cffi wheel install FAILED")
        else
            timeout 90 "$PY" -m pip install -q --disable-pip-version-check "cffi>=1.16" && notes+=("cffi from registry") \
                || notes+=("cffi MISSING (no $tag wheel carried, no registry)")
        fi
    fi
    if ! "$PY" -c 'import numba_cuda' 2>/dev/null; then
        whl=$(ls "$KIT"/whl/numba_cuda-*-"$tag"-*.whl 2>/dev/null | head -1)
        if [ -n "$whl" ] && "$PY" -c 'import cuda.bindings, cuda.core' 2>/dev/null; then
            "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile "$whl" \
                && notes+=("numba-cuda from carried wheel") || notes+=("numba-cuda wheel install FAILED")
        else
            notes+=("numba-cuda absent: numba's deprecated built-in CUDA target will be used")
        fi
    fi
    # CuPy: the wheel must match the driver's CUDA major (a CUDA 12 driver cannot run cupy-cuda13x).
    local cuda_major; cuda_major=$(timeout 20 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
    local have; have=$("$PY" -c 'import importlib.metadata as m; print(" ".join(sorted(d.metadata["Name"] for d in m.distributions() if (d.metadata["Name"] or "").lower().startswith("cupy"))))')
    echo "driver CUDA major: ${cuda_major:-none}; CuPy wheels installed: ${have:-none}"
    if [ -z "$have" ] && [ -n "$cuda_major" ]; then
        local extra=gpu; [ "$cuda_major" -ge 13 ] && extra=gpu-cuda13
        if timeout 150 "$PY" -m pip install -q --disable-pip-version-check -e ".[$extra]"; then notes+=("installed .[$extra] from the registry")
        else notes+=("CuPy MISSING: pip install .[$extra] failed (offline?)"); fi
    elif [ -n "$have" ] && [ "$(wc -w <<<"$have")" -gt 1 ]; then notes+=("CONFLICT: several CuPy wheels: $have")
    elif [ "${cuda_major:-0}" -lt 13 ] && grep -q cuda13x <<<"$have"; then notes+=("MISMATCH: $have needs a CUDA 13 driver, driver is CUDA $cuda_major")
    fi
    # pyguts itself, editable, without touching the network (setuptools from the image).
    # (asked from / : in the checkout, its own pyguts/ and a stale pyguts.egg-info would answer instead)
    if (cd / && "$PY" -c 'import pyguts, sys, importlib.metadata as m; m.version("cpython-guts"); sys.exit(0 if pyguts.__file__.startswith(sys.argv[1]) else 1)' "$OLDPWD") 2>/dev/null; then
        notes+=("pyguts already installed from here")
    elif timeout 120 "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-build-isolation -e . ; then
        notes+=("pyguts installed editable")
    else
        echo "editable install failed: falling back to PYTHONPATH=$PWD and -p pyguts.pytest_plugin"
        { echo "export PYTHONPATH=$PWD\${PYTHONPATH:+:\$PYTHONPATH}"; echo "export GPUKIT_PLUGIN='-p pyguts.pytest_plugin'"; } >>"$STATE/env"
        notes+=("pyguts via PYTHONPATH (editable install failed)")
    fi
    # Python.h: pyguts' CPU reference (cffi + g++) needs it.
    if ! "$PY" -c 'import os, sysconfig, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)'; then
        if [ -f "$KIT/py312-include.tgz" ] && [ "$tag" = cp312 ]; then
            mkdir -p /tmp/gpukit_pyinc && tar -C /tmp/gpukit_pyinc -xzf "$KIT/py312-include.tgz"
            echo "export CPATH=/tmp/gpukit_pyinc/python3.12\${CPATH:+:\$CPATH}" >>"$STATE/env"
            notes+=("Python.h missing: carried CPython 3.12.1 headers via CPATH")
        else
            notes+=("Python.h MISSING: the CPU reference (cffi) cannot build")
        fi
    fi
    . "$STATE/env"
    "$PY" -c 'import pyguts, cffi, numba; from pyguts import device; print("import ok: pyguts", pyguts.__file__, "numba", numba.__version__)' \
        || { echo "NOTE: ${notes[*]}; import pyguts FAILED"; return 1; }
    local IFS=';'; echo "NOTE: ${notes[*]:-nothing to install}"
}

step_doctor() {
    "$PY" -m pyguts doctor; local rc=$?
    echo "NOTE: doctor exit $rc (see the gpu section above)"
    return $rc
}

count_line() { grep -E '^=+ .*(passed|failed|skipped|error|no tests ran).* =+$' "$1" | tail -1 | tr -d '='; }

step_pytest_gpu() {
    local files; files=$(grep -rl "mark.gpu" tests | sort | tr '\n' ' ')
    echo "files with @pytest.mark.gpu: $files"
    # shellcheck disable=SC2086
    "$PY" -m pytest ${GPUKIT_PLUGIN:-} -p no:cacheprovider -m gpu -v -rA $files 2>&1 | tee "$STATE/pytest_gpu.log"
    local rc=${PIPESTATUS[0]}
    local skipped; skipped=$(grep -c ' SKIPPED' "$STATE/pytest_gpu.log")
    echo "NOTE: $(count_line "$STATE/pytest_gpu.log")"
    if [ "$rc" -eq 0 ] && [ "$skipped" -gt 0 ] && ! grep -q ' PASSED' "$STATE/pytest_gpu.log"; then return 77; fi
    return "$rc"
}

step_pytest_sensitive() {
    # Tests not marked gpu whose expectations change when a GPU is present (the tour's numba line, examples).
    # shellcheck disable=SC2086
    "$PY" -m pytest ${GPUKIT_PLUGIN:-} -p no:cacheprovider -v -rA \
        tests/unit/test_device.py tests/integration/test_device_numba_cudasim.py \
        "tests/integration/test_tour.py::test_each_step_runs_alone[cuda]" \
        "tests/integration/test_tour.py::test_each_step_runs_alone[numba]" \
        "tests/integration/test_examples.py::test_example_runs[05_cuda.py]" \
        "tests/integration/test_examples.py::test_example_runs[06_numba.py]" 2>&1 | tee "$STATE/pytest_sens.log"
    local rc=${PIPESTATUS[0]}
    echo "NOTE: $(count_line "$STATE/pytest_sens.log")$(grep -E '^FAILED' "$STATE/pytest_sens.log" | sed 's/ - .*//' | tr '\n' ' ' | sed 's/^/; /;s/ $//')"
    return "$rc"
}

step_tour() {
    "$PY" -m pyguts tour --step cuda --step numba 2>&1 | tee "$STATE/tour.log"
    local rc=${PIPESTATUS[0]}
    echo "NOTE: $(grep -E '^tour:' "$STATE/tour.log" | tail -1); $(grep -E 'GPU \(|on the GPU|GPU: not run|simulator' "$STATE/tour.log" | head -2 | cut -c1-110 | tr '\n' ' ')"
    return "$rc"
}

step_sass() {
    local nv; nv=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
    [ -n "$nv" ] || { echo "NOTE: no nvcc"; return 77; }
    local cuobj; cuobj=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null)
    local d; d=$(mktemp -d); local notes=()
    for cu in gpu_kernels/*.cu; do
        local f; f=$(basename "$cu" .cu)
        "$nv" -cubin -arch=sm_90 -Xptxas -v -o "$d/$f.cubin" "$cu" 2>&1 | grep -E "spill|registers|entry" 
        if [ -n "$cuobj" ]; then
            "$cuobj" --dump-sass "$d/$f.cubin" >"$d/$f.sass"
            local ld; ld=$(grep -oE '\b(LDG|STG|LDL|STL|REDG|RED|ATOMG)\.[A-Z0-9.]*' "$d/$f.sass" | sort | uniq -c | tr -s ' ' | tr '\n' ',' )
            echo "$f sm_90 memory instructions:$ld"
            grep -qE '\b(LDL|STL)\b' "$d/$f.sass" && notes+=("$f uses local memory") || notes+=("$f: no local memory")
        fi
    done
    local IFS=';'; echo "NOTE: ${notes[*]:-compiled (no cuobjdump)}"
}

bench_source() {  # the benchmark, a Python program
cat <<'GPUKIT_PY_EOF'
"""gpukit bench: the seed's magnitude kernel p = sqrt(px^2+py^2+pz^2) by CuPy RawModule, numba.cuda, a CuPy
expression and a CuPy ElementwiseKernel; the same kernel from pyguts (gpu_kernels/momentum.cu by device.launch,
cupy_momentum(), numba_momentum_kernel()) and pyguts' 2-component kernel by pyguts.device (CuPy and numba);
a device-to-device copy as the achievable bandwidth. Each output is compared with numpy (ulp distance,
computed on the device against numpy's result). Kernel times come from CUDA events, with the GPU kept busy
by a spin kernel while Python enqueues (so launch overhead is excluded) and L2 flushed before each run.
Then checks of pyguts' stream handling (CAI v3) and pointer round trips. Exit 77: no device."""
import json
import math
import os
import statistics
import sys
import time
import traceback

import numpy as np

OUT = os.environ.get("OUT", ".")
STATE = os.environ.get("STATE", "/tmp")
SIZES = [int(float(s)) for s in os.environ.get("GPUKIT_SIZES", "1e6,1e8").split(",")]
DTYPES = [np.dtype(d) for d in os.environ.get("GPUKIT_DTYPES", "float32,float64").split(",")]
REPEAT = int(os.environ.get("GPUKIT_REPEAT", "15"))
PEAK = float(os.environ.get("GPUKIT_PEAK_TBS", "4.8")) * 1e12
BUDGET = min(float(os.environ.get("GPUKIT_BENCH_BUDGET", "270")), float(os.environ.get("GPUKIT_STEP_LIMIT", "300")) - 25)
T0 = time.time()
BLOCK = 256
rows, checks = [], []


def left():
    return BUDGET - (time.time() - T0)


def save():
    with open(os.path.join(OUT, "gpu_bench.json"), "w") as f:
        json.dump({"rows": rows, "checks": checks, "peak_bytes_per_s": PEAK}, f, indent=1, default=str)
    lines = [f"{'impl':40s} {'n':>9s} {'dtype':7s} {'med_us':>9s} {'min_us':>9s} {'bare_us':>9s} {'GB/s':>7s} "
             f"{'%peak':>6s} {'%copy':>6s} {'ulp':>4s} {'#diff':>8s} ok"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['impl']:40s} {r['n']:>9d} {r['dtype']:7s} ERROR {r['error'][:90]}")
            continue
        lines.append(f"{r['impl']:40s} {r['n']:>9d} {r['dtype']:7s} {r['median_us']:9.1f} {r['min_us']:9.1f} "
                     f"{r['bare_us']:9.1f} {r['gbps']:7.0f} {r['pct_peak']:6.1f} {r.get('pct_copy', float('nan')):6.1f} "
                     f"{r.get('max_ulp', '-')!s:>4s} {r.get('n_diff', '-')!s:>8s} {r.get('ok', '-')}")
    for c in checks:
        lines.append(f"check {c['name']}: {c['result']}")
    with open(os.path.join(STATE, "bench_table.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def check(name, fn):
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - every check reports, none stops the rest
        result = f"ERROR {type(exc).__name__}: {exc}"
        traceback.print_exc()
    checks.append({"name": name, "result": result})
    print(f"check {name}: {result}", flush=True)
    save()
    return result


try:
    import cupy as cp

    NDEV = cp.cuda.runtime.getDeviceCount()
except Exception as exc:  # noqa: BLE001
    print(f"NOTE: no device: CuPy unusable here: {type(exc).__name__}: {str(exc)[:200]}")
    checks.append({"name": "cupy", "result": f"no device: {type(exc).__name__}: {exc}"})
    save()
    sys.exit(77)
if NDEV == 0:
    print("NOTE: no device: CuPy sees none")
    sys.exit(77)

DEV = cp.cuda.Device(0)
try:
    PROPS = cp.cuda.runtime.getDeviceProperties(0)
    NAME = PROPS["name"].decode() if isinstance(PROPS["name"], bytes) else str(PROPS["name"])
except Exception as exc:  # noqa: BLE001
    NAME = f"? (getDeviceProperties: {type(exc).__name__}: {exc})"
try:
    ATTRS = DEV.attributes
except Exception as exc:  # noqa: BLE001 - pyguts.device.launch reads the same dict: it would fail too
    ATTRS = {}
    checks.append({"name": "Device.attributes", "result": f"ERROR {type(exc).__name__}: {exc}"})
SMS = ATTRS.get("MultiProcessorCount") or 132
CLOCK_KHZ = ATTRS.get("ClockRate") or 1_980_000
print(f"device: {NAME}, cc {DEV.compute_capability}, {SMS} SMs, clock {CLOCK_KHZ / 1e3:.0f} MHz, "
      f"cupy {cp.__version__}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, "
      f"driver {cp.cuda.runtime.driverGetVersion()}", flush=True)
MAX_GRID = 32 * SMS  # what pyguts.device.launch caps at (BLOCKS_PER_SM * SMs)

SEED_SRC = r"""
#define MAG3(NAME, T, SQRT)                                                                          \
extern "C" __global__ void NAME##_gs(const T *px, const T *py, const T *pz, T *p, unsigned long long n) { \
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;                          \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) \
        p[i] = SQRT(px[i] * px[i] + py[i] * py[i] + pz[i] * pz[i]);                                  \
}                                                                                                    \
extern "C" __global__ void NAME##_1t(const T *px, const T *py, const T *pz, T *p, unsigned long long n) { \
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;                \
    if (i < n) p[i] = SQRT(px[i] * px[i] + py[i] * py[i] + pz[i] * pz[i]);                           \
}
MAG3(mag3_f32, float, sqrtf)
MAG3(mag3_f64, double, sqrt)
extern "C" __global__ void spin(long long cycles) {
    long long t0 = clock64();
    while (clock64() - t0 < cycles) { }
}
"""
raw_default = cp.RawModule(code=SEED_SRC, options=("--std=c++11",))
raw_nofma = cp.RawModule(code=SEED_SRC, options=("--std=c++11", "--fmad=false"))
SPIN_CYCLES = np.int64(int(600e-6 * CLOCK_KHZ * 1e3))  # ~0.6 ms at the rated clock: covers Python's enqueueing
try:
    SPIN = raw_default.get_function("spin")  # the first NVRTC compile: fails here if NVRTC is missing
    SPIN((1,), (1,), (np.int64(1000),))
    DEV.synchronize()
    checks.append({"name": "NVRTC via cupy.RawModule", "result": "ok"})
except Exception as exc:  # noqa: BLE001 - then 'queued' timings equal 'bare' ones, and RawModule rows fail
    traceback.print_exc()
    checks.append({"name": "NVRTC via cupy.RawModule", "result": f"ERROR {type(exc).__name__}: {exc}"})
    SPIN = None
EK = cp.ElementwiseKernel("T x, T y, T z", "T p", "p = sqrt(x * x + y * y + z * z)", "gpukit_mag3")
scratch = cp.empty(512 << 20, dtype=cp.uint8)  # 512 MiB written before each timed run: evicts the 60 MB L2
start_ev, end_ev = cp.cuda.Event(), cp.cuda.Event()


def spin():
    if SPIN is not None:
        SPIN((1,), (1,), (SPIN_CYCLES,))


def time_it(fn, flush=True):
    """(median, min) of event-timed runs with the GPU busy while Python enqueues, and the median of bare runs (ms)."""
    for _ in range(2):
        fn()
    DEV.synchronize()
    queued, bare = [], []
    for _ in range(REPEAT):
        if flush:
            scratch.fill(0)
        spin()
        start_ev.record()
        fn()
        end_ev.record()
        end_ev.synchronize()
        queued.append(cp.cuda.get_elapsed_time(start_ev, end_ev))
    for _ in range(max(3, REPEAT // 3)):
        if flush:
            scratch.fill(0)
        DEV.synchronize()
        start_ev.record()
        fn()
        end_ev.record()
        end_ev.synchronize()
        bare.append(cp.cuda.get_elapsed_time(start_ev, end_ev))
    return statistics.median(queued), min(queued), statistics.median(bare)


def ulp_diff(out, ref_d):
    """(max ulp distance, elements that differ, all written) of out against numpy's result on the device."""
    itype = cp.int32 if out.dtype == cp.float32 else cp.int64
    d = cp.abs(out.view(itype) - ref_d.view(itype))
    return int(d.max()), int((d > 0).sum()), bool(cp.isfinite(out).all())


COPY_BPS = {}


def bench(impl, n, dtype, fn, nbytes, out=None, ref_d=None, max_ok_ulp=2, flush=True):
    row = {"impl": impl, "n": n, "dtype": dtype.name, "bytes": nbytes}
    try:
        if out is not None:
            out.fill(cp.nan)
        res = fn()
        DEV.synchronize()
        if ref_d is not None:
            got = res if out is None else out
            mu, nd, written = ulp_diff(got, ref_d)
            row.update(max_ulp=mu, n_diff=nd, all_written=written, ok=bool(written and mu <= max_ok_ulp))
        med, mn, bare = time_it(fn, flush=flush)
        row.update(median_us=med * 1e3, min_us=mn * 1e3, bare_us=bare * 1e3, gbps=nbytes / (med * 1e-3) / 1e9)
        row["pct_peak"] = 100 * nbytes / (med * 1e-3) / PEAK
        if (n, dtype.name) in COPY_BPS:
            row["pct_copy"] = 100 * nbytes / (med * 1e-3) / COPY_BPS[(n, dtype.name)]
    except Exception as exc:  # noqa: BLE001
        row.update(error=f"{type(exc).__name__}: {str(exc)[:300]}", ok=False)
        traceback.print_exc()
    rows.append(row)
    print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    save()
    return row


def bench_prepared(impl, n, dtype, prepare, nbytes, out, ref_d):
    """bench() of the launch prepare() returns (numba views, a kernel compiled on first use): a
    failure while preparing is that row's error."""
    try:
        fn = prepare()
    except Exception as exc:  # noqa: BLE001
        rows.append({"impl": impl, "n": n, "dtype": dtype.name, "error": f"{type(exc).__name__}: {exc}", "ok": False})
        traceback.print_exc()
        return None
    return bench(impl, n, dtype, fn, nbytes, out, ref_d)


# numba: the seed kernel with @cuda.jit (3 components) and pyguts' own kernel
try:
    import numba
    from numba import cuda as ncuda

    @ncuda.jit
    def nb_mag3(px, py, pz, p):
        start, stride = ncuda.grid(1), ncuda.gridsize(1)
        for i in range(start, p.shape[0], stride):
            p[i] = math.sqrt(px[i] * px[i] + py[i] * py[i] + pz[i] * pz[i])

    def nb_view(a):  # a numba view of a CuPy array (zero copy, through its CAI); the simulator takes arrays as they are
        return ncuda.as_cuda_array(a) if hasattr(ncuda, "as_cuda_array") else a

    NUMBA = (f"numba {numba.__version__} ({getattr(ncuda, 'implementation', '?')} CUDA target, module "
             f"{ncuda.__file__.split('site-packages/')[-1]}), available={ncuda.is_available()}")
except Exception as exc:  # noqa: BLE001
    ncuda = None
    NUMBA = f"numba CUDA unusable: {type(exc).__name__}: {exc}"
print(NUMBA, flush=True)
checks.append({"name": "numba", "result": NUMBA})

try:
    from pyguts import device as pdev

    PMOD = pdev.load("magnitude")
    PMOD3 = pdev.load("momentum")  # the notebook's kernel, gpu_kernels/momentum.cu
    PYGUTS = "pyguts.device.load('magnitude'), load('momentum') ok"
except Exception as exc:  # noqa: BLE001
    pdev = PMOD = PMOD3 = None
    PYGUTS = f"pyguts.device unusable: {type(exc).__name__}: {exc}"
    traceback.print_exc()
print(PYGUTS, flush=True)
checks.append({"name": "pyguts.load", "result": PYGUTS})

for n in SIZES:
    for dtype in DTYPES:
        if left() < 30:
            print(f"skipping n={n} {dtype}: {left():.0f}s left in the bench budget", flush=True)
            checks.append({"name": f"n={n} {dtype.name}", "result": "skipped: bench budget"})
            continue
        sfx = "f32" if dtype == np.float32 else "f64"
        item = dtype.itemsize
        rng = np.random.default_rng(n)
        px, py, pz = (rng.standard_normal(n, dtype=np.float32 if sfx == "f32" else np.float64) for _ in range(3))
        ref3 = np.sqrt(px * px + py * py + pz * pz)
        ref2 = np.sqrt(px * px + py * py)
        dpx, dpy, dpz = cp.asarray(px), cp.asarray(py), cp.asarray(pz)
        ref3_d, ref2_d = cp.asarray(ref3), cp.asarray(ref2)
        del ref3, ref2
        out = cp.empty(n, dtype)
        b3, b2 = 4 * n * item, 3 * n * item
        nn = np.uint64(n)
        grid_gs = max(1, min(math.ceil(n / BLOCK), MAX_GRID))
        grid_1t = math.ceil(n / BLOCK)

        # the achievable bandwidth: a device-to-device copy moving the same bytes as the seed kernel (2n read, 2n written)
        src2 = cp.empty(2 * n, dtype)
        dst2 = cp.empty(2 * n, dtype)
        copy_row = bench("cudaMemcpy D2D (same bytes as seed)", n, dtype,
                         lambda: cp.cuda.runtime.memcpyAsync(dst2.data.ptr, src2.data.ptr, src2.nbytes,
                                                             cp.cuda.runtime.memcpyDeviceToDevice,
                                                             cp.cuda.get_current_stream().ptr), 2 * src2.nbytes)
        if "median_us" in copy_row:
            COPY_BPS[(n, dtype.name)] = copy_row["bytes"] / (copy_row["median_us"] * 1e-6)
        del src2, dst2

        k_gs, k_1t = raw_default.get_function(f"mag3_{sfx}_gs"), raw_default.get_function(f"mag3_{sfx}_1t")
        k_nofma = raw_nofma.get_function(f"mag3_{sfx}_gs")
        bench(f"seed RawModule grid-stride <<<{grid_gs}>>>", n, dtype,
              lambda: k_gs((grid_gs,), (BLOCK,), (dpx, dpy, dpz, out, nn)), b3, out, ref3_d)
        bench("seed RawModule 1 elem/thread", n, dtype,
              lambda: k_1t((grid_1t,), (BLOCK,), (dpx, dpy, dpz, out, nn)), b3, out, ref3_d)
        bench("seed RawModule --fmad=false", n, dtype,
              lambda: k_nofma((grid_gs,), (BLOCK,), (dpx, dpy, dpz, out, nn)), b3, out, ref3_d, max_ok_ulp=0)
        bench("seed cupy.sqrt(px*px+py*py+pz*pz)", n, dtype,
              lambda: cp.sqrt(dpx * dpx + dpy * dpy + dpz * dpz), b3, None, ref3_d)
        bench("seed cupy.ElementwiseKernel", n, dtype, lambda: EK(dpx, dpy, dpz, out), b3, out, ref3_d)
        if ncuda is not None:
            def seed_numba():
                npx, npy, npz, nout = (nb_view(a) for a in (dpx, dpy, dpz, out))
                return lambda: nb_mag3[grid_gs, BLOCK](npx, npy, npz, nout)
            bench_prepared(f"seed numba.cuda.jit <<<{grid_gs}>>>", n, dtype, seed_numba, b3, out, ref3_d)
        if PMOD is not None:
            kern = getattr(PMOD, f"magnitude_{sfx}")
            bench("pyguts device.launch (2 comp)", n, dtype,
                  lambda: pdev.launch(kern, dpx, dpy, out, synchronize=False), b2, out, ref2_d)
        if PMOD3 is not None:
            kern3 = getattr(PMOD3, f"momentum_{sfx}")
            bench("pyguts device.launch momentum.cu", n, dtype,
                  lambda: pdev.launch(kern3, dpx, dpy, dpz, out, synchronize=False), b3, out, ref3_d)
        if pdev is not None:
            bench("pyguts cupy_momentum() elementwise", n, dtype,
                  lambda: pdev.cupy_momentum()(dpx, dpy, dpz, out), b3, out, ref3_d)
        if pdev is not None and ncuda is not None:
            def pyguts_momentum():
                nb_mom = pdev.numba_momentum_kernel()
                mx, my, mz, mo = (nb_view(a) for a in (dpx, dpy, dpz, out))
                return lambda: nb_mom[grid_gs, BLOCK](mx, my, mz, mo)

            def pyguts_magnitude():
                nb_kernel = pdev.numba_magnitude_kernel()
                vx, vy, vo = (nb_view(a) for a in (dpx, dpy, out))
                return lambda: nb_kernel[blocks, pdev.DEFAULT_BLOCK](vx, vy, vo)
            blocks = max(1, min(math.ceil(n / pdev.DEFAULT_BLOCK), 1024))  # numba_magnitude's own choice
            bench_prepared(f"pyguts numba momentum <<<{grid_gs}>>>", n, dtype, pyguts_momentum, b3, out, ref3_d)
            bench_prepared(f"pyguts numba kernel <<<{blocks}>>> (2 comp)", n, dtype, pyguts_magnitude, b2, out, ref2_d)
        # whole calls, wall clock (they synchronise): what a user of pyguts.device sees per call
        if pdev is not None and n <= 1_000_000:
            calls = []
            if PMOD is not None:
                calls.append(("pyguts device.launch() call, wall", lambda: pdev.launch(kern, dpx, dpy, out)))
            if ncuda is not None:
                calls.append(("pyguts numba_magnitude(cupy arrays) call, wall", lambda: pdev.numba_magnitude(dpx, dpy, out)))
            for label, call in calls:
                try:
                    out.fill(cp.nan)
                    call()
                    got = ulp_diff(out, ref2_d)
                    ts = []
                    for _ in range(REPEAT):
                        t = time.perf_counter()
                        call()
                        ts.append(time.perf_counter() - t)
                    checks.append({"name": f"{label} n={n} {dtype.name}",
                                   "result": f"median {statistics.median(ts) * 1e6:.0f} us, min {min(ts) * 1e6:.0f} us; "
                                             f"max ulp vs numpy {got[0]}, {got[1]} elements differ, all written {got[2]}"})
                except Exception as exc:  # noqa: BLE001
                    checks.append({"name": f"{label} n={n} {dtype.name}", "result": f"ERROR {type(exc).__name__}: {exc}"})
                    traceback.print_exc()
                print(checks[-1], flush=True)
        del dpx, dpy, dpz, ref3_d, ref2_d, out
        cp.get_default_memory_pool().free_all_blocks()
        save()

# host-side cost of one launch (n=1, nothing to wait for), microseconds
if left() > 15:
    def per_call(fn, reps=300):
        fn()
        DEV.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        dt = (time.perf_counter() - t) / reps
        DEV.synchronize()
        return f"{dt * 1e6:.1f} us/launch"

    a1, b1, o1 = cp.ones(1), cp.ones(1), cp.empty(1)
    k1 = raw_default.get_function("mag3_f64_gs")
    check("launch overhead: cupy RawKernel n=1", lambda: per_call(lambda: k1((1,), (32,), (a1, b1, b1, o1, np.uint64(1)))))
    if PMOD is not None:
        check("launch overhead: pyguts device.launch n=1 (synchronize=False)",
              lambda: per_call(lambda: pdev.launch(PMOD.magnitude_f64, a1, b1, o1, synchronize=False)))
    if ncuda is not None:
        na1, nb1, no1 = (nb_view(a) for a in (a1, b1, o1))
        check("launch overhead: numba kernel n=1", lambda: per_call(lambda: nb_mag3[1, 32](na1, nb1, nb1, no1)))

# pyguts' stream handling (CAI v3): a producer stream busy ~20 ms, then filling x, y
if PMOD is not None and left() > 10:
    def stream_case(stream_value, expect_wait):
        n = 1 << 22
        x, y, o = cp.zeros(n), cp.zeros(n), cp.zeros(n)
        DEV.synchronize()
        s = cp.cuda.Stream(non_blocking=True)
        with s:
            if SPIN is not None:
                SPIN((1,), (1,), (np.int64(int(20e-3 * CLOCK_KHZ * 1e3)),))
            x.fill(3.0)
            y.fill(4.0)

        class OnStream:
            def __init__(self, a):
                cai = dict(a.__cuda_array_interface__)
                cai["stream"] = s.ptr if stream_value == "producer" else stream_value
                self.__cuda_array_interface__ = cai

        pdev.launch(PMOD.magnitude_f64, OnStream(x), OnStream(y), o)
        five = int((o == 5.0).sum())
        s.synchronize()
        verdict = {True: " (waited: OK)" if five == n else " (did NOT wait: FAIL)",
                   False: " (no wait on the producer expected: the race shows the check can see one)"}[expect_wait]
        if stream_value == 2:
            verdict = " (CuPy's per-thread default stream waited on; not the producer, so a race is expected)"
        return f"stream={stream_value}: {five} of {n} elements were 5.0 right after launch() returned{verdict}"

    check("CAI stream = producer's cudaStream_t", lambda: stream_case("producer", True))
    check("CAI stream = None (negative control)", lambda: stream_case(None, False))
    check("CAI stream = 2 (per-thread default)", lambda: stream_case(2, False))

# pointer round trips
if pdev is not None and left() > 5:
    def round_trip():
        src = cp.arange(12, dtype=cp.float64)
        p = pdev.pointer(src)
        v = pdev.from_pointer(p, (3, 4), np.float64, owner=src)
        ok = v.data.ptr == src.data.ptr and bool((v.ravel() == src).all())
        return f"pointer/from_pointer same address and values: {ok}; {p!r}"

    def null_empty():
        try:
            v = pdev.from_pointer(0, (0,), np.float64, owner=object())
            return f"from_pointer(0, (0,)) gave {type(v).__name__} shape {v.shape}"
        except Exception as exc:  # noqa: BLE001
            return f"from_pointer(0, (0,)) raised {type(exc).__name__}: {exc}"

    def numba_in():
        if ncuda is None:
            return "numba unusable"
        d = ncuda.to_device(np.arange(5.0))
        p = pdev.pointer(d)
        return (f"numba device array CAI: stream={p.stream}, readonly={p.readonly}, "
                f"addr matches its interface: {p.addr == d.__cuda_array_interface__['data'][0]}")

    check("pointer round trip", round_trip)
    check("from_pointer of an empty array at NULL", null_empty)
    check("numba array through pyguts.pointer", numba_in)

save()
seed = [r for r in rows if r["impl"].startswith("seed") and "gbps" in r]
bad = [f"{r['impl']} n={r['n']} {r['dtype']}" for r in rows if r.get("ok") is False]
best = max((r for r in rows if r["n"] == max(SIZES) and "gbps" in r and "Memcpy" not in r["impl"]),
           key=lambda r: r["gbps"], default=None)
summary = (f"best kernel at n={max(SIZES):.0e}: {best['impl']} {best['dtype']} {best['gbps']:.0f} GB/s "
           f"({best['pct_peak']:.0f}% of {PEAK / 1e12:.1f} TB/s)" if best else "no timing")
print(f"NOTE: {summary}; {len(rows) - len(bad)}/{len(rows)} rows ok" + (f"; NOT ok: {', '.join(bad)[:200]}" if bad else ""))
sys.exit(1 if bad else 0)
GPUKIT_PY_EOF
}

step_bench() {
    local src; src=$(mktemp --suffix=_gpukit_bench.py)
    bench_source >"$src"
    cp "$src" "$STATE/gpukit_bench.py"
    "$PY" "$src"
}

if [ "${1:-}" = "--step" ]; then
    [ -f "$STATE/env" ] && . "$STATE/env"
    "step_$2"
    exit $?
fi

# ------------------------------------------------------------------------------------------ the runner
: >"$STATE/env"   # a run starts from nothing an earlier run found
BUDGET=${GPU_CHECK_BUDGET:-480}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
: >"$REPORT"
SUMMARY=()
FAILED=0
say() { echo "$*" | tee -a "$REPORT"; }

run_step() {  # name, limit seconds
    local name=$1 limit=$2 now left lim t0 rc status note log
    now=$(date +%s); left=$((DEADLINE - now - 15))
    if [ "$left" -lt 20 ]; then
        SUMMARY+=("$(printf '%-18s %-9s %6s  %s' "$name" SKIPPED "-" "no time left in the ${BUDGET}s budget")"); return
    fi
    lim=$(( limit < left ? limit : left ))
    log=$STATE/step_$name.log
    say ""
    say "=================== $name (limit ${lim}s) ==================="
    t0=$(date +%s.%N)
    GPUKIT_STEP_LIMIT=$lim timeout -k 10 "$lim" bash "$SELF" --step "$name" </dev/null >"$log" 2>&1
    rc=$?
    local secs; secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    # the whole log into the report (capped), the tail on stdout
    if [ "$(wc -l <"$log")" -gt 600 ]; then
        { head -n 300 "$log"; echo "... ($(wc -l <"$log") lines, middle cut) ..."; tail -n 300 "$log"; } >>"$REPORT"
    else
        cat "$log" >>"$REPORT"
    fi
    tail -n 25 "$log"
    note=$(grep -E '^NOTE: ' "$log" | tail -1 | sed 's/^NOTE: //' | cut -c1-160)
    case $rc in
        0) status=ok ;;
        77) status="no-device" ;;
        124|137) status=TIMEOUT; note="killed after ${lim}s; ${note}"; FAILED=1 ;;
        *) status="FAIL($rc)"; FAILED=1 ;;
    esac
    say "--- $name: $status in ${secs}s"
    SUMMARY+=("$(printf '%-18s %-9s %6s  %s' "$name" "$status" "$secs" "$note")")
}

say "gpu_check.sh (gpukit) in $PWD, python $PY, budget ${BUDGET}s, report $REPORT"
if [ ! -f pyproject.toml ] || [ ! -d gpu_kernels ]; then say "run me from the pyguts checkout root"; exit 2; fi
run_step env 40
run_step install 200
run_step doctor 90
run_step pytest_gpu 180
run_step bench 300
run_step tour 150
run_step pytest_sensitive 200
run_step sass 60
[ -f "$OUT/gpu_bench.json" ] || true

say ""
say "=================== summary ($(($(date +%s) - START))s of ${BUDGET}s) ==================="
say "$(printf '%-18s %-9s %6s  %s' step status seconds note)"
for line in "${SUMMARY[@]}"; do say "$line"; done
if [ -f "$STATE/bench_table.txt" ]; then
    say ""
    say "bench (kernel time by CUDA events, GPU kept busy while Python enqueues; L2 flushed first):"
    cat "$STATE/bench_table.txt" | tee -a "$REPORT"
fi
NODEVICE=$(printf '%s\n' "${SUMMARY[@]}" | grep -q '^env  *no-device' && echo 'no device here (the GPU steps said so); ')
say "gpu_check: ${NODEVICE}$( [ $FAILED -eq 0 ] && echo 'no step failed' || echo 'some steps FAILED or timed out' ); report $REPORT"
exit $FAILED

