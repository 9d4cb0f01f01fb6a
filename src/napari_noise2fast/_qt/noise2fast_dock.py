"""The Noise2Fast dock: pick an image layer, press Start, watch the curve and the output layer improve.

A thin client of the engine: training runs in a napari thread worker that
iterates :func:`napari_noise2fast.iter_denoise` (throttled by
:func:`napari_noise2fast.engine.throttle`); the GUI thread only draws the events
it receives (plot, status, output layer).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, PushButton, SpinBox
from napari.layers import Image
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from napari.utils.theme import get_theme

from napari_noise2fast._qt.dock import (
    CURRENT_PLANE,
    UPDATE_SECONDS,
    WHOLE_LAYER,
    ThemedPlot,
    WorkerDock,
    available_devices,
    likely_reference,
    output_layer,
    view_layer,
)
from napari_noise2fast.layers import layer_settings, made_by_plugin
from napari_noise2fast.lazy import is_lazy
from napari_noise2fast.names import METHOD_NAMES, PRESET_NAMES, short_name

# the knobs' initial values (the one-click menu actions run with what the dock shows)
DEFAULTS = {"preset": "fast", "patience": 50, "seed": 0, "device": "auto"}
CURVE_COLOUR = "#f0a030"  # readable on the dark and the light theme
HELD_OUT_COLOUR = "#40b0f0"
HELD_OUT_TIP = ("held-out check: the network's score with each pixel predicted without its own noisy value, as the "
                "preview is scored; its output replaces the preview once this beats the preview's line")
# planes above this many pixels are shown while training as a downsampled view in a light layer (the
# engine's events' ``view``), and written to the output layer once, at full size, at the end
LIVE_PIXELS = 1024 * 1024
VIEW_EVERY = 5
VALIDATION_TIP = ("Validation PSNR: how closely the output agrees with the noisy image itself, in dB (higher is "
                  "better). It is not the agreement with the true image, which is unknown: a perfect denoiser "
                  "scores about the noise level, and copying the noisy image would score infinitely. Training stops "
                  "when it no longer improves.")
PRESET_TIP = ("fast: the quickest settings that keep the published quality (measured on this machine the first "
              "time, large images trained on a fixed share of their pixels per step, a recording as one model); "
              "reference: the published code's settings, slower")


def psnr_of(reference: np.ndarray, output: np.ndarray) -> float:
    """PSNR of ``output`` against ``reference`` over the reference's range (the comparison's rule)."""
    from napari_noise2fast.comparison import psnr_against

    return psnr_against(reference, output)


def scored(items, reference: np.ndarray | None, plane_location, method_output=None):
    """The worker's body: the job's throttled events, each with the PSNR of its shown output against the
    ``reference`` (None without one or without a shown output); computed here, in the worker thread. While the
    preview is shown, a validation event's score is instead that of the method's own output
    (``method_output()``, None where it cannot tell), so its curve climbs toward the preview's line."""
    from napari_noise2fast.engine import throttle

    return (yield from _scored(throttle(items, UPDATE_SECONDS), reference, plane_location, method_output))


def _scored(throttled, reference, plane_location, method_output=None):
    while True:
        try:
            event, show = next(throttled)
        except StopIteration as finished:
            return finished.value
        score = output = None
        if reference is not None and event.stage == "preview" and event.step > 0:  # training, the preview shown
            if math.isfinite(event.val_psnr) and method_output is not None:  # a validation: the method's score
                output = method_output()
        elif reference is not None and show:
            output = event.output
        if output is not None:
            score = psnr_of(reference[plane_location(event.plane)], output)
        yield event, show, score


