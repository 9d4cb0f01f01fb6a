"""Property-based tests (hypothesis) of input handling, for every method at tiny budgets.

For any input: a result or a ValueError, never another exception; the result in
the input's shape and the dtype asked for (float32 by default); finite for
finite input; integer outputs inside the input's value range; the input never
modified; the same seed, the same output. Profiles (``HYPOTHESIS_PROFILE``, set in
``conftest.py``): ``ci`` (the default, fixed examples, about a minute) and ``long`` for local runs.
"""

from __future__ import annotations

import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_noise2fast import compare, denoise
from napari_noise2fast.methods import METHODS

# every method at a budget of a few steps (width cut where a method takes one, for speed)
TINY = {
    "noise2fast": {"max_steps": 2, "width": 8},
    "self2self": {"steps": 2, "predictions": 1, "width": 8},
    "zs-n2n": {"steps": 2, "width": 8},
    "noise2self": {"steps": 2, "width": 8, "layers": 3},
    "noise2void": {"steps": 2, "batch": 2, "base": 4},
    "pn2v": {"steps": 2, "bootstrap_steps": 2, "batch": 2, "base": 4, "samples": 4, "fit_steps": 20},
    "noise-net": {"steps": 2, "batch": 2, "base": 4, "hidden": 4},
    "calibrated": {"families": ("tv",)},
    "bm3d": {},
}
assert set(TINY) == set(METHODS)
DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@st.composite
def images(draw, min_side: int = 8, max_side: int = 20):
    """A 2D or 3D (leading axis 1-2) array of any integer or float dtype and byte order, values anywhere in the
    dtype's finite range (extremes included), as a plain, non-contiguous, read-only or memory-mapped array."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES))).newbyteorder(draw(st.sampled_from("<>")))
    shape = tuple(draw(st.lists(st.integers(min_side, max_side), min_size=2, max_size=2)))
    if draw(st.booleans()):
        shape = (draw(st.integers(1, 2)), *shape)
    kind = dtype.kind
    if kind == "f":
        width = dtype.itemsize * 8
        elements = st.floats(allow_nan=False, allow_infinity=False, width=width)
        if draw(st.booleans()):  # a microscopy-like range most of the time
            top = min(1e6, float(np.finfo(dtype).max))
            elements = st.floats(-1e4, top, allow_nan=False, width=width)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
        if draw(st.booleans()):
            low = draw(st.integers(int(info.min), int(info.max)))
            elements = st.integers(low, min(low + draw(st.integers(0, 300)), int(info.max)))
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    layout = draw(st.sampled_from(["plain", "strided", "read-only", "memmap"]))
    if layout == "strided":  # every other column of a wider array: not contiguous
        wide = np.repeat(array, 2, axis=-1)
        wide[..., 1::2] = array[..., ::-1]
        array = wide[..., ::2]
    elif layout == "read-only":
        array = array.copy()
        array.flags.writeable = False
    elif layout == "memmap":
        handle = tempfile.NamedTemporaryFile(suffix=".dat", delete=False)
        handle.close()
        mapped = np.memmap(handle.name, dtype=dtype, mode="w+", shape=array.shape)
        mapped[...] = array
        mapped.flush()
        array = np.memmap(handle.name, dtype=dtype, mode="r", shape=array.shape)
    return array


def run(image, method, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return denoise(image, method, device="cpu", **{**TINY[method], **kwargs})


def integer_range(image):
    return int(np.asarray(image).min()), int(np.asarray(image).max())


@pytest.mark.parametrize("method", sorted(METHODS))
@given(image=images(), dtype=st.sampled_from([None, "same", "float64", "uint8", "int32"]), preview=st.booleans())
def test_any_image_gives_a_result_or_a_value_error(method, image, dtype, preview):
    before = np.array(image, copy=True)
    asked = image.dtype.newbyteorder("=") if dtype == "same" else dtype
    try:
        out = run(image, method, seed=0, dtype=asked, preview=preview)
    except ValueError as error:
        event(f"ValueError: {str(error)[:40]}")
        np.testing.assert_array_equal(image, before)
        return
    event(f"result ({method})")
    np.testing.assert_array_equal(image, before)  # never modified, whatever happened
    assert out.shape == image.shape
    constant = before.min() == before.max()
    expected = np.dtype(asked) if asked is not None else (before.dtype if constant else np.dtype(np.float32))
    assert out.dtype == expected
    if out.dtype.kind == "f":
        assert np.all(np.isfinite(out))
    else:  # integers inside the input's value range
        low, high = before.min(), before.max()
        if before.dtype.kind in "ui":
            assert int(low) <= int(out.min()) and int(out.max()) <= int(high)
        else:
            assert round(float(low)) <= int(out.min()) and int(out.max()) <= round(float(high))
    if constant and asked is None:  # unchanged: its own values in its own dtype
        np.testing.assert_array_equal(out, before)


@pytest.mark.parametrize("method", sorted(METHODS))
@given(image=images(max_side=14))
@settings(max_examples=max(settings().max_examples // 3, 5))
def test_the_same_seed_gives_the_same_output(method, image):
    assume(np.asarray(image).min() != np.asarray(image).max())
    try:
        first = run(image, method, seed=3, dtype=np.float64)
    except ValueError:
        return
    second = run(image, method, seed=3, dtype=np.float64)
    np.testing.assert_array_equal(first, second)


# Arguments of every type a user might pass: valid ones, wrong values and wrong types.
ANY = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True), st.text(max_size=4),
                st.lists(st.sampled_from("ZYXC"), max_size=3), st.just(np.int64(1)), st.just(np.float32(2.0)))
VALID = {"method": "noise2fast", "axes": None, "channel_axis": None, "seed": 0, "max_steps": 2, "dtype": None,
         "device": "cpu", "preview": True, "patience": 5}
CHOICES = {"axes": ["YX", "ZYX", "YXC", "XY", "zyx", "ZZX", "CYX"], "method": ["calibrated", "nope", "ZS-N2N"],
           "device": ["auto", "gpu", "cuda:9"], "dtype": ["uint16", "f4", np.int8, "complex64", "U3", object]}


@st.composite
def arguments(draw):
    """Valid arguments with one or two of them replaced by anything."""
    changed = draw(st.lists(st.sampled_from(sorted(VALID)), min_size=1, max_size=2, unique=True))
    values = dict(VALID)
    for name in changed:
        values[name] = draw(st.one_of(ANY, st.sampled_from(CHOICES.get(name, [None]))))
    if values["max_steps"] is None or (isinstance(values["max_steps"], int) and values["max_steps"] > 2):
        values["max_steps"] = 2  # a valid budget stays tiny; wrong ones are kept
    return values


@given(values=arguments())
def test_arguments_of_any_type_give_a_result_or_a_value_error(values):
    image = np.random.default_rng(0).normal(100, 10, (2, 12, 12)).astype(np.float32)
    before = image.copy()
    values = dict(values)
    method, patience = values.pop("method"), values.pop("patience")
    params = {"noise2fast": {"patience": patience}, "calibrated": {"families": ("tv",)}}.get(method, {}) \
        if isinstance(method, str) else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = denoise(image, method, **values, **params)
    except ValueError as error:
        event(f"ValueError: {str(error)[:30]}")
    else:
        event("result")
        assert out.shape == image.shape
    np.testing.assert_array_equal(image, before)


REFERENCES = {"nan": np.nan, "inf": np.inf, "bool": True, "shape": None, "good": 0.9, "none": None}


@given(reference=st.sampled_from(sorted(REFERENCES)),
       time_budget=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-2, 2), st.booleans(),
                             st.text(max_size=2)),
       methods=st.one_of(st.just(["calibrated"]), st.just("calibrated"), st.none(), st.just([]),
                         st.just(["calibrated", "calibrated"]), st.just([3]), st.just(["nope"])),
       equal_time=st.one_of(st.just(False), st.booleans(), st.none(), st.just(1)),
       corrupt=st.integers(0, 3))
def test_compare_checks_everything_before_any_work(reports, reference, time_budget, methods,
                                                   equal_time, corrupt):
    # one argument at a time is anything; the others are valid
    image = np.random.default_rng(0).normal(100, 10, (12, 12)).astype(np.float32)
    values = {"reference": "good", "time_budget": None, "methods": ["calibrated"], "equal_time": False}
    key = sorted(values)[corrupt]
    values[key] = {"reference": reference, "time_budget": time_budget, "methods": methods,
                   "equal_time": equal_time}[key]
    ref = values["reference"]
    ref = None if ref == "none" else np.ones((3, 3)) if ref == "shape" else \
        np.full(image.shape, REFERENCES[ref], dtype=bool if ref == "bool" else float) if ref != "good" else image * 0.9
    reports.clear()
    try:
        result = compare(image, values["methods"], reference=ref, time_budget=values["time_budget"],
                         equal_time=values["equal_time"], device="cpu",
                         params={"calibrated": {"families": ("tv",)}},
                         progress=lambda *report: reports.append(report))
    except ValueError as error:
        event(f"ValueError: {str(error)[:30]}")
        assert reports == []  # refused before any work
        return
    event("result")
    assert all(output.shape == image.shape for output in result.outputs.values())
    if ref is not None:
        assert all(row.psnr is not None and np.isfinite(row.psnr) for row in result.rows)


@pytest.fixture(scope="module")
def reports():
    """A list the progress callback appends to (module-scoped: hypothesis reruns the test body)."""
    return []


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(("dtype", "value"), [("uint32", 2**32 - 1), ("int32", 2**31 - 1), ("int64", -(2**63)),
                                              ("int32", 2**24 + 1), ("uint64", 2**64 - 1)])
def test_a_constant_image_comes_back_unchanged(method, dtype, value):
    image = np.full((2, 10, 9), value, dtype=dtype)
    out = run(image, method)
    assert out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)
