"""The dock widget, menu actions and sample data in a real napari viewer (Xvfb + Mesa GL under CI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_noise2fast._qt import noise2fast_dock as _widget  # noqa: E402
from napari_noise2fast._qt.actions import denoise_with_defaults  # noqa: E402
from napari_noise2fast._qt.context_menu import ACTION_ID, register  # noqa: E402
from napari_noise2fast.samples import noisy_cell  # noqa: E402

PLUGIN, WIDGET = "napari-noise2fast", "Noise2Fast"
QUICK = {"method": "noise2fast", "preset": "fast", "max_steps": 20, "seed": 0, "device": "cpu"}
TIMEOUT_MS = 120_000


def small_cell(size=48):
    return noisy_cell()[100:100 + size, 100:100 + size].copy()


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def start_long_run(qtbot, widget, layer, steps_first: int) -> list[int]:
    """Start a run that would not stop by itself; return once ``steps_first`` events arrived."""
    widget.patience.value = 100_000
    steps = []
    widget.start(layer).yielded.connect(lambda item: steps.append(item[0].step))
    qtbot.waitUntil(lambda: len(steps) > steps_first, timeout=TIMEOUT_MS)
    return steps


def test_widget_docks_from_manifest_and_follows_layers(viewer, docked):
    assert isinstance(docked, _widget.Noise2FastWidget)
    assert list(docked.image.choices) == []
    layer = viewer.add_image(small_cell(), name="cell")
    assert list(docked.image.choices) == [layer]
    viewer.add_points([[1, 1]])
    assert list(docked.image.choices) == [layer]  # image layers only
    assert docked.preset.value == "fast" and docked.patience.value == 50
    docked.preset.value = "reference"
    assert docked.patience.value == 100
    assert all(w.tooltip for w in (docked.max_steps, docked.patience, docked.seed, docked.device, docked.preset))


def test_start_streams_curve_and_output_layer(qtbot, viewer, docked):
    data = small_cell()
    before = data.copy()
    layer = viewer.add_image(data, name="cell", scale=(0.5, 2.0), translate=(3, 4), contrast_limits=(90, 160))
    events = []
    docked.max_steps.value = 30
    worker = docked.start(layer)
    worker.yielded.connect(lambda item: events.append(item[0]))
    assert docked.running and not docked.start_button.enabled and docked.stop_button.enabled
    wait_done(qtbot, docked)
    assert [e.step for e in events][-1] == 30 and events[0].stage == "preview"
    xs, ys = docked.curve.getData()
    assert list(xs) == [10, 20, 30] and np.all(np.isfinite(ys))
    best_x, _ = docked.plot.best.getData()
    assert best_x[0] == xs[int(np.argmax(ys))]
    out = viewer.layers["cell [Noise2Fast]"]
    assert out.data.shape == data.shape and out.data.dtype == np.float32  # not rounded to the input's uint16
    assert not np.array_equal(out.data, data)
    np.testing.assert_array_equal(out.data, events[-1].output)
    assert tuple(out.scale) == (0.5, 2.0) and tuple(out.translate) == (3, 4)
    assert tuple(out.contrast_limits) == (90, 160)
    np.testing.assert_array_equal(layer.data, before)
    assert docked.status.value.startswith("Done (step cap reached).\nNoise2Fast · step 30")
    assert docked.start_button.enabled and not docked.stop_button.enabled


def test_second_run_updates_the_same_output_layer(qtbot, viewer, docked):
    layer = viewer.add_image(small_cell(), name="cell")
    docked.start(layer, settings={**QUICK, "max_steps": 10})
    wait_done(qtbot, docked)
    first = viewer.layers["cell [Noise2Fast]"]
    docked.start(layer, settings={**QUICK, "max_steps": 10, "seed": 1})
    wait_done(qtbot, docked)
    assert len(viewer.layers) == 2 and viewer.layers["cell [Noise2Fast]"] is first


def test_stop_keeps_best_output_and_says_where(qtbot, viewer, docked):
    layer = viewer.add_image(small_cell(64), name="cell")
    steps = start_long_run(qtbot, docked, layer, 25)
    docked.stop()
    wait_done(qtbot, docked)
    assert steps[-1] < 1000
    out = viewer.layers["cell [Noise2Fast]"].data
    assert np.ptp(out) > 0 and not np.array_equal(out, layer.data)
    assert docked.status.value.startswith(f"Stopped at step {steps[-1]}")


def test_bad_start_notifies_instead_of_raising(monkeypatch, viewer, docked):
    shown = []
    monkeypatch.setattr(_widget, "show_warning", shown.append)
    monkeypatch.setattr(_widget, "show_error", shown.append)
    assert docked.start() is None and not docked.running
    tiny = viewer.add_image(np.ones((4, 4)) * np.arange(4), name="tiny")
    assert docked.start(tiny) is None and not docked.running
    assert "select an image layer" in shown[0] and "at least 8x8" in shown[1]
    assert "tiny [Noise2Fast]" not in viewer.layers


def test_removing_the_input_layer_mid_run_stops_cleanly(qtbot, viewer, docked):
    layer = viewer.add_image(small_cell(64), name="cell")
    steps = start_long_run(qtbot, docked, layer, 3)
    viewer.layers.remove(layer)
    wait_done(qtbot, docked)
    assert docked.worker is None and steps[-1] < 1000


def test_closing_the_viewer_mid_run_leaves_no_thread(qtbot, make_napari_viewer):
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    start_long_run(qtbot, widget, viewer.add_image(small_cell(64), name="cell"), 3)
    viewer.close()
    assert QThreadPool.globalInstance().waitForDone(30_000)
    assert QThreadPool.globalInstance().activeThreadCount() == 0


def test_stack_whole_layer_fills_every_plane_and_counts_planes(qtbot, viewer, docked):
    stack = np.stack([small_cell(32), small_cell(32)[::-1], small_cell(32)[:, ::-1]])
    layer = viewer.add_image(stack, name="stack")
    docked.scope.value = _widget.WHOLE_LAYER
    docked.max_steps.value = 10
    worker = docked.start(layer)
    done = []
    worker.yielded.connect(lambda item: done.append(item[0].plane) if item[0].done else None)
    progress_bar = docked._progress
    wait_done(qtbot, docked)
    assert done == [0, 1, 2] and progress_bar.n == 3 and progress_bar.total == 3
    out = viewer.layers["stack [Noise2Fast]"].data
    assert all(not np.array_equal(out[i], stack[i]) for i in range(3))
    # one model for the stack (the fast preset's default): its curve stays while the planes are predicted
    assert docked._one_model and docked._plane == 0 and len(docked._curve) > 0
    assert "plane 3/3 denoised" in docked.status.value


def test_stack_current_plane_denoises_only_the_shown_plane(qtbot, viewer, docked):
    stack = np.stack([small_cell(32)] * 3)
    layer = viewer.add_image(stack, name="stack")
    viewer.dims.set_point(0, 2)
    docked.start(layer, settings={**QUICK, "max_steps": 10}, scope=_widget.CURRENT_PLANE)
    wait_done(qtbot, docked)
    out = viewer.layers["stack [Noise2Fast]"].data
    np.testing.assert_array_equal(out[:2], stack[:2])
    assert not np.array_equal(out[2], stack[2])


def test_rgb_layer_is_denoised_per_channel_and_shown_as_rgb(qtbot, viewer, docked):
    gray = (small_cell(32) - 90).clip(0, 255).astype(np.uint8)
    rgb = np.stack([gray, gray[::-1], 255 - gray], axis=-1)
    layer = viewer.add_image(rgb, name="rgb")
    assert layer.rgb
    docked.start(layer, settings={**QUICK, "max_steps": 10})
    wait_done(qtbot, docked)
    out = viewer.layers["rgb [Noise2Fast]"]
    assert out.rgb and out.data.shape == rgb.shape and out.data.dtype == np.float32
    assert tuple(out.contrast_limits) == tuple(layer.contrast_limits)  # float RGB shown on the input's scale
    assert all(not np.array_equal(out.data[..., c], rgb[..., c]) for c in range(3))


def test_filter_menu_command_is_in_app_model_and_denoises_active_layer(qtbot, viewer):
    from napari._app_model import get_app_model

    app = get_app_model()
    layer = viewer.add_image(small_cell(32), name="cell")
    viewer.layers.selection.active = layer
    app.commands.execute_command("napari-noise2fast.denoise_selected").result()
    submenus = [item for item in app.menus.get_menu("napari/layers/filter") if hasattr(item, "submenu")]
    denoise = next(item for item in submenus if item.title == "Denoise")
    commands = [item.command.id for item in app.menus.get_menu(denoise.submenu)]
    assert "napari-noise2fast.denoise_selected" in commands
    widget = _dock_widget(viewer)
    qtbot.waitUntil(lambda: widget.running, timeout=60_000)  # the dock opened and the run started there
    widget.stop()
    wait_done(qtbot, widget)
    assert "cell [Noise2Fast]" in viewer.layers


def test_right_click_action_is_registered_and_denoises_active_layer(qtbot, viewer):
    from napari._app_model import get_app_model
    from npe2 import PluginManager

    assert PluginManager.instance().get_manifest(PLUGIN).on_activate == "napari_noise2fast._qt.context_menu:activate"
    assert register()
    app = get_app_model()
    assert ACTION_ID in [item.command.id for item in app.menus.get_menu("napari/layers/context")
                         if hasattr(item, "command")]
    layer = viewer.add_image(small_cell(32), name="cell")
    viewer.layers.selection.active = layer
    app.commands.execute_command(ACTION_ID).result()
    widget = _dock_widget(viewer)
    widget.stop()
    wait_done(qtbot, widget)
    assert "cell [Noise2Fast]" in viewer.layers


def test_action_on_a_non_image_layer_warns(viewer):
    viewer.add_points([[1, 1]])
    assert denoise_with_defaults(viewer) is None
    assert len(viewer.layers) == 1


def test_sample_data_loads(viewer):
    viewer.open_sample(PLUGIN, "noisy_cell")
    layer = viewer.layers["noisy cell"]
    assert layer.data.shape == (256, 256) and layer.data.dtype == np.uint16


def test_screenshot_of_window_with_docked_widget_is_not_blank(qtbot, viewer, docked, tmp_path):
    from skimage.io import imsave

    viewer.window.resize(1400, 900)
    layer = viewer.add_image(noisy_cell(), name="noisy cell")
    docked.start(layer, settings={**QUICK, "max_steps": 30})
    wait_done(qtbot, docked)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    folder = Path(os.environ.get("NOISE2FAST_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    imsave(folder / "window_with_widget.png", shot, check_contrast=False)
    assert shot.ndim == 3 and shot.shape[0] > 500 and shot.shape[1] > 1000
    rgb = shot[..., :3].astype(float)
    assert rgb.std() > 20 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 100
    dock = docked.native.grab().toImage()
    assert dock.width() > 200 and dock.height() > 300


def _dock_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def test_other_methods_run_from_the_dock_without_noise2fasts_knobs(qtbot, viewer, docked):
    layer = viewer.add_image(small_cell(), name="cell")
    docked.method.value = "calibrated"
    assert not docked.preset.enabled and not docked.patience.enabled
    assert "preset" not in docked.settings() and "patience" not in docked.settings()
    events = []
    docked.start(layer).yielded.connect(lambda item: events.append(item[0]))
    wait_done(qtbot, docked)
    assert events[-1].stop_reason == "complete"
    out = viewer.layers["cell [Calibrated]"]
    assert not np.array_equal(out.data, layer.data)
    assert not docked.save_button.enabled  # Calibrated keeps no model to save
    docked.method.value = "noise2fast"
    assert docked.preset.enabled and docked.settings()["preset"] == "fast"


def test_a_lazy_layer_is_read_by_planes_and_written_into_a_lazy_output(qtbot, viewer, docked):
    import dask.array as da
    import zarr

    from test_lazy import Counting, chunk_reads

    stack = np.stack([small_cell(32) + k for k in range(6)]).astype(np.float32)
    counting = Counting(stack)
    layer = viewer.add_image(da.from_array(counting, chunks=(1, 32, 32), asarray=False), name="lazy")
    viewer.dims.set_point(0, 4)
    shown = chunk_reads(counting, (1, 32, 32))  # what the viewer itself read to draw the plane shown
    docked.start(layer, settings={**QUICK, "max_steps": 10}, scope=_widget.CURRENT_PLANE)
    wait_done(qtbot, docked)
    assert set(chunk_reads(counting, (1, 32, 32))) <= set(shown) | {(4, 0, 0)}  # that plane only
    out = viewer.layers["lazy [Noise2Fast]"]
    assert isinstance(out.data, zarr.Array) and out.data.dtype == np.float32
    assert not np.array_equal(np.asarray(out.data[4]), stack[4]) and np.all(np.asarray(out.data[:4]) == 0)

    counting.reads.clear()
    docked.start(layer, settings={**QUICK, "max_steps": 10}, scope=_widget.WHOLE_LAYER)
    wait_done(qtbot, docked)
    reads = chunk_reads(counting, (1, 32, 32))
    assert sorted(reads) == [(k, 0, 0) for k in range(6)]
    assert max(reads.values()) <= 3  # a sample read and the prediction's, and the viewer's redraw of the shown one
    whole = [candidate for candidate in viewer.layers if candidate.name.startswith("lazy [Noise2Fast]")][-1]
    assert isinstance(whole.data, zarr.Array)
    assert all(not np.array_equal(np.asarray(whole.data[k]), stack[k]) for k in range(6))
    assert all(np.asarray(whole.data[k]).std() > 0 for k in range(6))  # every plane written


def test_a_whole_lazy_layer_goes_into_the_zarr_store_picked_and_a_rerun_goes_on(qtbot, viewer, docked, tmp_path):
    import dask.array as da
    import zarr

    stack = np.stack([small_cell(32) + k for k in range(4)]).astype(np.float32)
    layer = viewer.add_image(da.from_array(stack, chunks=(1, 32, 32)), name="lazy")
    docked.zarr_output.value = tmp_path / "picked.zarr"
    docked.start(layer, settings={**QUICK, "max_steps": 10}, scope=_widget.WHOLE_LAYER)
    wait_done(qtbot, docked)
    written = zarr.open_array(str(tmp_path / "picked.zarr"), mode="r")
    assert written.attrs["noise2fast"]["finished"] == [0, 1, 2, 3]
    first = np.asarray(written[:])
    assert all(not np.array_equal(first[k], stack[k]) for k in range(4))
    docked.start(layer, settings={**QUICK, "max_steps": 10}, scope=_widget.WHOLE_LAYER)
    wait_done(qtbot, docked)  # (the rerun ends at once: a signal connected after its start may miss it)
    last = docked._last
    assert last.stop_reason == "resumed" and last.planes_done == 4 and last.step == 0  # nothing trained again
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(tmp_path / "picked.zarr"), mode="r")[:]), first)
    docked.zarr_output.value = tmp_path / "picked.tif"
    assert docked.start(layer, settings=QUICK, scope=_widget.WHOLE_LAYER) is None  # refused, nothing started


def test_save_model_writes_the_trained_model_the_api_denoises_with(qtbot, viewer, docked, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    from napari_noise2fast import denoise
    from napari_noise2fast.models import load_model

    layer = viewer.add_image(small_cell(), name="cell")
    assert not docked.save_button.enabled  # nothing trained yet
    docked.max_steps.value = 20
    docked.start(layer)
    assert not docked.save_button.enabled  # not while it trains
    wait_done(qtbot, docked)
    assert docked.save_button.enabled
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *args: asked.append(args) or (str(tmp_path / "cell model"), ""))
    docked.save_button.native.click()
    assert asked and asked[0][2].endswith("cell.n2f-model")  # a name suggested from the layer
    assert load_model(tmp_path / "cell model").method == "noise2fast"
    assert docked.status.value.endswith(f"Model saved to {tmp_path / 'cell model'}")
    again = denoise(layer.data, device="cpu", model=tmp_path / "cell model")
    assert again.shape == layer.data.shape and not np.array_equal(again, layer.data)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args: ("", ""))  # cancelled: nothing written
    docked.save_button.native.click()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell model"]
