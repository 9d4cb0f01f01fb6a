"""How soon the engine yields a first useful output: time and PSNR of the first event with an image.

    python benchmarks/first_output.py                      # Set12 08-12 (512x512), 3 repeats
    python benchmarks/first_output.py --images all --repeats 5

The clock starts before ``iter_denoise`` is called (so input checks, normalisation
and the preview's calibration all count) and stops when the first event carrying
an output arrives. The clean image is only used to score it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import tifffile
import torch
from skimage.io import imread

from napari_noise2fast import iter_denoise
from run_benchmark import DEFAULT_DATA, expand, image_paths, psnr_ssim


def first_output(noisy, device: str):
    started = time.perf_counter()
    job = iter_denoise(noisy, seed=0, device=device)
    event = next(event for event in job if event.output is not None)
    seconds = time.perf_counter() - started
    job.close()
    return event, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="08,09,10,11,12")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| image | size | noisy PSNR | first output PSNR | gain dB | stage | step | seconds (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in expand(args.images):
        noisy_path, clean_path = image_paths(Path(args.data), name)
        noisy, clean = tifffile.imread(noisy_path), imread(clean_path)
        times = []
        for _ in range(args.repeats):
            event, seconds = first_output(noisy, args.device)
            times.append(seconds)
        noisy_psnr, _ = psnr_ssim(clean, noisy)
        psnr, _ = psnr_ssim(clean, event.output)
        print(f"| {name} | {noisy.shape[0]}x{noisy.shape[1]} | {noisy_psnr:.2f} | {psnr:.2f} | "
              f"{psnr - noisy_psnr:+.2f} | {event.stage} | {event.step} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
