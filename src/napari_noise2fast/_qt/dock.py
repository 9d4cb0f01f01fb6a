"""What both docks share: one thread worker at a time (start, stop, release), the input read by scope, the
output layers, and a plot that follows napari's theme.

The docks are thin clients of the engine: a worker iterates the engine's events
(throttled by :func:`napari_noise2fast.engine.throttle`), and the GUI thread only
draws what arrives.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from magicgui.widgets import Container, Label, create_widget
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from napari.utils.theme import get_theme
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from napari_noise2fast.layers import made_by_plugin, output_metadata
from napari_noise2fast.lazy import is_lazy

CURRENT_PLANE, WHOLE_LAYER = "current plane", "whole layer"
UPDATE_SECONDS = 0.5  # at most two output-layer redraws a second while training
DOCK_WIDTH = 340  # at most: with napari's own docks on the left, a 1280 px window keeps half for the canvas
logger = logging.getLogger(__name__)


def available_devices() -> list[str]:
    """The device choices of this machine: auto and the CPU, then CUDA and Apple MPS where present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def gui_threads() -> int:
    """Torch threads for a run started from the GUI: leave one core to the viewer's event loop."""
    return max(1, (os.cpu_count() or 2) - 1)


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


def warm_up() -> list[str]:
    """Load torch and run two tiny training steps (in a worker thread, when a dock opens); return the devices.

    Importing torch, and its first convolution, backward pass and optimiser step, take seconds while
    holding the GIL much of the time; paid here, in the background, they neither freeze the viewer when the
    dock opens nor just after Start.
    """
    import numpy as np

    from napari_noise2fast.api import iter_denoise

    plane = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    list(iter_denoise(plane, device="cpu", seed=0, max_steps=2, preview=False, validate_every=1))
    return available_devices()


_WARM = threading.Event()  # set once the warm-up has run (or failed) in this process
_WARM_DEVICES: list[str] = []
_WARM_THREAD: list[threading.Thread] = []  # the one warm-up thread of the process, once started


def _warm_up_once() -> None:
    try:
        _WARM_DEVICES.extend(warm_up())
    except Exception as error:  # the run that needs torch reports it; the dock must still open
        logger.error("Noise2Fast: warming up torch failed: %s", error, exc_info=error)
    finally:
        _WARM.set()


def start_warm_up() -> None:
    """Start :func:`warm_up` in a daemon thread, once per process (a plain thread: it owns no Qt object, so
    closing the viewer while it runs leaves nothing half-deleted)."""
    if not _WARM_THREAD:
        _WARM_THREAD.append(threading.Thread(target=_warm_up_once, name="noise2fast-warm-up", daemon=True))
        _WARM_THREAD[0].start()


REFERENCE_HINTS = ("clean", "ground", "truth", "gt", "reference", "target")


def likely_reference(viewer, image: Image | None) -> Image | None:
    """The layer most likely to be ``image``'s clean reference: an image layer of the same shape, not the image
    nor an output of this plugin, whose name says so (clean, ground truth, gt, reference, target); None if none
    does (two channels of one recording have the same shape too: the shape alone says nothing)."""
    if image is None:
        return None
    for layer in viewer.layers:
        if (isinstance(layer, Image) and layer is not image and made_by_plugin(layer) is None
                and layer.data.shape == image.data.shape
                and any(hint in layer.name.lower() for hint in REFERENCE_HINTS)):
            return layer
    return None


def view_layer(viewer, source: Image, view: np.ndarray, factor: int) -> Image:
    """A light layer ``<source> [live view]`` showing ``view`` (a plane of ``source`` downsampled by ``factor``,
    block means) over the source's plane: each view pixel covers its ``factor`` x ``factor`` block."""
    scale = np.asarray(source.scale[-2:], dtype=float)
    translate = np.asarray(source.translate[-2:], dtype=float) + (factor - 1) / 2 * scale
    return viewer.add_image(view, name=f"{source.name} [live view]", scale=tuple(scale * factor),
                            translate=tuple(translate), contrast_limits=tuple(source.contrast_limits),
                            colormap=source.colormap, metadata={"noise2fast_view_of": source.name})


