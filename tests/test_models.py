"""Trained models saved and used again (issue 23, item 1): weights, normalisation, method, settings and
versions in a file of tensors and plain values; predict with it bit for bit, or start training from it;
files of another method or version, and crafted ones, refused without running anything."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from napari_noise2fast import __version__, denoise, iter_denoise
from napari_noise2fast.cli import main
from napari_noise2fast.methods.noise2fast import Noise2Fast
from napari_noise2fast.models import FORMAT, FORMAT_VERSION, load_model


@pytest.fixture(scope="module")
def recording():
    rng = np.random.default_rng(0)
    clean = 100 + 50 * np.sin(np.mgrid[:64, :64][1] / 5)
    return (clean + rng.normal(0, 20, (3, 64, 64))).astype(np.float32)


def trained_job(image, **kwargs):
    job = iter_denoise(image, seed=0, device="cpu", max_steps=20, validate_every=5, **kwargs)
    for _ in job:
        pass
    return job


def test_a_saved_recording_model_predicts_bit_for_bit_and_records_what_it_is(recording, tmp_path):
    job = trained_job(recording, axes="TYX", stack="recording")
    path = tmp_path / "experiment-1 model"  # any name, no suffix added
    assert job.save_model(path) == path and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    saved = load_model(path, "noise2fast")
    assert (saved.method, saved.package_version, saved.format_version) == ("noise2fast", __version__, FORMAT_VERSION)
    assert saved.settings["validate_every"] == 5 and saved.settings["width"] == 64 and len(saved.states) == 1
    low, high = saved.ranges[0]
    assert recording.min() <= low < high <= recording.max()  # the recording's sample's range
    predicted = denoise(recording, axes="TYX", device="cpu", model=path)
    assert np.array_equal(predicted, job.result())
    events = list(iter_denoise(recording, axes="TYX", device="cpu", model=path))
    assert [e.stop_reason for e in events] == ["model"] * 3 and all(e.step == 0 for e in events)  # no training


def test_a_single_planes_model_predicts_it_again_and_warm_starts_from_its_weights(recording, tmp_path, monkeypatch):
    plane = recording[0]
    job = trained_job(plane, preview=False)
    job.save_model(tmp_path / "m")
    assert np.array_equal(denoise(plane, device="cpu", model=tmp_path / "m"), job.result())
    built = []
    real_init = Noise2Fast.__init__

    def record(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Noise2Fast, "__init__", record)
    warm = denoise(recording[1], seed=1, device="cpu", max_steps=5, preview=False, model=tmp_path / "m",
                   model_use="warm")
    cold = denoise(recording[1], seed=1, device="cpu", max_steps=5, preview=False)
    saved = load_model(tmp_path / "m").states[0]
    started = built[0]
    assert started.warm_started and started.initial_mse is not None  # validated before its first step
    assert started.warm["optimizer"] is None  # Adam starts afresh
    assert all(torch.equal(started.warm[key][name], value)
               for key in ("network", "best") for name, value in saved.items())
    assert built[1].warm is None and not np.array_equal(warm, cold)


def test_saving_refuses_what_it_cannot_do_and_never_replaces_a_file_unasked(recording, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"keep me")
    job = trained_job(recording[0])
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        job.save_model(path)
    assert path.read_bytes() == b"keep me"
    job.save_model(path, overwrite=True)
    assert load_model(path).method == "noise2fast"
    with pytest.raises(ValueError, match="no trained model to save yet"):
        iter_denoise(recording[0], device="cpu").save_model(tmp_path / "new")
    other = iter_denoise(recording[0], "calibrated", device="cpu")
    with pytest.raises(ValueError, match="does not save trained models"):
        other.save_model(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def payload(**changes):
    state = {k: v.clone() for k, v in load_model(pytest.saved_path).states[0].items()}
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": "0.1.0", "method": "noise2fast",
            "settings": json.dumps({"width": 64}), "ranges": [[0.0, 1.0]], "states": [state]}
    return {**data, **changes}


@pytest.fixture()
def saved(recording, tmp_path):
    pytest.saved_path = tmp_path / "good"
    trained_job(recording[0]).save_model(pytest.saved_path)
    return pytest.saved_path


@pytest.mark.parametrize(("changes", "message"), [
    ({"method": "noise2void"}, "is a noise2void model; it cannot be used by noise2fast"),
    ({"format_version": FORMAT_VERSION + 1, "package_version": "9.0"}, "saved by napari-noise2fast 9.0 in model "
                                                                         "format 2"),
    ({"format": "something else"}, "not a napari-noise2fast model file"),
])
def test_a_file_of_another_method_version_or_kind_is_refused(saved, tmp_path, changes, message, recording):
    path = tmp_path / "bad"
    torch.save(payload(**changes), path)
    with pytest.raises(ValueError, match=message):
        denoise(recording[0], device="cpu", model=path)


def test_weights_that_do_not_fit_the_network_are_refused_before_any_work(saved, tmp_path, recording):
    state = payload()["states"][0]
    state["0.weight"] = state["0.weight"][:3]
    torch.save(payload(states=[state]), tmp_path / "bad")
    with pytest.raises(ValueError, match="do not fit a Noise2Fast network"):
        iter_denoise(recording[0], device="cpu", model=tmp_path / "bad")


class Payload:
    """A pickled object that, if unpickled by a loader that trusts its file, creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_payload_in_a_model_file_is_refused_and_never_runs(saved, tmp_path, recording):
    marker = tmp_path / "pwned"
    torch.save(payload(states=[Payload(marker)]), tmp_path / "evil.pt")  # a torch file with code in its pickle
    import pickle
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(payload(ranges=Payload(marker))))  # a plain pickle
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(ValueError, match="not a napari-noise2fast model file"):
            denoise(recording[0], device="cpu", model=tmp_path / name)
        assert not marker.exists()
    with zipfile.ZipFile(tmp_path / "evil.pt") as archive:  # the payload was really in the file
        assert any(b"mkdir" in archive.read(name) for name in archive.namelist() if name.endswith(".pkl"))
    assert not marker.exists()


