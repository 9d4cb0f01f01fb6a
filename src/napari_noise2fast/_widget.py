"""The dock widget: pick an image layer, press Start, watch the validation curve and the output layer.

A thin client of the engine: training runs in a napari thread worker that
iterates :func:`napari_noise2fast.iter_denoise`; the GUI thread only draws the
events it receives (plot, status, output layer) and never computes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import torch
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, RadioButtons, SpinBox, create_widget
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from napari.utils.theme import get_theme
from qtpy.QtCore import Qt

from napari_noise2fast.api import iter_denoise
from napari_noise2fast.layers import layer_settings, made_by_plugin, output_metadata
from napari_noise2fast.lazy import is_lazy
from napari_noise2fast.methods import METHODS
from napari_noise2fast.methods.noise2fast import PRESETS
from napari_noise2fast.output import array_folder, new_plane_store

CURRENT_PLANE, WHOLE_LAYER = "current plane", "whole layer"
# the knobs' initial values (the one-click menu actions run with what the dock shows)
DEFAULTS = {"preset": "fast", "seed": 0, "device": "auto"}
UPDATE_SECONDS = 0.5  # at most two output-layer redraws a second while training
CURVE_COLOUR = "#f0a030"  # readable on the dark and the light theme
logger = logging.getLogger(__name__)


def available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def lazy_output(layer: Image):
    """A new zarr array for the result of the lazy layer ``layer`` (float32, a plane a chunk), in a
    temporary folder that outlives the run (the output layer reads it)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="noise2fast-"))
    return new_plane_store(folder / "output.zarr", tuple(layer.data.shape), np.float32)


@dataclass(frozen=True)
class RunFailure:
    """The last item a worker yields when its run raised; the dock shows it as a notification."""

    error: Exception


def _drive(body):
    """A worker's body: the items of the generator ``body`` (closed from outside when the run ends)."""
    return (yield from body)


def reporting_errors(body):
    """Wrap a worker's generator function so that an error inside the run ends it as a :class:`RunFailure`.

    Not raised on: napari relays a worker's error as a traceback notification, and superqt's worker
    swallows a RuntimeError (taking it for a deleted Qt object) without emitting ``errored`` or
    ``finished``, while torch raises RuntimeError for most failures, out of memory among them: the
    dock would have stayed "running" forever, silently.
    """

    def wrapped(*args, **kwargs):
        try:
            return (yield from body(*args, **kwargs))
        except Exception as error:
            logger.error("%s", error, exc_info=error)  # the traceback for a log, not for the user
            yield RunFailure(error)
            return None

    return wrapped


def throttled(job, min_interval: float):
    """The worker's body: the job's events, without the outputs that come sooner than ``min_interval``
    after the last one sent (the preview and every plane's final output always go through)."""
    last = -math.inf
    for event in job:
        if event.output is not None and event.step > 0 and not event.done:
            now = time.perf_counter()
            if now - last < min_interval:
                event = replace(event, output=None)
            else:
                last = now
        yield event


def warm_up_torch() -> None:
    """Run two tiny training steps once per process, when the widget opens.

    Torch's first convolution, backward pass and optimiser step initialise
    kernels while holding the GIL (about 200 ms here), which would freeze the
    viewer just after Start; paying it when the dock opens keeps runs smooth.
    """
    global _WARM
    if not _WARM:
        plane = np.random.default_rng(0).random((16, 16), dtype=np.float32)
        list(iter_denoise(plane, device="cpu", seed=0, max_steps=2, preview=False, validate_every=1))
        _WARM = True


_WARM = False


def gui_threads() -> int:
    """Torch threads for a run started from the GUI: leave one core to the viewer's event loop."""
    return max(1, (os.cpu_count() or 2) - 1)


