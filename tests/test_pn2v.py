"""PN2V bootstrapped from the image (issue 24): the noise models, ``estimate_noise``, the method through the
engine, and its quality on the confocal fish at the defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
import torch
from skimage.io import imread
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import compare, denoise, estimate_noise, iter_denoise, tiling
from napari_noise2fast.engine import to_end
from napari_noise2fast.methods.pn2v import PN2V, mmse, sample_loss
from napari_noise2fast.noise import GaussianMixture, Histogram, fit_pairs, from_state

SMALL = {"steps": 20, "bootstrap_steps": 20, "report_every": 10, "batch": 2, "base": 4, "samples": 8,
         "fit_steps": 100}


def poisson_gaussian(seed: int = 1, side: int = 128, gain: float = 2.0, read: float = 3.0, offset: float = 100.0):
    """A smooth synthetic scene of photon counts, as a camera records it: ``gain`` ADU per photon, read noise of
    ``read`` ADU, a dark ``offset``; (noisy uint16 image, clean image in ADU, true std at a signal in ADU)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    photons = 5 + 60 * xx / (side - 1)
    for _ in range(12):
        cy, cx, r, a = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(4, 14), rng.uniform(20, 120)
        photons = photons + a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    noisy = np.round(gain * rng.poisson(photons) + offset + rng.normal(0, read, photons.shape)).astype(np.uint16)
    return noisy, gain * photons + offset, lambda s: np.sqrt(gain * (s - offset) + read**2)


def worst_relative_error(model, clean, true_std) -> float:
    signals = np.linspace(*np.percentile(clean, [5, 95]), 25)
    return float(np.max(np.abs(model.std(signals) / true_std(signals) - 1)))