def test_bad_model_arguments_name_the_argument(recording, saved):
    with pytest.raises(ValueError, match="model_use must be one of 'predict', 'warm'"):
        denoise(recording[0], device="cpu", model=saved, model_use="train")
    with pytest.raises(ValueError, match="model file .* does not exist"):
        denoise(recording[0], device="cpu", model=saved.with_name("missing"))
    with pytest.raises(ValueError, match="model= needs a method that saves trained models"):
        denoise(recording[0], "zs-n2n", device="cpu", model=saved)
    with pytest.raises(ValueError, match="model_use='warm' needs warm_start"):
        denoise(recording[0], device="cpu", model=saved, model_use="warm", stack="independent")
    with pytest.raises(ValueError, match="model must be the path"):
        denoise(recording[0], device="cpu", model=io.BytesIO())


def test_the_cli_saves_a_model_and_denoises_with_it(recording, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "day1.tif", recording, metadata={"axes": "TYX"}, photometric="minisblack")
    tifffile.imwrite(tmp_path / "day2.tif", recording[::-1].copy(), metadata={"axes": "TYX"}, photometric="minisblack")
    model = tmp_path / "cells.model"
    assert main([str(tmp_path / "day1.tif"), "--max-steps", "10", "--seed", "0", "--device", "cpu", "-q",
                 "--save-model", str(model)]) == 0
    assert f"model saved to {model}" in capsys.readouterr().out and load_model(model).method == "noise2fast"
    assert main([str(tmp_path / "day2.tif"), "--device", "cpu", "-q", "--model", str(model)]) == 0
    assert "(predict)" in capsys.readouterr().out
    day1, day2 = tifffile.imread(tmp_path / "day1_N2F.tif"), tifffile.imread(tmp_path / "day2_N2F.tif")
    assert day1.shape == day2.shape == recording.shape and not np.array_equal(day2, recording[::-1])
    with tifffile.TiffFile(tmp_path / "day2_N2F.tif") as written:  # three planes in time, not an RGB image
        assert written.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK and written.series[0].axes == "TYX"
    before = model.read_bytes()
    assert main([str(tmp_path / "day1.tif"), "--device", "cpu", "-q", "--save-model", str(model)]) == 1
    assert main([str(tmp_path), "--device", "cpu", "-q", "--save-model", str(tmp_path / "x")]) == 1
    assert main([str(tmp_path / "day1.tif"), "--device", "cpu", "-q", "--model", str(tmp_path / "missing")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("noise2fast: error: ") for line in errors)
    assert "exists; pass --overwrite" in errors[0] and "there are" in errors[1] and "does not exist" in errors[2]
    assert model.read_bytes() == before


def test_a_model_per_channel_is_saved_and_used_for_its_channel_only(recording, tmp_path):
    channels = np.stack([recording[0], 3 * recording[1]])  # two channels of different brightness
    job = trained_job(channels, axes="CYX", preview=False)
    job.save_model(tmp_path / "two")
    saved = load_model(tmp_path / "two")
    assert len(saved.states) == 2 and saved.ranges[1][1] > 2 * saved.ranges[0][1]
    assert np.array_equal(denoise(channels, axes="CYX", device="cpu", model=tmp_path / "two"), job.result())
    with pytest.raises(ValueError, match="holds 2 channels' models; this image has 3 channel"):
        denoise(recording, axes="CYX", device="cpu", model=tmp_path / "two")


def test_a_sparse_volume_whose_sample_is_constant_is_predicted_plane_by_plane(recording, tmp_path):
    from napari_noise2fast.engine import recording_sample

    trained_job(recording[0], preview=False).save_model(tmp_path / "m")
    volume = np.zeros((40, 64, 64), dtype=np.float32)
    lone = next(i for i in range(40) if i not in recording_sample(40, (64, 64)))  # not in the sample
    volume[lone] = recording[0]
    out = denoise(volume, axes="ZYX", device="cpu", model=tmp_path / "m")
    assert np.ptp(out[lone]) > 1  # not flattened by the sample's empty range (a constant output)
    np.testing.assert_array_equal(out[lone], denoise(recording[0], device="cpu", model=tmp_path / "m"))
    assert np.array_equal(out[lone - 1], volume[lone - 1])


def test_a_resumed_output_goes_on_only_with_the_same_model(recording, tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        job = iter_denoise(recording[0], seed=seed, device="cpu", max_steps=10, validate_every=5, preview=False)
        for _ in job:
            pass
        job.save_model(tmp_path / name)
    stack = np.concatenate([recording] * 2)
    store = str(tmp_path / "out.zarr")
    job = iter_denoise(stack, axes="TYX", device="cpu", model=tmp_path / "a", out=store)
    next(iter(job))  # one plane done, then interrupted
    job.close()
    with pytest.raises(ValueError):
        iter_denoise(stack, axes="TYX", device="cpu", model=tmp_path / "b", out=store)
    with pytest.raises(ValueError):
        iter_denoise(stack, axes="TYX", device="cpu", model=tmp_path / "a", model_use="warm", out=store)
    assert iter_denoise(stack, axes="TYX", device="cpu", model=tmp_path / "a", out=store) is not None


def test_the_held_out_score_follows_the_network_shown():
    from napari_noise2fast.engine import to_end

    noisy = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    model = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, precision="float32", validate_every=2)
    for _ in range(4):
        model.step()
    first = model.invariant_psnr()
    assert model.invariant_psnr() == first  # the same network: the cached score
    model.best_state = {name: value * 0.5 for name, value in model.best_state.items()}
    model.best_mse *= 0.5  # a new best: a new network shown
    again = model.invariant_psnr()
    key = (model._best[0], tuple(n2f_phases()))
    assert again != first and again == to_end(model._invariant_parts(model._best_network(), key, n2f_phases()))


def n2f_phases():
    from napari_noise2fast.methods.noise2fast import INVARIANT_PHASES

    return INVARIANT_PHASES


def test_the_cli_writes_the_output_even_where_no_model_can_be_saved(recording, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "one.tif", recording[0])
    assert main([str(tmp_path / "one.tif"), "--max-steps", "3", "--device", "cpu", "-q",
                 "--save-model", str(tmp_path / "m")]) == 1  # no validation within 3 steps: no model
    assert (tmp_path / "one_N2F.tif").exists() and not (tmp_path / "m").exists()
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("noise2fast: error: --save-model") and "no trained model" in error[0]
    assert main([str(tmp_path / "one.tif"), "--device", "cpu", "-q", "--overwrite",
                 "--save-model", str(tmp_path / "missing" / "m")]) == 1
    assert "its folder does not exist" in capsys.readouterr().err