class WorkerDock(Container):
    """What the docks share: one thread worker at a time with a Stop button and a status line, the
    input read by scope (current plane or whole layer), torch threads limited while a CPU run trains,
    and stopping when the input layer is removed or the dock destroyed. Subclasses build
    ``stop_button`` and ``status``, and name the dock in ``title`` (the prefix of its notifications)."""

    title = "Noise2Fast"
    keeps_lazy = False  # a whole lazy layer is passed on lazy (the job reads it plane by plane)

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker = None
        self._body = None
        self.input_layer = None
        self._threads = None
        self._kept_visuals: list = []  # see _on_layer_removing
        self.viewer.layers.events.removing.connect(self._on_layer_removing)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._abandon)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start_worker(self, body, *args, on_item) -> None:
        """Run ``body(*args)`` (a generator function) in a thread worker: each item goes to ``on_item`` on
        the GUI thread, a failure of the run to a notification, the end to ``_on_finished``."""
        self._body = reporting_errors(body)(*args)
        # napari keeps every worker (its task list holds worker.quit); the worker drives this generator,
        # which release_worker closes, so a finished run's job and model are freed, not kept with it
        self.worker = create_worker(_drive, self._body)
        self.worker.yielded.connect(lambda item: self._on_failure(item) if isinstance(item, RunFailure)
                                    else on_item(item))
        self.worker.finished.connect(self._on_finished)

    def release_worker(self) -> None:
        """The run has ended: free what it held, give the threads back, and enable Start again."""
        if self.__dict__.get("_body") is not None:
            self._body.close()
            self._body = None
        self.restore_threads()
        self.worker = None
        self.start_button.enabled = True
        self.stop_button.enabled = False

    def write_output(self, layer: Image | None, location, values: np.ndarray) -> None:
        """Write ``values`` into ``layer`` at ``location`` (``()``: all of it) and redraw it; a layer no
        longer in the viewer is left alone."""
        if layer is None or layer not in self.viewer.layers:
            return
        layer.data[location if location != () else ...] = values
        layer.refresh()

    def _on_layer_removing(self, event) -> None:
        """While a run updates its outputs, keep the GL program of an image layer being removed alive.

        On Mesa's software OpenGL (llvmpipe 22.3, as under Xvfb), once the GL program of the first-created
        image layer is deleted, the next draw of another image layer that changed (new data, contrast
        limits) kills the process with a segmentation fault in glDrawArrays: 5 of 5 tries when the input
        was removed mid-run, and plain napari does the same with no plugin. Holding the removed layer's
        vispy visual (its program, and its texture of the shown plane) until the dock closes prevents it
        (0 crashes in the real-viewer test, against a crash on its first removal without). It uses
        napari's private canvas; if that moves, nothing is kept.
        """
        if self.worker is None:
            return
        try:
            layer = self.viewer.layers[event.index]
            self._kept_visuals.append(self.viewer.window._qt_viewer.canvas.layer_to_visual[layer].node)
        except (AttributeError, KeyError, IndexError, TypeError):
            pass

    def _on_failure(self, failure: RunFailure) -> None:
        show_error(f"{self.title} stopped with an error: {failure.error}")

    def stop(self) -> None:
        """Stop at the next step; the output layers keep the best results so far."""
        if self.worker is not None:
            self.worker.quit()
            self.stop_button.enabled = False
            self.status.value = "Stopping after this step..."

    def read_input(self, layer: Image, scope: str) -> tuple[np.ndarray, tuple]:
        """The array to denoise (a copy-free view where possible) and its index in the layer's data.

        ValueError when "current plane" does not fit what the viewer shows: a 3D view, or a plane
        other than the layer's last two axes on screen (the plane denoised is always a YX plane)."""
        spatial = layer.data.ndim - (1 if layer.rgb else 0)
        leading = spatial - 2
        if scope == WHOLE_LAYER or leading <= 0:
            if self.keeps_lazy and is_lazy(layer.data) and not layer.rgb:
                return layer.data, ()  # read plane by plane by the job, never whole
            return np.asarray(layer.data), ()
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            raise ValueError("'current plane' needs the 2D view: switch the viewer to 2D, or choose 'whole layer'")
        shown = [axis - (dims.ndim - layer.ndim) for axis in dims.displayed]
        if sorted(shown) != [layer.ndim - 2, layer.ndim - 1]:
            raise ValueError(f"'current plane' denoises the layer's last two axes, but the viewer shows axes "
                             f"{sorted(shown)} of {layer.name!r}: reset the axis order, or choose 'whole layer'")
        position = layer.world_to_data(self.viewer.dims.point[-layer.ndim:])
        base = tuple(int(np.clip(round(position[i]), 0, layer.data.shape[i] - 1)) for i in range(leading))
        return np.asarray(layer.data[base]), base

    def limit_threads(self, device: torch.device) -> None:
        """On the CPU, leave one core to the viewer's event loop while training."""
        if device.type == "cpu":
            self._threads = torch.get_num_threads()
            torch.set_num_threads(min(self._threads, gui_threads()))

    def restore_threads(self) -> None:
        if self.__dict__.get("_threads") is not None:
            torch.set_num_threads(self._threads)
            self._threads = None

    def _abandon(self, *_) -> None:
        """The dock is being destroyed (viewer closed): stop the worker and let it end unheard."""
        worker = self.__dict__.get("worker")
        if worker is not None:
            for signal in (worker.yielded, worker.returned, worker.finished, worker.errored):
                try:
                    signal.disconnect()
                except (TypeError, RuntimeError):
                    pass
            worker.quit()
        self.restore_threads()
        self.__dict__.get("_kept_visuals", []).clear()

    def _on_layer_removed(self, event) -> None:
        if self.worker is not None and event.value is self.input_layer:
            self.worker.quit()
            self.status.value = "Input layer removed: stopping."
            show_info(f"{self.title}: the input layer {event.value.name!r} was removed; the run stopped.")


