"""What minimum gain should count for patience? (issue 20, item 2)

One run per image with the ``fast`` preset and today's rule (every gain counts, ``min_gain=0``) records,
at every validation, the step, the seconds, the validation PSNR and the true PSNR of the best output so
far (the output a run stopped there would return: the fast preset's result is its best-validated
output). Any stricter rule stops earlier on the same trace, so each candidate is simulated on it:

- ``abs G``: a validation resets patience only if it beats the one that last did by at least G dB;
- ``rel S``: ... by at least S times the gain so far (that PSNR minus the first validation's).

    taskset -c 1 python benchmarks/stopping.py --images all,nuclei --threads 1

Images: ``../shared/data`` (Set12 sigma 25 and the two FMD images, against their clean ones) and the
nuclei tiles ``nuclei/noisy/A_1_1``, ``N_1_1`` (no clean image: steps and seconds only). Traces go to
``benchmarks/results/stopping_trace.csv`` as each run ends; a rerun skips the images already there.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.io import imread

from napari_noise2fast import iter_denoise
from run_benchmark import DEFAULT_DATA, expand, image_paths, psnr_ssim

FIELDS = ["image", "step", "seconds", "val_psnr", "best_psnr", "precision"]
NUCLEI = ["A_1_1", "N_1_1"]
RULES = [("abs", g) for g in (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)] + [("rel", s) for s in (0.002, 0.005, 0.01, 0.02)]
PATIENCE, EVERY = 50, 10  # the fast preset's


def load(data: Path, name: str):
    if name in NUCLEI:
        return tifffile.imread(data / "nuclei" / "noisy" / f"{name}.tif"), None
    noisy_path, clean_path = image_paths(data, name)
    clean = imread(clean_path) if clean_path.suffix == ".png" else tifffile.imread(clean_path)
    return tifffile.imread(noisy_path), clean


def trace(noisy, clean, seed: int) -> list[dict]:
    """The validations of one fast run with min_gain=0: step, seconds, validation PSNR, true best PSNR."""
    start = time.perf_counter()
    job = iter_denoise(noisy, seed=seed, device="cpu", min_gain=0.0, output_every=EVERY)
    rows, precision = [], ""
    for event in job:
        if job.current is not None and job.current.model is not None:
            precision = str(job.current.model.compute_dtype).replace("torch.", "")
        if event.output is None or np.isnan(event.val_psnr) or event.step == 0:
            continue
        best = psnr_ssim(clean, event.output)[0] if clean is not None else float("nan")
        rows.append({"step": event.step, "seconds": time.perf_counter() - start, "val_psnr": event.val_psnr,
                     "best_psnr": best, "precision": precision})
    return rows


def stop_at(rows: list[dict], kind: str, size: float) -> dict:
    """The validation where the rule ``(kind, size)`` stops on this trace (the last if it never does), as
    ``Noise2Fast`` does: any better validation keeps its weights; only one ``size`` better than the one that
    last counted (``abs``: dB; ``rel``: times the gain that one had over the first validation) resets patience."""
    best = counted = -np.inf
    first, since = rows[0]["val_psnr"], 0
    for row in rows:
        val, reset = row["val_psnr"], False
        if val > best:
            best = val
            need = size if kind == "abs" else size * max(counted - first, 0.0)
            if val >= counted + need:
                counted, reset = val, True
        since = 0 if reset else since + EVERY
        if since > PATIENCE:
            return row
    return rows[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="all,nuclei")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stopping_trace.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for group in args.images.split(",") for n in (NUCLEI if group == "nuclei" else expand(group))]
    done = set()
    if args.out.exists():
        with args.out.open() as handle:
            done = {r["image"] for r in csv.DictReader(handle)}
    else:
        with args.out.open("w", newline="") as handle:
            csv.writer(handle).writerow(FIELDS)
    for name in names:
        if name in done:
            continue
        rows = trace(*load(args.data, name), args.seed)
        with args.out.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            for row in rows:
                writer.writerow({"image": name, **{k: (f"{v:.4f}" if isinstance(v, float) else v)
                                                   for k, v in row.items()}})
        print(name, rows[-1]["step"], f"{rows[-1]['seconds']:.1f}s", f"{rows[-1]['best_psnr']:.2f}", flush=True)
    with args.out.open() as handle:
        traces: dict[str, list[dict]] = {}
        for r in csv.DictReader(handle):
            traces.setdefault(r["image"], []).append({k: float(v) if k not in ("image", "precision") else v
                                                     for k, v in r.items()})
    names = [n for n in names if n in traces]
    print(f"\n{len(names)} images, fast preset, seed {args.seed}, patience {PATIENCE}, validation every {EVERY}; "
          f"precision {sorted({r['precision'] for n in names for r in traces[n]})}")
    print("\n| rule | median PSNR loss dB | worst loss dB (image) | median steps | median s | total s "
          "| nuclei steps | nuclei s |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, size in RULES:
        stops = {n: stop_at(traces[n], kind, size) for n in names}
        scored = [n for n in names if not np.isnan(traces[n][-1]["best_psnr"])]
        loss = {n: traces[n][-1]["best_psnr"] - stops[n]["best_psnr"] for n in scored}
        worst = max(loss, key=loss.get)
        nuclei = [stops[n] for n in names if n in NUCLEI]
        nuclei_steps = " / ".join(f"{stop['step']:.0f}" for stop in nuclei)
        nuclei_seconds = " / ".join(f"{stop['seconds']:.0f}" for stop in nuclei)
        print(f"| {kind} {size:g} | {statistics.median(loss.values()):.3f} | {loss[worst]:.3f} ({worst}) | "
              f"{statistics.median(stops[n]['step'] for n in scored):.0f} | "
              f"{statistics.median(stops[n]['seconds'] for n in scored):.1f} | "
              f"{sum(stops[n]['seconds'] for n in scored):.0f} | "
              f"{nuclei_steps} | {nuclei_seconds} |")


if __name__ == "__main__":
    main()
