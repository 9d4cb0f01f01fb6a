"""Comparison of methods: the API and the command line (the dock: tests/_qt/test_compare_dock.py)."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
import tifffile

from napari_noise2fast import compare, iter_compare
from napari_noise2fast.cli import main
from napari_noise2fast.comparison import TABLE_COLUMNS, quality

QUICK = {"zs-n2n": {"steps": 150, "report_every": 25}}


def test_compare_returns_outputs_rows_and_curves_against_reference(set12_05_crop):
    noisy, clean = set12_05_crop
    before = noisy.copy()
    result = compare(noisy, ["calibrated", "zs-n2n"], reference=clean, seed=0, device="cpu", params=QUICK)
    assert [row.method for row in result.rows] == ["calibrated", "zs-n2n"]
    assert result.curve_kind == "PSNR against reference"
    for row in result.rows:
        output = result.outputs[row.method]
        assert output.shape == noisy.shape and output.dtype == np.float32
        psnr, ssim = quality(clean, output)
        assert row.psnr == pytest.approx(psnr) and row.ssim == pytest.approx(ssim)
        assert row.psnr > quality(clean, noisy)[0] + 2.0 and 0 < row.ssim <= 1
        assert row.seconds > 0 and row.steps > 0 and row.stop in {"complete", "budget"}
        assert len(result.curves[row.method]) >= 2
        times = [t for t, _ in result.curves[row.method]]
        assert times == sorted(times) and times[-1] <= row.seconds
    assert result.rows[1].steps == 150
    np.testing.assert_array_equal(noisy, before)
    rows = list(csv.reader(io.StringIO(result.csv())))
    assert rows[0] == list(TABLE_COLUMNS)
    assert [r[0] for r in rows[1:]] == ["noisy input", "Calibrated classical", "ZS-N2N"]
    zs_n2n = result.rows[1]
    cells = f"| ZS-N2N | {zs_n2n.psnr:.2f} | {zs_n2n.ssim:.3f} | {zs_n2n.seconds:.1f} | 150 | budget |"
    assert cells in result.table()
    assert result.table().splitlines()[2].startswith("| noisy input |")


def test_curve_points_on_a_stack_use_the_whole_references_range(set12_05_crop):
    from skimage.metrics import peak_signal_noise_ratio

    noisy, clean = set12_05_crop
    # the second plane is dimmer: its own range is half the stack's
    stack, reference = np.stack([noisy, noisy / 2]), np.stack([clean, clean / 2])
    result = compare(stack, ["calibrated"], reference=reference, seed=0, device="cpu")
    output = result.outputs["calibrated"]
    _, last = result.curves["calibrated"][-1]
    assert last == pytest.approx(peak_signal_noise_ratio(reference[1], output[1].astype(np.float64),
                                                         data_range=np.ptp(reference)))


def test_without_reference_curves_are_each_methods_validation_score(set12_05_crop):
    noisy, _ = set12_05_crop
    result = compare(noisy, ["zs-n2n"], seed=0, device="cpu", params=QUICK)
    assert result.curve_kind == "validation PSNR"
    assert [round(v, 6) for _, v in result.curves["zs-n2n"]][-1] == pytest.approx(result.rows[0].val_psnr, abs=5)
    assert result.rows[0].psnr is None and result.rows[0].cells()[1:3] == ["", ""]
    assert result.rows[0].cells()[4] == str(result.rows[0].steps)


def test_equal_time_gives_every_method_noise2fasts_time(set12_05_crop):
    noisy, _ = set12_05_crop
    params = {"noise2fast": {"patience": 20, "validate_every": 5}, "zs-n2n": {"report_every": 10}}
    result = compare(noisy[:48, :48], ["zs-n2n", "noise2fast"], equal_time=True, seed=0, device="cpu",
                     params=params)
    n2f, zs = result.rows
    assert n2f.method == "noise2fast" and zs.method == "zs-n2n"  # noise2fast runs first
    assert zs.stop == "time" and zs.steps > 0
    # stopped at the first step past the budget (a first step in a process can take a second or two)
    assert n2f.seconds <= zs.seconds < n2f.seconds + 3.0


def test_time_budget_stops_each_method_and_keeps_its_best():
    noisy = np.random.default_rng(0).normal(100, 20, (32, 32)).astype(np.float32)
    result = compare(noisy, ["zs-n2n"], time_budget=0.3, seed=0, device="cpu",
                     params={"zs-n2n": {"steps": 10**6, "report_every": 5}})
    row = result.rows[0]
    assert row.stop == "time" and row.seconds >= 0.3 and row.steps < 10**6  # not its step budget
    assert not np.array_equal(result.outputs["zs-n2n"], noisy)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": []}, "at least one method"),
    ({"methods": ["zs-n2n", "ZS-N2N"]}, "named twice"),
    ({"methods": ["bm4d"]}, "method must be one of"),
    ({"methods": ["zs-n2n"], "equal_time": True}, "needs noise2fast"),
    ({"methods": ["zs-n2n"], "reference": np.zeros((3, 3))}, "reference has shape"),
    ({"methods": ["zs-n2n"], "params": {"zs-n2n": {"steps": -1}}}, "invalid zs-n2n settings"),
])
def test_bad_comparisons_are_plain_errors_before_training(kwargs, message):
    runs = iter_compare(np.random.rand(16, 16), **kwargs)
    with pytest.raises(ValueError, match=message):
        next(runs)


def test_cli_compare_prints_table_writes_outputs_and_csv(tmp_path, capsys, set12_05_crop):
    noisy, clean = set12_05_crop
    tifffile.imwrite(tmp_path / "crop.tif", noisy)
    tifffile.imwrite(tmp_path / "clean.tif", clean.astype(np.uint8))
    code = main(["compare", str(tmp_path / "crop.tif"), "--methods", "calibrated", "--reference",
                 str(tmp_path / "clean.tif"), "--seed", "0", "--device", "cpu", "-q", "-o", str(tmp_path / "out"),
                 "--csv", str(tmp_path / "table.csv")])
    printed = capsys.readouterr().out
    row = r"\| Calibrated classical \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 16 \| complete \|"
    assert code == 0 and re.search(row, printed)
    output = tifffile.imread(tmp_path / "out" / "crop_calibrated.tif")
    assert output.shape == noisy.shape
    with (tmp_path / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["file"], row["method"]) for row in rows] == [("crop.tif", "noisy input"),
                                                              ("crop.tif", "Calibrated classical")]
    assert float(rows[0]["PSNR"]) == pytest.approx(quality(clean.astype(np.uint8), noisy)[0], abs=0.01)
    assert float(rows[1]["PSNR"]) == pytest.approx(quality(clean.astype(np.uint8), output)[0], abs=0.01)


def test_cli_compare_reports_a_bad_method_plainly(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.random.rand(16, 16).astype(np.float32))
    assert main(["compare", str(tmp_path / "a.tif"), "--methods", "nope", "-q"]) == 1
    assert "method must be one of" in capsys.readouterr().err
