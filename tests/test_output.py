"""``out=``: results written into a NumPy or zarr array or a .zarr path, plane by plane, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_noise2fast import denoise, iter_denoise
from napari_noise2fast.output import ATTRS_KEY, Output

RUN = {"axes": "TYX", "seed": 0, "device": "cpu", "max_steps": 30, "precision": "float32"}


def movie(frames=5, size=40, seed=0):
    rng = np.random.default_rng(seed)
    clean = np.linspace(0, 200, size)[None, :] + np.linspace(0, 80, size)[:, None]
    return (clean + rng.normal(0, 20, (frames, size, size))).astype(np.float32)


def test_a_numpy_out_receives_the_result():
    image = movie()
    before = image.copy()
    expected = denoise(image, **RUN)
    buffer = np.zeros_like(image)
    assert denoise(image, out=buffer, **RUN) is buffer
    np.testing.assert_array_equal(buffer, expected)
    np.testing.assert_array_equal(image, before)
    counts = np.zeros(image.shape, np.uint16)
    denoise(image.clip(0, 1000), out=counts, **RUN)  # its dtype is the output dtype
    assert counts.max() > 0
    with pytest.raises(ValueError, match="out must not be the input"):
        denoise(image, out=image, **RUN)
    with pytest.raises(ValueError, match="out has shape"):
        denoise(image, out=np.zeros((5, 40, 41), np.float32), **RUN)
    with pytest.raises(ValueError, match="out must be"):
        denoise(image, out=[0, 1], **RUN)


def test_a_zarr_path_is_created_and_records_the_finished_planes(tmp_path):
    image = movie()
    expected = denoise(image, **RUN)
    out = denoise(image, out=tmp_path / "out.zarr", **RUN)
    np.testing.assert_array_equal(np.asarray(out[:]), expected)
    store = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert store.chunks == (1, 40, 40) and store.dtype == np.float32
    assert store.attrs[ATTRS_KEY]["finished"] == [0, 1, 2, 3, 4]
    assert (tmp_path / "out.zarr" / ATTRS_KEY / "model-0.pt").exists()  # the recording's model beside it


def test_existing_outputs_that_are_not_ours_are_left_alone(tmp_path):
    image = movie()
    foreign = zarr.open_array(str(tmp_path / "theirs.zarr"), mode="w", shape=image.shape, dtype=np.float32)
    foreign[:] = 7.0
    with pytest.raises(ValueError, match="not written by noise2fast"):
        denoise(image, out=tmp_path / "theirs.zarr", **RUN)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "theirs.zarr"), mode="r")[:], 7.0)
    denoise(image, out=tmp_path / "ours.zarr", **RUN)
    with pytest.raises(ValueError, match="other settings"):
        denoise(image, out=tmp_path / "ours.zarr", **{**RUN, "max_steps": 31})
    source = zarr.open_array(str(tmp_path / "input.zarr"), mode="w", shape=image.shape, dtype=np.float32)
    source[:] = image
    for out in (source, tmp_path / "input.zarr"):  # a zarr input is never its own output
        with pytest.raises(ValueError, match="out must not be the input"):
            denoise(source, out=out, **RUN)
    np.testing.assert_array_equal(source[:], image)


@pytest.mark.parametrize("stack", ["recording", "warm"])
def test_an_interrupted_run_resumes_without_redoing_finished_planes(tmp_path, monkeypatch, stack):
    image = movie()
    path = tmp_path / f"{stack}.zarr"
    job = iter_denoise(image, out=path, stack=stack, **RUN)
    for event in job:
        if event.done and event.plane == 1:
            break
    job.close()
    assert zarr.open_array(str(path), mode="r").attrs[ATTRS_KEY]["finished"] == [0, 1]
    written, training = [], []
    original = Output.write
    monkeypatch.setattr(Output, "write", lambda self, index, values: (written.append(index),
                                                                       original(self, index, values))[1])
    job = iter_denoise(image, out=path, stack=stack, **RUN)
    events = list(job)
    training = [e for e in events if not e.done]
    assert written == [2, 3, 4]  # the finished planes are not done again
    assert [e.stop_reason for e in events if e.done][:2] == ["resumed", "resumed"]
    assert [e.planes_done for e in events if e.done] == [1, 2, 3, 4, 5]  # the resumed planes count once
    if stack == "recording":
        assert training == []  # the stored model predicts: no training, the same weights
    np.testing.assert_allclose(np.asarray(job.result()[:]), denoise(image, stack=stack, **RUN), rtol=0, atol=1e-4)


def test_a_chunk_of_several_planes_is_written_only_when_all_are_done(tmp_path):
    image = movie(frames=6)
    store = zarr.open_array(str(tmp_path / "chunky.zarr"), mode="w", shape=image.shape, chunks=(3, 40, 40),
                            dtype=np.float32, fill_value=-1.0)
    job = iter_denoise(image, out=store, stack="warm", **RUN)
    for event in job:
        if event.done and event.plane == 1:
            break
    job.close()
    assert np.all(np.asarray(store[:3]) == -1.0)  # two of the chunk's three planes done: nothing written
    assert store.attrs[ATTRS_KEY]["finished"] == []
    job = iter_denoise(image, out=store, stack="warm", **RUN)
    list(job)
    assert store.attrs[ATTRS_KEY]["finished"] == list(range(6))
    np.testing.assert_allclose(np.asarray(store[:]), denoise(image, stack="warm", **RUN), rtol=0, atol=1e-4)
