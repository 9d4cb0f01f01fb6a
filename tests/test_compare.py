"""Comparison of methods: the API, the command line, and the comparison dock in a real viewer."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_noise2fast import compare, iter_compare
from napari_noise2fast.cli import main
from napari_noise2fast.compare import TABLE_COLUMNS, quality

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
    assert rows[0] == list(TABLE_COLUMNS) and [r[0] for r in rows[1:]] == ["Calibrated classical", "ZS-N2N"]
    assert "| ZS-N2N | 150 |" in result.table()


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
    assert result.rows[0].psnr is None and result.rows[0].cells()[4] == ""


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
    assert code == 0 and "| Calibrated classical | 16 |" in printed
    output = tifffile.imread(tmp_path / "out" / "crop_calibrated.tif")
    assert output.shape == noisy.shape
    with (tmp_path / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["file"] == "crop.tif" and float(rows[0]["PSNR"]) == pytest.approx(
        quality(clean.astype(np.uint8), output)[0], abs=0.01)


def test_cli_compare_reports_a_bad_method_plainly(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.random.rand(16, 16).astype(np.float32))
    assert main(["compare", str(tmp_path / "a.tif"), "--methods", "nope", "-q"]) == 1
    assert "method must be one of" in capsys.readouterr().err


# ---------------------------------------------------------------- the comparison dock in a real viewer
napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")


@pytest.fixture
def compare_dock(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-noise2fast", "Compare denoisers")
    return viewer, widget


def test_dock_compares_two_methods_into_layers_curves_and_table(qtbot, compare_dock, set12_05_crop, tmp_path):
    from qtpy.QtWidgets import QApplication

    viewer, dock = compare_dock
    noisy, clean = set12_05_crop
    layer = viewer.add_image(noisy, name="crop")
    reference = viewer.add_image(clean, name="clean")
    assert dock.ticked() == ["noise2fast", "calibrated"]
    worker = dock.start(layer, methods=["calibrated", "zs-n2n"], reference=reference, params=QUICK)
    assert worker is not None and dock.running
    qtbot.waitUntil(lambda: not dock.running, timeout=120_000)
    assert "crop [Calibrated classical]" in viewer.layers and "crop [ZS-N2N]" in viewer.layers
    for name in ("calibrated", "zs-n2n"):
        out = viewer.layers[f"crop [{dock.comparison.rows[0].display_name if name == 'calibrated' else 'ZS-N2N'}]"]
        np.testing.assert_array_equal(out.data, dock.comparison.outputs[name])
        xs, ys = dock.curves[name].getData()
        assert len(xs) >= 2 and np.all(np.isfinite(ys))
    assert len(dock.curves) == 2 and len(dock.plot.getPlotItem().listDataItems()) == 2
    assert dock.plot.getPlotItem().getAxis("left").labelText == "PSNR against reference (dB)"
    rows = dock.table_rows()
    assert [row[0] for row in rows] == ["Calibrated classical", "ZS-N2N"] and len(rows[0]) == len(TABLE_COLUMNS)
    assert rows == [row.cells() for row in dock.comparison.rows]
    assert float(rows[1][4]) > quality(clean, noisy)[0] + 2.0
    assert [name for name, box in dock.boxes.items() if box.value] == ["zs-n2n", "calibrated"]
    assert dock.reference.value is reference
    dock.copy_csv()
    copied = QApplication.clipboard().text()
    assert copied.splitlines()[0] == ",".join(TABLE_COLUMNS) and len(copied.splitlines()) == 3
    np.testing.assert_array_equal(layer.data, noisy)
    shots = Path(os.environ.get("NOISE2FAST_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    image = viewer.screenshot(path=str(shots / "compare.png"), canvas_only=False, flash=False)
    assert image.std() > 5


def test_dock_refuses_bad_starts_with_a_notification(monkeypatch, compare_dock):
    from napari_noise2fast import _compare_widget

    viewer, dock = compare_dock
    shown = []
    monkeypatch.setattr(_compare_widget, "show_warning", shown.append)
    monkeypatch.setattr(_compare_widget, "show_error", shown.append)
    assert dock.start() is None
    layer = viewer.add_image(np.random.rand(32, 32), name="a")
    small = viewer.add_image(np.random.rand(16, 16), name="b")
    assert dock.start(layer, methods=[]) is None
    assert dock.start(layer, methods=["zs-n2n"], reference=small) is None
    assert "select an image layer" in shown[0] and "tick at least one" in shown[1] and "must match" in shown[2]
    assert not dock.running and len(viewer.layers) == 2


def test_dock_stop_keeps_finished_rows_and_the_running_methods_best(qtbot, compare_dock, set12_05_crop):
    viewer, dock = compare_dock
    noisy, _ = set12_05_crop
    layer = viewer.add_image(noisy, name="crop")
    methods_seen = []
    worker = dock.start(layer, methods=["calibrated", "zs-n2n"],
                        params={"zs-n2n": {"steps": 10**6, "report_every": 5}})
    worker.yielded.connect(lambda item: methods_seen.append((item[0].method, item[0].event.step)))
    qtbot.waitUntil(lambda: any(m == "zs-n2n" and s >= 20 for m, s in methods_seen), timeout=120_000)
    dock.stop()
    qtbot.waitUntil(lambda: not dock.running, timeout=120_000)
    assert [row[0] for row in dock.table_rows()] == ["Calibrated classical"]
    assert dock.status.value.startswith("Stopped during ZS-N2N")
    out = viewer.layers["crop [ZS-N2N]"].data
    assert not np.array_equal(out, noisy) and np.isfinite(out).all()
    assert dock.start_button.enabled and dock.copy_button.enabled


def test_closing_the_viewer_mid_comparison_leaves_no_thread(qtbot, compare_dock, set12_05_crop):
    from qtpy.QtCore import QThreadPool

    viewer, dock = compare_dock
    steps = []
    worker = dock.start(viewer.add_image(set12_05_crop[0], name="crop"), methods=["zs-n2n"],
                        params={"zs-n2n": {"steps": 10**6, "report_every": 5}})
    worker.yielded.connect(lambda item: steps.append(item[0].event.step))
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=120_000)
    viewer.close()
    assert QThreadPool.globalInstance().waitForDone(30_000)
    assert QThreadPool.globalInstance().activeThreadCount() == 0 and steps[-1] < 10**6
