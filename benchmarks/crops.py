"""Why did random crops lose quality on Set12 03? (issue 19, item 1)

The earlier ablation (RESULTS.md, issue 3) trained 256x256 images on one random
64x64 crop per step and lost up to 0.8 dB on Set12 03. Bounded mode can be forced
on a 256x256 image (a budget below its half-plane's 32,768 pixels), so the three
candidate causes can be told apart on the same image, seed and code:

- ``whole``: today's whole-pair steps, whole-plane validation (the baseline);
- ``c64x1``: one 64x64 crop per step (4,096 pixels, the old ablation), whole-plane validation;
- ``c64x7``: seven 64x64 crops (28,672 pixels, 7/8 of a whole pair: bounded mode needs a budget below
  the half-plane's pixels), whole-plane validation;
- ``c128x1``: one 128x128 crop (16,384 pixels), whole-plane validation;
- ``c64x7-sub``: as ``c64x7`` but validated on one 128x128 tile (a quarter of the plane);
- ``c64x7-ctx``, ``c128x1-ctx``: as ``c64x7``, ``c128x1``, each crop cut with 8 pixels of real
  surroundings (the receptive field), the loss on the crop only (``context=True``);
- ``c64x1-tiles``, ``c64x7-tiles``, ``c128x1-tiles``: as without ``-tiles`` but the crops taken from a
  fixed grid over each pair, in an order shuffled at every pass (``sampling="tiles"``, the default
  now), instead of at random places.

Every variant but ``-tiles`` samples at random places (``sampling="random"``), as bounded mode first did.

If ``c64x7`` matches ``whole`` and ``c64x1`` does not, pixels per step explain the loss.
If ``c64x7-sub`` loses against ``c64x7``, the validation subset does. If ``-tiles`` matches ``whole``
where the random places lose, the sampling does.

    taskset -c 1 python benchmarks/crops.py --images 03,01 --seeds 0 --threads 1 --max-steps 300

Rows go to ``benchmarks/results/crops.csv`` as they finish; a rerun skips rows already there.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import tifffile
import torch
from skimage.io import imread

from napari_noise2fast import iter_denoise
from run_benchmark import DEFAULT_DATA, image_paths, psnr_ssim

RANDOM = {"sampling": "random", "context": False}
VARIANTS = {
    "whole": {},
    "c64x1": {"budget": 4096, "crop": 64, "validation": 65536, **RANDOM},
    "c64x7": {"budget": 28672, "crop": 64, "validation": 65536, **RANDOM},
    "c128x1": {"budget": 16384, "crop": 128, "validation": 65536, **RANDOM},
    "c64x7-sub": {"budget": 28672, "crop": 64, "validation": 16384, **RANDOM},
    "c64x7-ctx": {"budget": 28672, "crop": 64, "validation": 65536, **RANDOM, "context": True},
    "c128x1-ctx": {"budget": 16384, "crop": 128, "validation": 65536, **RANDOM, "context": True},
    # the fixed grid of crops, a shuffled pass after another (sampling="tiles", the default now)
    "c64x1-tiles": {"budget": 4096, "crop": 64, "validation": 65536, "sampling": "tiles"},
    "c64x7-tiles": {"budget": 28672, "crop": 64, "validation": 65536, "sampling": "tiles"},
    "c128x1-tiles": {"budget": 16384, "crop": 128, "validation": 65536, "sampling": "tiles"},
}
FIELDS = ["image", "variant", "seed", "psnr", "ssim", "seconds", "steps", "bounded"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="03,01")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="float32", help="all variants alike")
    parser.add_argument("--channels-last", action="store_true",
                        help="the fast preset's layout; off by default: 2x slower here (AMD EPYC with AVX2 only)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap every run at this many steps")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "crops.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    done = set()
    if args.out.exists():
        with args.out.open() as handle:
            done = {(r["image"], r["variant"], r["seed"]) for r in csv.DictReader(handle)}
    else:
        with args.out.open("w", newline="") as handle:
            csv.writer(handle).writerow(FIELDS)
    for name in args.images.split(","):
        noisy_path, clean_path = image_paths(args.data, name)
        noisy, clean = tifffile.imread(noisy_path), imread(clean_path)
        for seed in args.seeds.split(","):
            for variant in args.variants.split(","):
                if (name, variant, seed) in done:
                    continue
                start = time.perf_counter()
                job = iter_denoise(noisy, seed=int(seed), device="cpu", precision=args.precision,
                                   channels_last=args.channels_last, max_steps=args.max_steps, **VARIANTS[variant])
                steps = 0
                bounded = None
                for event in job:
                    steps = event.step
                    if bounded is None and job.current is not None and job.current.model is not None:
                        bounded = job.current.model.bounded
                seconds = time.perf_counter() - start
                psnr, ssim = psnr_ssim(clean, job.result())
                row = [name, variant, seed, f"{psnr:.2f}", f"{ssim:.3f}", f"{seconds:.1f}", steps, bounded]
                print(*row, flush=True)
                with args.out.open("a", newline="") as handle:
                    csv.writer(handle).writerow(row)
    with args.out.open() as handle:
        rows = list(csv.DictReader(handle))
    print("\n| image | variant | median PSNR | seeds | median seconds | median steps |")
    print("|---|---|---|---|---|---|")
    for name in args.images.split(","):
        for variant in VARIANTS:
            mine = [r for r in rows if r["image"] == name and r["variant"] == variant]
            if mine:
                print(f"| {name} | {variant} | {statistics.median(float(r['psnr']) for r in mine):.2f} | "
                      f"{len(mine)} | {statistics.median(float(r['seconds']) for r in mine):.1f} | "
                      f"{statistics.median(int(r['steps']) for r in mine):.0f} |")


if __name__ == "__main__":
    main()
