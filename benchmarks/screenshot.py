"""The README screenshots (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/screenshot.py docs/widget.png \
        --early docs/widget_early.png
    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/screenshot.py docs/compare.png --compare
    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/screenshot.py docs/noise.png --noise

The first: the sample denoised to the end in the Noise2Fast dock (and with ``--early``, the same window
``--after`` seconds after Start). The second: the comparison dock on the sample with its clean version as
the reference layer (Noise2Fast, the calibrated classical filters, ZS-N2N at 1,000 steps); the third: the
same with PN2V and the noise network at their defaults, scrolled to the noise they learned. The window is
1280x900: 1280 px wide, the width the docks are made to fit, tall enough to show the plot unscrolled.
"""

from __future__ import annotations

import argparse
import time

import napari
from qtpy.QtWidgets import QApplication
from skimage.io import imsave


def wait(app, widget, seconds: float | None = None) -> None:
    """Run the event loop until ``widget`` has finished, or for ``seconds``."""
    end = None if seconds is None else time.perf_counter() + seconds
    while widget.running and (end is None or time.perf_counter() < end):
        app.processEvents()
        time.sleep(0.01)


def save(app, viewer, path) -> None:
    for _ in range(50):
        app.processEvents()
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", default="widget.png")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--noise", action="store_true",
                        help="the comparison dock after the --noise-methods (defaults) on the sample, scrolled to "
                             "the noise plot")
    parser.add_argument("--noise-methods", default="pn2v,noise-net")
    parser.add_argument("--early", default=None, help="also a screenshot this long after Start (--after)")
    parser.add_argument("--after", type=float, default=10.0)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer()
    viewer.window.resize(1280, 900)
    viewer.open_sample("napari-noise2fast", "noisy_cell")
    if args.compare or args.noise:
        viewer.open_sample("napari-noise2fast", "clean_cell")
        _, widget = viewer.window.add_plugin_dock_widget("napari-noise2fast", "Compare denoisers")
        if args.noise:
            widget.start(viewer.layers["noisy cell"], methods=args.noise_methods.split(","),
                         reference=viewer.layers["clean cell"])
        else:
            widget.start(viewer.layers["noisy cell"], methods=["noise2fast", "calibrated", "zs-n2n"],
                         reference=viewer.layers["clean cell"], params={"zs-n2n": {"steps": 1000}})
        wait(app, widget)
        shown = "noisy cell [PN2V]" if args.noise else "noisy cell [Noise2Fast]"
        for layer in viewer.layers:
            layer.visible = layer.name == shown
        for name, model in widget.comparison.noise_models.items():
            print(f"{name}: variance = {model.gain:.4g} * signal + {model.read:.4g}")
        print(widget.comparison.table())
        from qtpy.QtWidgets import QScrollArea

        scroll = widget.native.findChild(QScrollArea)  # the dock scrolls: show its table, below the plot
        for _ in range(20):
            app.processEvents()
        scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    else:
        _, widget = viewer.window.add_plugin_dock_widget("napari-noise2fast", "Noise2Fast")
        viewer.reset_view()
        widget.start(viewer.layers["noisy cell"])
        if args.early:
            wait(app, widget, args.after)
            viewer.layers["noisy cell"].visible = False
            save(app, viewer, args.early)
            print(f"after {args.after:.0f} s:\n{widget.status.value}\n")
        wait(app, widget)
        viewer.layers["noisy cell"].visible = False
        print(widget.status.value)
    viewer.reset_view()
    save(app, viewer, args.path)
    viewer.close()


if __name__ == "__main__":
    main()
