"""How long a user waits in the viewer (issue 22, item 5; needs a display: run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_latency.py --repeats 3

Each measurement runs in a fresh process, so that what napari and the plugin import the first time is paid
as a user pays it: napari's viewer is opened first and its event loop run until idle (not counted), then

- ``sample``: File > Open Sample > Noisy cell (``viewer.open_sample``), napari's layer creation included;
- ``dock``: Plugins > Noise2Fast (``add_plugin_dock_widget``) with the sample open;
- ``filter``: the first Layers > Filter > Denoise > "Denoise the selected layer" with the sample open
  (it opens the dock and starts a run);
- ``beats preview``: from Start on the sample (the dock's defaults, the dock already open and warm) to the
  first event whose output is the method's rather than the Gaussian preview, and the status line then;
- ``improves``: from Start as above to the first output shown that is not the Gaussian preview (the
  total-variation preview, or the method's output), with the true PSNR of both against the clean cell.

For the first three, ``blocked s`` is how long the call kept the event loop from running (the call is
synchronous), and ``longest stall s`` the longest gap of a 10 ms Qt timer in the 5 s after it (background
work that holds the GIL shows there). Rows go to ``results/gui_latency.csv``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIELDS = ["measure", "repeat", "blocked_s", "longest_stall_s", "seconds", "cpu", "note"]
CHILD = r'''
import json, sys, time
import napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication
measure = sys.argv[1]
app = QApplication.instance() or QApplication([])
viewer = napari.Viewer()
viewer.window.resize(1280, 720)
def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)
gaps, last = [], [time.perf_counter()]
def tick():
    now = time.perf_counter()
    gaps.append(now - last[0])
    last[0] = now
timer = QTimer()
timer.setInterval(10)
timer.timeout.connect(tick)
spin(2.0)
row = {}
if measure in ("dock", "filter", "beats preview", "improves"):
    viewer.open_sample("napari-noise2fast", "noisy_cell")
    spin(1.0)
timer.start()
spin(0.2)
gaps.clear(); last[0] = time.perf_counter()
start = time.perf_counter()
if measure == "sample":
    viewer.open_sample("napari-noise2fast", "noisy_cell")
elif measure == "dock":
    viewer.window.add_plugin_dock_widget("napari-noise2fast", "Noise2Fast")
elif measure == "filter":
    from napari._app_model import get_app_model
    viewer.layers.selection.active = viewer.layers["noisy cell"]
    get_app_model().commands.execute_command("napari-noise2fast.denoise_selected").result()
if measure not in ("beats preview", "improves"):
    row["blocked_s"] = time.perf_counter() - start
    last[0] = time.perf_counter()
    spin(5.0)
    row["longest_stall_s"] = max(gaps) if gaps else 0.0
else:
    _, dock = viewer.window.add_plugin_dock_widget("napari-noise2fast", "Noise2Fast")
    spin(1.0)
    dock.wait_warm()
    spin(1.0)
    seen = []  # (seconds since Start, event)
    start = time.perf_counter()
    worker = dock.start(viewer.layers["noisy cell"])
    worker.yielded.connect(lambda item: seen.append((time.perf_counter() - start, item[0])))

    def outputs():
        return [(t, event) for t, event in seen if event.output is not None]

    def methods():
        return [(t, event) for t, event in seen if event.stage != "preview"]

    def improved():
        return len(outputs()) > 1 if measure == "improves" else bool(methods())
    while dock.running and not improved():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - start > 600:
            break
    if measure == "improves":
        from napari_noise2fast.samples import clean_cell
        from skimage.metrics import peak_signal_noise_ratio
        clean = clean_cell()
        span = float(clean.max() - clean.min())
        def psnr(event):
            return peak_signal_noise_ratio(clean, event.output.astype(float), data_range=span)
        shown = outputs()
        row["seconds"] = shown[1][0] if len(shown) > 1 else None
        row["note"] = (f"Gaussian preview {psnr(shown[0][1]):.2f} dB; then {shown[1][1].stage} "
                       f"{shown[1][1].preview_filter} {psnr(shown[1][1]):.2f} dB; " if len(shown) > 1 else "never; ") \
            + dock.status.value.replace("\n", " / ")
    else:
        beaten = methods()
        row["seconds"] = beaten[0][0] if beaten else None
        row["note"] = (f"at step {beaten[0][1].step}; " if beaten else "never; ") \
            + dock.status.value.replace("\n", " / ")
    dock.stop()
    while dock.running:
        app.processEvents()
        time.sleep(0.01)
timer.stop()
viewer.close()
print(json.dumps(row))
'''


def main() -> int:
    from large import cpu_name
    from run_benchmark import append_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measures", default="sample,dock,filter,beats preview")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gui_latency.csv")
    args = parser.parse_args()
    cpu = cpu_name()
    rows = []
    for repeat in range(args.repeats):
        for measure in args.measures.split(","):
            done = subprocess.run([sys.executable, "-c", CHILD, measure], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{measure}: {done.stderr[-3000:]}")
            found = json.loads(done.stdout.strip().splitlines()[-1])
            row = {"measure": measure, "repeat": repeat, "cpu": cpu, **{k: found.get(k) for k in FIELDS[2:-2]},
                   "note": found.get("note", "")}
            rows.append(row)
            append_rows(args.out, FIELDS, [row])
            print(row, flush=True)
            time.sleep(0.5)
    print(f"\n{cpu}, {args.repeats} fresh processes each; medians\n")
    print("| measure | blocked s | longest stall s (5 s after) | seconds to beat (or improve on) the preview |")
    print("|---|---|---|---|")
    for measure in args.measures.split(","):
        mine = [r for r in rows if r["measure"] == measure]

        def median(key, mine=mine):
            values = [r[key] for r in mine if r[key] is not None]
            return f"{statistics.median(values):.2f}" if values else ""
        print(f"| {measure} | {median('blocked_s')} | {median('longest_stall_s')} | {median('seconds')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
