"""pyguts.device without a GPU: __cuda_array_interface__ v3 checks, launch checks, DeviceUnavailable, the tour's CUDA section (doctor: tests/integration/test_doctor.py)."""

from __future__ import annotations


import numpy as np
import pytest

from pyguts.device import gpu_kernels
from pyguts import device
from pyguts.device.probe import gpu_reason
from pyguts.errors import DeviceUnavailable, PygutsError

NO_GPU = gpu_reason()
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="a GPU is present: the no-GPU errors cannot be seen here")


class FakeDeviceArray:
    """A hand-built exporter: nothing but its __cuda_array_interface__ (no memory behind it)."""

    def __init__(self, shape=(5,), typestr="<f8", addr=0x7F0000001000, readonly=False, **extra):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (addr, readonly),
                                         "version": 3, "strides": None, "stream": None, **extra}

    @property
    def size(self):
        return int(np.prod(self.__cuda_array_interface__["shape"]))


VALID = [
    ({}, {"stream": None, "c_contiguous": True, "nbytes": 40}),
    ({"stream": 1}, {"stream": 1}),
    ({"stream": 2}, {"stream": 2}),
    ({"stream": 0x55AA00}, {"stream": 0x55AA00}),
    ({"strides": (8,)}, {"c_contiguous": True, "strides": (8,)}),
    ({"strides": (16,)}, {"c_contiguous": False}),
    ({"shape": (2, 3), "strides": (24, 8)}, {"c_contiguous": True, "size": 6}),
    ({"shape": (2, 3), "strides": (8, 16)}, {"c_contiguous": False}),
    ({"shape": (0,), "data": (0, False)}, {"addr": 0, "nbytes": 0}),
    ({"typestr": "<f4"}, {"dtype": np.dtype(np.float32), "nbytes": 20}),
    ({"data": (0x7000, True)}, {"readonly": True}),
    ({"version": 2, "stream": None}, {"stream": None}),
    ({"mask": None, "descr": [("", "<f8")]}, {"size": 5}),
]

INVALID = [
    ({"stream": 0}, ValueError, "0 is invalid in v3"),
    ({"stream": -3}, ValueError, "non-negative int"),
    ({"stream": True}, ValueError, "non-negative int"),
    ({"stream": 1.0}, ValueError, "non-negative int"),
    ({"version": 2, "stream": 1}, ValueError, "from version 3 on"),
    ({"version": 9}, ValueError, "version must be one of"),
    ({"shape": [5]}, ValueError, "shape must be a tuple"),
    ({"shape": (-1,)}, ValueError, "non-negative ints"),
    ({"typestr": "not a type"}, ValueError, "typestr must be a numpy type string"),
    ({"typestr": ">f8"}, ValueError, "native-endian"),
    ({"data": [0x7000, False]}, ValueError, "data must be a tuple"),
    ({"data": (0x7000, 0)}, ValueError, "read-only: bool"),
    ({"data": (0x7000,)}, ValueError, "data must be a tuple"),
    ({"data": (0, False)}, ValueError, "may be 0 only for an empty array"),
    ({"strides": (8, 8)}, ValueError, "strides must be None or a tuple of 1 ints"),
    ({"strides": [8]}, ValueError, "strides must be None or a tuple"),
    ({"mask": object()}, ValueError, "mask must be None"),
]


@pytest.mark.every_python
@pytest.mark.parametrize(("change", "expected"), VALID)
def test_pointer_reads_valid_interfaces(change, expected):
    obj = FakeDeviceArray(**change)
    p = device.pointer(obj)
    assert p.owner is obj
    assert int(p) == obj.__cuda_array_interface__["data"][0]
    for attr, value in expected.items():
        assert getattr(p, attr) == value, attr


@pytest.mark.every_python
@pytest.mark.parametrize(("change", "exc", "fragment"), INVALID)
def test_pointer_refuses_invalid_interfaces(change, exc, fragment):
    with pytest.raises(exc, match="__cuda_array_interface__") as info:
        device.pointer(FakeDeviceArray(**change))
    assert fragment in str(info.value)