class Noise2FastWidget(WorkerDock):
    """Dock widget: train a zero-shot denoiser on the selected image layer, live."""

    keeps_lazy = True

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image = create_widget(annotation=Image, label="image", options={"tooltip": "the noisy image layer"})
        self.method = ComboBox(label="method", choices=[(cls.display_name, name) for name, cls in METHODS.items()],
                               tooltip="the zero-shot denoiser to train")
        self.preset = ComboBox(label="preset", choices=list(PRESETS), value=DEFAULTS["preset"],
                               tooltip="fast: averaged weights validated every 10 steps, bfloat16 where a timed probe "
                                       "finds it faster, bounded steps on large planes, stacks warm-started; "
                                       "reference: the published code's settings")
        self.max_steps = SpinBox(label="max steps", value=0, min=0, max=1_000_000,
                                 tooltip="cap on training steps per plane; 0 lets validation decide when to stop")
        self.patience = SpinBox(label="patience", value=PRESETS[DEFAULTS["preset"]]["patience"], min=0, max=100_000,
                                tooltip="stop after this many steps without a better validation PSNR")
        self.seed = SpinBox(label="seed", value=DEFAULTS["seed"], min=-1, max=2**31 - 1,
                            tooltip="same seed, same result on the CPU; -1 draws a new seed every run")
        self.device = ComboBox(label="device", choices=available_devices(), value=DEFAULTS["device"],
                               tooltip="auto: CUDA, then Apple MPS, then the CPU")
        self.scope = RadioButtons(label="scope", choices=[CURRENT_PLANE, WHOLE_LAYER], value=CURRENT_PLANE,
                                  orientation="horizontal",
                                  tooltip="stacks: the plane shown by the sliders, or every plane in turn")
        self.zarr_output = FileEdit(label="zarr output", mode="w", filter="*.zarr", value="",
                                    tooltip="lazy layers (dask, zarr): write the result into this .zarr store "
                                            "(a run started again on it goes on); empty: a temporary store")
        self.start_button = PushButton(text="Start", tooltip="train on the selected layer")
        self.stop_button = PushButton(text="Stop", enabled=False, tooltip="stop and keep the best result so far")
        self.status = Label(value="Select an image layer and press Start.")
        buttons = Container(widgets=[self.start_button, self.stop_button], layout="horizontal", labels=False)
        self.extend([self.image, self.method, self.preset, self.max_steps, self.patience, self.seed, self.device,
                     self.scope, self.zarr_output, buttons, self.status])
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(560)  # leave the canvas most of the window
        self._build_plot()
        warm_up_torch()

        self.preset.changed.connect(lambda name: setattr(self.patience, "value", PRESETS[name]["patience"]))
        self.method.changed.connect(self._on_method)
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button.clicked.connect(self.stop)

        self.job = None
        self.output_layer = None
        self._base: tuple = ()
        self._steps: list[int] = []
        self._curve: list[float] = []
        self._plane = -1
        self._one_model = False  # a recording trained as one model (stack="recording")
        self._last: object = None
        self._progress = None

    # ----------------------------------------------------------------- plot
    def _build_plot(self) -> None:
        theme = get_theme(self.viewer.theme)
        self.plot = pg.PlotWidget(background=theme.canvas.as_hex())
        self.plot.setMinimumHeight(180)
        self.plot.setLabel("left", "validation PSNR (dB)", color=theme.text.as_hex())
        self.plot.setLabel("bottom", "step", color=theme.text.as_hex())
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.curve = self.plot.plot([], [], pen=pg.mkPen(CURVE_COLOUR, width=2), name="validation")
        self.best_point = pg.ScatterPlotItem(size=10, brush=pg.mkBrush(theme.current.as_hex()), pen=None)
        self.plot.addItem(self.best_point)
        self.preview_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(theme.secondary.as_hex(), style=Qt.PenStyle.DashLine),
                                            label="preview", labelOpts={"position": 0.1,
                                                                        "color": theme.text.as_hex()})
        self.preview_line.setVisible(False)
        self.plot.addItem(self.preview_line)
        self.native.layout().addWidget(self.plot)

    def _reset_plot(self, plane: int) -> None:
        self._plane = plane
        self._steps, self._curve = [], []
        self.curve.setData([], [])
        self.best_point.setData([], [])
        self.preview_line.setVisible(False)

    def _on_method(self, method: str) -> None:
        """Preset and patience are Noise2Fast's knobs."""
        self.preset.enabled = self.patience.enabled = method == "noise2fast"

    # ----------------------------------------------------------------- run
    def settings(self) -> dict:
        """The knobs as keyword arguments of :func:`napari_noise2fast.iter_denoise` (preset and
        patience are Noise2Fast's; the other methods run on their own default budgets)."""
        settings = {
            "method": self.method.value,
            "max_steps": self.max_steps.value or None,
            "seed": None if self.seed.value < 0 else self.seed.value,
            "device": self.device.value,
        }
        if self.method.value == "noise2fast":
            settings.update(preset=self.preset.value, patience=self.patience.value)
        return settings

    def start(self, layer: Image | None = None, settings: dict | None = None, scope: str | None = None):
        """Start a run on ``layer`` (default: the picked one) with ``settings`` (default: the knobs)."""
        if self.running:
            show_info("Noise2Fast is already running; press Stop first.")
            return None
        layer = layer if layer is not None else self.image.value
        if layer is None or not isinstance(layer, Image):
            show_warning("Noise2Fast: select an image layer first.")
            return None
        if layer in self.viewer.layers and self.image.value is not layer:
            self.image.value = layer
        made_by = made_by_plugin(layer)
        if made_by is not None:
            show_warning(f"Noise2Fast: {layer.name!r} is already an output of this plugin "
                         f"({METHODS[made_by['method']].display_name} on {made_by['source']!r}); denoising it again.")
        settings = dict(self.settings() if settings is None else settings)
        method = settings.pop("method", "noise2fast")
        try:
            data, self._base = self.read_input(layer, scope or self.scope.value)
            # a lazy layer gets a lazy output: a zarr store in a temporary folder, never a copy of the input;
            # a whole lazy layer is written there plane by plane by the job itself
            store, out = None, {}
            if is_lazy(layer.data) and not layer.rgb:
                chosen = str(self.zarr_output.value or "").strip()
                if chosen not in ("", ".") and is_lazy(data):  # a whole lazy layer into the store picked
                    out = {"out": Path(chosen)}  # made, or an earlier run's there gone on with
                else:
                    store = lazy_output(layer)
                    out = {"out": store} if is_lazy(data) else {}
            self.job = iter_denoise(data, method, output_every=1, **layer_settings(layer), **settings, **out)
            store = self.job.out if store is None else store
        except (ValueError, MemoryError) as error:
            show_error(f"Noise2Fast: {error}")
            return None
        self.input_layer = layer
        self.output_layer = self._output_layer(layer, method, store)
        self._reset_plot(-1)
        self._one_model = self.job.stack == "recording" and self.job.n_planes > 1  # one curve, then predictions
        self._progress = progress(total=self.job.n_planes, desc=f"Noise2Fast on {layer.name}")
        self.limit_threads(self.job.device)
        self.start_worker(throttled, self.job, UPDATE_SECONDS, on_item=self._on_event)
        self.start_button.enabled = False
        self.stop_button.enabled = True
        self.status.value = f"Starting on {layer.name} ({self.job.n_planes} plane(s), device {self.job.device})..."
        self.worker.start()
        return self.worker

    def _output_layer(self, layer: Image, method: str, store=None) -> Image:
        """The output layer ``<input> [Noise2Fast]``: reused when its shape and dtype fit, else created.
        It starts as a copy of the input (the result of planes not yet denoised); for a lazy input it is
        the zarr ``store`` (planes not yet denoised are zeros), a new layer each run."""
        meta = output_metadata(layer, method)
        if store is not None:
            meta.setdefault("metadata", {})["noise2fast_store"] = str(array_folder(store))
            return self.viewer.add_image(store, **meta)
        dtype = self.job.out_dtype
        existing = self.viewer.layers[meta["name"]] if meta["name"] in self.viewer.layers else None
        if (isinstance(existing, Image) and existing is not layer and existing.data.shape == layer.data.shape
                and existing.data.dtype == dtype and isinstance(existing.data, np.ndarray)):
            existing.scale, existing.translate = meta["scale"], meta["translate"]
            if "contrast_limits" in meta:
                existing.contrast_limits = meta["contrast_limits"]
            return existing
        return self.viewer.add_image(np.array(layer.data, dtype=dtype), **meta)

    # ----------------------------------------------------------------- events
    def _on_event(self, event) -> None:
        self._last = event
        if event.output is not None:
            self.write_output(self.output_layer, self._base + self.job.plane_location(event.plane),
                              self.job.cast(event.output))
        if event.plane != self._plane and not (self._one_model and self._plane >= 0):
            self._reset_plot(event.plane)
        if event.step == 0 and not math.isnan(event.val_psnr):
            self.preview_line.setValue(event.val_psnr)
            self.preview_line.setVisible(True)
        elif not math.isnan(event.val_psnr):
            self._steps.append(event.step)
            self._curve.append(event.val_psnr)
            self.curve.setData(self._steps, self._curve)
            best = int(np.argmax(self._curve))
            self.best_point.setData([self._steps[best]], [self._curve[best]])
        self.status.value = self._describe(event)
        if event.done and self._progress is not None:
            self._progress.update(1)  # last: napari's progress bar processes pending Qt events here

    def _describe(self, event, ending: str = "") -> str:
        plane = f"plane {event.plane + 1}/{event.n_planes} · " if event.n_planes > 1 else ""
        if self._one_model:
            plane = (f"plane {event.plane + 1}/{event.n_planes} denoised · " if event.done
                     else f"one model for {event.n_planes} planes · ")
        best = f"{event.best_val_psnr:.2f} dB" if math.isfinite(event.best_val_psnr) else "-"
        left = f" · about {event.eta:.0f} s left" if event.eta is not None and event.planes_done < event.n_planes \
            else ""
        steps = f"step {event.step}"
        if self._one_model and event.done:  # the planes after the first carry step 0: say what was trained
            steps = f"model of {max(self._steps, default=event.step)} steps"
        text = (f"{plane}{steps} · best validation PSNR {best} · {event.elapsed:.1f} s · "
                f"{event.stage} · device {self.job.device}{left}")
        return f"{ending}{text}"

    def _on_finished(self) -> None:
        job, event = self.job, self._last
        stopped = job is not None and job.current is not None
        if stopped:
            job.close()
            result = job.result()
            if result is self.output_layer.data:  # a lazy output the job wrote into: only redraw
                self.output_layer.refresh()
            else:
                self.write_output(self.output_layer, self._base, result)
        if event is not None:
            if stopped:
                ending = f"Stopped at step {event.step}: output holds the best result so far. "
            else:
                ending = f"Done ({event.stop_reason}): "
            self.status.value = self._describe(event, ending)
        self._release()

    def _release(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.release_worker()
