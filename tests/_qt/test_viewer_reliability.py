"""The viewer as a hostile user drives it: every error a notification naming its cause, one-click actions
that run what the dock shows, input layers removed mid-run, and a soak of start/stop cycles."""

from __future__ import annotations

import gc
import os
import sys
import threading

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_noise2fast._qt import actions as _actions  # noqa: E402
from napari_noise2fast._qt import compare_dock as _compare_widget  # noqa: E402
from napari_noise2fast._qt import dock as _dock  # noqa: E402
from napari_noise2fast._qt import noise2fast_dock as _widget  # noqa: E402
from napari_noise2fast.samples import noisy_cell  # noqa: E402

PLUGIN = "napari-noise2fast"
TIMEOUT_MS = 120_000


@pytest.fixture
def shown(monkeypatch):
    """Every notification the docks and actions show, as (kind, text)."""
    seen: list[tuple[str, str]] = []
    for module in (_widget, _compare_widget, _actions, _dock):
        for kind in ("show_info", "show_warning", "show_error"):
            if hasattr(module, kind):
                monkeypatch.setattr(module, kind, lambda text, kind=kind: seen.append((kind, text)))
    return seen


def cell(size=32):
    return noisy_cell()[100:100 + size, 100:100 + size].copy()


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def start_endless(qtbot, widget, layer, events: int = 2):
    """Start a run that would not end by itself and return once ``events`` events arrived."""
    widget.patience.value = 100_000
    widget.max_steps.value = 0
    seen = []
    worker = widget.start(layer)
    assert worker is not None
    worker.yielded.connect(lambda item: seen.append(item[0]))
    qtbot.waitUntil(lambda: len(seen) >= events, timeout=TIMEOUT_MS)
    return seen


# ------------------------------------------------------------------ errors a user can cause
def test_no_layer_is_a_notification(docked, shown):
    assert docked.start() is None and not docked.running
    assert shown == [("show_warning", "Noise2Fast: select an image layer first.")]


def test_a_layer_of_the_wrong_type_is_a_notification(viewer, docked, shown):
    points = viewer.add_points([[1, 1]])
    assert docked.start(points) is None
    viewer.layers.selection.active = points
    assert _actions.denoise_with_defaults(viewer) is None
    assert [kind for kind, _ in shown] == ["show_warning", "show_warning"]
    assert all("select an image layer" in text for _, text in shown)


def test_removing_the_input_mid_run_is_a_notification(qtbot, viewer, docked, shown):
    layer = viewer.add_image(cell(), name="cell")
    start_endless(qtbot, docked, layer)
    viewer.layers.remove(layer)
    wait_done(qtbot, docked)
    assert ("show_info", "Noise2Fast: the input layer 'cell' was removed; the run stopped.") in shown
    assert "cell [Noise2Fast]" in viewer.layers


def test_a_reference_of_the_wrong_shape_is_a_notification(viewer, shown):
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Compare denoisers")
    layer = viewer.add_image(cell(32), name="a")
    other = viewer.add_image(cell(16), name="b")
    assert dock.start(layer, methods=["calibrated"], reference=other) is None
    assert shown[-1][0] == "show_error" and "reference layer 'b' has shape (16, 16)" in shown[-1][1]


def test_a_missing_optional_package_is_a_notification(monkeypatch, viewer, docked, shown):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # as if it were not installed
    layer = viewer.add_image(cell(), name="cell")
    docked.method.value = "bm3d"
    assert docked.start(layer) is None and not docked.running
    assert shown[-1][0] == "show_error" and "pip install 'napari-noise2fast[bm3d]'" in shown[-1][1]
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Compare denoisers")
    assert dock.start(layer, methods=["bm3d"]) is None
    assert shown[-1][0] == "show_error" and "optional 'bm3d' package" in shown[-1][1]


def test_a_second_start_while_running_is_a_notification(qtbot, viewer, docked, shown):
    layer = viewer.add_image(cell(), name="cell")
    start_endless(qtbot, docked, layer)
    assert docked.start(layer) is None
    assert shown[-1] == ("show_info", "Noise2Fast is already running; press Stop first.")
    docked.stop()
    wait_done(qtbot, docked)


def test_a_current_plane_that_does_not_fit_the_view_is_a_notification(viewer, docked, shown):
    stack = viewer.add_image(np.stack([cell()] * 3), name="stack")
    docked.scope.value = _widget.CURRENT_PLANE
    viewer.dims.ndisplay = 3
    assert docked.start(stack) is None
    assert shown[-1][0] == "show_error" and "needs the 2D view" in shown[-1][1]
    viewer.dims.ndisplay = 2
    viewer.dims.order = (1, 0, 2)  # the plane on screen is Z-X, not the layer's Y-X
    assert docked.start(stack) is None
    assert shown[-1][0] == "show_error" and "shows axes [0, 2]" in shown[-1][1]
    assert not docked.running and "stack [Noise2Fast]" not in viewer.layers


def test_an_error_inside_a_run_is_a_notification_not_a_traceback(qtbot, monkeypatch, viewer, docked, shown):
    from napari_noise2fast.methods.noise2fast import Noise2Fast

    def broken(self):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(Noise2Fast, "step", broken)
    layer = viewer.add_image(cell(), name="cell")
    docked.start(layer)
    wait_done(qtbot, docked)
    assert ("show_error", "Noise2Fast stopped with an error: out of memory (simulated)") in shown
    assert docked.start_button.enabled


