"""When the network's output replaces the preview, how good it is then, and what the held-out check costs.

    taskset -c 0 python benchmarks/shown.py --images sample,01,fish --variants defaults,no-raw-start,old-rule

Variants (the `fast` preset's defaults otherwise):

- ``defaults``: the held-out check (the method's output replaces the preview only once its J-invariant PSNR
  beats the preview's too); until ebb30c8 ``raw_start`` was on (the training network validated beside its
  lagging average and shown while it leads), off since 466b1ff;
- ``no-raw-start``: ``raw_start=False``, the held-out check on (the defaults since 466b1ff);
- ``raw-start``: ``raw_start=True``, the held-out check on;
- ``old-rule``: ``raw_start=False`` and no held-out check (the method shown once its validation PSNR passes
  the preview's, the rule before the check);
- ``float32``, ``float32-old-rule``: ``defaults`` and ``old-rule`` in float32, what a CPU without bfloat16
  matrix units runs (on a CPU with them: its float32 speed, about that of one without).

Per run: ``shown step``/``shown s``, the first event whose stage is the method's, and the PSNR against the
clean image of the output then (``shown PSNR``; the preview's PSNR beside it); the number of held-out checks
and the seconds they took (a check of an unchanged network is counted, at no cost); the run's seconds,
steps and final PSNR. One fresh process per run (the precision probe and torch's warm-up paid in each).
Rows go to ``results/shown.csv``; a rerun skips rows already there.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from large import cpu_name
from run_benchmark import DEFAULT_DATA, append_rows, expand

HERE = Path(__file__).resolve().parent
FIELDS = ["image", "variant", "commit", "preview_psnr", "shown_step", "shown_s", "shown_psnr", "checks",
          "check_s", "seconds", "steps", "psnr", "precision", "cpu"]
VARIANTS = {"defaults": {}, "no-raw-start": {"raw_start": False}, "raw-start": {"raw_start": True},
            "old-rule": {"raw_start": False},
            "float32": {"precision": "float32"}, "float32-old-rule": {"precision": "float32", "raw_start": False}}

ONE = r'''
import json, math, sys, time
sys.path.insert(0, {here!r})
import numpy as np, torch
torch.set_num_threads({threads})
from pathlib import Path
from napari_noise2fast import iter_denoise
from napari_noise2fast.methods.noise2fast import Noise2Fast
from run_benchmark import load_with_range
from skimage.metrics import peak_signal_noise_ratio
image, variant = {image!r}, {variant!r}
noisy, clean, span = load_with_range(Path({data!r}), image)
def psnr(output):
    return peak_signal_noise_ratio(clean.astype(np.float64), output.astype(np.float64), data_range=span)
checks = []
check = Noise2Fast.invariant_psnr
def timed(model, *args, **kwargs):
    started = time.perf_counter()
    value = check(model, *args, **kwargs)
    checks.append(time.perf_counter() - started)
    return value
Noise2Fast.invariant_psnr = (lambda model, *a, **k: None) if variant.endswith("old-rule") else timed
start = time.perf_counter()
job = iter_denoise(noisy, seed=0, device="cpu", **json.loads({params!r}))
preview = shown = model = None
for event in job:
    if job.current is not None and job.current.model is not None:
        model = job.current.model
    if event.step == 0 and event.output is not None:  # the Gaussian, then total variation where better
        preview = psnr(event.output)
    if shown is None and event.stage != "preview":
        output = event.output if event.output is not None else job.current.preview()
        shown = (event.step, time.perf_counter() - start, psnr(output))
    steps = event.step
seconds = time.perf_counter() - start
print(json.dumps({{"preview_psnr": f"{{preview:.2f}}", "shown_step": shown[0] if shown else "",
                  "shown_s": f"{{shown[1]:.1f}}" if shown else "", "shown_psnr": f"{{shown[2]:.2f}}" if shown else "",
                  "checks": len(checks), "check_s": f"{{sum(checks):.1f}}", "seconds": f"{{seconds:.1f}}",
                  "steps": steps, "psnr": f"{{psnr(job.result()):.2f}}",
                  "precision": str(model.compute_dtype).replace("torch.", "")}}))
'''


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=HERE).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="sample,01,fish")
    parser.add_argument("--variants", default="defaults,no-raw-start,old-rule")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "shown.csv")
    args = parser.parse_args()
    here = commit()
    done = set()
    if args.out.exists():
        with args.out.open() as handle:
            done = {(row["image"], row["variant"], row["commit"]) for row in csv.DictReader(handle)}
    images = [name for group in args.images.split(",") for name in (["sample"] if group == "sample" else expand(group))]
    for image in images:
        for variant in args.variants.split(","):
            if (image, variant, here) in done:
                continue
            script = ONE.format(here=str(HERE), threads=args.threads, image=image, variant=variant,
                                data=str(args.data), params=json.dumps(VARIANTS[variant]))
            run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"{image} {variant}: {run.stderr[-3000:]}")
            row = {"image": image, "variant": variant, "commit": here, "cpu": cpu_name(),
                   **json.loads(run.stdout.strip().splitlines()[-1])}
            append_rows(args.out, FIELDS, [row])
            print(" | ".join(str(row[field]) for field in FIELDS), flush=True)


if __name__ == "__main__":
    main()
