"""The comparison dock: several zero-shot denoisers on the same layer, one after another.

A thin client of :func:`napari_noise2fast.iter_compare`, run in a napari thread
worker: each method writes into its own output layer ``<input> [method]``, one
plot holds a curve per method against wall-clock seconds (PSNR against the
reference layer when one is chosen, with the noisy input's level, else each
method's own validation PSNR), and a table lists the noisy input (with a
reference) and each method's PSNR, SSIM, seconds, steps and stop reason, the
best of each column marked; "Copy CSV" puts the table on the clipboard.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from napari.utils.theme import get_theme
from qtpy.QtGui import QFont
from qtpy.QtWidgets import QAbstractItemView, QApplication, QHeaderView, QTableWidget, QTableWidgetItem

from napari_noise2fast._qt.dock import (
    CURRENT_PLANE,
    UPDATE_SECONDS,
    WHOLE_LAYER,
    ThemedPlot,
    WorkerDock,
    likely_reference,
    output_layer,
)
from napari_noise2fast.layers import layer_settings
from napari_noise2fast.names import METHOD_NAMES, SHORT_NAMES

TICKED = ("noise2fast", "calibrated")
# one colour per method, readable on the dark and the light theme
COLOURS = ["#f0a030", "#40b0f0", "#e05080", "#60d060", "#b080f0", "#d0d040", "#f07040"]
COLUMNS = ("method", "PSNR", "SSIM", "seconds", "steps", "stop", "own validation PSNR")
OWN_SCORE_TIP = ("Each method's own validation score against the noisy image. Methods score in different ways "
                 "(a held-out pixel, a masked pixel, a chequerboard half...), so this column does not compare across "
                 "rows: compare PSNR and SSIM against a reference instead.")
BEST_MARK = " ★"
NOISE_TIP = ("The image's noise as the methods learned it: its standard deviation against the signal. A camera's "
             "or photomultiplier's noise is Poisson-Gaussian: variance = gain x signal + read, so the slope of "
             "variance against signal is the gain (intensity units per photon or electron) and the signal where "
             "the line's variance falls to the read noise's is the offset.")
NOISE_NAMES = {"vst": "blind line (7x7)"}


def throttled_compare(runs, min_interval: float):
    """The worker's body: the comparison's reports with whether to draw each one's output now (see
    :func:`napari_noise2fast.engine.throttle`); returns what :func:`iter_compare` returns."""
    from napari_noise2fast.engine import throttle

    return (yield from throttle(runs, min_interval, event_of=lambda report: report.event))


class CompareWidget(WorkerDock):
    """Dock widget: compare zero-shot denoisers on the selected image layer."""

    title = "Compare"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image, self.reference = self.layer_pickers(
            "; PSNR and SSIM are measured against it, and the noisy input gets a row of its own")
        self.boxes = {name: CheckBox(text=label, value=name in TICKED) for name, label in METHOD_NAMES.items()}
        methods = Container(widgets=list(self.boxes.values()), layout="vertical", labels=False, label="methods")
        self.equal_time = CheckBox(text="equal time", value=False,
                                   tooltip="the Noise2Fast paper's comparison: every other method runs as long as "
                                           "Noise2Fast took (Noise2Fast then runs first)")
        self.time_budget = FloatSpinBox(label="seconds each", value=0, min=0, max=86_400, step=5,
                                        tooltip="seconds per method; 0: each method's own budget")
        self.seed = SpinBox(label="seed", value=0, min=-1, max=2**31 - 1,
                            tooltip="the same seed gives the same result on the CPU; -1: a new seed every run")
        self.device = ComboBox(label="device", choices=["auto", "cpu"], value="auto",
                               tooltip="auto: an NVIDIA GPU (CUDA), then an Apple GPU (MPS), then the CPU")
        self.scope = ComboBox(label="scope", choices=[CURRENT_PLANE, WHOLE_LAYER], value=CURRENT_PLANE,
                              tooltip="stacks and recordings: the plane the sliders show, or every plane")
        self.start_button = PushButton(text="Compare", tooltip="run the ticked methods one after another")
        self.stop_button = PushButton(text="Stop", enabled=False, tooltip="stop; finished methods keep their rows")
        self.copy_button = PushButton(text="Copy CSV", enabled=False, tooltip="copy the table to the clipboard")
        self.status = self.status_label("Tick methods, select an image layer and press Compare.")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.horizontalHeaderItem(len(COLUMNS) - 1).setToolTip(OWN_SCORE_TIP)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(150)
        self.form.extend([self.image, self.reference, methods, self.equal_time, self.time_budget, self.seed,
                     self.device, self.scope, self.row(self.start_button, self.stop_button), self.status])
        self.plot = ThemedPlot(self.viewer, "seconds", "own validation PSNR (dB)", min_height=200)
        self.add_native(self.plot.widget)
        self.add_native(self.table)
        self.add_native(self.copy_button.native)
        # the noise models the methods fitted (PN2V), with the blind line through local statistics: noise
        # standard deviation against the signal, in the layer's units; shown once there is one
        self.noise_plot = ThemedPlot(self.viewer, "signal", "noise std", min_height=180)
        self.noise_plot.widget.setToolTip(NOISE_TIP)
        self.noise_plot.widget.setVisible(False)
        self.add_native(self.noise_plot.widget)

        self.image.changed.connect(lambda _: self._offer_reference())
        self.viewer.layers.events.inserted.connect(lambda _: self._offer_reference())
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button.clicked.connect(self.stop)
        self.copy_button.clicked.connect(self.copy_csv)

        self.comparison = None
        self._current = None
        self.output_layers: dict[str, Image] = {}
        self._points: dict[str, list[tuple[float, float]]] = {}
        self._base: tuple = ()
        self.warm_up(on_ready=lambda devices: setattr(self.device, "choices", devices))

    @property
    def curves(self):
        """The plot's curve per method."""
        return {name: self.plot.curves[SHORT_NAMES[name]] for name in self._points}

    def _offer_reference(self) -> None:
        """Pick a likely clean layer as the reference while none is chosen."""
        if self.reference.value is None and not self.running:
            found = likely_reference(self.viewer, self.image.value)
            if found is not None:
                self.reference.reset_choices()  # the layer list may have changed in this very event
                self.reference.value = found

    def ticked(self) -> list[str]:
        return [name for name, box in self.boxes.items() if box.value]

    def start(self, layer: Image | None = None, methods: list[str] | None = None, reference: Image | None = None,
              params: dict | None = None, scope: str | None = None):
        """Compare ``methods`` (default: the ticked ones) on ``layer`` (default: the picked one)."""
        self.wait_warm()
        from napari_noise2fast.comparison import check_comparison, iter_compare
        from napari_noise2fast.devices import resolve_device

        if self.running:
            show_info("A comparison is already running; press Stop first.")
            return None
        layer = layer if layer is not None else self.image.value
        reference = reference if reference is not None else self.reference.value
        methods = list(methods if methods is not None else self.ticked())
        for name, box in self.boxes.items():  # the dock shows what runs, however it was started
            box.value = name in methods
        if reference is not None and reference in self.viewer.layers:
            self.reference.value = reference
        if layer is not None and layer in self.viewer.layers and self.image.value is not layer:
            self.image.value = layer
        if layer is None or not isinstance(layer, Image):
            show_warning("Compare: select an image layer first.")
            return None
        if not methods:
            show_warning("Compare: tick at least one method.")
            return None
        scope = scope or self.scope.value
        try:
            data, self._base = self.read_input(layer, scope)
            ref = None
            if reference is not None:
                if reference.data.shape != layer.data.shape:
                    raise ValueError(f"the reference layer {reference.name!r} has shape {reference.data.shape}, "
                                     f"the image {layer.data.shape}; they must match")
                ref = np.asarray(reference.data[self._base] if self._base else reference.data)
            arguments = {"reference": ref, "equal_time": self.equal_time.value, "params": params,
                         "time_budget": self.time_budget.value or None,
                         "seed": None if self.seed.value < 0 else self.seed.value, "device": self.device.value,
                         **layer_settings(layer)}
            check_comparison(data, methods, **arguments)  # every argument, before the worker starts
            runs = iter_compare(data, methods, **arguments)
        except (ValueError, MemoryError) as error:
            show_error(f"Compare: {error}")
            return None
        self.input_layer, self.output_layers, self.comparison, self._current = layer, {}, None, None
        self._reset_plot(reference is not None)
        self._show_rows(None)
        self.limit_threads(resolve_device(self.device.value))
        self.start_worker(throttled_compare, runs, UPDATE_SECONDS, on_item=self._on_report)
        self.worker.returned.connect(self._on_returned)
        self.start_button.enabled = self.copy_button.enabled = False
        self.stop_button.enabled = True
        self.status.value = f"Comparing {', '.join(METHOD_NAMES[m] for m in methods)} on {layer.name}..."
        self.worker.start()
        return self.worker

    def copy_csv(self) -> None:
        if self.comparison is not None:
            QApplication.clipboard().setText(self.comparison.csv())
            show_info("Comparison table copied as CSV.")

    def _reset_plot(self, with_reference: bool) -> None:
        self.plot.clear()
        self._points = {}
        self.plot.set_labels("seconds", "PSNR against the reference (dB)" if with_reference
                             else "own validation PSNR (dB)")

    def _on_report(self, item) -> None:
        report, show = item
        method, event, job = report.method, report.event, report.job
        if self._current is not None and self._current.method != method:
            self._show_rows(report.comparison)  # the method before has its row now
        self._current = report
        if report.comparison.noisy is not None and "noisy input" not in self.plot.levels:
            self.plot.level("noisy input", report.comparison.noisy.psnr,
                            get_theme(self.viewer.theme).warning.as_hex(), position=0.05)
        if method not in self._points:
            colour = COLOURS[len(self._points) % len(COLOURS)]
            self.plot.curve(SHORT_NAMES[method], colour)  # short: the legend fits the dock
            self._points[method] = []
            self.output_layers[method] = output_layer(self.viewer, self.input_layer, method, job.out_dtype)
        if report.point is not None:
            self._points[method].append(report.point)
            xs, ys = zip(*self._points[method], strict=True)
            self.plot.curves[SHORT_NAMES[method]].setData(list(xs), list(ys))
        if show:
            self.write_output(self.output_layers[method], self._base + job.plane_location(event.plane),
                              job.cast(event.output))
        plane = f" · plane {event.plane + 1}/{event.n_planes}" if event.n_planes > 1 else ""
        left = f" · about {event.eta:.0f} s left for it" if event.eta is not None else ""
        self.status.value = f"{METHOD_NAMES[method]}: step {event.step}{plane} · {event.elapsed:.1f} s{left}"

    def _show_rows(self, comparison) -> None:
        rows = [] if comparison is None else comparison.all_rows()
        best = {} if comparison is None else comparison.best()
        self.table.setRowCount(len(rows))
        bold = QFont()
        bold.setBold(True)
        for i, row in enumerate(rows):
            for j, text in enumerate(row.cells()):
                marked = best.get(COLUMNS[j]) == row.method
                item = QTableWidgetItem(text + (BEST_MARK if marked else ""))
                if marked:
                    item.setFont(bold)
                    item.setToolTip(f"the best {COLUMNS[j]} of the methods compared")
                if j == len(COLUMNS) - 1:
                    item.setToolTip(OWN_SCORE_TIP)
                self.table.setItem(i, j, item)

    def table_rows(self) -> list[list[str]]:
        """The table's text, row by row (best marks removed)."""
        return [[self.table.item(i, j).text().removesuffix(BEST_MARK) for j in range(self.table.columnCount())]
                for i in range(self.table.rowCount())]

    def marked(self) -> dict[str, str]:
        """Per column, the row name marked best in the table."""
        return {COLUMNS[j]: self.table.item(i, 0).text() for i in range(self.table.rowCount())
                for j in range(self.table.columnCount()) if self.table.item(i, j).text().endswith(BEST_MARK)}

    def _on_returned(self, comparison) -> None:
        if comparison is None:  # the run failed (already notified): _on_finished keeps what it had
            return
        self.comparison = comparison
        self._show_rows(comparison)
        for row in comparison.rows:  # the final outputs, whatever the throttle dropped
            self.write_output(self.output_layers.get(row.method), self._base, comparison.outputs[row.method])
        self.copy_button.enabled = True
        self._show_noise(comparison)
        best = comparison.best().get("PSNR")
        winner = f"; best PSNR: {METHOD_NAMES[best]}" if best is not None else ""
        self.status.value = f"Done: {len(comparison.rows)} method(s) compared{winner}."

    def _show_noise(self, comparison) -> None:
        """Draw each fitted noise model's std against signal (the plot stays hidden where none was fitted)."""
        self.noise_plot.clear()
        for index, (name, model) in enumerate(comparison.noise_models.items()):
            signals, stds = model.curve()
            label = NOISE_NAMES.get(name) or SHORT_NAMES[name]
            self.noise_plot.curve(label, COLOURS[index % len(COLOURS)]).setData(signals, stds)
        self.noise_plot.widget.setVisible(bool(comparison.noise_models))

    def _on_finished(self) -> None:
        if self.comparison is None and self._current is not None:
            report = self._current
            report.job.close()
            # the stopped method's best so far
            self.write_output(self.output_layers.get(report.method), self._base, report.job.result())
            self.comparison = report.comparison
            self._show_rows(report.comparison)
            self.copy_button.enabled = bool(report.comparison.rows)
            self._show_noise(report.comparison)
            self.status.value = (f"Stopped during {METHOD_NAMES[report.method]}: its layer holds its best "
                                 f"so far; the table lists the methods that finished.")
        self.release_worker()
