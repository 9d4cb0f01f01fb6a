"""Noise2Fast's training rules (stopping, averaging, restart) and its quality on a real crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import PlaneRun, iter_denoise
from napari_noise2fast.methods.noise2fast import Noise2Fast


def psnr(clean, image):
    return peak_signal_noise_ratio(clean, image.astype(np.float64), data_range=255)


def test_reference_beats_noisy_input_on_real_crop(set12_05_crop):
    noisy, clean = set12_05_crop
    job = iter_denoise(noisy, seed=0, device="cpu", max_steps=150, preset="reference", preview=False)
    events = list(job)
    result = job.result()
    assert events[-1].step == 150 and events[-1].stop_reason == "max_steps"
    assert result.shape == noisy.shape and result.dtype == np.float32
    assert psnr(clean, result) > psnr(clean, noisy) + 3.0


def test_fast_preset_beats_noisy_input_on_real_crop(set12_05_crop):
    noisy, clean = set12_05_crop
    job = iter_denoise(noisy, seed=0, device="cpu", max_steps=1500, preset="fast")
    events = list(job)
    assert events[-1].stop_reason == "patience" and events[-1].step % 10 == 0
    assert events[0].step == 0 and events[0].stage == "preview"
    assert [e.step for e in events[1:] if not np.isnan(e.val_psnr)] == list(range(10, events[-1].step + 1, 10))
    assert events[-1].stage == "noise2fast" and events[-1].best_val_psnr > events[0].val_psnr
    assert psnr(clean, job.result()) > psnr(clean, noisy) + 5.0  # measured: 26.05 against 20.28
    assert psnr(clean, job.result()) > psnr(clean, events[0].output) + 1.0


def test_stops_after_patience_plus_one_steps_without_improvement():
    noisy = np.random.default_rng(1).normal(100, 20, (24, 24)).astype(np.float32)
    run = PlaneRun(noisy, Noise2Fast, seed=3, device="cpu", preview=False, preset="reference", patience=4,
                   window=3, restart_learning_rate=None)
    events = list(run)
    best, since, expected_stop = -np.inf, 0, None
    for event in events:
        if event.val_psnr > best:
            best, since = event.val_psnr, 0
        else:
            since += 1
        if since > 4:
            expected_stop = event.step
            break
    assert expected_stop is not None
    assert events[-1].step == expected_stop
    assert events[-1].stop_reason == "patience"
    assert [e.step for e in events] == list(range(1, expected_stop + 1))
    assert all(e.best_val_psnr == max(x.val_psnr for x in events[: e.step]) for e in events)


class ScriptedNetwork(torch.nn.Module):
    """Stands in for the network: the k-th call returns logits equal to ``values[k]`` everywhere."""

    def __init__(self, values):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.values = list(values)
        self.calls = 0

    def forward(self, x):
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        return 0 * self.weight * x + value  # zero gradient: Adam leaves it alone


def scripted(noisy, values, **settings):
    method = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, **{"preset": "reference", **settings})
    method.network = ScriptedNetwork(values)
    method.optimizer = torch.optim.Adam(method.network.parameters(), lr=1e-3)
    return method


def test_result_is_mean_of_last_window_validation_outputs():
    noisy = torch.rand(1, 1, 12, 12)
    logits = np.linspace(-2, 2, 40)
    # calls alternate: training forward, validation forward
    method = scripted(noisy, np.repeat(logits, 2), window=5, patience=1000)
    validation = []
    for k in range(12):
        method.step()
        validation.append(1 / (1 + np.exp(-logits[k])))
    assert method.result().shape == (12, 12)
    np.testing.assert_allclose(method.result().numpy(), np.mean(validation[-5:]), rtol=1e-5)


def test_window_not_full_returns_best_single_output():
    noisy = torch.full((1, 1, 12, 12), 0.5)
    method = scripted(noisy, [0.0, 0.0, 0.0, 3.0, 0.0, -3.0], window=105, patience=1000)
    for _ in range(3):
        method.step()
    # validation logits were 0, 0, 0: sigmoid 0.5 equals the noisy image exactly
    np.testing.assert_allclose(method.result().numpy(), 0.5)


def test_flat_average_restarts_once_at_low_learning_rate():
    noisy = torch.rand(1, 1, 16, 16)
    method = scripted(noisy, [0.0], window=3, patience=2)
    for _ in range(4):  # one best step, then patience + 1 without improvement
        method.step()
    assert method.stop_reason is None and method.restarted
    assert method.optimizer.param_groups[0]["lr"] == pytest.approx(5e-6)
    assert not isinstance(method.network, ScriptedNetwork)  # fresh weights


def test_seed_makes_runs_repeatable():
    noisy = np.random.default_rng(2).normal(50, 10, (20, 20)).astype(np.float32)
    first, second, other = (iter_denoise(noisy, seed=s, device="cpu", max_steps=10, preview=False) for s in (7, 7, 8))
    for job in (first, second, other):
        list(job)
    np.testing.assert_array_equal(first.result(), second.result())
    assert not np.array_equal(first.result(), other.result())


def test_cancelling_keeps_best_result_so_far(set12_05_crop):
    noisy, _ = set12_05_crop
    job = iter_denoise(noisy, seed=0, device="cpu", output_every=1)
    for event in job:
        if event.step == 60:
            break
    job.close()
    result = job.result()
    assert job.current.stop_reason == "cancelled"
    np.testing.assert_allclose(result, event.output, atol=1e-4)
    assert np.isfinite(result).all() and not np.allclose(result, noisy)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"patiense": 3}, "unknown Noise2Fast parameter"),
        ({"preset": "nope"}, "preset must be one of"),
        ({"average": "median"}, "invalid Noise2Fast settings"),
        ({"validate_every": 0}, "invalid Noise2Fast settings"),
        ({"precision": "float8"}, "invalid Noise2Fast settings"),
    ],
)
def test_bad_setting_is_a_plain_error_before_training(params, message):
    with pytest.raises(ValueError, match=message):
        iter_denoise(np.random.rand(16, 16), device="cpu", **params)  # raised at the call, not on iteration


def test_validate_every_k_steps_counts_patience_in_steps():
    noisy = np.random.default_rng(4).normal(100, 20, (24, 24)).astype(np.float32)
    run = PlaneRun(noisy, Noise2Fast, seed=0, device="cpu", preview=False, validate_every=3, patience=5, window=4,
                   average="weights", restart_learning_rate=None, max_steps=300)
    events = list(run)
    validated = [e for e in events if not np.isnan(e.val_psnr)]
    assert [e.step for e in validated] == list(range(3, events[-1].step + 1, 3))
    assert all(np.isnan(e.val_psnr) for e in events if e.step % 3)
    # stop once more than 5 steps (two validations of 3) passed without a better score
    best, since = -np.inf, 0
    for event in validated:
        best, since = (event.val_psnr, 0) if event.val_psnr > best else (best, since + 3)
        if since > 5:
            break
    assert events[-1].step == event.step and events[-1].stop_reason == "patience"


def test_weight_average_is_exponential_with_window_centre_of_mass():
    noisy = torch.rand(1, 1, 12, 12)
    method = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, average="weights", window=9,
                        validate_every=1000)
    expected = [p.detach().clone() for p in method.averaged.parameters()]
    for step in range(1, 9):
        method.step()
        weight = max(0.2, 1 / step)  # running mean, then 2 / (window + 1)
        for average, current in zip(expected, method.network.parameters(), strict=True):
            average += weight * (current.detach() - average)
    for average, got in zip(expected, method.averaged.parameters(), strict=True):
        torch.testing.assert_close(got, average)
    assert method.network.training is True and not any(p.requires_grad for p in method.averaged.parameters())


def test_precision_auto_resolves_per_device(monkeypatch):
    from napari_noise2fast import devices

    noisy = torch.rand(1, 1, 12, 12)
    monkeypatch.setattr(devices, "_amx_available", lambda: False)
    method = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, preset="reference", precision="auto")
    assert method.compute_dtype == torch.float32
    monkeypatch.setattr(devices, "_amx_available", lambda: True)
    method = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, preset="reference", precision="auto",
                        channels_last=True)
    assert method.compute_dtype == torch.bfloat16
    assert method.step() is not None and method.result().dtype == torch.float32


def test_reference_preset_settings_are_the_published_ones():
    method = Noise2Fast(torch.rand(1, 1, 12, 12), rng=np.random.default_rng(0), level=1 / 255, preset="reference")
    assert method.settings == {
        "patience": 100, "window": 105, "learning_rate": 1e-3, "restart_learning_rate": 5e-6, "width": 64,
        "validate_every": 1, "average": "outputs", "precision": "float32", "channels_last": False,
    }
    assert method.compute_dtype == torch.float32 and method.averaged is None
