"""The preview's total-variation refinement against the calibrated Gaussian, per image: true PSNR of each
and the gain the J-invariant loss (what decides) predicts.

    python benchmarks/preview_refinement.py            # Set12, the confocal images and the sample
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast.preview import calibrated_gaussian, refined_preview
from run_benchmark import DEFAULT_DATA, expand, load_with_range


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="set12,confocal,sample")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    names = [n for group in args.images.split(",") for n in (["sample"] if group == "sample" else expand(group))]
    print("| image | Gaussian PSNR | total variation PSNR | true gain dB | J-invariant gain dB |")
    print("|---|---|---|---|---|")
    for name in names:
        noisy, clean, span = load_with_range(args.data, name)
        low, high = float(noisy.min()), float(noisy.max())
        plane = ((noisy - low) / (high - low)).astype(np.float32)
        gaussian, _, sigma = calibrated_gaussian(plane)
        refined = refined_preview(plane, sigma)

        def psnr(image, clean=clean, low=low, high=high, span=span):
            return peak_signal_noise_ratio(clean.astype(np.float64), image.astype(np.float64) * (high - low) + low,
                                           data_range=span)

        if refined is None:
            print(f"| {name} | {psnr(gaussian):.2f} | not chosen | | |")
        else:
            print(f"| {name} | {psnr(gaussian):.2f} | {psnr(refined[0]):.2f} | "
                  f"{psnr(refined[0]) - psnr(gaussian):+.2f} | {refined[1]:+.2f} |")


if __name__ == "__main__":
    main()
