"""The public API: shapes, dtypes, axes, input immutability, devices and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_noise2fast import denoise, iter_denoise
from napari_noise2fast.devices import resolve_device

QUICK = {"max_steps": 2, "seed": 0, "device": "cpu"}


def noisy_image(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(100, 20, shape)
    if np.dtype(dtype).kind == "u":
        values = np.abs(values)
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64"])
def test_dtype_matrix(dtype):
    image = noisy_image((17, 23), dtype)
    before = image.copy()
    out = denoise(image, **QUICK)
    assert out.shape == image.shape and out.dtype == np.float32  # float32 for every input dtype
    np.testing.assert_array_equal(image, before)
    assert not np.shares_memory(out, image)
    if image.dtype.kind in "ui":  # the input's integer dtype only on request: rounded, inside its range
        kept = denoise(image, dtype=image.dtype, **QUICK)
        assert kept.dtype == image.dtype and image.min() <= kept.min() and kept.max() <= image.max()
        np.testing.assert_array_equal(kept, out.round().clip(image.min(), image.max()).astype(image.dtype))


def test_output_dtype_can_be_asked_for():
    assert denoise(noisy_image((16, 16), "float32"), dtype=np.float64, **QUICK).dtype == np.float64
    out = denoise(noisy_image((16, 16), "float32"), dtype=np.uint8, **QUICK)
    assert out.dtype == np.uint8


@pytest.mark.parametrize(
    ("shape", "kwargs", "planes"),
    [
        ((3, 16, 20), {"axes": "ZYX"}, 3),
        ((2, 3, 16, 16), {"axes": "TCYX"}, 6),
        ((16, 18, 3), {}, 3),  # RGB guessed as napari does
        ((16, 18, 4), {}, 4),  # RGBA
        ((16, 18, 3), {"axes": "YXS"}, 3),
        ((2, 16, 16), {"channel_axis": 0}, 2),
        ((16, 2, 18), {"axes": "YZX"}, 2),
        ((2, 2, 16, 16), {}, 4),
    ],
)
def test_every_plane_and_channel_is_denoised(shape, kwargs, planes):
    image = noisy_image(shape, "uint16")
    before = image.copy()
    job = iter_denoise(image, **kwargs, **QUICK)
    done = [event for event in job if event.done]
    out = job.result()
    assert job.n_planes == planes
    assert sorted(event.plane for event in done) == list(range(planes))  # a recording goes channel by channel
    assert all(event.n_planes == planes for event in done)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_array_equal(image, before)


def test_planes_keep_their_place_along_axes():
    # plane 1 of the Z axis (in the middle of the array) is constant: it must come back unchanged there
    image = noisy_image((16, 3, 20), "float32")
    image[:, 1, :] = 42.0
    out = denoise(image, axes="YZX", **QUICK)
    np.testing.assert_array_equal(out[:, 1, :], 42.0)
    assert not np.allclose(out[:, 0, :], image[:, 0, :])


def test_constant_image_is_returned_unchanged_with_warning():
    image = np.full((16, 16), 7, dtype=np.uint8)
    with pytest.warns(UserWarning, match="constant"):
        out = denoise(image, **QUICK)
    np.testing.assert_array_equal(out, image)
    assert out.dtype == np.uint8


def test_integer_output_is_rounded_and_clipped():
    image = np.zeros((16, 16), dtype=np.uint8)
    image[::2, ::2] = 255
    out = denoise(image, dtype=np.uint8, **QUICK)
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.array([[1.0, np.nan]] * 8 * 4).reshape(8, 8), {}, "NaN or infinite"),
        (np.full((8, 8), np.inf), {}, "NaN or infinite"),
        (np.arange(64.0), {}, "at least 2 dimensions"),
        (np.ones((7, 9)), {}, "at least 8x8"),
        (np.ones((8, 8), dtype=complex), {}, "complex"),
        (np.ones((8, 8), dtype=bool), {}, "boolean"),
        (np.array([["a"] * 8] * 8), {}, "integer or floating-point"),
        (np.ones((3, 8, 8)), {"axes": "YX"}, "has 2 letters but the image has 3 dimensions"),
        (np.ones((3, 8, 8)), {"axes": "ZYZ"}, "repeats a letter"),
        (np.ones((3, 8, 8)), {"axes": "ZCX"}, "must contain both 'Y' and 'X'"),
        (np.ones((2, 3, 8, 8)), {"axes": "CSYX"}, "more than one channel axis"),
        (np.ones((3, 8, 8)), {"axes": "ZYX", "channel_axis": 0}, "either axes or channel_axis"),
        (np.ones((3, 8, 8)), {"channel_axis": 3}, "out of range"),
        (np.ones((8, 8)), {"channel_axis": 0}, "at least 3 dimensions"),
        (np.ones((8, 8, 3)), {"axes": "YXS"}, None),  # fine; constant image only warns
        (np.random.rand(8, 8), {"method": "nope"}, "method must be one of"),
        (np.random.rand(8, 8), {"device": "tpu"}, "device must be"),
        (np.random.rand(8, 8), {"max_steps": 0}, "max_steps must be"),
    ],
)
def test_bad_input_raises_plain_message(image, kwargs, message):
    if message is None:
        with pytest.warns(UserWarning):
            denoise(image, **{**QUICK, **kwargs})
        return
    with pytest.raises(ValueError, match=message):
        denoise(image, **{**QUICK, **kwargs})


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                           "mps" if torch.backends.mps.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_missing_accelerator_is_a_plain_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    assert resolve_device("auto") == torch.device("cpu")


def test_progress_callback_sees_every_event():
    seen = []
    denoise(noisy_image((2, 16, 16), "float32"), axes="ZYX", progress=seen.append, stack="warm", **QUICK)
    # a plane's preview is refined (a second step-0 event) where total variation beats the Gaussian
    refined = [e for e in seen if e.preview_filter == "total variation" and e.step == 0]
    assert all(e.output is not None for e in refined)
    seen = [e for e in seen if not any(e is r for r in refined)]
    assert [(e.plane, e.step) for e in seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [e.done for e in seen] == [False, False, True, False, False, True]
    assert [e.output is not None for e in seen] == [True, False, True, True, False, True]


def test_stopping_a_stack_early_keeps_finished_planes_and_input_elsewhere():
    image = noisy_image((3, 16, 16), "float32")
    job = iter_denoise(image, axes="ZYX", output_every=1, seed=0, device="cpu", max_steps=3, stack="warm")
    for event in job:
        if event.plane == 1 and event.step == 2:
            break
    job.close()
    out = job.result()
    assert not np.allclose(out[0], image[0]) and not np.allclose(out[1], image[1])
    np.testing.assert_array_equal(out[2], image[2])


def test_plane_location_places_each_plane_of_any_layout():
    image = noisy_image((3, 20, 2, 16), "uint16")  # Z, Y, C, X
    job = iter_denoise(image, axes="ZYCX", device="cpu", max_steps=1, preview=False)
    seen = {}
    for event in job:
        if event.done:
            seen[event.plane] = (job.plane_location(event.plane), event.output)
    assert len(seen) == 6
    rebuilt = np.zeros(image.shape, job.out_dtype)
    for location, output in seen.values():
        rebuilt[location] = job.cast(output)
    np.testing.assert_array_equal(rebuilt, job.result())
