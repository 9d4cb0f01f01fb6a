"""Why bounded training loses quality (issue 19): the true PSNR of the validated network at every validation.

At every validation step of a Noise2Fast run on a mosaic plane (``large.make_plane``), the network that
was just validated (the averaged copy of the weights in the ``fast`` preset) is also predicted on the
whole plane and scored against the clean mosaic. A row per validation: the step, the validation PSNR
(on the subset in bounded mode), whether it was the best so far, the true PSNR, and the true PSNR of the
training network itself (not averaged), so a slow start splits into training and the average's lag. So a run's loss
splits into training (the best true PSNR of the trace is low) and selection (the validation picked a
step whose true PSNR is below the trace's best).

    taskset -c 1 python benchmarks/bounded_trace.py --image fish --size 1024 --max-steps 300 \
        --variants '{"label": "crop128"}' '{"label": "crop256", "crop": 256}'

Rows go to ``benchmarks/results/bounded_trace.csv``; a variant already there (same image, size, seed,
label, CPU) is skipped, so a rerun resumes. The summary prints per variant the true PSNR at the
validation's choice and the trace's best.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from large import cpu_name, make_plane
from run_benchmark import DEFAULT_DATA, append_rows

FIELDS = ["image", "size", "seed", "label", "params", "step", "val_psnr", "best", "true_psnr", "seconds", "cpu",
          "train_psnr"]


def trace(args, variant: dict, cpu: str) -> list[dict]:
    from napari_noise2fast import iter_denoise

    params = {k: v for k, v in variant.items() if k != "label"}
    noisy, clean = make_plane(args.data, args.image, args.size, args.seed)
    job = iter_denoise(noisy, seed=args.seed, device="cpu", max_steps=args.max_steps, preview=False, **params)
    rows, best, start, scoring = [], -np.inf, time.perf_counter(), 0.0
    for event in job:
        run = job.current
        if event.done or run is None or run.model is None or not np.isfinite(event.val_psnr):
            continue
        model = run.model
        scored = time.perf_counter()
        validated = model.network if model.averaged is None else model.averaged
        true, train = (peak_signal_noise_ratio(clean, run._to_intensity(model.predict(network).cpu().numpy())
                                               .astype(np.float64), data_range=255.0)
                       for network in (validated, model.network))
        scoring += time.perf_counter() - scored
        is_best = event.val_psnr > best
        best = max(best, event.val_psnr)
        rows.append({"image": args.image, "size": args.size, "seed": args.seed, "label": variant["label"],
                     "params": json.dumps(params), "step": event.step, "val_psnr": f"{event.val_psnr:.4f}",
                     "best": int(is_best), "true_psnr": f"{true:.4f}",
                     "seconds": f"{time.perf_counter() - start - scoring:.1f}", "cpu": cpu,
                     "train_psnr": f"{train:.4f}"})
        print(f"{variant['label']:>12} step {event.step:4d} val {event.val_psnr:7.3f} {'*' if is_best else ' '} "
              f"true {true:6.3f} training network {train:6.3f}", flush=True)
    return rows


def summary(rows: list[dict]) -> None:
    print("\n| image | size | seed | variant | steps | true PSNR at the validation's choice | trace's best (step) |")
    print("|---|---|---|---|---|---|---|")
    keys = dict.fromkeys((r["image"], r["size"], r["seed"], r["label"]) for r in rows)
    for key in keys:
        run = [r for r in rows if (r["image"], r["size"], r["seed"], r["label"]) == key]
        chosen = [r for r in run if int(r["best"])][-1]
        top = max(run, key=lambda r: float(r["true_psnr"]))
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {run[-1]['step']} | {float(chosen['true_psnr']):.2f} "
              f"(step {chosen['step']}) | {float(top['true_psnr']):.2f} ({top['step']}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="fish")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variants", nargs="+", default=['{"label": "default"}'],
                        help="JSON objects: a label and Noise2Fast parameters")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bounded_trace.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_name()
    rows = list(csv.DictReader(args.out.open())) if args.out.exists() else []
    if rows and "train_psnr" not in rows[0]:  # an older file: the new column, empty on its rows
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS, restval="")
            writer.writeheader()
            writer.writerows(rows)
    for variant in map(json.loads, args.variants):
        key = (args.image, str(args.size), str(args.seed), variant["label"], cpu)
        if any((r["image"], r["size"], r["seed"], r["label"], r["cpu"]) == key for r in rows):
            continue
        new = trace(args, variant, cpu)
        append_rows(args.out, FIELDS, new)
        rows += [{k: str(v) for k, v in r.items()} for r in new]
    summary([r for r in rows if r["image"] == args.image and r["size"] == str(args.size) and r["cpu"] == cpu])


if __name__ == "__main__":
    main()
