"""What a microscopist sees in the docks (issue 22): the status names the stage shown, the plot's best point is
on its curve, the plot follows napari's theme, the docks fit a 1280x720 window, a likely clean layer is offered
as reference, the right-click entry can be shown from the Filter menu."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QDockWidget

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_noise2fast._qt import actions  # noqa: E402
from napari_noise2fast._qt.context_menu import ACTION_ID  # noqa: E402
from napari_noise2fast.samples import clean_cell, noisy_cell  # noqa: E402

PLUGIN = "napari-noise2fast"
TIMEOUT_MS = 120_000
QUICK = {"method": "noise2fast", "preset": "fast", "max_steps": 30, "seed": 0, "device": "cpu"}


def crop(image, size=48):
    return image[100:100 + size, 100:100 + size].copy()


def test_the_status_names_the_stage_shown_and_agrees_with_the_plot(qtbot, viewer, docked):
    layer = viewer.add_image(crop(noisy_cell()), name="cell")
    seen = []  # (stage, status text, best point, curve maximum) at every event
    worker = docked.start(layer, settings={**QUICK, "max_steps": 40})

    def record(item):
        xs, ys = docked.curve.getData()
        best = docked.plot.best.getData()
        seen.append((item[0].stage, docked.status.value,
                     None if not len(best[1]) else float(best[1][0]),
                     None if ys is None or not len(ys) else float(np.max(ys))))

    worker.yielded.connect(record)
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)
    assert seen[0][0] == "preview" and "Shown: Gaussian preview" in seen[0][1]
    for stage, text, best, top in seen:
        assert ("preview (" in text) == (stage == "preview")
        assert best == top  # the best point is the maximum of the curve it sits on
    final = docked.status.value
    shown = docked.preview_name(docked._last) if docked._last.stage == "preview" else "Noise2Fast"
    assert final.startswith("Done (step cap reached).") and f"Shown: {shown}" in final
    assert all(len(line) <= 80 for line in final.splitlines())  # short lines: no narrow column, no clipping
    assert "not with the truth" in docked.status.tooltip or "true image" in docked.status.tooltip


def test_on_the_sample_the_output_layer_improves_on_the_gaussian_preview_before_any_training(qtbot, viewer,
                                                                                            docked):
    """Item 1: before the network's first step the output layer goes from the Gaussian preview to the
    total-variation one, closer to the clean cell (measured 36.96 -> 37.63 dB; 1.1-1.4 s after Start on
    one core: benchmarks/gui_latency.py, not timed here), and the status names it."""
    from skimage.metrics import peak_signal_noise_ratio

    layer = viewer.add_image(noisy_cell(), name="noisy cell")
    clean = clean_cell()
    shown = []  # (step, the output layer's data, status) whenever the layer changes

    def record(item):
        out = viewer.layers["noisy cell [Noise2Fast]"] if "noisy cell [Noise2Fast]" in viewer.layers else None
        if item[0].output is not None and out is not None:
            shown.append((item[0].step, np.array(out.data, dtype=np.float64), docked.status.value))
            if len(shown) == 2:
                docked.stop()

    worker = docked.start(layer, settings={"method": "noise2fast", "preset": "fast", "seed": 0, "device": "cpu"})
    worker.yielded.connect(record)
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)
    (step0, gaussian, first), (step1, refined, second) = shown[:2]
    assert (step0, step1) == (0, 0)  # both before the network's first step
    assert "Shown: Gaussian preview" in first and "Shown: total-variation preview" in second

    def psnr(image):
        return peak_signal_noise_ratio(clean, image, data_range=float(clean.max() - clean.min()))

    assert psnr(refined) > psnr(gaussian) + 0.4


def test_while_the_preview_is_shown_the_status_gives_its_score_and_the_held_out_checks(qtbot, viewer, docked,
                                                                                    monkeypatch):
    from napari_noise2fast.methods.noise2fast import Noise2Fast

    monkeypatch.setattr(Noise2Fast, "invariant_psnr", lambda model: 1.0)  # never beats the preview
    layer = viewer.add_image(crop(noisy_cell(), 96), name="cell")
    seen = []  # (stage, second status line, the preview line's value) at every event
    worker = docked.start(layer, settings={**QUICK, "max_steps": 200, "patience": 1000})
    worker.yielded.connect(lambda item: seen.append((item[0].stage, docked.status.value.splitlines()[1],
                                                     docked.plot.levels["preview"].value())))
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)
    training = seen[:-1]  # the last event: the run stopped at its cap, the method's own rule decides then
    assert all(stage == "preview" for stage, _, _ in training)
    # the status gives the shown preview's score, the one its dashed line is at, never the network's
    assert all(f"(validation {level:.2f} dB)" in line for _, line, level in training)
    checks = docked.plot.curves["held-out check"].getData()
    assert len(checks[0]) > 0 and set(checks[1]) == {1.0}
    assert any("held out 1.00" in line for _, line, _ in training)


def test_a_single_plane_counts_down_in_the_status_and_the_activity_dock(qtbot, viewer, docked):
    layer = viewer.add_image(crop(noisy_cell()), name="cell")
    texts, bars = [], []
    worker = docked.start(layer, settings={**QUICK, "max_steps": 25})
    worker.yielded.connect(lambda item: (texts.append(docked.status.value),
                                         bars.append((docked._progress.n, docked._progress.total))))
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)
    assert any("no gain for" in text and "steps" in text for text in texts)
    assert any("left" in text for text in texts)
    assert any(total > 0 for _, total in bars) and all(0 <= n <= total for n, total in bars if total)


def test_the_plot_follows_napari_s_theme(viewer, docked):
    before = docked.plot.background
    viewer.theme = "light" if viewer.theme == "dark" else "dark"
    after = docked.plot.background
    assert before != after
    from napari.utils.theme import get_theme
    from qtpy.QtGui import QColor

    assert after == QColor(get_theme(viewer.theme).canvas.as_hex()).name()


def test_with_a_reference_the_plot_shows_the_noisy_input_s_level(qtbot, viewer, docked):
    noisy = viewer.add_image(crop(noisy_cell()), name="noisy cell")
    clean = viewer.add_image(crop(clean_cell()), name="clean cell")
    docked.image.value = noisy
    assert docked.reference.value is clean  # offered: same shape, named clean
    docked.start(noisy, settings=QUICK)
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)
    axis = docked.plot.item.getAxis("left").labelText
    assert axis == "PSNR against the reference (dB)"
    from napari_noise2fast.comparison import psnr_against

    level = docked.plot.levels["noisy input"].value()
    assert level == pytest.approx(psnr_against(clean.data, noisy.data), abs=1e-6)
    xs, ys = docked.curve.getData()
    assert xs is not None and len(ys) and np.all(np.isfinite(ys))


def test_no_reference_is_guessed_from_the_shape_alone(viewer, docked):
    first = viewer.add_image(crop(noisy_cell()), name="channel 1")
    viewer.add_image(crop(noisy_cell()), name="channel 2")  # same shape: another channel, not a reference
    docked.image.value = first
    assert docked.reference.value is None


def test_both_docks_fit_a_1280x720_window_with_half_of_it_for_the_canvas(qtbot, make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 720)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "Noise2Fast")
    comparison = viewer.window.add_plugin_dock_widget(PLUGIN, "Compare denoisers")[1]
    qtbot.wait(300)
    window.resize(1280, 720)
    qtbot.wait(300)
    assert window.width() <= 1280 and window.height() <= 720
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 640
    for dock in (main, comparison):
        assert dock.native.width() <= 640 and dock.native.minimumSizeHint().height() <= 400
        assert dock.form.native.minimumSizeHint().width() <= dock.native.width()  # nothing cut off on the right
    docks = [d for d in window.findChildren(QDockWidget) if d.isVisible() and "napari-noise2fast" in d.windowTitle()]
    assert len(docks) == 2 and window.tabifiedDockWidgets(docks[0]) == [docks[1]]  # one tab each, not side by side


def test_the_filter_menu_can_show_the_right_click_entry(viewer, monkeypatch):
    from napari._app_model import get_app_model

    said = []
    monkeypatch.setattr(actions, "show_info", said.append)
    assert actions.show_in_context_menu(viewer) is True
    assert ACTION_ID in get_app_model().commands
    assert "right-click" in said[0] and "once the plugin has started" in said[0]
    from npe2 import PluginManager

    titles = {command.title for command in PluginManager.instance().get_manifest(PLUGIN).contributions.commands}
    assert "Show in the layer right-click menu" in titles and "Denoise the selected layer" in titles
    assert not any("Noise2Fast" in title for title in titles if "menu" in title or "selected" in title)


def test_a_large_plane_shows_progress_in_a_light_view_and_writes_the_output_once(qtbot, viewer, docked):
    from napari_noise2fast._qt import noise2fast_dock

    side = 1100  # above the dock's LIVE_PIXELS: shown by the events' downsampled views while it trains
    assert side * side > noise2fast_dock.LIVE_PIXELS
    plane = np.random.default_rng(0).poisson(np.tile(np.linspace(5, 50, side), (side, 1))).astype(np.uint16)
    layer = viewer.add_image(plane, name="big", scale=(0.5, 0.5))
    views, writes = [], []
    worker = docked.start(layer, settings={**QUICK, "max_steps": 6})
    output = viewer.layers["big [Noise2Fast]"]
    output.events.data.connect(lambda _: writes.append(docked.running))
    original = docked.write_output
    docked.write_output = lambda *args: (writes.append("written"), original(*args))

    def record(item):
        if "big [live view]" in viewer.layers:
            views.append(tuple(viewer.layers["big [live view]"].scale))

    worker.yielded.connect(record)
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)
    assert views and set(views) == {(1.0, 1.0)}  # half the pixels a side, so twice the scale
    assert writes.count("written") == 1  # the full-size output once, at the end
    assert "big [live view]" not in viewer.layers  # the full-size output replaced it at the end
    out = viewer.layers["big [Noise2Fast]"].data
    assert out.shape == plane.shape and not np.array_equal(out, plane.astype(out.dtype))


def test_a_menu_start_before_torch_has_loaded_waits_without_freezing_the_viewer(qtbot, viewer, docked, monkeypatch):
    import threading

    from napari_noise2fast._qt import dock as base

    loading = threading.Event()  # the warm-up as just after the dock opened: torch still loading
    monkeypatch.setattr(base, "_WARM", loading)
    monkeypatch.setattr(base, "_WARM_THREAD", [object()])
    layer = viewer.add_image(crop(noisy_cell()), name="cell")
    viewer.layers.selection.active = layer
    docked.max_steps.value = 2
    assert actions.denoise_with_defaults(viewer) is None  # returned at once: nothing waited for torch
    assert not docked.running and "Loading torch" in docked.status.value
    qtbot.wait(200)
    assert not docked.running
    loading.set()
    qtbot.waitUntil(lambda: "cell [Noise2Fast]" in viewer.layers, timeout=TIMEOUT_MS)  # then it starts by itself
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)


def test_with_a_reference_the_network_s_curve_climbs_while_the_preview_is_shown(qtbot, viewer, docked, monkeypatch):
    from napari_noise2fast.comparison import psnr_against
    from napari_noise2fast.engine import PlaneRun
    from napari_noise2fast.methods.noise2fast import Noise2Fast

    monkeypatch.setattr(Noise2Fast, "invariant_psnr", lambda model: 1.0)  # the preview stays shown
    scored = []  # the network's outputs the worker scored, in order
    original = PlaneRun.method_output

    def spy(run):
        output = original(run)
        scored.append(output.copy())
        return output

    monkeypatch.setattr(PlaneRun, "method_output", spy)
    noisy = viewer.add_image(crop(noisy_cell(), 64), name="noisy cell")
    clean = viewer.add_image(crop(clean_cell(), 64), name="clean cell")
    docked.image.value = noisy
    assert docked.reference.value is clean
    seen = []  # (stage, the status's second line) at every event
    worker = docked.start(noisy, settings={**QUICK, "max_steps": 60})
    worker.yielded.connect(lambda item: seen.append((item[0].stage, docked.status.value.splitlines()[1])))
    qtbot.waitUntil(lambda: not docked.running, timeout=TIMEOUT_MS)
    assert all(stage == "preview" for stage, _ in seen[:-1])  # the last: stopped, the method's own rule
    assert len(scored) >= 2  # the network scored against the reference while the preview was shown
    expected = [psnr_against(clean.data, output) for output in scored]
    assert docked._curve[:len(scored)] == pytest.approx(expected, abs=1e-6)  # its points, in order
    assert any("so far" in line and "against the reference" in line for _, line in seen[:-1])