def output_layer(viewer, source: Image, method: str, dtype, data=None) -> Image:
    """The layer ``<source> [<method>]`` a run writes to, its scale, translate and contrast limits the source's.

    An existing layer of that name is reused where it can hold the result (same shape and dtype, an in-memory
    array, not the source itself), its placement and contrast updated; otherwise a new layer is added (napari
    numbers a repeated name) and nothing of the user's is removed. ``data``: the new layer's data (a lazy
    store); default a copy of the source in ``dtype`` (what planes not yet denoised show).
    """
    meta = output_metadata(source, method)
    existing = viewer.layers[meta["name"]] if meta["name"] in viewer.layers else None
    if (data is None and isinstance(existing, Image) and existing is not source
            and existing.data.shape == source.data.shape and existing.data.dtype == dtype
            and isinstance(existing.data, np.ndarray)):
        existing.scale, existing.translate = meta["scale"], meta["translate"]
        existing.contrast_limits = meta["contrast_limits"]
        existing.metadata.update(meta["metadata"])
        return existing
    if data is None:
        data = np.array(source.data, dtype=dtype)
    return viewer.add_image(data, **meta)


class ThemedPlot:
    """A pyqtgraph plot in napari's colours (following theme changes while the dock is open): curves, a marker
    on the best point of the curve it belongs to, labelled horizontal levels, and a legend above the axes,
    where no curve runs under it."""

    def __init__(self, viewer, x_label: str, y_label: str, min_height: int = 180):
        self.viewer = viewer
        self.widget = pg.PlotWidget()
        self.widget.setMinimumHeight(min_height)
        self.item = self.widget.getPlotItem()
        self.item.showGrid(x=True, y=True, alpha=0.2)
        self.legend = pg.LegendItem(colCount=3)
        self.legend.setParentItem(self.item)  # placed above the axes by restyle, outside the curves' area
        self.item.layout.setContentsMargins(2, 2, 4, 2)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.levels: dict[str, pg.InfiniteLine] = {}
        self.best = pg.ScatterPlotItem(size=10, pen=None)
        self.item.addItem(self.best)
        self.labels = (x_label, y_label)
        self.restyle()
        viewer.events.theme.connect(self.restyle)
        self.widget.destroyed.connect(self._disconnect)

    def _disconnect(self, *_) -> None:
        try:
            self.viewer.events.theme.disconnect(self.restyle)
        except (RuntimeError, TypeError, ValueError):
            pass

    @property
    def background(self) -> str:
        """The plot's background colour now (the theme's canvas colour), as #rrggbb."""
        return self.widget.backgroundBrush().color().name()

    def restyle(self, *_) -> None:
        """Colour the plot from the viewer's current theme."""
        theme = get_theme(self.viewer.theme)
        self.text = theme.text.as_hex()
        self.widget.setBackground(theme.canvas.as_hex())
        for side in ("left", "bottom"):
            axis = self.item.getAxis(side)
            axis.setPen(pg.mkPen(theme.secondary.as_hex()))
            axis.setTextPen(pg.mkPen(self.text))
        self.set_labels(*self.labels)
        self.best.setBrush(pg.mkBrush(theme.current.as_hex()))
        for line in self.levels.values():
            line.label.setColor(self.text)
        self.legend.setLabelTextColor(self.text)
        for _, label in self.legend.items:
            label.setText(label.text, color=self.text)
        self._place_legend()

    def _place_legend(self) -> None:
        self.item.setTitle(" " if self.curves else None)  # room above the axes for the legend's one row
        self.legend.anchor(itemPos=(0, 0), parentPos=(0, 0), offset=(24, 0))  # three short names fit 340 px

    def set_labels(self, x_label: str, y_label: str) -> None:
        self.labels = (x_label, y_label)
        self.item.setLabel("bottom", x_label, color=self.text)
        self.item.setLabel("left", y_label, color=self.text)

    def curve(self, name: str, colour: str, legend: bool = True) -> pg.PlotDataItem:
        """The curve ``name`` (made on first use)."""
        return self._item(name, legend, pen=pg.mkPen(colour, width=2))

    def points(self, name: str, colour: str) -> pg.PlotDataItem:
        """The unjoined points ``name`` (made on first use, in the legend)."""
        return self._item(name, True, pen=None, symbol="x", symbolSize=8, symbolPen=pg.mkPen(colour, width=2),
                          symbolBrush=None)

    def _item(self, name: str, legend: bool, **style) -> pg.PlotDataItem:
        if name not in self.curves:
            self.curves[name] = self.item.plot([], [], **style)
            if legend:
                self.legend.addItem(self.curves[name], name)
                self._place_legend()
        return self.curves[name]

    def remove(self, name: str) -> None:
        """Remove the curve or points ``name`` and its legend entry."""
        self.item.removeItem(self.curves[name])
        self.legend.removeItem(self.curves.pop(name))

    def level(self, name: str, value: float, colour: str, position: float = 0.1, label: str | None = None) -> None:
        """A dashed horizontal line at ``value`` labelled ``label`` (default ``name``; made on first use, then
        moved and relabelled)."""
        if name not in self.levels:
            line = pg.InfiniteLine(angle=0, pen=pg.mkPen(colour, style=Qt.PenStyle.DashLine), label=label or name,
                                   labelOpts={"position": position, "color": self.text, "anchors": [(0, 1), (0, 1)]})
            self.item.addItem(line)
            self.levels[name] = line
        elif label is not None and self.levels[name].label.format != label:
            self.levels[name].label.setFormat(label)
        self.levels[name].setValue(value)
        self.levels[name].setVisible(True)

    def mark_best(self, name: str) -> tuple[float, float] | None:
        """Put the best-point marker on the highest point of curve ``name``; returns that point."""
        xs, ys = self.curves[name].getData()
        if xs is None or not len(ys) or not np.isfinite(ys).any():
            self.best.setData([], [])
            return None
        index = int(np.nanargmax(ys))
        self.best.setData([xs[index]], [ys[index]])
        return float(xs[index]), float(ys[index])

    def clear(self) -> None:
        """Remove every curve and hide the levels and the marker."""
        for curve in self.curves.values():
            self.item.removeItem(curve)
        self.legend.clear()
        self.curves = {}
        for line in self.levels.values():
            line.setVisible(False)
        self.best.setData([], [])
        self._place_legend()


