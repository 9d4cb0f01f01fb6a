"""The comparison methods: their building blocks, and their quality on a small real crop."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import iter_denoise
from napari_noise2fast.methods import METHODS, get_method
from napari_noise2fast.methods.calibrated import Calibrated
from napari_noise2fast.methods.noise2self import GRID, grid_mask, interpolate_masked
from napari_noise2fast.methods.noise2void import BOX, blind_spots
from napari_noise2fast.methods.self2self import PartialConv, Self2Self
from napari_noise2fast.methods.zs_n2n import ZeroShotNoise2Noise, pair_downsample

# Budgets for a 64x64 crop that keep each run to seconds.
QUICK = {
    "calibrated": {},
    "zs-n2n": {"steps": 600},
    "noise2self": {"steps": 300, "report_every": 50},
    "noise2void": {"steps": 300, "report_every": 50, "batch": 4},
    "self2self": {"steps": 300, "predictions": 10},
}
# measured on this crop (noisy 20.28 dB), seed 0: calibrated 25.17, zs-n2n 24.56, noise2self 23.67,
# noise2void 23.27, self2self 23.07
MIN_GAIN_DB = {"calibrated": 4.0, "zs-n2n": 3.0, "noise2self": 2.5, "noise2void": 2.0, "self2self": 2.0}


def psnr(clean, image):
    return peak_signal_noise_ratio(clean, image.astype(np.float64), data_range=255)


def test_every_method_is_registered_with_a_display_name():
    assert set(METHODS) == {"noise2fast", "self2self", "zs-n2n", "noise2self", "noise2void", "pn2v", "noise-net",
                            "calibrated", "bm3d"}
    assert all(get_method(name).display_name for name in METHODS)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_method_beats_noisy_input_on_real_crop(name, set12_05_crop):
    noisy, clean = set12_05_crop
    before = noisy.copy()
    job = iter_denoise(noisy, name, seed=0, device="cpu", preview=False, **QUICK[name])
    events = list(job)
    result = job.result()
    assert result.shape == noisy.shape and result.dtype == np.float32
    assert events[-1].done and events[-1].stop_reason in {"budget", "complete"}
    assert any(np.isfinite(e.val_psnr) for e in events)
    assert psnr(clean, result) > psnr(clean, noisy) + MIN_GAIN_DB[name]
    np.testing.assert_array_equal(noisy, before)


@pytest.mark.parametrize("name", ["zs-n2n", "noise2self", "noise2void", "pn2v", "noise-net", "self2self",
                                  "calibrated"])
def test_method_runs_on_stacks_and_channels(name):
    image = np.random.default_rng(0).normal(100, 10, (2, 24, 40, 3)).astype(np.float32)
    settings = {} if name == "calibrated" else {"steps": 2, "report_every": 1}
    if name == "self2self":
        settings["predictions"] = 1
    if name == "pn2v":
        settings.update(bootstrap_steps=2, base=4, samples=4, fit_steps=20)
    job = iter_denoise(image, name, axes="ZYXC", seed=0, device="cpu", preview=False, **settings)
    events = list(job)
    assert sorted({e.plane for e in events}) == list(range(6))
    assert job.result().shape == image.shape
    if name == "noise-net":
        settings.update(base=4, hidden=4)
    if name in ("pn2v", "noise-net"):  # one noise model per channel: each channel's recording has its own
        models = [job.noise_model(channel) for channel in range(3)]
        assert all(model is not None for model in models) and len({id(m) for m in models}) == 3


@pytest.mark.parametrize(("name", "params", "message"), [
    ("zs-n2n", {"steps": 0}, "invalid zs-n2n settings"),
    ("noise2self", {"stride": 2}, "unknown noise2self parameter"),
    ("self2self", {"predictions": 0}, "invalid self2self settings"),
    ("noise2void", {"precision": "float8"}, "precision must be"),
    ("calibrated", {"families": ["median"]}, "families must be"),
])
def test_bad_settings_are_plain_errors(name, params, message):
    with pytest.raises(ValueError, match=message):
        iter_denoise(np.random.rand(16, 16), name, device="cpu", **params)


def test_calibrated_scores_every_candidate_then_applies_the_best_blindly(set12_05_crop):
    noisy, _ = set12_05_crop
    normalised = torch.from_numpy((noisy - noisy.min()) / np.ptp(noisy)).float()[None, None]
    method = Calibrated(normalised, rng=np.random.default_rng(0), level=1 / 255)
    losses = []
    while method.stop_reason is None:
        loss = method.step()
        if loss is not None:
            losses.append(loss)
    assert len(losses) == len(method.candidates) == 15 and method.stop_reason == "complete"
    family, strength = method.best
    assert method.scores[int(np.argmin(losses))][:2] == (family, strength)
    assert method.best_mse == min(losses)


def test_zs_n2n_downsamplers_average_the_diagonals():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    first, second = pair_downsample(image)
    torch.testing.assert_close(first[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))  # (0 + 5) / 2 ...
    torch.testing.assert_close(second[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))  # (1 + 4) / 2 ...
    odd = torch.rand(1, 1, 5, 7)
    assert pair_downsample(odd)[0].shape == (1, 1, 2, 3)


def test_zs_n2n_learning_rate_halves_every_third_of_the_budget():
    method = ZeroShotNoise2Noise(torch.rand(1, 1, 16, 16), rng=np.random.default_rng(0), level=1 / 255, steps=9)
    rates = []
    for _ in range(9):
        method.step()
        rates.append(method.optimizer.param_groups[0]["lr"])
    assert rates[:3] == [1e-3, 1e-3, 5e-4] and rates[5] == 2.5e-4 and method.stop_reason == "budget"


def test_zs_n2n_learning_rate_halves_every_third_of_a_time_budget():
    method = ZeroShotNoise2Noise(torch.rand(1, 1, 16, 16), rng=np.random.default_rng(0), level=1 / 255,
                                 steps=10**9, seconds=3.0)
    rates = set()
    while method.stop_reason is None:
        method.step()
        rates.add(method.optimizer.param_groups[0]["lr"])
    assert method.stop_reason == "time" and method.steps < 10**9
    # halved after each second of the three (a step takes milliseconds; the last one halves a third time)
    assert {5e-4, 2.5e-4, 1.25e-4} <= rates


def test_trained_methods_reject_a_non_positive_time_budget():
    with pytest.raises(ValueError, match="'seconds' must be positive"):
        get_method("self2self").check_params(seconds=0)


def test_noise2self_grid_phases_cover_each_pixel_once_and_interpolate_from_neighbours():
    masks = torch.stack([grid_mask((9, 10), phase, "cpu") for phase in range(GRID * GRID)])
    assert torch.equal(masks.sum(dim=0), torch.ones(1, 1, 9, 10))
    image = torch.rand(1, 1, 9, 10)
    mask = masks[5]
    filled = interpolate_masked(image, mask)
    keep = mask == 0
    assert torch.equal(filled[keep], image[keep])
    y, x = 5, 5  # a masked interior pixel of phase 5 (row 1 mod 4, column 1 mod 4)
    assert mask[0, 0, y, x] == 1
    expected = (image[0, 0, y - 1, x] + image[0, 0, y + 1, x] + image[0, 0, y, x - 1] + image[0, 0, y, x + 1]) / 4
    torch.testing.assert_close(filled[0, 0, y, x], expected)


def test_noise2void_blind_spots_take_a_different_pixel_of_their_neighbourhood():
    generator = torch.Generator().manual_seed(0)
    spots, neighbours = blind_spots((3, 64, 48), generator, "cpu")
    assert len(spots) == 3 * (64 // BOX) * (48 // BOX) and len(set(spots.tolist())) == len(spots)
    assert not torch.any(spots == neighbours)
    plane = spots // (64 * 48)
    assert torch.equal(plane, neighbours // (64 * 48))
    within = spots % (64 * 48)
    other = neighbours % (64 * 48)
    assert torch.all((within // 48 - other // 48).abs() <= 2) and torch.all((within % 48 - other % 48).abs() <= 2)


def test_self2self_partial_convolution_ignores_masked_pixels():
    conv = PartialConv(1, 4)
    image = torch.rand(1, 1, 8, 8)
    mask = (torch.rand(1, 1, 8, 8) > 0.3).float()
    changed = image + (1 - mask) * 100.0
    out, new_mask = conv(image, mask)
    out_changed, _ = conv(changed, mask)
    torch.testing.assert_close(out, out_changed)
    full, _ = conv(image, torch.ones_like(mask))
    # no mask: a plain convolution inside (at the border the zero padding counts as missing and is rescaled)
    torch.testing.assert_close(full[..., 1:-1, 1:-1], conv.conv(image)[..., 1:-1, 1:-1])
    assert new_mask.min() >= 0 and new_mask.max() <= 1


def test_self2self_streams_the_ensemble_mean_over_the_second_half_of_the_budget():
    method = Self2Self(torch.rand(1, 1, 32, 32), rng=np.random.default_rng(0), level=1 / 255, steps=20,
                       predictions=4, report_every=5)
    counts = []
    while method.stop_reason is None:
        method.step()
        counts.append(method.ensemble_count)
    assert method.steps == 20 and method.stop_reason == "budget"
    assert counts[9] == 0 and counts[-1] == 4  # none in the first half, all four by the end
    assert method.result().shape == (32, 32)


def test_self2self_builds_its_ensemble_in_the_second_half_of_a_time_budget():
    method = Self2Self(torch.rand(1, 1, 32, 32), rng=np.random.default_rng(0), level=1 / 255, steps=10**9,
                       seconds=2.0, predictions=4, report_every=5)
    counts = []
    while method.stop_reason is None:
        method.step()
        counts.append((method.progress(), method.ensemble_count))
    assert method.stop_reason == "time" and method.steps < 10**9
    assert all(count == 0 for progress, count in counts if progress < 0.6)  # the first half only trains
    assert counts[-1][1] >= 3  # the ensemble is taken within the time, not after an unreachable step count


def test_self2self_starts_at_the_mean_and_learns_a_mostly_dark_confocal_crop(data_dir):
    # 64x64 of FMD BPAE_B whose mean is 4 % of its range: from the default bias the sigmoid output
    # saturated at 0 and stayed a constant image (28.0 dB against noisy 34.9, every seed); measured
    # with the bias at the logit of the mean: 40.0 dB
    noisy = tifffile.imread(data_dir / "confocal" / "noisy" / "BPAE_B.tif")[256:320, 256:320]
    clean = tifffile.imread(data_dir / "confocal" / "clean" / "BPAE_B.tif")[256:320, 256:320].astype(np.float64)
    plane = torch.from_numpy((noisy - noisy.min()) / float(np.ptp(noisy))).float()[None, None]
    method = Self2Self(plane, rng=np.random.default_rng(0), level=1 / 255, steps=2)
    assert torch.sigmoid(method.network.head[-1].bias).item() == pytest.approx(plane.mean().item(), rel=1e-4)
    job = iter_denoise(noisy, "self2self", seed=0, device="cpu", preview=False, steps=150, predictions=10)
    list(job)
    result = job.result().astype(np.float64)
    assert result.std() > 5.0  # not a constant image
    assert psnr(clean, result) > psnr(clean, noisy) + 3.0


def test_bm3d_noise_fit_recovers_a_poisson_gaussian_model():
    from napari_noise2fast.methods.bm3d_vst import anscombe, fit_noise, inverse_anscombe

    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.1, 0.9, 256), (256, 1))
    gain, read = 0.01, 0.0004
    noisy = rng.poisson(clean / gain) * gain + rng.normal(0, np.sqrt(read), clean.shape)
    fitted_gain, fitted_read = fit_noise(noisy)
    assert fitted_gain == pytest.approx(gain, rel=0.15) and fitted_read == pytest.approx(read, abs=3e-4)
    stabilised = anscombe(noisy, gain, read) - anscombe(clean, gain, read)
    assert np.std(stabilised) == pytest.approx(1.0, abs=0.1)  # unit variance after the transform
    np.testing.assert_allclose(inverse_anscombe(anscombe(clean, gain, read), gain, read), clean, atol=1e-12)


def test_bm3d_beats_noisy_input_on_real_crop(set12_05_crop):
    pytest.importorskip("bm3d")
    noisy, clean = set12_05_crop
    job = iter_denoise(noisy, "bm3d", device="cpu", preview=False)
    events = list(job)
    assert events[-1].stop_reason == "complete" and job.current is None
    assert psnr(clean, job.result()) > psnr(clean, noisy) + 4.0


def test_bm3d_without_its_package_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bm3d(name, *args, **kwargs):
        if name == "bm3d":
            raise ImportError("no bm3d here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bm3d)
    with pytest.raises(ValueError, match="non-commercial use only"):
        iter_denoise(np.random.rand(16, 16), "bm3d", device="cpu")