def test_the_mixtures_likelihood_is_the_slow_per_pixel_one():
    generator = torch.Generator().manual_seed(0)
    model = GaussianMixture(torch.randn((3, 3, 3), generator=generator) * 0.5, low=0.1, high=0.9, min_std=0.05)
    observation, signal = torch.rand(7, generator=generator), torch.rand(7, generator=generator)
    fast = model.log_likelihood(observation, signal)
    coefficients = model.coefficients.double().numpy()
    for x, s, value in zip(observation.tolist(), signal.tolist(), fast.tolist(), strict=True):
        t = min(max((s - 0.1) / 0.8, 0.0), 1.0)  # held at the fitted range's ends beyond them
        logits, offsets, log_vars = (sum(c[:, k] * t**k for k in range(3)) for c in coefficients)
        weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        variances = np.maximum(np.exp(log_vars), 0.05**2)
        offsets = np.sqrt(variances) * np.tanh(offsets)  # within a standard deviation of the signal
        means = offsets - (weights * offsets).sum() + s  # re-centred: the mixture's mean is the signal
        density = sum(w * math.exp(-(x - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v)
                      for w, m, v in zip(weights, means, variances, strict=True))
        assert value == pytest.approx(math.log(density), rel=1e-4, abs=1e-4)
    # the mixture's mean is the signal; its std is that of the density, by quadrature
    xs = torch.linspace(-30, 30, 600001, dtype=torch.float64)
    for s in (0.2, 0.7):
        density = model.log_likelihood(xs, torch.tensor(s, dtype=torch.float64)).exp()
        step = float(xs[1] - xs[0])
        mean = float((density * xs).sum() * step)
        std = math.sqrt(float((density * (xs - mean) ** 2).sum() * step))
        assert mean == pytest.approx(s, abs=1e-4)
        assert float(model.std(torch.tensor([s], dtype=torch.float64))[0]) == pytest.approx(std, rel=1e-4)


def test_the_loss_and_the_mmse_are_the_slow_ones():
    model = GaussianMixture(torch.tensor([[[0.0, 1.0], [0.5, 0.0]], [[0.0, 0.1], [0.02, 0.0]],
                                          [[-5.0, 0.5], [-4.0, 0.0]]]), low=0.0, high=1.0, min_std=0.01)
    samples = torch.tensor([[0.2, 0.4, 0.5], [0.7, 0.1, 0.9]])
    observation = torch.tensor([0.35, 0.8])
    loss = sample_loss(samples, observation, model)
    estimate = mmse(samples[:, :, None, None], observation[:, None, None, None], model)[:, 0, 0, 0]
    for i in range(2):
        p = [math.exp(model.log_likelihood(observation[i], samples[i, k]).item()) for k in range(3)]
        assert loss[i].item() == pytest.approx(-math.log(sum(p) / 3), rel=1e-5)
        weighted = sum(pk * s for pk, s in zip(p, samples[i].tolist(), strict=True))
        assert estimate[i].item() == pytest.approx(weighted / sum(p), rel=1e-5)


def test_noise_models_survive_their_state_and_the_histograms_rows_are_densities():
    generator = torch.Generator().manual_seed(0)
    signal = torch.rand(20000, generator=generator)
    observation = signal + 0.05 * torch.randn(20000, generator=generator)
    histogram = to_end(fit_pairs(signal, observation, "histogram", generator=generator))
    width = (histogram.high - histogram.low) / histogram.table.shape[0]
    np.testing.assert_allclose(histogram.table.sum(1).numpy() * width, 1.0, rtol=1e-5)
    assert isinstance(histogram, Histogram) and histogram.std(torch.tensor([0.5])).item() == pytest.approx(0.05,
                                                                                                        rel=0.15)
    mixture = to_end(fit_pairs(signal, observation, "gmm", generator=generator, steps=300))
    for model in (histogram, mixture):
        again = from_state(model.state())
        x, s = torch.rand(50, generator=generator), torch.rand(50, generator=generator)
        torch.testing.assert_close(again.log_likelihood(x, s), model.log_likelihood(x, s))
    with pytest.raises(ValueError, match="not a noise model"):
        from_state({"kind": torch.tensor(0)})


def test_estimate_noise_vst_recovers_gain_and_read_noise():
    noisy, clean, true_std = poisson_gaussian()
    model = estimate_noise(noisy, "vst")
    assert worst_relative_error(model, clean, true_std) < 0.10
    assert model.gain == pytest.approx(2.0, rel=0.1)
    # the line's intercept is read**2 - gain * offset: the offset is where the variance would reach read**2
    assert model.read == pytest.approx(3.0**2 - 2.0 * 100.0, rel=0.15)
    signals, stds = model.curve()
    assert signals.shape == stds.shape == (64,) and np.all(np.diff(signals) > 0)


def test_estimate_noise_pn2v_recovers_gain_and_read_noise():
    noisy, clean, true_std = poisson_gaussian()
    before = noisy.copy()
    model = estimate_noise(noisy, "pn2v", seed=0, device="cpu")  # the default bootstrap: 1,500 steps
    assert model.method == "pn2v" and model.parameters["kind"] == "gmm"
    assert worst_relative_error(model, clean, true_std) < 0.10
    assert model.gain == pytest.approx(2.0, rel=0.1)
    np.testing.assert_array_equal(noisy, before)


@pytest.mark.parametrize(("arguments", "match"), [
    ({"image": np.zeros((4, 4))}, "image must be"),
    ({"image": np.full((16, 16), np.nan)}, "NaN"),
    ({"image": np.ones((16, 16)), "method": "pn2v"}, "constant"),
    ({"image": np.ones((16, 16)), "method": "nope"}, "method must be one of"),
    ({"image": np.ones((16, 16)), "method": "vst", "samples": 3}, "takes no parameters"),
    ({"image": np.random.default_rng(0).random((16, 16)), "method": "pn2v", "samples": 0}, "samples must be"),
    ({"image": np.random.default_rng(0).random((16, 16)), "method": "pn2v", "noise_model": "x"}, "noise_model"),
])
def test_estimate_noise_refuses_bad_input(arguments, match):
    with pytest.raises(ValueError, match=match):
        estimate_noise(**arguments)


def test_pn2v_runs_a_recording_with_one_noise_model_and_repeats_bit_for_bit():
    stack = np.random.default_rng(0).poisson(40, (3, 32, 40)).astype(np.uint16)
    before = stack.copy()
    job = iter_denoise(stack, "pn2v", seed=3, device="cpu", preview=False, **SMALL)
    events = list(job)
    result = job.result()
    assert result.shape == stack.shape and result.dtype == np.float32 and np.isfinite(result).all()
    assert [e.plane for e in events if e.done] == [0, 1, 2]
    assert events[0].countdown.total == 40  # the bootstrap's steps and PN2V's
    again = denoise(stack, "pn2v", seed=3, device="cpu", preview=False, **SMALL)
    np.testing.assert_array_equal(result, again)
    np.testing.assert_array_equal(stack, before)


def test_pn2v_stopped_in_the_bootstrap_keeps_noise2voids_best():
    plane = np.random.default_rng(1).poisson(30, (40, 40)).astype(np.uint16)
    job = iter_denoise(plane, "pn2v", seed=0, device="cpu", preview=False, **{**SMALL, "bootstrap_steps": 1000})
    for event in job:
        if event.step >= 25:
            break
    job.close()
    result = job.result()
    assert result.shape == plane.shape and not np.array_equal(result, plane.astype(np.float32))
    assert not job.has_model  # no PN2V model yet: nothing to save


def test_pn2v_with_a_time_budget_and_unbounded_steps_bootstraps_for_a_third_of_it(monkeypatch):
    """An equal-time comparison runs PN2V with ``seconds`` and unbounded steps: the bootstrap still gets its
    share of the default run (1,500 of 4,500 steps), not 1,500 of a billion."""
    from napari_noise2fast.methods import pn2v

    noisy = torch.rand(1, 1, 32, 32)
    clock = [100.0]
    monkeypatch.setattr(pn2v.time, "perf_counter", lambda: clock[0])
    for steps, seconds, share in ((10**9, 90.0, 1 / 3), (500, 80.0, 0.75)):
        model = PN2V(noisy, rng=np.random.default_rng(0), level=0.01, steps=steps, seconds=seconds)
        started = model.started
        clock[0] = started + seconds * share - 0.5
        assert not model._bootstrap_over()
        clock[0] = started + seconds * share + 0.5
        assert model._bootstrap_over()


def test_pn2v_predicts_in_tiles_as_on_the_whole_plane_and_as_a_worker_would(monkeypatch):
    plane = torch.from_numpy(np.random.default_rng(2).random((1, 1, 70, 90), dtype=np.float32))
    model = PN2V(plane, rng=np.random.default_rng(0), level=1 / 255, **SMALL)
    while model.stage != "pn2v" or model.best_state is None:
        model.step()
    whole = model.predict_plane(plane)
    monkeypatch.setattr(tiling, "TILE_OVERRIDE", 32)
    tiled = model.predict_plane(plane)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5 if model.compute_dtype == torch.float32 else 2e-2)
    worker = PN2V.predictor(model.predicting_state(), **model.prediction_spec())
    torch.testing.assert_close(worker(plane), tiled, rtol=0, atol=0)
    PN2V.check_state(model.trained_state(), **SMALL)
    with pytest.raises(ValueError, match="do not fit"):
        PN2V.check_state(model.trained_state(), **{**SMALL, "samples": 5})


