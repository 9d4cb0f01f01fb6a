"""The preview stage: a blindly calibrated Gaussian shown before the network has learned anything."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import iter_denoise
from napari_noise2fast.preview import calibrated_gaussian


def psnr(clean, image):
    return peak_signal_noise_ratio(clean, image.astype(np.float64), data_range=255)


def test_first_event_is_a_preview_that_beats_the_noisy_input(set12_05_crop):
    noisy, clean = set12_05_crop
    first = next(iter(iter_denoise(noisy, seed=0, device="cpu")))
    assert (first.step, first.stage, first.done) == (0, "preview", False)
    assert first.output.shape == noisy.shape and first.output.dtype == np.float32
    assert psnr(clean, first.output) > psnr(clean, noisy) + 1.5  # measured: 22.24 against 20.28
    assert first.best_val_psnr == first.val_psnr


def test_calibration_is_blind_and_follows_the_noise_level():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    clean = 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    sigmas = [calibrated_gaussian(clean + rng.normal(0, noise, clean.shape))[2] for noise in (0.02, 0.2)]
    assert sigmas[0] < sigmas[1]


def test_stopping_before_the_method_validates_better_returns_the_preview(set12_05_crop):
    noisy, _ = set12_05_crop
    job = iter_denoise(noisy, seed=0, device="cpu", max_steps=2)
    events = list(job)
    assert [e.stage for e in events] == ["preview"] * 3
    np.testing.assert_array_equal(job.result(), events[0].output)


def test_preview_can_be_turned_off(set12_05_crop):
    noisy, _ = set12_05_crop
    events = list(iter_denoise(noisy, seed=0, device="cpu", max_steps=2, preview=False))
    assert [(e.step, e.stage) for e in events] == [(1, "noise2fast"), (2, "noise2fast")]
