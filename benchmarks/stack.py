"""Warm-started stacks against independent planes (issue 3, item 3).

The test stack is made from real data: 16 crops (default 256x256) of the clean
FMD confocal image, taken along a drifting path (each crop shifted by a few
pixels from the one before, as in a drifting time series or neighbouring
z-planes), each given its own Poisson-Gaussian noise whose two parameters are
fitted from the real noisy/clean pair of the same image (noise variance against
clean intensity, a straight line), then rounded and clipped to uint8 like the
acquisition.

    python benchmarks/stack.py --image fish --planes 16 --size 256

Both runs use the `fast` preset with the same seed; "independent" sets
``warm_start=False``. Prints PSNR per plane, the medians and the total seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_noise2fast import iter_denoise
from run_benchmark import DEFAULT_DATA, image_paths, psnr_ssim


def fit_noise(noisy: np.ndarray, clean: np.ndarray, bins: int = 32) -> tuple[float, float]:
    """(gain, read variance) of var(noisy - clean) = gain * clean + read, fitted over intensity bins."""
    clean, residual = clean.astype(np.float64).ravel(), (noisy.astype(np.float64) - clean).ravel()
    edges = np.quantile(clean, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, clean, side="right") - 1, 0, bins - 1)
    means = np.array([clean[index == b].mean() for b in range(bins) if np.sum(index == b) > 100])
    variances = np.array([residual[index == b].var() for b in range(bins) if np.sum(index == b) > 100])
    gain, read = np.polyfit(means, variances, 1)
    return max(float(gain), 1e-6), max(float(read), 0.0)


def make_stack(clean: np.ndarray, gain: float, read: float, planes: int, size: int, seed: int):
    """(noisy uint8 stack, clean float stack): shifted crops with independent Poisson-Gaussian noise."""
    rng = np.random.default_rng(seed)
    span = np.array(clean.shape) - size
    drift = rng.integers(-6, 7, size=(planes, 2)).cumsum(axis=0)  # up to 6 px a plane on each axis
    offsets = drift - drift.min(axis=0) + (span - np.ptp(drift, axis=0)) // 2
    if (offsets < 0).any() or (offsets > span).any():
        raise ValueError(f"{planes} planes of {size}x{size} drift out of the {clean.shape} image")
    cleans = np.stack([clean[y:y + size, x:x + size] for y, x in offsets]).astype(np.float64)
    photons = rng.poisson(cleans / gain) * gain
    noisy = np.clip(np.round(photons + rng.normal(0, np.sqrt(read), cleans.shape)), 0, 255).astype(np.uint8)
    return noisy, cleans, offsets


def run(stack: np.ndarray, seed: int, **params) -> tuple[np.ndarray, list[int], float]:
    start = time.perf_counter()
    job = iter_denoise(stack, axes="ZYX", seed=seed, device="cpu", **params)
    steps = [event.step for event in job if event.done]
    return job.result(), steps, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--image", default="fish", choices=["fish", "BPAE_B"])
    parser.add_argument("--planes", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save", type=Path, default=None, help="write the noisy stack here (TIFF)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    noisy_path, clean_path = image_paths(args.data, args.image)
    real_noisy, clean = tifffile.imread(noisy_path), tifffile.imread(clean_path)
    gain, read = fit_noise(real_noisy, clean)
    stack, cleans, offsets = make_stack(clean, gain, read, args.planes, args.size, args.seed)
    if args.save:
        tifffile.imwrite(args.save, stack)
    noisy_psnr = [psnr_ssim(c, n)[0] for c, n in zip(cleans, stack, strict=True)]
    print(f"# {args.image}: noise variance = {gain:.3f} * clean + {read:.2f} (fitted on the real pair); "
          f"{args.planes} crops of {args.size}x{args.size}, offsets {offsets[0].tolist()} .. {offsets[-1].tolist()}, "
          f"threads={torch.get_num_threads()}", flush=True)
    print(f"# noisy PSNR per plane: median {statistics.median(noisy_psnr):.2f} dB "
          f"(real image: {psnr_ssim(clean, real_noisy)[0]:.2f} dB)", flush=True)
    runs = {}
    for label, params in (("warm-started", {}), ("independent", {"warm_start": False})):
        result, steps, seconds = run(stack, args.seed, **params)
        psnrs = [psnr_ssim(c, r)[0] for c, r in zip(cleans, result, strict=True)]
        runs[label] = (psnrs, steps, seconds)
        print(f"{label}: median PSNR {statistics.median(psnrs):.2f} dB, {sum(steps)} steps, {seconds:.1f} s",
              flush=True)
    print("\n| plane | offset (y, x) | noisy PSNR | independent PSNR | warm PSNR | independent steps | warm steps |")
    print("|---|---|---|---|---|---|---|")
    for k in range(args.planes):
        print(f"| {k} | {tuple(offsets[k].tolist())} | {noisy_psnr[k]:.2f} | {runs['independent'][0][k]:.2f} | "
              f"{runs['warm-started'][0][k]:.2f} | {runs['independent'][1][k]} | {runs['warm-started'][1][k]} |")
    (ind_psnr, ind_steps, ind_s), (warm_psnr, warm_steps, warm_s) = runs["independent"], runs["warm-started"]
    print(f"\n| run | median PSNR | total steps | seconds |\n|---|---|---|---|\n"
          f"| independent | {statistics.median(ind_psnr):.2f} | {sum(ind_steps)} | {ind_s:.1f} |\n"
          f"| warm-started | {statistics.median(warm_psnr):.2f} | {sum(warm_steps)} | {warm_s:.1f} |\n"
          f"\nspeed-up {ind_s / warm_s:.2f}x, median PSNR difference "
          f"{statistics.median(warm_psnr) - statistics.median(ind_psnr):+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
