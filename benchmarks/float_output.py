"""Float32 output against the same output rounded to the input's integer dtype (issue 18, item 12).

    taskset -c 1 python benchmarks/float_output.py            # the sample's preview, fish, BPAE_B

Noise2Fast's `fast` preset, seed 0, one torch thread; prints a Markdown row per image: the PSNR/SSIM
of the output rounded to the input's dtype (what earlier versions returned) and of the float32
output, from one and the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_noise2fast import denoise, iter_denoise
from napari_noise2fast.comparison import quality
from napari_noise2fast.samples import clean_cell, noisy_cell

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def row(name: str, noisy: np.ndarray, clean: np.ndarray, output: np.ndarray, seconds: float) -> str:
    info = np.iinfo(noisy.dtype)
    rounded = np.clip(np.round(output), info.min, info.max).astype(noisy.dtype)
    (p, s), (pr, sr) = quality(clean, output), quality(clean, rounded)
    return f"| {name} | {noisy.dtype} | {pr:.2f} / {sr:.3f} | {p:.2f} / {s:.3f} | {p - pr:+.2f} | {seconds:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="fish,BPAE_B", help="FMD confocal images (uint8), comma-separated")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| image | input dtype | rounded PSNR / SSIM | float32 PSNR / SSIM | gain (dB) | seconds |")
    print("|---|---|---|---|---|---|")
    noisy, clean = noisy_cell(), clean_cell()
    started = time.perf_counter()
    preview = next(iter(iter_denoise(noisy, seed=0, device="cpu", max_steps=1))).output
    print(row("sample, Gaussian preview", noisy, clean, preview, time.perf_counter() - started), flush=True)
    for name in args.images.split(","):
        noisy = tifffile.imread(args.data / "confocal" / "noisy" / f"{name}.tif")
        clean = tifffile.imread(args.data / "confocal" / "clean" / f"{name}.tif")
        started = time.perf_counter()
        output = denoise(noisy, seed=0, device="cpu")
        print(row(name, noisy, clean, output, time.perf_counter() - started), flush=True)


if __name__ == "__main__":
    main()
