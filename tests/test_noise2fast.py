"""Noise2Fast's training rules (stopping, averaging, restart) and its quality on a real crop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import PlaneRun, iter_denoise
from napari_noise2fast.engine import mse_to_psnr
from napari_noise2fast.methods import noise2fast as noise2fast_module
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
    assert [e.step for e in events if e.step and not np.isnan(e.val_psnr)] == list(range(10, events[-1].step + 1, 10))
    previews = [e for e in events if e.step == 0]  # the Gaussian, then total variation where that scores better
    assert [e.preview_filter for e in previews] in (["Gaussian"], ["Gaussian", "total variation"])
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
    first, second, other = (iter_denoise(noisy, seed=s, device="cpu", max_steps=10, preview=False, validate_every=2)
                            for s in (7, 7, 8))
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
    # pure noise: its best validation stays near a flat image's, where the start patience would hold
    run = PlaneRun(noisy, Noise2Fast, seed=0, device="cpu", preview=False, validate_every=3, patience=5, window=4,
                   average="weights", restart_learning_rate=None, max_steps=300, start_patience=0)
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


def fake_probe(bfloat16: float, contiguous: float = 1.0):
    """A measure for precision_report: float32 channels-last takes 1 s, bfloat16 ``bfloat16`` times that,
    contiguous ``contiguous`` times channels-last."""
    def measure(device, dtype, layout):
        precision = bfloat16 if dtype == torch.bfloat16 else 1.0
        return precision * (contiguous if layout == torch.contiguous_format else 1.0)
    return measure


@pytest.mark.parametrize("bfloat16, contiguous, precision, channels_last", [
    (0.4, 1.0, "bfloat16", True),  # bfloat16 2.5x faster: chosen
    (0.9, 1.0, "float32", True),  # 1.1x: not enough (1.15x needed)
    (5.0, 1.0, "float32", True),  # emulated bfloat16, 5x slower
    (5.0, 0.5, "float32", False),  # contiguous 2x faster than channels-last (AVX2 only, float32)
    (0.4, 0.95, "bfloat16", True),  # contiguous 1.05x faster: channels-last kept (1.1x needed)
])
def test_the_probe_chooses_precision_and_layout_by_the_measured_times(bfloat16, contiguous, precision, channels_last):
    from napari_noise2fast import devices

    report = devices.precision_report("cpu", measure=fake_probe(bfloat16, contiguous))
    assert report["precision"] == precision and report["channels_last"] is channels_last
    assert report["seconds"]["bfloat16"]["channels_last"] == bfloat16 and "as fast as" in report["reason"]


def test_auto_follows_the_cached_report_and_the_real_probe_runs_once(monkeypatch):
    from napari_noise2fast import devices

    for choice, dtype, layout in [("bfloat16", torch.bfloat16, torch.channels_last), ("float32", torch.float32,
                                                                                       torch.contiguous_format)]:
        monkeypatch.setitem(devices._REPORTS, "cpu", {"precision": choice, "channels_last": choice == "bfloat16"})
        method = Noise2Fast(torch.rand(1, 1, 12, 12), rng=np.random.default_rng(0), level=1 / 255)
        assert method.compute_dtype == dtype and method.memory_format == layout
        assert method.step() is None and method.result().dtype == torch.float32
    monkeypatch.delitem(devices._REPORTS, "cpu")
    calls = []
    real = devices._probe_block
    monkeypatch.setattr(devices, "_probe_block", lambda *args: calls.append(args) or real(*args))
    first = devices.precision_report("cpu")
    assert devices.precision_report("cpu") is first and len(calls) == 4  # two precisions x two layouts, once
    assert set(first["seconds"]) == {"float32", "bfloat16"} and all(
        0 < t < 10 for times in first["seconds"].values() for t in times.values())
    method = Noise2Fast(torch.rand(1, 1, 12, 12), rng=np.random.default_rng(0), level=1 / 255, channels_last=False)
    assert method.memory_format == torch.contiguous_format  # an explicit layout is kept
    with pytest.raises(ValueError, match="channels_last"):
        Noise2Fast(torch.rand(1, 1, 12, 12), rng=np.random.default_rng(0), level=1 / 255, channels_last="yes")


def test_reference_preset_settings_are_the_published_ones():
    method = Noise2Fast(torch.rand(1, 1, 12, 12), rng=np.random.default_rng(0), level=1 / 255, preset="reference")
    assert method.settings == {
        "patience": 100, "window": 105, "learning_rate": 1e-3, "restart_learning_rate": 5e-6, "width": 64,
        "validate_every": 1, "average": "outputs", "precision": "float32", "channels_last": False,
        "warm_start": False, "warm_patience": 100, "budget": None, "crop": 128, "context": False,
        "sampling": "tiles", "validation": 262144, "augment": False, "min_gain": 0.0,
        "min_relative_gain": 0.0, "min_relative_gain_bounded": 0.0, "start_patience": None, "raw_start": False,
    }
    assert method.compute_dtype == torch.float32 and method.averaged is None


def test_fast_preset_settings_are_the_documented_ones():
    method = Noise2Fast(torch.rand(1, 1, 12, 12), rng=np.random.default_rng(0), level=1 / 255)
    assert method.settings == {
        "patience": 50, "window": 105, "learning_rate": 1e-3, "restart_learning_rate": 5e-6, "width": 64,
        "validate_every": 10, "average": "weights", "precision": "auto", "channels_last": "auto",
        "warm_start": True, "warm_patience": 20, "budget": 131072, "crop": 128, "context": True,
        "sampling": "tiles", "validation": 262144, "augment": False, "min_gain": 0.0,
        "min_relative_gain": 0.005, "min_relative_gain_bounded": 0.002, "start_patience": 200, "raw_start": False,
    }
    assert method.patience == 50 and method.carry() is None


def test_warm_start_begins_from_the_carried_weights_and_validates_them_first():
    noisy = torch.rand(1, 1, 16, 16)
    first = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, window=9, validate_every=10)
    for _ in range(20):
        first.step()
    carried = first.carry()
    assert carried is not None and first.best_mse < float("inf")
    for name, value in first.network.state_dict().items():
        torch.testing.assert_close(carried["network"][name], value)
    first.step()  # what was carried is a copy, not the live weights
    assert not torch.equal(carried["network"]["0.weight"], first.network[0].weight)
    second = Noise2Fast(noisy, rng=np.random.default_rng(1), level=1 / 255, window=9, validate_every=10, warm=carried)
    assert second.warm_started
    for network, state in ((second.network, carried["network"]), (second.averaged, carried["best"])):
        for name, value in network.state_dict().items():
            torch.testing.assert_close(value, state[name])
    assert second.optimizer.state_dict()["state"][0]["step"] == 20  # Adam goes on where it was
    assert second.optimizer.param_groups[0]["lr"] == 1e-3
    assert second.patience == 20
    # validated before any step: the carried weights' own score and output are the best so far
    assert second.initial_mse == second.best_mse
    with torch.no_grad():
        expected = torch.sigmoid(second.averaged(noisy))[0, 0]
    torch.testing.assert_close(second.best_output, expected, atol=2e-2, rtol=0)  # bfloat16 on AMX CPUs
    # the average is exponential at once (2 / (window + 1)), no running-mean start
    before = [p.detach().clone() for p in second.averaged.parameters()]
    second.step()
    for average, old, current in zip(second.averaged.parameters(), before, second.network.parameters(), strict=True):
        torch.testing.assert_close(average, old + 0.2 * (current.detach() - old))


def test_reference_preset_ignores_a_carried_state():
    noisy = torch.rand(1, 1, 12, 12)
    first = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, validate_every=1)
    first.step()
    carried = first.carry()
    method = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, preset="reference", warm=carried)
    assert not method.warm_started and method.patience == 100 and method.initial_mse is None
    assert not torch.equal(method.network[0].weight, carried["network"]["0.weight"].contiguous())


def test_stack_planes_after_the_first_are_warm_started_and_stop_on_warm_patience(set12_05_crop):
    noisy, clean = set12_05_crop
    stack = np.stack([noisy, noisy[::-1]])  # two planes alike but not equal
    job = iter_denoise(stack, seed=0, device="cpu", max_steps=1500, preview=False, stack="warm")
    events = list(job)
    planes = [[e for e in events if e.plane == p] for p in (0, 1)]
    assert [p[-1].stop_reason for p in planes] == ["patience", "patience"]
    # plane 1: best score (carried weights validated at step 0, or a later validation), then > 20 steps without
    validated = [(0, planes[1][0].best_val_psnr if np.isnan(planes[1][0].val_psnr) else -np.inf)]
    validated += [(e.step, e.val_psnr) for e in planes[1] if not np.isnan(e.val_psnr)]
    best_step = max(validated, key=lambda item: item[1])[0]
    assert planes[1][-1].step == best_step + 30  # warm patience 20, validation every 10
    assert planes[1][-1].step < planes[0][-1].step
    result = job.result()
    for plane, expected_clean in zip(result, (clean, clean[::-1]), strict=True):
        assert psnr(expected_clean, plane) > psnr(expected_clean, noisy) + 5.0


def test_dihedral_transforms_are_the_eight_and_their_inverses_undo_them():
    from napari_noise2fast.methods.noise2fast import dihedral

    image = torch.arange(12.0).reshape(1, 1, 3, 4)
    seen = {tuple(dihedral(image, k).flatten().tolist()) + tuple(dihedral(image, k).shape) for k in range(8)}
    assert len(seen) == 8
    for k in range(8):
        torch.testing.assert_close(dihedral(dihedral(image, k), k, inverse=True), image, rtol=0, atol=0)


def test_augmented_result_is_the_mean_of_the_eight_transformed_predictions(monkeypatch):
    from napari_noise2fast import tiling
    from napari_noise2fast.methods.noise2fast import dihedral

    noisy = torch.rand(1, 1, 30, 22, generator=torch.Generator().manual_seed(4))
    model = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, precision="float32", augment=True,
                       validate_every=2)
    for _ in range(4):
        model.step()
    network = model._best_network()
    with torch.inference_mode():
        expected = torch.stack([dihedral(torch.sigmoid(network(dihedral(noisy, k)))[0, 0], k, inverse=True)
                                for k in range(8)]).mean(0)
    torch.testing.assert_close(model.result(), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(model.result(), model.preview())  # not the plain prediction
    monkeypatch.setattr(tiling, "TILE_OVERRIDE", 8)  # in tiles, the same to float32 rounding
    model._cached = None
    torch.testing.assert_close(model.result(), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="augment"):
        Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, preset="reference", augment=True)


def run_on_schedule(psnr_at, steps: int = 400, **params) -> Noise2Fast:
    """A fast-preset model (patience 50) whose n-th validation (from 1) scores ``psnr_at(n)`` dB, stepped
    until it stops or ``steps`` steps."""
    noisy = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    params = {"raw_start": False, **params}  # one network validated at a time: the n-th call is the n-th validation
    model = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, precision="float32", patience=50,
                       **params)
    validations = []

    def predict(network):  # an output at the schedule's PSNR against the noisy plane
        validations.append(None)
        return noisy[0, 0] + math.sqrt(10 ** (-psnr_at(len(validations)) / 10))

    model.predict = predict
    for _ in range(steps):
        model.step()
        if model.stop_reason is not None:
            break
    return model


@pytest.mark.parametrize("gain_per_validation, min_gain, ends", [
    (0.001, 0.02, True),  # a curve creeping up by thousandths of a dB ends with a minimum gain
    (0.001, 0.0, False),  # and never without one (the old rule)
    (0.1, 0.02, False),  # a rising curve goes on
])
def test_min_gain_ends_flat_curves_and_not_rising_ones(gain_per_validation, min_gain, ends):
    model = run_on_schedule(lambda n: 20 + gain_per_validation * n, steps=300, min_gain=min_gain)
    assert (model.stop_reason == "patience") is ends
    if ends:
        assert model.steps == 70  # the first validation counted, then six without a 0.02 dB gain (60 > 50)
        assert model.best_mse == pytest.approx(10 ** (-(20 + 0.001 * 7) / 10))  # the best weights kept anyway


@pytest.mark.parametrize("gain_per_validation, relative, ends", [
    (0.001, 0.005, True),  # after a 5 dB rise, 0.001 dB a validation is under 0.5 % of the gain so far: ends
    (0.001, 0.0, False),  # never without the rule
    (0.1, 0.005, False),  # 0.1 dB a validation is far over 0.5 % of the gain so far (5 to 8 dB): goes on
])
def test_min_relative_gain_scales_with_the_gain_so_far(gain_per_validation, relative, ends):
    # 20 dB, a 5 dB rise at the second validation, then the schedule's gain
    model = run_on_schedule(lambda n: 20 + (5 if n >= 2 else 0) + gain_per_validation * n, steps=300,
                            min_relative_gain=relative)
    assert (model.stop_reason == "patience") is ends
    if ends:
        assert model.steps == 80  # two validations counted (the first, the rise), then six without 0.025 dB
    with pytest.raises(ValueError, match="invalid Noise2Fast settings"):
        Noise2Fast(torch.rand(1, 1, 16, 16), rng=np.random.default_rng(0), level=1 / 255, min_relative_gain=-0.1)


@pytest.mark.parametrize("start_patience, stop", [(0, 70), (200, 220)])  # 0: no longer than patience
def test_start_patience_waits_for_a_network_that_has_not_beaten_its_first_validation(start_patience, stop):
    # The trace seen on a 1024x1024 mosaic of Set12 11 (bounded): the first validation (about a flat image)
    # is the best for a while, then the network learns. Patience 50 alone ends it before that.
    model = run_on_schedule(lambda n: 16.6 if n == 1 else 16.1, start_patience=start_patience)
    assert model.stop_reason == "patience" and model.steps == stop


def test_start_patience_gives_way_to_patience_once_the_first_validation_is_beaten():
    schedule = [16.6, 16.1, 16.7] + [16.0] * 40  # beaten at the third validation, then flat
    model = run_on_schedule(lambda n: schedule[n - 1], start_patience=200)
    assert model.stop_reason == "patience"
    assert model.steps == 30 + 60  # the best at step 30, then six validations without a better one


@pytest.mark.parametrize("margin, stop", [(0.0, 80), (1.0, 230)])
def test_start_patience_holds_while_the_best_is_barely_above_a_flat_image(monkeypatch, margin, stop):
    # The trace of Set12 12 at 1024x1024, seed 1 (bounded): 0.1 dB above a flat image's validation at step 10,
    # 0.6 at step 20, then flat; patience 50 from step 20 stopped it at step 80, 1.6 dB short of seed 0
    monkeypatch.setattr(noise2fast_module, "START_MARGIN_DB", margin)
    noisy = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    flat = -10 * math.log10(float(torch.var(noisy.double(), unbiased=False)))
    schedule = [flat + 0.1, flat + 0.6] + [flat] * 40
    model = run_on_schedule(lambda n: schedule[n - 1], start_patience=200)
    assert model.stop_reason == "patience" and model.steps == stop


def test_raw_start_shows_the_training_network_until_its_average_catches_up_and_counts_the_average_alone():
    """Validations score the average, then the training network, while racing. Scripted: at the v-th
    validation the average scores 14 + v dB and the training network 17 + v for v <= 3, then 14 + v too. The
    training network's best is shown while better; patience counts the average's alone; at the sixth
    validation the average (20 dB) reaches the lead's best (20 dB) and the race ends."""
    noisy = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    model = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, precision="float32", patience=1000,
                       raw_start=True)
    assert model.racing
    calls = []

    def predict(network):
        calls.append("average" if network is model.averaged else "training")
        validation = calls.count("average")
        value = 14 + validation + (3 if calls[-1] == "training" and validation <= 3 else 0)
        return noisy[0, 0] + math.sqrt(10 ** (-value / 10))

    model.predict = predict
    shown, leading = [], []
    for _ in range(80):
        mse = model.step()
        if mse is not None:
            shown.append(mse_to_psnr(mse))
            leading.append(model._leading())
    assert calls[:12] == ["average", "training"] * 6 and calls[12:] == ["average", "average"] and not model.racing
    np.testing.assert_allclose(shown, [18, 19, 20, 18, 19, 20, 21, 22], atol=1e-4)  # the better of the two
    assert leading == [True] * 5 + [False] * 3  # shown while it led; at 20 dB each, the average's
    assert mse_to_psnr(model.best_mse) == pytest.approx(22, abs=1e-4)  # patience and the result: the average's
    assert not Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, preset="reference").racing


def test_a_run_capped_while_the_training_network_leads_returns_its_average_s_best():
    from napari_noise2fast.engine import PlaneRun

    image = torch.rand(64, 72, generator=torch.Generator().manual_seed(0)).numpy()
    run = PlaneRun(image, Noise2Fast, seed=0, max_steps=12, preview=False, budget=512, crop=16, validation=1024,
                   validate_every=2, window=5, raw_start=True, precision="float32")
    events = list(run)
    model = run.model
    assert events[-1].done and run.stop_reason == "max_steps" and model.stop_reason == "max_steps"
    assert model.lead is not None and model.lead[0] < model.best_mse  # the training network validated better
    assert not model._leading()  # but the capped run's result is the average's best, as a run that stopped
    assert model._shown_state() is model.best_state
    assert model.result_val_psnr() == pytest.approx(-10 * np.log10(model.best_mse))
