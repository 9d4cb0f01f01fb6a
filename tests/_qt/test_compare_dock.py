"""The comparison dock in a real viewer (Xvfb + Mesa GL under CI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_noise2fast.comparison import TABLE_COLUMNS, quality

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

QUICK = {"zs-n2n": {"steps": 150, "report_every": 25}}


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
    assert "crop [Calibrated]" in viewer.layers and "crop [ZS-N2N]" in viewer.layers
    for name in ("calibrated", "zs-n2n"):
        out = viewer.layers[f"crop [{'Calibrated' if name == 'calibrated' else 'ZS-N2N'}]"]
        np.testing.assert_array_equal(out.data, dock.comparison.outputs[name])
        xs, ys = dock.curves[name].getData()
        assert len(xs) >= 2 and np.all(np.isfinite(ys))
    assert len(dock.curves) == 2 and len(dock.plot.curves) == 2
    assert dock.plot.item.getAxis("left").labelText == "PSNR against the reference (dB)"
    rows = dock.table_rows()
    assert [row[0] for row in rows] == ["noisy input", "Calibrated classical", "ZS-N2N"]
    assert len(rows[0]) == len(TABLE_COLUMNS) and rows == [row.cells() for row in dock.comparison.all_rows()]
    assert float(rows[0][1]) == pytest.approx(quality(clean, noisy)[0], abs=0.01)  # the noisy input's own PSNR
    assert float(rows[2][1]) > quality(clean, noisy)[0] + 2.0
    best = max(dock.comparison.rows, key=lambda row: row.psnr).display_name
    assert dock.marked()["PSNR"] == f"{best} ★" or dock.marked()["PSNR"].startswith(best)
    assert "noisy input" in dock.plot.levels and dock.plot.levels["noisy input"].value() == pytest.approx(
        float(rows[0][1]), abs=0.01)
    assert [name for name, box in dock.boxes.items() if box.value] == ["zs-n2n", "calibrated"]
    assert dock.reference.value is reference
    dock.copy_csv()
    copied = QApplication.clipboard().text()
    assert copied.splitlines()[0] == ",".join(TABLE_COLUMNS) and len(copied.splitlines()) == 4
    np.testing.assert_array_equal(layer.data, noisy)
    shots = Path(os.environ.get("NOISE2FAST_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    image = viewer.screenshot(path=str(shots / "compare.png"), canvas_only=False, flash=False)
    assert image.std() > 5


def test_dock_runs_pn2v_and_the_noise_network_and_plots_the_noise_they_learned(qtbot, compare_dock, data_dir, tmp_path):
    viewer, dock = compare_dock
    noisy = tifffile.imread(data_dir / "confocal" / "noisy" / "fish.tif")[192:320, 192:320]
    clean = tifffile.imread(data_dir / "confocal" / "clean" / "fish.tif")[192:320, 192:320]
    layer = viewer.add_image(noisy, name="fish crop")
    reference = viewer.add_image(clean, name="fish clean")
    assert dock.noise_plot.widget.isHidden()
    params = {"pn2v": {"bootstrap_steps": 300, "steps": 200, "report_every": 50, "fit_steps": 500},
              "noise-net": {"steps": 300, "report_every": 50}}
    dock.start(layer, methods=["pn2v", "noise-net"], reference=reference, params=params)
    qtbot.waitUntil(lambda: not dock.running, timeout=300_000)
    assert "fish crop [PN2V]" in viewer.layers and "fish crop [Noise net]" in viewer.layers
    assert set(dock.comparison.noise_models) == {"vst", "pn2v", "noise-net"}
    assert set(dock.noise_plot.curves) == {"blind line (7x7)", "PN2V", "Noise net"}
    for name, label in (("pn2v", "PN2V"), ("noise-net", "Noise net")):
        signals, stds = dock.noise_plot.curves[label].getData()
        model = dock.comparison.noise_models[name]
        np.testing.assert_allclose(stds, model.std(signals))
        assert signals.min() >= 0 and signals.max() <= 255 and np.all(stds > 0)
        # the confocal fish's noise grows with its signal (Poisson-Gaussian): every fit says so
        assert model.gain > 0
    assert dock.comparison.noise_models["vst"].gain > 0
    assert not dock.noise_plot.widget.isHidden()
    shots = Path(os.environ.get("NOISE2FAST_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    image = viewer.screenshot(path=str(shots / "compare_pn2v.png"), canvas_only=False, flash=False)
    assert image.std() > 5


def test_dock_refuses_bad_starts_with_a_notification(monkeypatch, compare_dock):
    from napari_noise2fast._qt import compare_dock as _compare_widget

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
