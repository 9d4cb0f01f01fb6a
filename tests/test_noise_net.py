"""The joint denoiser + noise network (issue 25): its masking and loss against slow references, the noise it
learns, the method through the engine, and its quality on the confocal fish at the defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.io import imread
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import compare, denoise, estimate_noise, iter_denoise, tiling
from napari_noise2fast.methods.noise2void import random_patches
from napari_noise2fast.methods.noise_net import DROP, SPACING, NoiseNet, grid_mask, masked, noise_loss
from napari_noise2fast.noise import MAX_SPREAD, NoiseNetwork, from_state
from test_pn2v import poisson_gaussian, worst_relative_error

SMALL = {"steps": 20, "report_every": 10, "batch": 2, "base": 4, "hidden": 8}


def slow_log_likelihood(noise: NoiseNetwork, x: float, s: float, centre: float) -> float:
    """log p(x) under the noise network's mixture for the signal ``s``, moved to be centred on ``centre``,
    one pixel at a time in float64 from the network's weights."""
    weights = [value.double().numpy() for value in noise.layers.state_dict().values()]
    t = min(max((s - noise.low) / (noise.high - noise.low), 0.0), 1.0)
    hidden = np.tanh(weights[0] @ [t] + weights[1])
    hidden = np.tanh(weights[2] @ hidden + weights[3])
    logits, offsets, log_vars = np.split(weights[4] @ hidden + weights[5], 3)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    variances = np.maximum(np.exp(log_vars), noise.min_std**2)
    variances = np.minimum(variances, np.exp((probabilities * np.log(variances)).sum()) * MAX_SPREAD**2)
    offsets = np.sqrt(variances) * np.tanh(offsets)
    means = offsets - (probabilities * offsets).sum() + centre
    density = sum(w * math.exp(-(x - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v)
                  for w, m, v in zip(probabilities, means, variances, strict=True))
    return math.log(density)


def test_the_loss_is_the_slow_per_pixel_one_and_moves_the_denoiser_through_the_centre_only():
    torch.manual_seed(0)
    noise = NoiseNetwork(gaussians=3, hidden=6, low=0.1, high=0.9, min_std=0.02).double()
    with torch.no_grad():
        for parameter in noise.parameters():
            parameter.mul_(3)  # weights far from their start: skewed, signal-dependent mixtures
    prediction = torch.rand(9, dtype=torch.float64, requires_grad=True)
    observation = torch.rand(9, dtype=torch.float64)
    loss = noise_loss(prediction, observation, noise)
    for s, x, value in zip(prediction.tolist(), observation.tolist(), loss.tolist(), strict=True):
        assert value == pytest.approx(-slow_log_likelihood(noise, x, s, s), rel=1e-9, abs=1e-9)
    # the gradient to the prediction: the mixture's parameters held at the prediction, its centre moved
    loss.sum().backward()
    step = 1e-6
    for index, (s, x) in enumerate(zip(prediction.tolist(), observation.tolist(), strict=True)):
        above, below = slow_log_likelihood(noise, x, s, s + step), slow_log_likelihood(noise, x, s, s - step)
        numeric = -(above - below) / (2 * step)
        assert prediction.grad[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def test_a_gaussian_of_tiny_weight_is_held_within_max_spread_of_the_others():
    # two Gaussians of variance e^-8 and a third of weight 6e-5 and variance e^4 (as seed 3 of the tests' scene
    # drifted): uncapped, the third alone would make the std 0.061 instead of 0.018
    noise = NoiseNetwork(gaussians=3, hidden=6, min_std=1e-4).double()
    with torch.no_grad():
        noise.layers[-1].weight.zero_()
        noise.layers[-1].bias.copy_(torch.tensor([0.0, 0.0, -9.0, 0.0, 0.0, 0.0, -8.0, -8.0, 4.0],
                                                 dtype=torch.float64))
    signal = torch.tensor([0.3], dtype=torch.float64)
    _, _, variances = noise.components(signal)
    typical = math.exp(-8.0)
    assert variances[0].item() == pytest.approx(typical) and variances[2].item() < 1.01 * MAX_SPREAD**2 * typical
    assert noise.std(signal).item() < 1.01 * math.sqrt(typical)
    observation = torch.tensor([0.31, 0.45], dtype=torch.float64)
    for x, value in zip(observation.tolist(), noise_loss(signal.expand(2), observation, noise).tolist(), strict=True):
        assert value == pytest.approx(-slow_log_likelihood(noise, x, 0.3, 0.3), rel=1e-9)


def test_the_mask_is_a_dropped_grid_filled_from_the_neighbours_alone():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((4, 1, 60, 61), generator=generator)
    mask = grid_mask(image.shape, generator)
    for plane in mask[:, 0]:
        rows, cols = torch.nonzero(plane, as_tuple=True)
        assert len(set((rows % SPACING).tolist())) == 1 and len(set((cols % SPACING).tolist())) == 1
    share = mask.float().mean().item()
    assert share == pytest.approx((1 - DROP) / SPACING**2, rel=0.15)
    filled = masked(image, mask)
    torch.testing.assert_close(filled[~mask], image[~mask], rtol=0, atol=0)
    changed = image.clone()
    changed[mask] += 10.0  # a masked pixel's own value never reaches what replaces it
    torch.testing.assert_close(masked(changed, mask)[mask], filled[mask], rtol=0, atol=1e-6)
    grid = torch.arange(-2, 3, dtype=torch.float64)
    weights = torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 2)
    weights[2, 2] = 0
    for _, _, top, left in torch.nonzero(mask)[:50].tolist():
        rows, cols = slice(max(top - 2, 0), top + 3), slice(max(left - 2, 0), left + 3)  # inside the image only
        window = image[0, 0, rows, cols].double()
        inside = weights[2 - (top - rows.start):2 + window.shape[0] - (top - rows.start),
                         2 - (left - cols.start):2 + window.shape[1] - (left - cols.start)]
        expected = float((inside * window).sum() / inside.sum())
        assert filled[0, 0, top, left].item() == pytest.approx(expected, rel=1e-5)


def axis_coverage(length: int, size: int) -> np.ndarray:
    """The share of ``even`` patches holding each pixel along an axis, counted over every corner drawn."""
    corners = np.clip(np.arange(-(size - 1), length), 0, length - size)
    return np.array([np.mean((corners <= i) & (i < corners + size)) for i in range(length)])


def test_even_patches_hold_the_planes_border_pixels_as_often_as_its_middle():
    axis = axis_coverage(128, 16)  # the border as often as the middle, no pixel more than twice as often
    assert axis[0] == pytest.approx(axis[64]) == pytest.approx(axis[-1]) and axis.max() < 2 * axis[0]
    rows, cols = axis_coverage(32, 16), axis_coverage(40, 16)
    plane = torch.arange(32 * 40, dtype=torch.float32).reshape(1, 1, 32, 40)
    counts = {}
    for even in (False, True):
        patches = random_patches(plane, np.random.default_rng(0), 3000, 16, (32, 40), even=even)
        counts[even] = np.bincount(patches.reshape(-1).long().numpy(), minlength=plane.numel()).reshape(32, 40)
    np.testing.assert_allclose(counts[True], 3000 * np.outer(rows, cols), rtol=0.25)
    assert counts[False][0, 0] < 0.05 * counts[False][16, 20]  # drawn uniformly: the corner in 1 of 17 x 25


def test_the_noise_network_survives_its_state():
    noise = NoiseNetwork(gaussians=2, hidden=5, low=0.05, high=0.95, min_std=0.01, variance=0.003)
    again = from_state(noise.state())
    signal = torch.linspace(0, 1, 11)
    torch.testing.assert_close(again.std(signal), noise.std(signal).detach())
    assert again.central == noise.central and again.gaussians == 2
    with pytest.raises(ValueError, match="not a noise model"):
        from_state({**noise.state(), "layers.4.weight": torch.zeros(4, 5)})


def test_estimate_noise_with_the_noise_network_recovers_gain_and_read_noise():
    noisy, clean, true_std = poisson_gaussian()
    before = noisy.copy()
    model = estimate_noise(noisy, "noise-net", seed=0, device="cpu")  # its default training
    assert model.method == "noise-net" and model.parameters["kind"] == "net"
    # the 10 %, as PN2V's test: the std over the 5th-95th percentile of the signal and the gain
    # (measured at the defaults, seeds 0-5: the std within 5.9-7.8 %, the gain within 5.5 %; the network as
    # trained 8.5-16 % too high at the 5th percentile: benchmarks/RESULTS.md)
    assert worst_relative_error(model, clean, true_std) < 0.10
    assert model.gain == pytest.approx(2.0, rel=0.1)
    np.testing.assert_array_equal(noisy, before)


def test_noise_net_runs_a_recording_with_one_model_and_repeats_bit_for_bit():
    stack = np.random.default_rng(0).poisson(40, (3, 32, 40)).astype(np.uint16)
    before = stack.copy()
    job = iter_denoise(stack, "noise-net", seed=3, device="cpu", preview=False, **SMALL)
    events = list(job)
    result = job.result()
    assert result.shape == stack.shape and result.dtype == np.float32 and np.isfinite(result).all()
    assert [e.plane for e in events if e.done] == [0, 1, 2]
    assert events[0].countdown.total == 20
    assert job.noise_model() is not None and job.noise_model().method == "noise-net"
    again = denoise(stack, "noise-net", seed=3, device="cpu", preview=False, **SMALL)
    np.testing.assert_array_equal(result, again)
    np.testing.assert_array_equal(stack, before)


def test_a_seeded_noise_network_does_not_depend_on_torchs_global_generator():
    # its weights were once drawn from torch's global generator: a seeded run's noise, and the checkpoint
    # kept by its likelihood, then changed from one run to the next
    plane = np.random.default_rng(1).poisson(30, (32, 32)).astype(np.uint16)
    stds = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        stds.append(estimate_noise(plane, "noise-net", seed=4, device="cpu", **SMALL).std([25.0, 30.0, 40.0]))
    np.testing.assert_array_equal(*stds)


def test_noise_net_stopped_early_keeps_its_best_so_far():
    plane = np.random.default_rng(1).poisson(30, (40, 40)).astype(np.uint16)
    job = iter_denoise(plane, "noise-net", seed=0, device="cpu", preview=False, **{**SMALL, "steps": 1000})
    for event in job:
        if event.step >= 25:
            break
    job.close()
    result = job.result()
    assert result.shape == plane.shape and np.isfinite(result).all()
    assert not np.array_equal(result, plane.astype(np.float32))


def test_noise_net_predicts_in_tiles_as_on_the_whole_plane_and_as_a_worker_would(monkeypatch):
    plane = torch.from_numpy(np.random.default_rng(2).random((1, 1, 70, 90), dtype=np.float32))
    model = NoiseNet(plane, rng=np.random.default_rng(0), level=1 / 255, **SMALL)
    while model.best_state is None:
        model.step()
    whole = model.predict_plane(plane)
    monkeypatch.setattr(tiling, "TILE_OVERRIDE", 32)
    tiled = model.predict_plane(plane)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5 if model.compute_dtype == torch.float32 else 2e-2)
    worker = NoiseNet.predictor(model.predicting_state(), **model.prediction_spec())
    torch.testing.assert_close(worker(plane), tiled, rtol=0, atol=0)
    NoiseNet.check_state(model.trained_state(), **SMALL)
    with pytest.raises(ValueError, match="does not fit"):
        NoiseNet.check_state(model.trained_state(), **{**SMALL, "gaussians": 2})
    with pytest.raises(ValueError, match="do not fit"):
        NoiseNet.check_state(model.trained_state(), **{**SMALL, "base": 8})


