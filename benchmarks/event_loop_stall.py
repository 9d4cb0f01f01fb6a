"""Longest stall of the Qt event loop while the dock widget trains (needs a display: run under xvfb-run).

    xvfb-run -a python benchmarks/event_loop_stall.py --images 01,08 --seconds 30

A 10 ms QTimer records the gap between its ticks while a run trains on a Set12
image in a real napari viewer. The one-time creation of the output layer (napari
itself stalls about 400 ms adding a 512x512 layer) is excluded: measuring starts
at the first event after it. Gaps are the time between ticks minus nothing: a
gap of 100 ms means the GUI did not react for 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import napari
import numpy as np
import tifffile
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_noise2fast._qt import dock as _dock
from run_benchmark import DEFAULT_DATA, image_paths

DEBUG = False


def measure(viewer, noisy: np.ndarray, seconds: float, threads: int | None) -> dict:
    app = QApplication.instance()
    layer = viewer.add_image(noisy, name=f"noisy {noisy.shape[0]}")
    _, widget = viewer.window.add_plugin_dock_widget("napari-noise2fast", "Noise2Fast")
    if threads is not None:
        _dock.gui_threads = lambda: threads
    gaps: list[float] = []
    ticks = [time.perf_counter()]
    measuring = []
    started_at = [0.0]

    def tick():
        now = time.perf_counter()
        if measuring:
            gaps.append(now - ticks[0])
            if now - ticks[0] > 0.1 and DEBUG:
                print(f"  gap {1000 * (now - ticks[0]):.0f} ms at {now - started_at[0]:.2f} s, event step "
                      f"{events[-1].step if events else None}", flush=True)
        ticks[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    events = []
    widget.start(layer)
    widget.worker.yielded.connect(lambda item: events.append(item[0]))
    timer.start()
    while not events:  # output layer created, preview shown
        app.processEvents()
        time.sleep(0.001)
    for _ in range(20):
        app.processEvents()
    measuring.append(True)
    ticks[0] = time.perf_counter()
    started_at[0] = ticks[0]
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and widget.running:
        app.processEvents()
        time.sleep(0.001)
    measuring.clear()
    steps = events[-1].step
    widget.stop()
    while widget.running:
        app.processEvents()
        time.sleep(0.01)
    timer.stop()
    viewer.layers.clear()
    return {"gaps": gaps, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="01,08", help="Set12 images: 01 is 256x256, 08 is 512x512")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", default="auto", help="torch threads while training: auto (cores - 1) or N")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--debug", action="store_true", help="print every gap over 100 ms")
    args = parser.parse_args()
    global DEBUG
    DEBUG = args.debug
    threads = None if args.threads == "auto" else int(args.threads)
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    print("| image | size | torch threads | steps | ticks | longest gap ms | 99th percentile ms | median ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.images.split(","):
        noisy = tifffile.imread(image_paths(Path(args.data), name)[0])
        result = measure(viewer, noisy, args.seconds, threads)
        gaps = np.array(result["gaps"]) * 1000
        used = threads if threads is not None else _dock.gui_threads()
        print(f"| {name} | {noisy.shape[0]}x{noisy.shape[1]} | {used} | {result['steps']} | {len(gaps)} | "
              f"{gaps.max():.0f} | {np.percentile(gaps, 99):.0f} | {statistics.median(gaps):.1f} |", flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
