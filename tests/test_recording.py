"""One model per recording (``stack="recording"``): trained once on a sample of frames, every frame predicted."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.io import imread
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import denoise, iter_denoise
from napari_noise2fast.cli import main
from napari_noise2fast.engine import RECORDING_PLANES, RECORDING_SAMPLE_BYTES, RecordingRun, recording_sample
from napari_noise2fast.methods.noise2fast import Noise2Fast

FRAMES = 6


@pytest.fixture(scope="module")
def recording(data_dir):
    """(noisy float32 (6, 64, 64), clean float64): crops of Set12 05 drifting by up to 3 px a frame, each
    frame with its own Gaussian noise (sigma 25)."""
    clean = imread(data_dir / "set12" / "clean" / "05.png").astype(np.float64)
    rng = np.random.default_rng(0)
    offsets = 96 + rng.integers(-3, 4, size=(FRAMES, 2)).cumsum(axis=0)
    cleans = np.stack([clean[y:y + 64, x:x + 64] for y, x in offsets])
    return (cleans + rng.normal(0, 25, cleans.shape)).astype(np.float32), cleans


def test_one_model_is_trained_and_every_frame_predicted(recording, monkeypatch):
    noisy, clean = recording
    before = noisy.copy()
    built = []
    original = Noise2Fast.__init__

    def counting(self, planes, **kwargs):
        built.append(tuple(planes.shape))
        original(self, planes, **kwargs)

    monkeypatch.setattr(Noise2Fast, "__init__", counting)
    job = iter_denoise(noisy, axes="TYX", seed=0, device="cpu", max_steps=400)
    assert job.stack == "recording"  # the default for the fast preset
    events = list(job)
    out = job.result()
    assert built == [(FRAMES, 1, 64, 64)]  # one model, trained on every frame (fewer than 16)
    training, done = [e for e in events if not e.done], [e for e in events if e.done]
    assert all(e.plane == 0 for e in training) and [e.step for e in training] == list(range(1, 400))
    assert [e.plane for e in done] == list(range(FRAMES))
    assert [e.step for e in done] == [400] + [0] * (FRAMES - 1)  # the training's steps count once
    assert all(e.output is not None and e.output.shape == (64, 64) for e in done)
    assert out.shape == noisy.shape and out.dtype == np.float32
    np.testing.assert_array_equal(noisy, before)
    for frame in range(FRAMES):
        np.testing.assert_allclose(out[frame], done[frame].output, atol=1e-4)
        noisy_psnr = peak_signal_noise_ratio(clean[frame], noisy[frame].astype(np.float64), data_range=255)
        psnr = peak_signal_noise_ratio(clean[frame], out[frame].astype(np.float64), data_range=255)
        assert psnr > noisy_psnr + 5.0, (frame, noisy_psnr, psnr)  # measured: +6.2 to +6.6 dB


def test_every_frame_is_the_same_models_output(recording):
    noisy, _ = recording
    job = iter_denoise(noisy, axes="TYX", seed=0, device="cpu", max_steps=30, precision="float32")
    runs = []
    for _ in job:
        if job.current is not None and not runs:
            runs.append(job.current)
    run, out = runs[0], job.result()
    assert isinstance(run, RecordingRun)
    with torch.inference_mode():
        for frame in (1, 4):
            expected = run.map.back(run.model.predict_plane(run._tensor(run.planes[frame])).numpy(), np.float32)
            np.testing.assert_allclose(out[frame], expected, rtol=0, atol=1e-4 * float(np.ptp(noisy)))


def test_stopped_during_training_frame_0_keeps_its_best_and_the_rest_the_input(recording):
    noisy, _ = recording
    job = iter_denoise(noisy, axes="TYX", seed=0, device="cpu", max_steps=200, output_every=1)
    for event in job:
        if event.step == 40:
            break
    job.close()
    out = job.result()
    assert not np.allclose(out[0], noisy[0], atol=1.0)  # the best output so far
    np.testing.assert_array_equal(out[1:], noisy[1:])  # not predicted yet: the input stands


def test_each_channel_of_a_recording_gets_its_own_model(recording, monkeypatch):
    noisy, clean = recording
    stack = np.stack([noisy, noisy[:, :, ::-1] * 10 + 1000], axis=1)  # T, C, Y, X: channels of different ranges
    built = []
    original = Noise2Fast.__init__
    monkeypatch.setattr(Noise2Fast, "__init__", lambda self, planes, **kw: (built.append(tuple(planes.shape)),
                                                                          original(self, planes, **kw))[1])
    job = iter_denoise(stack, axes="TCYX", seed=0, device="cpu", max_steps=300)
    done = [e for e in job if e.done]
    out = job.result()
    assert built == [(FRAMES, 1, 64, 64)] * 2
    assert sorted(e.plane for e in done) == list(range(2 * FRAMES))
    for frame in range(FRAMES):
        first = peak_signal_noise_ratio(clean[frame], out[frame, 0].astype(np.float64), data_range=255)
        second = peak_signal_noise_ratio(clean[frame][:, ::-1], (out[frame, 1].astype(np.float64) - 1000) / 10,
                                         data_range=255)
        assert first > 24.0 and second > 24.0, (frame, first, second)  # noisy: 20.1-20.3 dB


def test_an_rgb_image_denoises_each_channel_as_a_plane(recording):
    noisy, _ = recording
    rgb = np.stack([noisy[0], noisy[1], noisy[2]], axis=-1)
    events = list(iter_denoise(rgb, seed=0, device="cpu", max_steps=3))
    assert [e.plane for e in events if e.done] == [0, 1, 2]
    assert sum(e.stage == "preview" for e in events) >= 3  # a plane run each, with its preview


def test_a_constant_frame_comes_back_unchanged(recording):
    noisy, _ = recording
    stack = noisy.copy()
    stack[2] = 42.0
    job = iter_denoise(stack, axes="TYX", seed=0, device="cpu", max_steps=20)
    done = [e for e in job if e.done]
    out = job.result()
    assert done[2].stop_reason == "constant"
    np.testing.assert_array_equal(out[2], 42.0)
    assert not np.allclose(out[3], stack[3], atol=1.0)


def test_the_stack_argument(recording):
    noisy, _ = recording
    quick = {"axes": "TYX", "device": "cpu", "max_steps": 1}
    with pytest.raises(ValueError, match="stack must be one of"):
        iter_denoise(noisy, stack="volume", **quick)
    with pytest.raises(ValueError, match="stack"):
        iter_denoise(noisy, stack=3, **quick)
    with pytest.raises(ValueError, match="stack='recording'.*Noise2Self"):
        iter_denoise(noisy, "noise2self", stack="recording", **quick)
    with pytest.raises(ValueError, match="reference preset"):
        iter_denoise(noisy, stack="recording", preset="reference", **quick)
    assert iter_denoise(noisy, preset="reference", **quick).stack == "warm"
    assert iter_denoise(noisy, "noise2self", **quick).stack == "warm"
    warm, independent = iter_denoise(noisy, stack="warm", **quick), iter_denoise(noisy, stack="independent", **quick)
    assert warm._run_kwargs["warm_start"] is True and independent._run_kwargs["warm_start"] is False
    assert [e.plane for e in independent if e.done] == list(range(FRAMES))


def test_one_plane_with_recording_runs_as_a_plane(recording):
    noisy, _ = recording
    job = iter_denoise(noisy[0], seed=0, device="cpu", max_steps=3, stack="recording")
    events = list(job)
    assert events[0].stage == "preview" and events[-1].done  # a single plane: the plane run, with its preview


def test_a_stack_trains_in_bounded_mode_on_crops_of_every_plane():
    planes = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    model = Noise2Fast(planes, rng=np.random.default_rng(0), level=1 / 255)
    assert model.bounded and model.n_planes == 4
    assert model.step_pixels == 16 * 32  # one half-plane of a small plane, not the whole budget
    seen = set()
    for _ in range(8):
        for _, targets, _ in model.training_batch():
            assert sum(t.numel() for t in targets) <= model.step_pixels
        seen |= {plane for plane, _, _ in model._next_crops(0, (16, 32), (16, 32), 1)}
    assert seen == {0, 1, 2, 3}
    assert {index for index, _ in model.validation_set} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="budget"):
        Noise2Fast(planes, rng=np.random.default_rng(0), level=1 / 255, budget=0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(8, 8192), st.integers(8, 8192))
def test_the_recording_sample_spans_the_recording(frames, height, width):
    sample = recording_sample(frames, (height, width))
    assert sample == sorted(set(sample)) and 1 <= len(sample) <= RECORDING_PLANES
    assert sample[0] == 0 and all(0 <= i < frames for i in sample)
    assert len(sample) == 1 or len(sample) * 4 * height * width <= RECORDING_SAMPLE_BYTES
    if len(sample) > 1:
        assert sample[-1] == frames - 1


def test_denoise_and_the_cli_take_stack(tmp_path, capsys, recording):
    noisy, _ = recording
    out = denoise(noisy[:2], axes="TYX", seed=0, device="cpu", max_steps=2)
    assert out.shape == (2, 64, 64)
    tifffile.imwrite(tmp_path / "movie.tif", noisy[:3], metadata={"axes": "TYX"})
    assert main([str(tmp_path / "movie.tif"), "--max-steps", "2", "--seed", "0", "--device", "cpu", "-q"]) == 0
    assert "2 steps over 3 planes" in capsys.readouterr().out  # one model: its 2 steps, not 2 per plane
    assert tifffile.imread(tmp_path / "movie_N2F.tif").shape == (3, 64, 64)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "movie.tif"), "--stack", "frames"])
    assert exit_info.value.code == 2


def test_events_count_the_planes_done_and_estimate_the_time_left(recording):
    noisy, _ = recording
    for mode in ("recording", "warm"):
        events = list(iter_denoise(noisy, axes="TYX", seed=0, device="cpu", max_steps=5, stack=mode))
        done = [e for e in events if e.done]
        assert [e.planes_done for e in done] == list(range(1, FRAMES + 1))
        assert all(e.planes_done == 0 for e in events[:3])
        assert done[0].eta is None and done[-1].eta == 0.0  # no pace from one plane; none left at the end
        assert all(e.eta is not None and e.eta >= 0 for e in done[1:])
        etas = [e.eta for e in done[1:-1]]
        assert etas[0] > etas[-1]  # falls as the planes are done
