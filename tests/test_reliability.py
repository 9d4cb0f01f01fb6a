"""The contract breaks found by a hostile user, each as a test (API, compare and CLI; the viewer's in
tests/_qt/test_viewer_reliability.py)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tifffile

from napari_noise2fast import compare, denoise
from napari_noise2fast.cli import main
from napari_noise2fast.samples import clean_cell, noisy_cell

QUICK = {"seed": 0, "device": "cpu", "preview": False}
BUDGETS = {"noise2fast": {"max_steps": 3}, "calibrated": {"families": ("tv",)}, "zs-n2n": {"steps": 3},
           "noise2void": {"steps": 3, "batch": 2}, "bm3d": {}, "self2self": {"steps": 3, "predictions": 1},
           "noise2self": {"steps": 3}}


def test_bm3d_on_an_8x8_plane_does_not_kill_the_process():
    # the bm3d package segfaults on exactly 8x8: run where a crash cannot take the test run down
    code = ("import numpy as np; from napari_noise2fast import denoise; "
            "out = denoise(np.random.default_rng(0).normal(100, 10, (8, 8)).astype(np.float32), 'bm3d'); "
            "print(out.shape, out.dtype, bool(np.isfinite(out).all()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "(8, 8) float32 True"


@pytest.mark.parametrize("method", ["noise2fast", "calibrated", "zs-n2n", "noise2void", "bm3d"])
@pytest.mark.parametrize("dtype", ["uint32", "int32"])
def test_integer_outputs_near_the_dtype_maximum_do_not_wrap_around(method, dtype):
    top = np.iinfo(dtype).max
    image = np.random.default_rng(0).integers(top - 49, top, (16, 16), endpoint=True).astype(dtype)
    out = denoise(image, method, dtype=dtype, **QUICK, **BUDGETS[method])
    assert out.dtype == dtype
    assert image.min() <= out.min() and out.max() <= image.max()  # was 0 / -2**31 after the cast overflowed


@pytest.mark.parametrize("method", ["noise2fast", "noise2self", "calibrated"])
def test_int64_extremes_one_apart_are_not_a_division_by_zero(method):
    # found by the long hypothesis profile: -2**63 + 511 and -2**63 + 512 are one value in float64
    image = np.full((8, 8), -(2**63) + 511, np.int64)
    image[0, 0] += 1
    out = denoise(image, method, dtype=np.int64, **QUICK, **BUDGETS[method])
    assert image.min() <= out.min() and out.max() <= image.max()
    assert np.all(np.isfinite(denoise(image, method, **QUICK, **BUDGETS[method])))


def test_a_constant_32_bit_integer_image_comes_back_unchanged():
    image = np.full((16, 16), 2**24 + 1, np.int32)  # float32 holds 2**24 but not 2**24 + 1
    with pytest.warns(UserWarning, match="constant"):
        out = denoise(image, **QUICK)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(denoise(image, dtype=np.int64, **QUICK), image.astype(np.int64))


@pytest.mark.parametrize("image", [np.random.default_rng(0).normal(1e39, 1e37, (16, 16)),
                                   np.random.default_rng(0).uniform(-1, 1, (16, 16)) * 1e308],
                         ids=["near 1e39", "range of +-1e308"])
@pytest.mark.parametrize("method", ["noise2fast", "calibrated", "bm3d"])
def test_finite_float64_beyond_float32_is_refused_by_default_and_finite_in_float64(image, method):
    with pytest.raises(ValueError, match="beyond float32's range.*dtype=np.float64"):
        denoise(image, method, **QUICK, **BUDGETS[method])
    out = denoise(image, method, dtype=np.float64, **QUICK, **BUDGETS[method])
    assert out.dtype == np.float64 and np.all(np.isfinite(out))


REPEAT = """
import json, sys, numpy as np
from napari_noise2fast import denoise
budgets = json.loads(sys.argv[1])
image = np.random.default_rng(1).normal(100, 20, (24, 24)).astype(np.float32)
outputs = {m: denoise(image, m, seed=0, device="cpu", preview=False, **b) for m, b in budgets.items()}
np.savez(sys.argv[2], **outputs)
"""


def test_every_method_repeats_bit_for_bit_within_and_across_processes(tmp_path):
    budgets = {name: {k: list(v) if isinstance(v, tuple) else v for k, v in b.items()} for name, b in BUDGETS.items()}
    image = np.random.default_rng(1).normal(100, 20, (24, 24)).astype(np.float32)
    here = {m: denoise(image, m, seed=0, device="cpu", preview=False, **b) for m, b in budgets.items()}
    again = {m: denoise(image, m, seed=0, device="cpu", preview=False, **b) for m, b in budgets.items()}
    subprocess.run([sys.executable, "-c", REPEAT, json.dumps(budgets), str(tmp_path / "other.npz")], check=True,
                   timeout=600)
    other = np.load(tmp_path / "other.npz")
    for method in budgets:  # self2self's dropout drew from torch's global generator: two runs differed by 1.1
        np.testing.assert_array_equal(here[method], again[method], err_msg=method)
        np.testing.assert_array_equal(here[method], other[method], err_msg=method)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"axes": ["Z", "Y", "X"]}, "axes"),
    ({"channel_axis": "0"}, "channel_axis"),
    ({"channel_axis": True}, "channel_axis"),
    ({"channel_axis": 1.5}, "channel_axis"),
    ({"max_steps": "3"}, "max_steps"),
    ({"max_steps": 2.0}, "max_steps"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"preview": "yes"}, "preview"),
    ({"device": 0}, "device"),
    ({"dtype": "nonsense"}, "dtype"),
    ({"patience": "3"}, "patience"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"method": None}, "method"),
])
def test_wrong_typed_arguments_are_refused_naming_the_argument(kwargs, name):
    image = np.random.default_rng(0).normal(100, 10, (3, 16, 16)).astype(np.float32)
    kwargs = {"method": "noise2fast", "device": "cpu", "max_steps": 1, **kwargs}
    with pytest.raises(ValueError, match=name):
        denoise(image, kwargs.pop("method"), **kwargs)


def test_numpy_integer_scalars_are_integers():
    image = np.random.default_rng(0).normal(100, 10, (3, 16, 16)).astype(np.float32)
    out = denoise(image, channel_axis=np.int64(0), max_steps=np.int32(1), seed=np.uint8(2), device="cpu")
    assert out.shape == image.shape


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": None}, "methods must be"),
    ({"reference": "bool"}, "reference must be an integer or floating-point"),
    ({"reference": "nan"}, "reference contains NaN"),
    ({"reference": "inf"}, "reference contains NaN"),
    ({"time_budget": 0}, "time_budget must be positive"),
    ({"time_budget": -1}, "time_budget must be positive"),
    ({"time_budget": float("nan")}, "time_budget must be a finite number"),
    ({"time_budget": "5"}, "time_budget must be a finite number"),
    ({"params": {"zs-n2n": {"steps": 0}}}, "invalid zs-n2n settings"),
    ({"params": {"self2self": {"steps": 2}}}, "not compared"),
    ({"max_steps": "2"}, "max_steps"),
])
def test_compare_validates_everything_before_any_work(kwargs, message):
    image = np.random.default_rng(0).normal(100, 10, (16, 16)).astype(np.float32)
    references = {"bool": image > 100, "nan": np.where(image > 100, np.nan, image),
                  "inf": np.where(image > 100, np.inf, image)}
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("reference"), str):
        kwargs["reference"] = references[kwargs["reference"]]
    methods = kwargs.pop("methods", ["noise2fast", "zs-n2n"])
    seen = []
    with pytest.raises(ValueError, match=message):
        compare(image, methods, device="cpu", progress=lambda *report: seen.append(report), **kwargs)
    assert seen == []  # refused before Noise2Fast (or anything) ran


def test_integer_input_is_denoised_to_float32_keeping_precision():
    # on the sample (a 40-count range) rounding to uint16 cost about 1 dB
    from skimage.metrics import peak_signal_noise_ratio as psnr

    noisy, clean = noisy_cell(), clean_cell()
    data_range = float(np.ptp(clean))
    out = denoise(noisy, max_steps=1, seed=0, device="cpu")
    assert out.dtype == np.float32 and np.any(out != np.round(out))
    rounded = denoise(noisy, max_steps=1, seed=0, device="cpu", dtype=noisy.dtype)
    np.testing.assert_array_equal(rounded, np.round(out).astype(noisy.dtype))
    assert psnr(clean, out, data_range=data_range) > psnr(clean, rounded.astype(np.float64), data_range=data_range)


# ------------------------------------------------------------------ the command line
@pytest.fixture()
def tiffs(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif", "c.tif"):
        tifffile.imwrite(tmp_path / name, rng.normal(100, 10, (16, 16)).astype(np.uint16))
    return tmp_path


CLI = ["--max-steps", "1", "--device", "cpu", "-q"]


def test_cli_reports_an_output_it_cannot_write_and_goes_on(tiffs, monkeypatch, capsys):
    real, calls = tifffile.imwrite, []

    def failing(path, *args, **kwargs):  # the disk is full while the second output (b's) is written
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", failing)
    (tiffs / "file").write_text("a regular file")
    assert main([str(tiffs), *CLI]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"noise2fast: error: cannot write {tiffs / 'b_N2F.tif'}: No space left on device"]
    assert (tiffs / "a_N2F.tif").exists() and (tiffs / "c_N2F.tif").exists() and not (tiffs / "b_N2F.tif").exists()
    assert sorted(p.name for p in tiffs.iterdir() if p.name.startswith("tmp")) == []  # no temporary left
    monkeypatch.setattr(tifffile, "imwrite", real)
    # an output folder under a regular file: one line, exit 1
    assert main([str(tiffs / "a.tif"), "-o", str(tiffs / "file" / "out"), *CLI]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_cli_reports_a_read_only_filesystem(tiffs, monkeypatch, capsys):
    monkeypatch.setattr(tifffile, "imwrite", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system")))
    assert main([str(tiffs / "a.tif"), str(tiffs / "b.tif"), *CLI]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("Read-only file system" in line for line in err)


def test_cli_never_overwrites_an_input_or_an_earlier_output(tiffs, capsys):
    before = (tiffs / "a.tif").read_bytes()
    assert main([str(tiffs / "a.tif"), "-o", str(tiffs / "a.tif"), *CLI]) == 1
    assert (tiffs / "a.tif").read_bytes() == before
    assert "is an input file; pass --overwrite" in capsys.readouterr().err
    assert main([str(tiffs / "a.tif"), "-o", str(tiffs / "a.tif"), "--overwrite", *CLI]) == 0
    assert tifffile.imread(tiffs / "a.tif").dtype == np.float32
    # x.tif and x.tiff would both write x_N2F.tif
    tifffile.imwrite(tiffs / "b.tiff", np.ones((16, 16), np.uint16))
    assert main([str(tiffs / "b.tif"), str(tiffs / "b.tiff"), *CLI]) == 1
    err = capsys.readouterr().err
    assert "b.tiff: its output" in err and "is also the output of" in err
    np.testing.assert_array_equal(tifffile.imread(tiffs / "b_N2F.tif").shape, (16, 16))


def test_cli_refuses_one_output_file_for_many_inputs_and_empty_folders(tiffs, tmp_path, capsys):
    assert main([str(tiffs / "a.tif"), str(tiffs / "b.tif"), "-o", str(tmp_path / "name.tif"), *CLI]) == 1
    assert not (tmp_path / "name.tif").exists()
    assert "names one .tif file but there are 2 inputs" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), *CLI]) == 1
    assert capsys.readouterr().err.strip() == f"noise2fast: error: no .tif or .tiff files to denoise in the folder " \
                                               f"{tmp_path / 'empty'}"


def test_cli_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["x.tif", "--dtype", "complex64"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_compare_reports_unwritable_outputs(tiffs, monkeypatch, capsys):
    monkeypatch.setattr(tifffile, "imwrite", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["compare", str(tiffs / "a.tif"), "--methods", "calibrated", "-o", str(tiffs / "out"),
                     "--device", "cpu", "-q"])
    assert code == 1
    assert capsys.readouterr().err.strip().endswith("No space left on device")
