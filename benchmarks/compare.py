"""Every method on the shared benchmark data, at its default budget or at equal time (issue 5).

    python benchmarks/compare.py --images 01,02,07,fish,BPAE_B --csv compare.csv
    python benchmarks/compare.py --images 01 --equal-time --csv compare_equal.csv
    python benchmarks/compare.py --summary --csv compare_equal.csv   # medians per method
    python benchmarks/compare.py --images fish,BPAE_B,pg-fish,pg-BPAE_B --methods pn2v,noise2void,bm3d,noise2fast

``pg-fish`` and ``pg-BPAE_B`` are the clean confocal images with Poisson-Gaussian noise fitted to their real
noisy counterparts, ``pgo-fish`` and ``pgo-BPAE_B`` the same on a camera's dark offset (see :func:`load`).

PSNR and SSIM as in ../shared/BENCHMARKS.md (data range 255). The methods run one
after another on each image through :func:`napari_noise2fast.iter_compare`, so all
share the machine state. Rows are printed and appended to ``--csv`` as each image
finishes; a run given the same ``--csv`` skips the images it already holds for
this mode (the full tables take many hours).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.io import imread

from napari_noise2fast import iter_compare
from napari_noise2fast.methods import METHODS
from run_benchmark import DEFAULT_DATA, expand, image_paths, psnr_ssim

OFFSET = 100.0  # the dark offset of the ``pgo-`` sets, as a camera's
COLUMNS = ["image", "mode", "method", "noisy_psnr", "psnr", "ssim", "steps", "seconds", "val_psnr", "stop"]


def finished_images(path: Path | None, mode: str, methods: list[str]) -> set[str]:
    """Images whose rows for every one of ``methods`` in ``mode`` are already in the CSV (a resumed run skips them)."""
    if path is None or not path.exists():
        return set()
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["mode"] == mode]
    return {image for image in {row["image"] for row in rows}
            if set(methods) <= {row["method"] for row in rows if row["image"] == image}}


def summarise(path: Path) -> None:
    """Per mode and method, over the images measured: median PSNR, SSIM, seconds, and PSNR against Noise2Fast."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    print("| mode | method | images | median PSNR | median SSIM | median seconds | median PSNR - Noise2Fast |")
    print("|---|---|---|---|---|---|---|")
    for mode in dict.fromkeys(row["mode"] for row in rows):
        here = [row for row in rows if row["mode"] == mode]
        n2f = {row["image"]: float(row["psnr"]) for row in here if row["method"] == "noise2fast"}
        for method in dict.fromkeys(row["method"] for row in here):
            mine = [row for row in here if row["method"] == method]
            gaps = [float(row["psnr"]) - n2f[row["image"]] for row in mine if row["image"] in n2f]
            gap = f"{statistics.median(gaps):+.2f}" if gaps else ""
            print(f"| {mode} | {method} | {len(mine)} | {statistics.median(float(r['psnr']) for r in mine):.2f} | "
                  f"{statistics.median(float(r['ssim']) for r in mine):.3f} | "
                  f"{statistics.median(float(r['seconds']) for r in mine):.1f} | {gap} |")


def load(data: Path, name: str):
    """(noisy, clean) of a benchmark image; ``pg-<confocal image>``: its clean image with Poisson-Gaussian noise
    whose gain and read variance are fitted to its real noisy/clean pair (``stack.fit_noise``), rounded and
    clipped to uint8 like the real one, noise drawn with seed 0 (independent pixels, no bias: what the
    noise-model methods assume). ``pgo-<confocal image>``: the same photon noise as a camera records it, on a
    dark offset of :data:`OFFSET` with read noise of at least 2 (the fitted read variance, or 4 where it is
    less), uint16 and not clipped; its clean image is shifted by the offset too (PSNR unchanged by the shift)."""
    if name.startswith(("pg-", "pgo-")):
        from stack import fit_noise

        offset = OFFSET if name.startswith("pgo-") else 0.0
        noisy_path, clean_path = image_paths(data, name.split("-", 1)[1])
        real, clean = tifffile.imread(noisy_path), tifffile.imread(clean_path)
        gain, read = fit_noise(real, clean)
        rng = np.random.default_rng(0)
        photons = rng.poisson(clean.astype(np.float64) / gain) * gain
        if offset:  # a camera's: on a dark offset, with some read noise, not clipped
            noisy = np.round(photons + offset + rng.normal(0, np.sqrt(max(read, 4.0)), clean.shape))
            return noisy.astype(np.uint16), clean.astype(np.float64) + offset
        noisy = np.clip(np.round(photons + rng.normal(0, np.sqrt(read), clean.shape)), 0, 255).astype(np.uint8)
        return noisy, clean
    noisy_path, clean_path = image_paths(data, name)
    return tifffile.imread(noisy_path), imread(clean_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", default="01,02,07,fish,BPAE_B")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--equal-time", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--summary", action="store_true", help="print the medians of the rows in --csv and stop")
    args = parser.parse_args(argv)
    if args.summary:
        summarise(args.csv)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "equal time" if args.equal_time else "default budget"
    print(f"# {mode}, threads={torch.get_num_threads()}, seed={args.seed}", flush=True)
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    done = finished_images(args.csv, mode, args.methods.split(","))
    for name in expand(args.images):
        if name in done:
            print(f"# {name}: every method already in {args.csv}, skipped", flush=True)
            continue
        noisy, clean = load(args.data, name)
        noisy_psnr, _ = psnr_ssim(clean, noisy)
        runs = iter_compare(noisy, args.methods.split(","), equal_time=args.equal_time, seed=args.seed, device="cpu")
        try:
            while True:
                next(runs)
        except StopIteration as finished:
            comparison = finished.value
        for row in comparison.rows:
            psnr, ssim = psnr_ssim(clean, comparison.outputs[row.method])
            record = {"image": name, "mode": mode, "method": row.method, "noisy_psnr": f"{noisy_psnr:.2f}",
                      "psnr": f"{psnr:.2f}", "ssim": f"{ssim:.3f}", "steps": row.steps,
                      "seconds": f"{row.seconds:.1f}", "val_psnr": f"{row.val_psnr:.2f}", "stop": row.stop}
            print("| " + " | ".join(str(record[c]) for c in COLUMNS) + " |", flush=True)
            if args.csv:
                new = not args.csv.exists()
                with args.csv.open("a", newline="") as handle:
                    writer = csv.DictWriter(handle, COLUMNS)
                    if new:
                        writer.writeheader()
                    writer.writerow(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