class Noise2FastWidget(WorkerDock):
    """Dock widget: train a zero-shot denoiser on the selected image layer, live."""

    keeps_lazy = True

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image, self.reference = self.layer_pickers(
            " (a benchmark's ground truth); the plot then shows the output's PSNR against it, and the noisy input's")
        self.method = ComboBox(label="method", choices=[(name, key) for key, name in METHOD_NAMES.items()],
                               tooltip="the zero-shot denoiser to train on this image")
        self.preset = ComboBox(label="preset", choices=list(PRESET_NAMES), value=DEFAULTS["preset"], tooltip=PRESET_TIP)
        self.max_steps = SpinBox(label="max steps", value=0, min=0, max=1_000_000,
                                 tooltip="cap on training steps per plane; 0: stop when the validation stops improving")
        self.patience = SpinBox(label="patience", value=DEFAULTS["patience"], min=0, max=100_000,
                                tooltip="stop after this many steps without a better validation PSNR")
        self.seed = SpinBox(label="seed", value=DEFAULTS["seed"], min=-1, max=2**31 - 1,
                            tooltip="the same seed gives the same result on the CPU; -1: a new seed every run")
        self.device = ComboBox(label="device", choices=["auto", "cpu"], value=DEFAULTS["device"],
                               tooltip="auto: an NVIDIA GPU (CUDA), then an Apple GPU (MPS), then the CPU")
        self.scope = ComboBox(label="scope", choices=[CURRENT_PLANE, WHOLE_LAYER], value=CURRENT_PLANE,
                              tooltip="stacks and recordings: the plane the sliders show, or every plane")
        self.zarr_output = FileEdit(label="zarr output", mode="w", filter="*.zarr", value="",
                                    tooltip="lazy layers (dask, zarr): write the result into this .zarr folder "
                                            "(a run started again on it goes on); empty: a temporary folder")
        self.start_button = PushButton(text="Start", tooltip="train on the selected layer")
        self.stop_button = PushButton(text="Stop", enabled=False, tooltip="stop now and keep the best result so far")
        self.save_button = PushButton(text="Save model", enabled=False,
                                      tooltip="save the trained Noise2Fast model, to denoise the next recording of "
                                              "the experiment with it (denoise(..., model=path), noise2fast --model)")
        self.zarr_output.choose_btn.text = "..."  # the dock stays narrow
        self.status = self.status_label("Select an image layer and press Start.")
        self.status.tooltip = VALIDATION_TIP
        buttons = self.row(self.start_button, self.stop_button, self.save_button)
        self.form.extend([self.image, self.reference, self.method, self.preset, self.max_steps, self.patience,
                          self.seed, self.device, self.scope, self.zarr_output, buttons, self.status])
        self.plot = ThemedPlot(self.viewer, "step", "validation PSNR (dB)")
        self.plot.widget.setToolTip(f"{VALIDATION_TIP}\n\nCrosses: the {HELD_OUT_TIP}")
        self.add_native(self.plot.widget)
        self.curve = self.plot.curve("validation", CURVE_COLOUR, legend=False)
        self._held_out: list[tuple[int, float]] = []  # (step, held-out PSNR) of the checks while the preview shows

        self.preset.changed.connect(self._on_preset)
        self.method.changed.connect(self._on_method)
        self.image.changed.connect(lambda _: self._offer_reference())
        self.viewer.layers.events.inserted.connect(lambda _: self._offer_reference())
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(lambda: self.save_model())

        self.job = None
        self.output_layer = None
        self.live_layer = None  # the downsampled view of a large plane while it trains
        self._base: tuple = ()
        self._steps: list[int] = []
        self._curve: list[float] = []
        self._plane = -1
        self._one_model = False  # a recording trained as one model (stack="recording")
        self._last: object = None
        self._progress = None
        self._reference = None  # the reference's data for the run, read once
        self._scores: dict = {}  # the noisy input's and the preview's PSNR against the reference
        self._live = False  # a large plane: shown by the events' downsampled views while it trains
        self.warm_up(on_ready=self._on_ready)

    def _on_ready(self, devices: list[str]) -> None:
        """Torch has loaded (in the background): offer this machine's devices."""
        self.device.choices = devices if devices else available_devices()

    def _on_preset(self, name: str) -> None:
        from napari_noise2fast.methods.noise2fast import PRESETS

        self.patience.value = PRESETS[name]["patience"]

    def _on_method(self, method: str) -> None:
        """Preset and patience are Noise2Fast's knobs."""
        self.preset.enabled = self.patience.enabled = method == "noise2fast"

    def _offer_reference(self) -> None:
        """Pick a likely clean layer as the reference while none is chosen."""
        if self.reference.value is None and not self.running:
            found = likely_reference(self.viewer, self.image.value)
            if found is not None:
                self.reference.reset_choices()  # the layer list may have changed in this very event
                self.reference.value = found

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
        self.wait_warm()
        from napari_noise2fast.api import iter_denoise
        from napari_noise2fast.output import array_folder, new_plane_store

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
                         f"({METHOD_NAMES[made_by['method']]} on {made_by['source']!r}); denoising it again.")
        settings = dict(self.settings() if settings is None else settings)
        method = settings.pop("method", "noise2fast")
        reference = self.reference.value
        try:
            data, self._base = self.read_input(layer, scope or self.scope.value)
            if reference is not None and reference is not layer:
                if reference.data.shape != layer.data.shape:
                    raise ValueError(f"the reference {reference.name!r} has shape {reference.data.shape}, the image "
                                     f"{layer.data.shape}; pick a reference of the same shape or none")
                self._reference = np.asarray(reference.data[self._base] if self._base else reference.data)
            else:
                self._reference = None
            # a lazy layer gets a lazy output: a zarr store in a temporary folder, never a copy of the input;
            # a whole lazy layer is written there plane by plane by the job itself
            store, out = None, {}
            if is_lazy(layer.data) and not layer.rgb:
                chosen = str(self.zarr_output.value or "").strip()
                if chosen not in ("", ".") and is_lazy(data):  # a whole lazy layer into the store picked
                    out = {"out": Path(chosen)}  # made, or an earlier run's there gone on with
                else:
                    store = new_plane_store(self.temporary_store(), tuple(layer.data.shape), np.float32)
                    out = {"out": store} if is_lazy(data) else {}
            self._live = math.prod(np.shape(data)[-2:]) > LIVE_PIXELS
            live = {"view_every": VIEW_EVERY} if self._live else {"output_every": 1}
            self.job = iter_denoise(data, method, **live, **layer_settings(layer), **settings, **out)
            store = self.job.out if store is None else store
        except (ValueError, MemoryError) as error:
            show_error(f"Noise2Fast: {error}")
            return None
        self.input_layer = layer
        self.save_button.enabled = False
        self.output_layer = output_layer(self.viewer, layer, method, self.job.out_dtype, store)
        if store is not None:
            self.output_layer.metadata["noise2fast_store"] = str(array_folder(store))
        self.live_layer = None
        self._method = method
        self._reset_plot(-1)
        self._scores = {}
        if self._reference is not None:
            self.plot.set_labels(self._x_label(method), "PSNR against the reference (dB)")
            if not is_lazy(data) and np.shape(data) == self._reference.shape:
                self._scores["noisy input"] = psnr_of(self._reference, np.asarray(data))
                warning = get_theme(self.viewer.theme).warning.as_hex()
                self.plot.level("noisy input", self._scores["noisy input"], warning, position=0.05)
        else:
            self.plot.set_labels(self._x_label(method), "validation PSNR (dB)")
        self._one_model = self.job.stack == "recording" and self.job.n_planes > 1  # one curve, then predictions
        self._progress = progress(total=self.job.n_planes if self.job.n_planes > 1 else 0,
                                  desc=f"Noise2Fast on {layer.name}")
        self.limit_threads(self.job.device)
        self.start_worker(scored, self.job, self._reference, self.job.plane_location,
                          None if self._live else self._method_output, on_item=self._on_event)
        self.start_button.enabled = False
        self.stop_button.enabled = True
        self.status.value = f"Starting on {layer.name}: {self.job.n_planes} plane(s), device {self.job.device}..."
        self.worker.start()
        return self.worker

    def temporary_store(self) -> Path:
        """A new ``.zarr`` path in a temporary folder that outlives the run (the output layer reads it)."""
        import tempfile

        return Path(tempfile.mkdtemp(prefix="noise2fast-")) / "output.zarr"

    @staticmethod
    def _x_label(method: str) -> str:
        return "candidate, then block" if method in ("calibrated", "bm3d") else "step"

    # ----------------------------------------------------------------- plot
    def _reset_plot(self, plane: int) -> None:
        self._plane = plane
        self._steps, self._curve, self._held_out = [], [], []
        self.curve.setData([], [])
        if "held-out check" in self.plot.curves:  # made again when a check comes (its legend entry too)
            self.plot.remove("held-out check")
        self.plot.best.setData([], [])
        for line in self.plot.levels.values():
            line.setVisible(False)
        if "noisy input" in self._scores:
            self.plot.levels["noisy input"].setVisible(True)

    # ----------------------------------------------------------------- events
    def _on_event(self, item) -> None:
        event, show, score = item
        self._last = event
        if show and (event.done or not self._live):  # a large plane: its full-size output once, at the end
            self.write_output(self.output_layer, self._base + self.job.plane_location(event.plane),
                              self.job.cast(event.output))
        if event.view is not None and not event.done:
            self._show_view(event)
        if event.plane != self._plane and not (self._one_model and self._plane >= 0):
            self._reset_plot(event.plane)
        theme = get_theme(self.viewer.theme)
        if self._reference is None:
            if math.isfinite(event.preview_val_psnr):
                self.plot.level("preview", event.preview_val_psnr, theme.secondary.as_hex(),
                                label=self.preview_name(event))
            if event.step > 0 and math.isfinite(event.val_psnr):
                self._add_point(event.step, event.val_psnr)
            if math.isfinite(event.heldout_psnr):
                self._held_out.append((event.step, event.heldout_psnr))
                self.plot.points("held-out check", HELD_OUT_COLOUR).setData(*zip(*self._held_out, strict=True))
        elif score is not None:
            if event.stage == "preview" and event.step == 0:
                self._scores["preview"] = score
                self.plot.level("preview", score, theme.secondary.as_hex(), label=self.preview_name(event))
            else:  # the method's output: shown, or (while the preview is) its own score at a validation
                self._add_point(event.step, score)
        self.status.value = self._describe(event)
        self._advance(event)

    def _method_output(self):
        """The method's own best output of the plane in training (the worker thread calls this, between two of
        the job's events); None where the run is not a single plane's or has no model yet."""
        current = self.job.current if self.job is not None else None
        return None if current is None else current.method_output()

    def _add_point(self, step: int, value: float) -> None:
        self._steps.append(step)
        self._curve.append(value)
        self.curve.setData(self._steps, self._curve)
        self.plot.mark_best("validation")

    def _show_view(self, event) -> None:
        """A large plane's downsampled progress, in a light layer of its own (scaled to the image)."""
        if self.live_layer is None or self.live_layer not in self.viewer.layers:
            self.live_layer = view_layer(self.viewer, self.input_layer, event.view, event.view_factor)
        else:
            self.live_layer.data = event.view

    def _advance(self, event) -> None:
        """napari's activity dock: planes for a stack, the countdown of a single plane."""
        bar = self._progress
        if bar is None:
            return
        if self.job.n_planes > 1:
            if event.done:
                bar.update(1)  # last: napari's progress bar processes pending Qt events here
        elif event.countdown is not None:
            bar.total = event.countdown.total
            bar.n = min(event.countdown.done, event.countdown.total)
            bar.set_description(f"{METHOD_NAMES[self._method]} on {self.input_layer.name}: "
                                f"{self._countdown_text(event.countdown)}")

    @staticmethod
    def _countdown_text(countdown) -> str:
        if countdown.resets:
            return f"no gain for {countdown.done} of {countdown.total} steps"
        if countdown.unit == "steps":
            return f"step {countdown.done} of {countdown.total}"
        return f"{countdown.done} of {countdown.total} {countdown.unit}"

    @staticmethod
    def preview_name(event) -> str:
        """``"Gaussian preview"``, or ``"total-variation preview"`` where that refinement scored better."""
        return "total-variation preview" if event.preview_filter == "total variation" else "Gaussian preview"

    def stage_name(self, event) -> str:
        """What the shown output comes from, in words."""
        if event.stage == "preview":
            return self.preview_name(event)
        return METHOD_NAMES[self._method]

    def _describe(self, event, ending: str = "") -> str:
        """Three short lines: where the run is; what the output layer shows and its score; how long is left."""
        name = METHOD_NAMES[self._method]
        where = f"plane {event.plane + 1}/{event.n_planes} · " if event.n_planes > 1 else ""
        if self._one_model:
            where = (f"plane {event.plane + 1}/{event.n_planes} denoised · " if event.done
                     else f"one model for {event.n_planes} planes · ")
        steps = f"step {event.step}"
        if self._one_model and event.done:  # the planes after the first carry step 0: say what was trained
            steps = f"model of {max(self._steps, default=event.step)} steps"
        first = f"{ending}{name} · {where}{steps} · {event.elapsed:.0f} s"
        stage = self.stage_name(event)
        if self._reference is not None:
            shown = self._scores.get("preview") if event.stage == "preview" else \
                (max(self._curve) if self._curve else None)
            value = f"{shown:.2f} dB against the reference" if shown is not None else "not scored yet"
        else:
            shown = event.preview_val_psnr if event.stage == "preview" else event.best_val_psnr
            value = f"validation {shown:.2f} dB" if math.isfinite(shown) else "not validated yet"
        second = f"Shown: {stage} ({value})"
        if event.stage == "preview" and self._curve:
            second += f"; {name} so far {max(self._curve):.2f} dB"
            if self._held_out:  # its plain score passed the preview's: the held-out check decides
                second += f", held out {self._held_out[-1][1]:.2f} dB at step {self._held_out[-1][0]}"
        parts = []
        if event.countdown is not None and not event.done:
            parts.append(self._countdown_text(event.countdown))
        if event.eta is not None and not event.done:
            lower = event.countdown is not None and event.countdown.resets and event.n_planes == 1
            parts.append(f"{'at least ' if lower else 'about '}{_duration(event.eta)} left")
        parts.append(f"device {self.job.device}")
        return "\n".join([first, second, " · ".join(parts)])

    def _on_finished(self) -> None:
        job, event = self.job, self._last
        stopped = job is not None and job.current is not None
        if stopped:
            job.close()
        if stopped:  # the best so far (a finished run's final event brought its output already)
            result = job.result()
            if result is self.output_layer.data:  # a lazy output the job wrote into: only redraw
                self.output_layer.refresh()
            else:
                self.write_output(self.output_layer, self._base, result)
        if self.live_layer is not None and self.live_layer in self.viewer.layers:
            self.viewer.layers.remove(self.live_layer)  # the full-size output replaces the light view
        self.live_layer = None
        if event is not None:
            if stopped:
                ending = f"Stopped at step {event.step}: the output keeps the best so far.\n"
            else:
                ending = f"Done ({_reason(event.stop_reason)}).\n"
            self.status.value = self._describe(event, ending)
        self._release()

    def save_model(self, path: str | Path | None = None) -> Path | None:
        """Save the last run's trained model to ``path`` (default: asked with a file dialog, which confirms
        replacing a file); a notification where there is none. Returns the path saved to, or None."""
        if self.job is None or self.running:
            show_info("Noise2Fast: save the model once a run has ended with a validated model.")
            return None
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            suggested = str(Path.cwd() / f"{self.input_layer.name}.n2f-model")
            path, _ = QFileDialog.getSaveFileName(self.native, "Save the trained model", suggested)
            if not path:
                return None
        try:
            saved = self.job.save_model(path, overwrite=True)  # the dialog asked before replacing
        except (ValueError, OSError) as error:
            show_error(f"Noise2Fast: {error}")
            return None
        self.status.value = f"{self.status.value}\nModel saved to {saved}"
        return saved

    def _release(self) -> None:
        self.save_button.enabled = self.job is not None and self.job.has_model
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.release_worker()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _reason(stop_reason: str | None) -> str:
    return {"patience": "no further gain", "max_steps": "step cap reached", "budget": "step budget used",
            "time": "time budget used", "complete": "complete", "constant": "constant image: nothing to do",
            "cancelled": "stopped", "resumed": "resumed from the store"}.get(stop_reason or "", stop_reason or "")


__all__ = ["CURRENT_PLANE", "WHOLE_LAYER", "Noise2FastWidget", "short_name"]
