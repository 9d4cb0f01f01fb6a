"""The `fast` and `reference` presets measured side by side in one benchmark run (issue 3).

For every image, the presets run one after the other with the same seed and the
same torch thread count, so both see the same machine state. Each finished
(image, preset) row is appended to ``--csv`` at once; started again with the same
``--csv``, the run skips what is already there and goes on (the `reference`
preset needs about an hour per 512x512 image on a 2-core CPU, longer than one
sitting). Rows whose preset settings differ from the current code are not reused.

    python benchmarks/same_run.py --csv same_run.csv            # run or resume, then print
    python benchmarks/same_run.py --csv same_run.csv --report   # print only

The printout is a table per image, the medians of both presets over the images
measured by both, and the ratio of their median seconds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
import sys
from pathlib import Path

import tifffile
import torch
from skimage.io import imread

from napari_noise2fast.methods.noise2fast import PRESETS
from run_benchmark import CONFOCAL, DEFAULT_DATA, SET12, expand, image_paths, psnr_ssim, run_one

PRESET_ORDER = ("fast", "reference")
COLUMNS = ["image", "preset", "size", "noisy_psnr", "psnr", "ssim", "steps", "seconds", "stop", "threads",
           "seed", "settings"]


# Settings at these values do not change a single-plane run; leaving them out of the fingerprint keeps
# rows measured before such a setting existed (warm starts act only between the planes of a stack).
NEUTRAL = {"warm_start": None, "warm_patience": None, "crop": (None,)}  # None: any value


def fingerprint(preset: str) -> str:
    """Short hash of a preset's single-plane settings: rows measured under others are not reused."""
    settings = {k: v for k, v in PRESETS[preset].items()
                if not (k in NEUTRAL and (NEUTRAL[k] is None or v in NEUTRAL[k]))}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["settings"] == fingerprint(row["preset"])]


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def report(rows: list[dict], images: list[str]) -> None:
    by_key = {(r["image"], r["preset"]): r for r in rows}
    print("| image | size | noisy PSNR | reference PSNR | fast PSNR | difference | reference SSIM | fast SSIM "
          "| reference steps | fast steps | reference s | fast s | speed-up |")
    print("|" + "---|" * 13)
    both = []
    for name in images:
        ref, fast = by_key.get((name, "reference")), by_key.get((name, "fast"))
        if ref is None and fast is None:
            continue
        cells = [name, (ref or fast)["size"], (ref or fast)["noisy_psnr"]]
        if ref and fast:
            both.append(name)
            difference = float(fast["psnr"]) - float(ref["psnr"])
            speed_up = float(ref["seconds"]) / float(fast["seconds"])
            cells += [ref["psnr"], fast["psnr"], f"{difference:+.2f}", ref["ssim"], fast["ssim"], ref["steps"],
                      fast["steps"], ref["seconds"], fast["seconds"], f"{speed_up:.1f}x"]
        else:
            row = ref or fast
            ref_cells = [row["psnr"], "", ""] if ref else ["", row["psnr"], ""]
            cells += ref_cells + ([row["ssim"], ""] if ref else ["", row["ssim"]])
            cells += ([row["steps"], ""] if ref else ["", row["steps"]])
            cells += ([row["seconds"], "", ""] if ref else ["", row["seconds"], ""])
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if not both:
        return
    median = {
        (preset, column): statistics.median(float(by_key[(name, preset)][column]) for name in both)
        for preset in PRESET_ORDER for column in ("psnr", "seconds")
    }
    worst = min(float(by_key[(n, "fast")]["psnr"]) - float(by_key[(n, "reference")]["psnr"]) for n in both)
    print(f"\nOver the {len(both)} images measured by both presets ({', '.join(both)}):")
    print(f"- median PSNR: reference {median['reference', 'psnr']:.2f} dB, fast {median['fast', 'psnr']:.2f} dB "
          f"(difference {median['fast', 'psnr'] - median['reference', 'psnr']:+.2f} dB; worst image {worst:+.2f} dB)")
    print(f"- median seconds: reference {median['reference', 'seconds']:.1f}, fast {median['fast', 'seconds']:.1f} "
          f"(ratio {median['reference', 'seconds'] / median['fast', 'seconds']:.1f}x)")
    missing = [n for n in images if n not in both]
    if missing:
        print(f"- not yet measured by both: {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", default=",".join(SET12[:7] + CONFOCAL + SET12[7:]),
                        help="names, or set12/confocal/all (default: all, the 256x256 images first)")
    parser.add_argument("--csv", type=Path, required=True, help="rows so far; the run resumes from it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--report", action="store_true", help="print the table of the CSV and stop")
    args = parser.parse_args(argv)
    images = expand(args.images)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.report:
        print(f"# threads={torch.get_num_threads()} torch={torch.__version__} seed={args.seed}", flush=True)
        for name in images:
            noisy_path, clean_path = image_paths(args.data, name)
            noisy, clean = tifffile.imread(noisy_path), imread(clean_path)
            noisy_psnr, _ = psnr_ssim(clean, noisy)
            done = {(r["image"], r["preset"]) for r in read_rows(args.csv)}
            for preset in PRESET_ORDER:
                if (name, preset) in done:
                    continue
                options = argparse.Namespace(method="noise2fast", preset=preset, seed=args.seed, device="cpu",
                                             max_steps=None)
                result, steps, seconds, stop = run_one(noisy, options)
                psnr, ssim = psnr_ssim(clean, result)
                row = {"image": name, "preset": preset, "size": "x".join(map(str, noisy.shape)),
                       "noisy_psnr": f"{noisy_psnr:.2f}", "psnr": f"{psnr:.2f}", "ssim": f"{ssim:.3f}",
                       "steps": steps, "seconds": f"{seconds:.1f}", "stop": stop,
                       "threads": torch.get_num_threads(), "seed": args.seed, "settings": fingerprint(preset)}
                append_row(args.csv, row)
                print(f"{name} {preset}: {psnr:.2f} dB, {steps} steps, {seconds:.1f} s", flush=True)
    report(read_rows(args.csv), images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