def test_a_saved_noise_net_model_predicts_as_the_job_did(tmp_path):
    plane = np.random.default_rng(4).poisson(50, (48, 48)).astype(np.uint16)
    job = iter_denoise(plane, "noise-net", seed=0, device="cpu", preview=False, **SMALL)
    for _ in job:
        pass
    path = job.save_model(tmp_path / "noise.net")
    again = denoise(plane, "noise-net", device="cpu", model=path, preview=False, **SMALL)
    np.testing.assert_allclose(again, job.result(), rtol=0, atol=1e-3)
    warm = denoise(plane, "noise-net", device="cpu", seed=0, model=path, model_use="warm", preview=False,
                   **{**SMALL, "steps": 10})
    assert warm.shape == plane.shape and np.isfinite(warm).all()
    with pytest.raises(ValueError, match="is a noise-net model; it cannot be used by pn2v"):
        denoise(plane, "pn2v", device="cpu", model=path, preview=False)


def test_noise_net_is_in_compare_and_refuses_bad_settings():
    plane = np.random.default_rng(5).poisson(20, (32, 32)).astype(np.uint8)
    result = compare(plane, methods=["noise-net"], device="cpu", seed=0, params={"noise-net": SMALL})
    assert result.outputs["noise-net"].shape == plane.shape
    assert set(result.noise_models) == {"vst", "noise-net"}
    with pytest.raises(ValueError, match="gaussians must be"):
        denoise(plane, "noise-net", gaussians=0)


def test_noise_net_at_its_defaults_beats_the_noisy_fish_and_noise2void(data_dir):
    noisy = imread(data_dir / "confocal" / "noisy" / "fish.tif")[192:320, 192:320]
    clean = imread(data_dir / "confocal" / "clean" / "fish.tif")[192:320, 192:320].astype(np.float64)

    def psnr(image):
        return peak_signal_noise_ratio(clean, image.astype(np.float64), data_range=255)

    ours = denoise(noisy, "noise-net", seed=0, device="cpu", preview=False)
    noise2void = denoise(noisy, "noise2void", seed=0, device="cpu", preview=False)
    assert psnr(ours) > psnr(noisy) + 3.0
    assert psnr(ours) > psnr(noise2void)
