"""Noise2Fast behind the blind variance-stabilising transform that the ``bm3d`` method fits (issue 25, item 3).

    python benchmarks/vst.py --images fish,BPAE_B,pg-fish,pg-BPAE_B --csv benchmarks/results/vst.csv

For each image, in one run: Noise2Fast at its defaults on the noisy image, and Noise2Fast on the image
after the generalised Anscombe transform with gain and read variance fitted blindly from the image's 7x7
local statistics (``bm3d_vst.fit_noise``, as the ``bm3d`` method fits them), its output mapped back by the
algebraic inverse. Images as ``compare.py`` loads them (``pg-<image>``: Poisson-Gaussian noise fitted to
the real pair). Rows are appended to ``--csv`` as they land; a rerun skips the rows it holds.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

from compare import load
from napari_noise2fast import denoise
from napari_noise2fast.methods.bm3d_vst import anscombe, fit_noise, inverse_anscombe
from run_benchmark import DEFAULT_DATA, append_rows, expand, psnr_ssim

COLUMNS = ["image", "mode", "seed", "noisy_psnr", "psnr", "ssim", "seconds", "gain", "read"]


def run(noisy: np.ndarray, vst: bool, seed: int) -> tuple[np.ndarray, float, float]:
    """(output, gain, read): Noise2Fast's output, behind the transform with ``vst``."""
    if not vst:
        return denoise(noisy, "noise2fast", seed=seed, device="cpu", preview=False), float("nan"), float("nan")
    image = noisy.astype(np.float64)
    gain, read = fit_noise(image)
    stabilised = anscombe(image, gain, read).astype(np.float32)
    output = denoise(stabilised, "noise2fast", seed=seed, device="cpu", preview=False)
    return inverse_anscombe(output.astype(np.float64), gain, read), gain, read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", default="fish,BPAE_B,pg-fish,pg-BPAE_B")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    done = set()
    if args.csv and args.csv.exists():
        with args.csv.open(newline="") as handle:
            done = {(row["image"], row["mode"], row["seed"]) for row in csv.DictReader(handle)}
    print(f"# Noise2Fast with and without the VST, threads={torch.get_num_threads()}", flush=True)
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    for name in expand(args.images):
        noisy, clean = load(args.data, name)
        noisy_psnr, _ = psnr_ssim(clean, noisy)
        for seed in (int(s) for s in args.seeds.split(",")):
            for vst in (False, True):
                mode = "vst" if vst else "plain"
                if (name, mode, str(seed)) in done:
                    continue
                started = time.perf_counter()
                output, gain, read = run(noisy, vst, seed)
                seconds = time.perf_counter() - started
                psnr, ssim = psnr_ssim(clean, np.clip(output, 0, 255))
                record = {"image": name, "mode": mode, "seed": seed, "noisy_psnr": f"{noisy_psnr:.2f}",
                          "psnr": f"{psnr:.2f}", "ssim": f"{ssim:.3f}", "seconds": f"{seconds:.1f}",
                          "gain": f"{gain:.4g}", "read": f"{read:.4g}"}
                print("| " + " | ".join(str(record[c]) for c in COLUMNS) + " |", flush=True)
                if args.csv:
                    append_rows(args.csv, COLUMNS, [record])
    return 0


if __name__ == "__main__":
    sys.exit(main())