# ------------------------------------------------------------------ one-click actions
def test_one_click_runs_what_the_dock_shows(qtbot, viewer, docked):
    stack = np.stack([cell(), cell()[::-1], cell()[:, ::-1]])
    layer = viewer.add_image(stack, name="stack")
    viewer.dims.set_point(0, 1)
    docked.max_steps.value = 3
    docked.seed.value = 5
    docked.scope.value = _widget.CURRENT_PLANE
    viewer.layers.selection.active = layer
    docked.wait_warm()  # torch loaded: the action starts at once and returns the worker
    worker = _actions.denoise_with_defaults(viewer)
    events = []
    worker.yielded.connect(lambda item: events.append(item[0]))
    wait_done(qtbot, docked)
    assert {event.n_planes for event in events} == {1} and events[-1].step == 3  # the shown plane, 3 steps
    out = viewer.layers["stack [Noise2Fast]"].data
    np.testing.assert_array_equal(out[[0, 2]], stack[[0, 2]].astype(out.dtype))
    assert not np.array_equal(out[1], stack[1])


def test_one_click_on_an_output_of_this_plugin_says_so_and_does_not_run(qtbot, viewer, docked, shown):
    layer = viewer.add_image(cell(), name="cell")
    docked.max_steps.value = 2
    docked.start(layer)
    wait_done(qtbot, docked)
    output = viewer.layers["cell [Noise2Fast]"]
    viewer.layers.selection.active = output
    assert _actions.denoise_with_defaults(viewer) is None and not docked.running
    assert shown[-1][0] == "show_warning" and "is an output of this plugin; select its input 'cell'" in shown[-1][1]
    assert "cell [Noise2Fast] [Noise2Fast]" not in viewer.layers
    docked.start(output)  # picked in the dock on purpose: it runs, and says what it is
    wait_done(qtbot, docked)
    assert "already an output of this plugin" in shown[-1][1]


def test_output_layers_are_float32_with_the_inputs_contrast(qtbot, viewer, docked):
    layer = viewer.add_image(cell(), name="cell", contrast_limits=(90, 160))
    docked.max_steps.value = 2
    docked.start(layer)
    wait_done(qtbot, docked)
    out = viewer.layers["cell [Noise2Fast]"]
    assert out.data.dtype == np.float32 and tuple(out.contrast_limits) == (90, 160)
    assert np.any(out.data != np.round(out.data))


# ------------------------------------------------------------------ removal mid-run and the soak
def test_deleting_the_input_mid_run_in_a_shown_viewer_never_crashes(qtbot, make_napari_viewer):
    # Redrawing the output after the input's removal killed napari under Mesa's llvmpipe 5 times in 5
    # (glDrawArrays); it needs a canvas that really paints: a shown window of a real size.
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    _, docked = viewer.window.add_plugin_dock_widget(PLUGIN, "Noise2Fast")
    for attempt in range(8):
        viewer.layers.clear()
        layer = viewer.add_image(noisy_cell(), name=f"cell {attempt}")  # the first, bottom layer
        events = start_endless(qtbot, docked, layer, events=3 + attempt % 3)  # outputs drawn meanwhile
        qtbot.wait(300)
        viewer.layers.remove(layer)
        wait_done(qtbot, docked)
        qtbot.wait(1000)  # the canvas draws with the input gone
        output = viewer.layers[f"cell {attempt} [Noise2Fast]"]
        assert events and not np.array_equal(output.data, noisy_cell())  # it holds the best result


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read resident memory")
def test_soak_start_stop_cycles_and_deletions_leave_no_threads_or_memory_behind(qtbot, make_napari_viewer):
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer(show=True)  # a painting canvas, as in use
    viewer.window._qt_window.resize(1600, 1000)
    _, docked = viewer.window.add_plugin_dock_widget(PLUGIN, "Noise2Fast")
    pool = QThreadPool.globalInstance()
    layer = viewer.add_image(cell(32), name="cell")
    counts, memory = [], []
    for cycle in range(100):  # start, a few events, Stop
        start_endless(qtbot, docked, layer, events=2)
        docked.stop()
        wait_done(qtbot, docked)
        pool.waitForDone(10_000)
        if cycle % 10 == 0 or cycle == 99:
            gc.collect()
        counts.append((threading.active_count(), pool.activeThreadCount()))
        memory.append(_resident_bytes())
    for attempt in range(20):  # the input deleted mid-run
        doomed = viewer.add_image(cell(32), name=f"doomed {attempt}")
        start_endless(qtbot, docked, doomed, events=1 + attempt % 3)
        viewer.layers.remove(doomed)
        wait_done(qtbot, docked)
        viewer.layers.remove(f"doomed {attempt} [Noise2Fast]")
    pool.waitForDone(10_000)
    gc.collect()
    warm = counts[0]
    assert all(count == warm for count in counts[1:]), counts
    assert (threading.active_count(), pool.activeThreadCount()) == warm
    growth = (memory[-1] - memory[10]) / memory[10]
    print(f"soak: threads {warm}, resident {memory[10] / 2**20:.0f} -> {memory[-1] / 2**20:.0f} MiB ({growth:+.1%})")
    assert growth < 0.10, f"resident memory grew {growth:.1%} over the last 90 cycles"
