"""The README screenshot: the sample denoised to the end in the dock widget (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/screenshot.py docs/widget.png
"""

from __future__ import annotations

import sys
import time

import napari
from qtpy.QtWidgets import QApplication
from skimage.io import imsave


def main(path: str) -> None:
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    viewer.open_sample("napari-noise2fast", "noisy_cell")
    _, widget = viewer.window.add_plugin_dock_widget("napari-noise2fast", "Noise2Fast")
    widget.start(viewer.layers["noisy cell"])
    app = QApplication.instance()
    while widget.running:
        app.processEvents()
        time.sleep(0.01)
    viewer.layers["noisy cell"].visible = False
    viewer.reset_view()
    for _ in range(50):
        app.processEvents()
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(widget.status.value)
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "widget.png")
