"""The comparison dock: several zero-shot denoisers on the same layer, one after another.

A thin client of :func:`napari_noise2fast.iter_compare`, run in a napari thread
worker: each method writes into its own output layer ``<input> [method]``, one
plot holds a curve per method against wall-clock seconds (PSNR against the
reference layer when one is chosen, else each method's own validation PSNR),
and a table in the dock lists method, steps, seconds, validation PSNR and
PSNR/SSIM against the reference; "Copy CSV" puts the table on the clipboard.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
    create_widget,
)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from napari.utils.theme import get_theme
from qtpy.QtWidgets import QAbstractItemView, QApplication, QTableWidget, QTableWidgetItem

from napari_noise2fast._widget import (
    CURRENT_PLANE,
    UPDATE_SECONDS,
    WHOLE_LAYER,
    WorkerDock,
    available_devices,
    warm_up_torch,
)
from napari_noise2fast.compare import TABLE_COLUMNS, check_comparison, iter_compare
from napari_noise2fast.devices import resolve_device
from napari_noise2fast.layers import layer_settings, output_metadata
from napari_noise2fast.methods import METHODS

TICKED = ("noise2fast", "calibrated")
# one colour per method, readable on the dark and the light theme
COLOURS = ["#f0a030", "#40b0f0", "#e05080", "#60d060", "#b080f0", "#d0d040", "#f07040"]


def throttled_compare(runs, min_interval: float):
    """The worker's body: the comparison's reports, dropping outputs that come sooner than
    ``min_interval`` after the last one sent for display (a method's final output always goes through).
    Returns what :func:`iter_compare` returns (the :class:`~napari_noise2fast.compare.Comparison`)."""
    last = -math.inf
    while True:
        try:
            report = next(runs)
        except StopIteration as finished:
            return finished.value
        event = report.event
        show = event.output is not None and (event.done or time.perf_counter() - last >= min_interval)
        if show:
            last = time.perf_counter()
        yield report, show


class CompareWidget(WorkerDock):
    """Dock widget: compare zero-shot denoisers on the selected image layer."""

    title = "Compare"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image = create_widget(annotation=Image, label="image", options={"tooltip": "the noisy image layer"})
        self.reference = create_widget(annotation=Image, label="reference",
                                       options={"nullable": True, "value": None,
                                                "tooltip": "optional clean image: PSNR/SSIM against it"})
        self.boxes = {name: CheckBox(text=cls.display_name, value=name in TICKED) for name, cls in METHODS.items()}
        methods = Container(widgets=list(self.boxes.values()), layout="vertical", labels=False, label="methods")
        self.equal_time = CheckBox(text="equal time (every method gets Noise2Fast's time)", value=False)
        self.time_budget = FloatSpinBox(label="time budget (s)", value=0, min=0, max=86_400, step=5,
                                        tooltip="wall-clock seconds per method; 0: each method's own budget")
        self.seed = SpinBox(label="seed", value=0, min=-1, max=2**31 - 1)
        self.device = ComboBox(label="device", choices=available_devices(), value="auto")
        self.scope = RadioButtons(label="scope", choices=[CURRENT_PLANE, WHOLE_LAYER], value=CURRENT_PLANE,
                                  orientation="horizontal")
        self.start_button = PushButton(text="Compare", tooltip="run the ticked methods one after another")
        self.stop_button = PushButton(text="Stop", enabled=False, tooltip="stop; finished methods keep their rows")
        self.copy_button = PushButton(text="Copy CSV", enabled=False, tooltip="copy the table to the clipboard")
        self.status = Label(value="Tick methods, select an image layer and press Compare.")
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        buttons = Container(widgets=[self.start_button, self.stop_button, self.copy_button], layout="horizontal",
                            labels=False)
        self.extend([self.image, self.reference, methods, self.equal_time, self.time_budget, self.seed,
                     self.device, self.scope, buttons, self.status])
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(560)
        self._build_plot()
        self.table.setMinimumHeight(150)
        self.native.layout().addWidget(self.table)
        warm_up_torch()

        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button.clicked.connect(self.stop)
        self.copy_button.clicked.connect(self.copy_csv)

        self.comparison = None
        self._current = None
        self.output_layers: dict[str, Image] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._points: dict[str, list[tuple[float, float]]] = {}
        self._base: tuple = ()
        self._current = None

    def _build_plot(self) -> None:
        theme = get_theme(self.viewer.theme)
        self._text = theme.text.as_hex()
        self.plot = pg.PlotWidget(background=theme.canvas.as_hex())
        self.plot.setMinimumHeight(200)
        self.plot.setLabel("bottom", "seconds", color=self._text)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor=self._text)
        self.native.layout().addWidget(self.plot)

    def ticked(self) -> list[str]:
        return [name for name, box in self.boxes.items() if box.value]

    def start(self, layer: Image | None = None, methods: list[str] | None = None, reference: Image | None = None,
              params: dict | None = None, scope: str | None = None):
        """Compare ``methods`` (default: the ticked ones) on ``layer`` (default: the picked one)."""
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
        self.status.value = f"Comparing {', '.join(METHODS[m].display_name for m in methods)} on {layer.name}..."
        self.worker.start()
        return self.worker

    def copy_csv(self) -> None:
        if self.comparison is not None:
            QApplication.clipboard().setText(self.comparison.csv())
            show_info("Comparison table copied as CSV.")

    def _reset_plot(self, with_reference: bool) -> None:
        for curve in self.curves.values():
            self.plot.removeItem(curve)
        self.legend.clear()
        self.curves, self._points = {}, {}
        label = "PSNR against reference (dB)" if with_reference else "own validation PSNR (dB)"
        self.plot.setLabel("left", label, color=self._text)

    def _output_layer(self, method: str, job) -> Image:
        meta = output_metadata(self.input_layer, method)  # named "<input> [display name]"
        if meta["name"] in self.viewer.layers:
            existing = self.viewer.layers[meta["name"]]
            if isinstance(existing, Image) and existing.data.shape == self.input_layer.data.shape \
                    and existing.data.dtype == job.out_dtype and isinstance(existing.data, np.ndarray):
                return existing
            self.viewer.layers.remove(existing)
        return self.viewer.add_image(np.array(self.input_layer.data, dtype=job.out_dtype), **meta)

    def _on_report(self, item) -> None:
        report, show = item
        method, event, job = report.method, report.event, report.job
        if self._current is not None and self._current.method != method:
            self._show_rows(report.comparison)  # the method before has its row now
        self._current = report
        if method not in self.curves:
            colour = COLOURS[len(self.curves) % len(COLOURS)]
            self.curves[method] = self.plot.plot([], [], pen=pg.mkPen(colour, width=2),
                                                 name=METHODS[method].display_name)
            self._points[method] = []
            self.output_layers[method] = self._output_layer(method, job)
        if report.point is not None:
            self._points[method].append(report.point)
            xs, ys = zip(*self._points[method], strict=True)
            self.curves[method].setData(list(xs), list(ys))
        if show:
            self.write_output(self.output_layers[method], self._base + job.plane_location(event.plane),
                              job.cast(event.output))
        plane = f" · plane {event.plane + 1}/{event.n_planes}" if event.n_planes > 1 else ""
        self.status.value = f"{METHODS[method].display_name}: step {event.step}{plane} · {event.elapsed:.1f} s"

    def _show_rows(self, comparison) -> None:
        rows = [] if comparison is None else [row.cells() for row in comparison.rows]
        self.table.setRowCount(len(rows))
        for i, cells in enumerate(rows):
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def table_rows(self) -> list[list[str]]:
        """The table's text, row by row."""
        return [[self.table.item(i, j).text() for j in range(self.table.columnCount())]
                for i in range(self.table.rowCount())]

    def _on_returned(self, comparison) -> None:
        if comparison is None:  # the run failed (already notified): _on_finished keeps what it had
            return
        self.comparison = comparison
        self._show_rows(comparison)
        for row in comparison.rows:  # the final outputs, whatever the throttle dropped
            self.write_output(self.output_layers.get(row.method), self._base, comparison.outputs[row.method])
        self.copy_button.enabled = True
        self.status.value = f"Done: {len(comparison.rows)} method(s) compared."

    def _on_finished(self) -> None:
        if self.comparison is None and self._current is not None:
            report = self._current
            report.job.close()
            # the stopped method's best so far
            self.write_output(self.output_layers.get(report.method), self._base, report.job.result())
            self.comparison = report.comparison
            self._show_rows(report.comparison)
            self.copy_button.enabled = bool(report.comparison.rows)
            self.status.value = (f"Stopped during {METHODS[report.method].display_name}: its layer holds its best "
                                 f"so far; the table lists the methods that finished.")
        self.release_worker()