def test_a_saved_pn2v_model_predicts_as_the_job_did(tmp_path):
    plane = np.random.default_rng(4).poisson(50, (48, 48)).astype(np.uint16)
    job = iter_denoise(plane, "pn2v", seed=0, device="cpu", preview=False, **SMALL)
    for _ in job:
        pass
    assert job.has_model
    path = job.save_model(tmp_path / "pn2v.pt")
    again = denoise(plane, "pn2v", device="cpu", model=path, preview=False)
    np.testing.assert_allclose(again, job.result(), rtol=0, atol=1e-3)
    warm = denoise(plane, "pn2v", device="cpu", seed=0, model=path, model_use="warm", preview=False,
                   **{**SMALL, "steps": 10})
    assert warm.shape == plane.shape and np.isfinite(warm).all()


def test_pn2v_is_in_compare_and_refuses_bad_settings():
    plane = np.random.default_rng(5).poisson(20, (32, 32)).astype(np.uint8)
    result = compare(plane, methods=["pn2v"], device="cpu", seed=0, params={"pn2v": SMALL})
    assert "pn2v" in result.outputs and result.outputs["pn2v"].shape == plane.shape
    with pytest.raises(ValueError, match="noise_model must be one of"):
        denoise(plane, "pn2v", noise_model="poisson")


@pytest.fixture
def fish_crop(data_dir):
    noisy = imread(data_dir / "confocal" / "noisy" / "fish.tif")[192:320, 192:320]
    clean = imread(data_dir / "confocal" / "clean" / "fish.tif")[192:320, 192:320].astype(np.float64)
    return noisy, clean


def test_pn2v_at_its_defaults_beats_the_noisy_fish_and_noise2void(fish_crop):
    noisy, clean = fish_crop

    def psnr(image):
        return peak_signal_noise_ratio(clean, image.astype(np.float64), data_range=255)

    pn2v = denoise(noisy, "pn2v", seed=0, device="cpu", preview=False)
    noise2void = denoise(noisy, "noise2void", seed=0, device="cpu", preview=False)
    assert psnr(pn2v) > psnr(noisy) + 3.0
    assert psnr(pn2v) > psnr(noise2void)


def test_the_cli_prints_the_noise_line_and_refuses_bad_files_on_one_line(tmp_path, capsys):
    from napari_noise2fast.cli import main

    noisy, _, _ = poisson_gaussian()
    tifffile.imwrite(tmp_path / "cells.tif", noisy)
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    assert main(["noise", str(tmp_path / "cells.tif"), str(tmp_path / "broken.tif"), "--method", "vst"]) == 1
    captured = capsys.readouterr()
    line = next(line for line in captured.out.splitlines() if "variance =" in line)
    gain = float(line.split("variance = ")[1].split(" *")[0])
    assert gain == pytest.approx(estimate_noise(noisy, "vst").gain, rel=1e-4)
    assert captured.out.count("| signal | noise std |") == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and "broken.tif" in errors[0]