class WorkerDock(Container):
    """What the docks share: one thread worker at a time with a Stop button and a status line, the
    input read by scope (current plane or whole layer), torch threads limited while a CPU run trains,
    and stopping when the input layer is removed or the dock destroyed. Subclasses build
    ``start_button``, ``stop_button`` and ``status``, and name the dock in ``title`` (the prefix of its
    notifications)."""

    title = "Noise2Fast"
    keeps_lazy = False  # a whole lazy layer is passed on lazy (the job reads it plane by plane)

    def __init__(self, napari_viewer):
        super().__init__(labels=False)
        # the knobs, the plot and the table scroll inside the dock rather than grow the window: napari docks a
        # magicgui widget's ``native``, the inner widget of a scrollable Container, so the scroll area is ours
        self.form = Container(labels=True)
        self._inner = QWidget()
        inner = QVBoxLayout(self._inner)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addWidget(self.form.native)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self._inner)
        scroll._noise2fast_dock = True  # found by the other dock of this plugin (see _tabify)
        self.native.layout().addWidget(scroll)
        self.native.layout().setContentsMargins(0, 0, 0, 0)
        self.viewer = napari_viewer
        self.worker = None
        self._body = None
        self.input_layer = None
        self._threads = None
        self._warming = None
        self._deferred = None  # a start waiting for torch (start_when_warm)
        self._kept_visuals: list = []  # see _on_layer_removing
        self.viewer.layers.events.removing.connect(self._on_layer_removing)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._abandon)
        self.native.setMaximumWidth(DOCK_WIDTH)  # the canvas keeps at least half of a 1280 px window
        QTimer.singleShot(0, self._tabify)

    @staticmethod
    def layer_pickers(reference_tip: str):
        """The ``image`` picker and the optional ``reference`` picker (a clean image of the same scene)."""
        image = create_widget(annotation=Image, label="image", options={"tooltip": "the noisy image layer"})
        reference = create_widget(annotation=Image, label="reference", options={
            "nullable": True, "value": None,
            "tooltip": f"optional: a clean image of the same scene{reference_tip}"})
        return image, reference

    @staticmethod
    def status_label(text: str) -> Label:
        """The status line: wrapped at the dock's width, never widening the dock (a long line would push the
        knobs out of view or squeeze the text into a narrow column)."""
        label = Label(value=text)
        label.native.setWordWrap(True)
        label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        label.native.setMinimumWidth(120)
        return label

    def add_native(self, widget) -> None:
        """Add a Qt widget (a plot, a table) below the knobs, in the scrolling part."""
        self._inner.layout().addWidget(widget)

    def reset_choices(self, *args) -> None:
        """napari calls this when its layers change: the layer pickers among the knobs follow."""
        self.form.reset_choices(*args)

    @staticmethod
    def row(*widgets) -> Container:
        """Widgets side by side, unlabelled (a row of buttons)."""
        return Container(widgets=list(widgets), layout="horizontal", labels=False)

    def warm_up(self, on_ready) -> None:
        """Load torch and warm its kernels in the background (:func:`start_warm_up`); ``on_ready(devices)`` on
        the GUI thread once done (polled by a timer the dock owns).

        Torch's first imports are not safe from two threads at once (seen: ``torch.ops.prims`` half-built when
        a run started while the warm-up ran), so :meth:`wait_warm` makes a run wait for it."""
        start_warm_up()

        def ready() -> None:
            if _WARM_DEVICES:
                on_ready(list(_WARM_DEVICES))

        self._warming = self._when_warm(ready)

    def _when_warm(self, then) -> QTimer:
        """Call ``then()`` on the GUI thread once the warm-up has run (polled by a timer the dock owns)."""
        timer = QTimer(self.native)
        timer.setInterval(50)

        def poll() -> None:
            if _WARM.is_set():
                timer.stop()
                then()

        timer.timeout.connect(poll)
        timer.start()
        return timer

    def start_when_warm(self, *args, **kwargs):
        """:meth:`start` now where torch is loaded, else once the background warm-up has loaded it, the viewer
        live meanwhile (a menu command that opens the dock and starts at once would otherwise freeze the viewer
        for the seconds torch takes to load). Returns the worker, or None where the start is deferred."""
        if _WARM.is_set() or not _WARM_THREAD:
            return self.start(*args, **kwargs)
        self.status.value = "Loading torch (the first run of this napari session starts in a moment)"
        self._deferred = self._when_warm(lambda: self.start(*args, **kwargs))
        return None

    @staticmethod
    def wait_warm(timeout: float = 120.0) -> None:
        """Block until the warm-up has loaded torch (at once where it has; seconds at most just after opening)."""
        if _WARM_THREAD:
            _WARM.wait(timeout)

    def _tabify(self) -> None:
        """Once docked: sit in a tab with this plugin's other dock where it is open, rather than beside it
        (two docks side by side would squeeze the canvas or grow the window)."""
        try:
            mine = self.native.parent()
            while mine is not None and not isinstance(mine, QDockWidget):
                mine = mine.parent()
            window = self.native.window()  # napari's main window, once docked
            if mine is None or not isinstance(window, QMainWindow):
                return
            for other in window.findChildren(QDockWidget):
                ours = [child for child in other.findChildren(QScrollArea) if getattr(child, "_noise2fast_dock", 0)]
                if other is not mine and other.isVisible() and ours \
                        and window.dockWidgetArea(other) == window.dockWidgetArea(mine):
                    window.tabifyDockWidget(other, mine)
                    mine.raise_()
                    return
        except (AttributeError, RuntimeError):  # not docked in a main window: the dock stays where it is
            pass

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

    def limit_threads(self, device) -> None:
        """On the CPU, leave one core to the viewer's event loop while training."""
        import torch

        if device.type == "cpu":
            self._threads = torch.get_num_threads()
            torch.set_num_threads(min(self._threads, gui_threads()))

    def restore_threads(self) -> None:
        if self.__dict__.get("_threads") is not None:
            import torch

            torch.set_num_threads(self._threads)
            self._threads = None

    def _abandon(self, *_) -> None:
        """The dock is being destroyed (viewer closed): stop the worker and let it end unheard."""
        warming = self.__dict__.get("_warming")
        if warming is not None:
            try:
                warming.stop()
            except RuntimeError:  # already deleted with the dock
                pass
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