def test_pointer_refuses_missing_keys_and_host_arrays():
    obj = FakeDeviceArray()
    del obj.__cuda_array_interface__["typestr"]
    with pytest.raises(ValueError, match=r"\['typestr'\] missing"):
        device.pointer(obj)
    with pytest.raises(TypeError, match="host memory: use pyguts.native.pointer"):
        device.pointer(np.zeros(3))
    with pytest.raises(TypeError, match="must have __cuda_array_interface__"):
        device.pointer(object())


def test_device_pointer_is_not_a_host_pointer():
    """pyguts.native must refuse a device address: dereferencing it on the CPU would crash."""
    from pyguts import native

    lib = native.build("double first(const double *p);", "double first(const double *p) { return p[0]; }")
    with pytest.raises(TypeError, match="must be a numpy array"):
        lib.first(device.pointer(FakeDeviceArray()))


def test_kernels_are_read_from_the_cu_files():
    assert {"magnitude", "reduce"} <= set(gpu_kernels.names())
    mag = device.kernels("magnitude")
    assert sorted(mag) == ["magnitude_f32", "magnitude_f64"]
    assert mag["magnitude_f64"].lengths == {"x": "n", "y": "n", "out": "n"}
    assert [(p.name, p.const) for p in mag["magnitude_f64"].params] == [
        ("x", True), ("y", True), ("out", False), ("n", False)]
    assert device.kernels("reduce")["sum_f32"].lengths == {"x": "n", "out": "1"}
    with pytest.raises(FileNotFoundError, match="choices are"):
        device.kernels("../etc/passwd")


def _mag(n=5, **out_change):
    spec = device.kernels("magnitude")["magnitude_f64"]
    return spec, FakeDeviceArray((n,)), FakeDeviceArray((n,), addr=0x7F0000002000), \
        FakeDeviceArray((n,), addr=0x7F0000003000, **out_change)


@pytest.mark.every_python
def test_plan_accepts_matching_arrays_and_fills_the_count():
    spec, x, y, out = _mag(1000)
    plan = device.plan(spec, (x, y, out))
    assert plan.args[:3] == (np.uintp(0x7F0000001000), np.uintp(0x7F0000002000), np.uintp(0x7F0000003000))
    assert plan.args[3] == 1000 and plan.args[3].dtype == np.uint64
    assert (plan.grid, plan.block) == (4, device.DEFAULT_BLOCK)
    assert [p.owner for p in plan.pointers] == [x, y, out]
    assert device.plan(spec, (x, y, out, 10), block=32, max_grid=2).grid == 1
    assert device.plan(spec, (x, y, out), block=8, max_grid=3).grid == 3  # grid-stride covers the rest
    assert device.plan(spec, (x, y, out), block=1024).block == 1024
    with pytest.raises(ValueError, match=r"block must be at most 1024 threads \(CUDA's limit per block\), got 1025"):
        device.plan(spec, (x, y, out), block=1025)


@pytest.mark.every_python
def test_plan_checks_the_compiled_kernels_limits():
    """A kernel's registers may allow fewer than 1024 threads per block, and dynamic shared memory
    has a limit per function (48 KiB unless raised): launch passes both from CuPy, plan refuses."""
    spec, x, y, out = _mag()
    assert device.plan(spec, (x, y, out), block=512, max_block=512, shared_nbytes=49152, max_shared=49152).block == 512
    with pytest.raises(ValueError, match=r"block must be at most 512 threads for magnitude_f64\(\) as compiled"):
        device.plan(spec, (x, y, out), block=640, max_block=512)
    with pytest.raises(ValueError, match=r"shared_nbytes must be at most 49152 bytes .* got 49153; .*max_dynamic_shared"):
        device.plan(spec, (x, y, out), shared_nbytes=49153, max_shared=49152)
    for bad in (-1, 1.5, True, "64"):
        with pytest.raises(TypeError, match="shared_nbytes must be an int >= 0"):
            device.plan(spec, (x, y, out), shared_nbytes=bad)
    assert device.plan(spec, (x, y, out), shared_nbytes=np.int64(1 << 20)).block == device.DEFAULT_BLOCK   # limit unknown


