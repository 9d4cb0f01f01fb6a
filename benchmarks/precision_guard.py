"""bfloat16 against float32, and test-time augmentation, on ../shared/data (issue 20, items 1 and 3).

Every image is denoised by the ``fast`` preset twice, in float32 and in bfloat16 (same seed, same
layout: the one ``channels_last="auto"`` picks), and at the end of each run the best network's result is
also predicted with test-time augmentation (the mean over the eight flips and rotations, in tiles), so
one run gives both figures: PSNR and SSIM without and with augmentation, the run's seconds, and the
augmentation's extra seconds (eight predictions of the plane instead of one).

    taskset -c 0 python benchmarks/precision_guard.py --images all --threads 1
    taskset -c 0 python benchmarks/precision_guard.py --images all --threads 1 --max-steps 300

Rows go to ``benchmarks/results/precision_guard.csv`` as each run ends; a rerun skips the rows there
(same image, precision, cap and CPU). The summary prints the table per image, bfloat16 minus float32
(median, worst), and the augmentation's gain and relative time.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from large import cpu_name
from napari_noise2fast import iter_denoise
from napari_noise2fast.engine import PREVIEW
from run_benchmark import DEFAULT_DATA, append_rows, expand, psnr_ssim
from stopping import load

FIELDS = ["image", "precision", "max_steps", "steps", "seconds", "stage", "psnr", "ssim", "psnr_aug", "ssim_aug",
          "predict_s", "aug_s", "cpu"]
PRECISIONS = ("float32", "bfloat16")


def run(noisy, clean, precision: str, seed: int, max_steps) -> dict:
    start = time.perf_counter()
    job = iter_denoise(noisy, seed=seed, device="cpu", precision=precision, max_steps=max_steps)
    plane = None
    for _ in job:
        plane = job.current or plane  # the plane's run (the job lets go of it at the end)
    plain = job.result()
    seconds = time.perf_counter() - start
    model = plane.model
    stage = plane.stage
    predict_s = aug_s = 0.0
    augmented = plain
    if stage != PREVIEW and model.best_state is not None:
        network = model._best_network()
        began = time.perf_counter()
        model.predict(network)
        predict_s = time.perf_counter() - began
        began = time.perf_counter()
        augmented = plane._to_intensity(model.augmented(network).cpu().numpy())
        aug_s = time.perf_counter() - began
    psnr, ssim = psnr_ssim(clean, plain)
    psnr_aug, ssim_aug = psnr_ssim(clean, augmented)
    return {"steps": plane.step, "seconds": f"{seconds:.1f}", "stage": stage, "psnr": f"{psnr:.3f}",
            "ssim": f"{ssim:.4f}", "psnr_aug": f"{psnr_aug:.3f}", "ssim_aug": f"{ssim_aug:.4f}",
            "predict_s": f"{predict_s:.2f}", "aug_s": f"{aug_s:.2f}"}


def summary(rows: list[dict], cap: str, cpu: str) -> None:
    mine = {(r["image"], r["precision"]): r for r in rows if r["max_steps"] == cap and r["cpu"] == cpu}
    images = list(dict.fromkeys(image for image, _ in mine))
    print(f"\nCPU {cpu}; fast preset, seed 0, max steps {cap or 'none'}\n")
    print("| image | f32 PSNR | bf16 PSNR | bf16 - f32 | f32 s | bf16 s | f32 steps | bf16 steps "
          "| bf16 + TTA PSNR | TTA gain | TTA extra s | TTA extra / run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    diffs, gains, shares = {}, {}, {}
    for image in images:
        f32, bf16 = mine.get((image, "float32")), mine.get((image, "bfloat16"))
        if f32 is None or bf16 is None:
            continue
        diffs[image] = float(bf16["psnr"]) - float(f32["psnr"])
        extra = float(bf16["aug_s"]) - float(bf16["predict_s"])
        gains[image] = float(bf16["psnr_aug"]) - float(bf16["psnr"])
        shares[image] = extra / float(bf16["seconds"])
        print(f"| {image} | {float(f32['psnr']):.2f} | {float(bf16['psnr']):.2f} | {diffs[image]:+.3f} | "
              f"{float(f32['seconds']):.0f} | {float(bf16['seconds']):.0f} | {f32['steps']} | {bf16['steps']} | "
              f"{float(bf16['psnr_aug']):.2f} | {gains[image]:+.3f} | {extra:.1f} | {100 * shares[image]:.1f} % |")
    if diffs:
        worst = min(diffs, key=diffs.get)
        print(f"\nbfloat16 - float32 over {len(diffs)} images: median {statistics.median(diffs.values()):+.3f} dB, "
              f"worst {diffs[worst]:+.3f} ({worst})")
        print(f"test-time augmentation (bfloat16 runs): median gain {statistics.median(gains.values()):+.3f} dB, "
              f"min {min(gains.values()):+.3f}, median extra time {100 * statistics.median(shares.values()):.1f} % "
              f"of the run, max {100 * max(shares.values()):.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precision_guard.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_name()
    cap = "" if args.max_steps is None else str(args.max_steps)
    rows = list(csv.DictReader(args.out.open())) if args.out.exists() else []
    done = {(r["image"], r["precision"], r["max_steps"], r["cpu"]) for r in rows}
    for name in expand(args.images):
        noisy, clean = load(args.data, name)
        for precision in PRECISIONS:
            if (name, precision, cap, cpu) in done:
                continue
            row = {"image": name, "precision": precision, "max_steps": cap, "cpu": cpu,
                   **run(noisy, clean, precision, args.seed, args.max_steps)}
            print(row, flush=True)
            append_rows(args.out, FIELDS, [row])
            rows.append(row)
    summary(rows, cap, cpu)


if __name__ == "__main__":
    main()