PLAN_ERRORS = [
    (lambda x, y, out: (FakeDeviceArray((5,), "<f4"), y, out), TypeError, "dtype of argument 'x' of magnitude_f64() must be float64"),
    (lambda x, y, out: (x, y, FakeDeviceArray((5,), readonly=True)), ValueError, "must be writable"),
    (lambda x, y, out: (x, y, FakeDeviceArray((5,), strides=(16,))), ValueError, "must be C-contiguous"),
    (lambda x, y, out: (x, y, FakeDeviceArray((5,), addr=0x7F0000003004)), ValueError, "aligned to 8 bytes"),
    (lambda x, y, out: (x, y, FakeDeviceArray((4,))), ValueError, "same length when n is omitted"),
    (lambda x, y, out: (x, y, out, 6), ValueError, "must have at least 6 elements"),
    (lambda x, y, out: (x, y, out, -1), OverflowError, "must lie in [0, 18446744073709551615]"),
    (lambda x, y, out: (x, y, out, 2.5), TypeError, "must be an integer"),
    (lambda x, y, out: (x, y, out, "5"), TypeError, "must be a number"),
    (lambda x, y, out: (x, np.ones(5), out), TypeError, "host memory"),
    (lambda x, y, out: (x, y), TypeError, "takes (const double *x"),
    (lambda x, y, out: (x, y, out, 5, 6), TypeError, "got 5 arguments"),
]


@pytest.mark.parametrize(("make", "exc", "fragment"), PLAN_ERRORS)
def test_plan_refuses_what_launch_would_get_wrong(make, exc, fragment):
    spec, x, y, out = _mag()
    with pytest.raises(exc) as info:
        device.plan(spec, make(x, y, out))
    assert fragment in str(info.value)


def test_plan_accepts_read_only_const_inputs_and_checks_fixed_minimums():
    spec, x, y, out = _mag()
    device.plan(spec, (FakeDeviceArray((5,), readonly=True), y, out))
    total = device.kernels("reduce")["sum_f64"]
    device.plan(total, (x, FakeDeviceArray((1,))))
    with pytest.raises(ValueError, match=r"at least 1 elements \(out=1 in reduce.cu\)"):
        device.plan(total, (x, FakeDeviceArray((0,), addr=0)))
    with pytest.raises(ValueError, match="grid and block must be >= 1"):
        device.plan(total, (x, FakeDeviceArray((1,))), block=0)


def test_launch_needs_a_loaded_kernel():
    with pytest.raises(TypeError, match=r"load\('magnitude'\)"):
        device.launch(device.kernels("magnitude")["magnitude_f64"], *_mag()[1:])


@needs_no_gpu
@pytest.mark.parametrize("call", [
    lambda: device.load("magnitude"),
    lambda: device.from_pointer(0x7F0000001000, (4,), np.float64, owner=object()),
    lambda: device.numba_magnitude(np.ones(3), np.ones(3)),
    lambda: device.cupy_momentum(),
], ids=["load", "from_pointer", "numba_magnitude", "cupy_momentum"])
def test_without_a_gpu_entry_points_say_why(call):
    with pytest.raises(DeviceUnavailable) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, (PygutsError, RuntimeError))
    assert any(why in message for why in ("CuPy is not installed", "no NVIDIA driver", "no CUDA device",
                                          "CuPy cannot reach a device", "is_available() is False"))
    assert info.traceback[-1].frame.f_globals["__name__"].startswith("pyguts.")  # raised by us, not CUDA
    assert not device.available()


@pytest.mark.parametrize(("args", "exc", "fragment"), [
    ((-1, (4,), "f8", object()), TypeError, "device address (int >= 0)"),
    ((0, (4,), "f8", object()), ValueError, "ptr is NULL"),
    ((0x7000, (4,), "O", object()), TypeError, "plain data"),
    ((0x7000, (-4,), "f8", object()), ValueError, "non-negative ints"),
    ((0x7000, (4,), "f8", None), ValueError, "owner must be the object"),
])
def test_from_pointer_checks_before_touching_a_device(args, exc, fragment):
    with pytest.raises(exc) as info:
        device.from_pointer(*args)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["pyguts.device", "pyguts.device.cai", "pyguts.device.gpu_kernels"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
