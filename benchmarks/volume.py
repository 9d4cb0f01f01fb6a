"""Volumes: one model with the chequerboard pairs along Z too (``stack="volume"``) against one model with the
in-plane pairs only (``stack="recording"``) and every plane on its own (issue 21, item 5).

The volume is built from real data: the clean FMD confocal image (its central ``--size`` square) seen as a
thin, curved specimen through focus. A smooth random height map (Gaussian-filtered white noise, sigma a
sixth of the side, its values ranked so that depths spread evenly) puts each pixel's focus at a depth
between ``2 s`` and ``planes - 1 - 2 s`` planes, where
``s`` (``--axial``) is the axial spread of the microscope's point-spread function in planes: the axial
sampling. Plane ``z`` holds the clean image at the defocus ``d = (z - height) / s``, dimmed by
``exp(-d^2 / 2)`` and blurred laterally by a Gaussian of sigma ``0.75 |d|`` px. Each plane gets its own
Poisson-Gaussian noise whose gain and read variance are fitted to the real noisy/clean pair (as
``stack.py``), rounded and clipped to uint8. With ``s`` = 2 neighbouring planes differ little (fine axial
sampling); with ``s`` = 0.75 they differ as much as a confocal stack sampled at its axial resolution.

    git worktree add --detach ../volume c1ae345   # stack="volume" was removed after this measurement
    PYTHONPATH=../volume/src taskset -c 0 python benchmarks/volume.py --axial 2,0.75 --seeds 0,1,2 --threads 1

``stack="volume"`` gained nothing over one model of the in-plane pairs where neither run stopped early
(``benchmarks/RESULTS.md``), so it left the package at the commit after c1ae345; this script runs against a
checkout that still has it (``PYTHONPATH`` as above).

Every run is a fresh process. Rows go to ``results/volume.csv`` as they finish; a rerun skips rows already
there (same commit, mode, axial sampling, seed). Prints the table: median PSNR and SSIM over all planes
against the clean volume, seconds, steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata
from skimage.metrics import peak_signal_noise_ratio

from run_benchmark import DEFAULT_DATA, append_rows, image_paths, psnr_ssim
from stack import fit_noise

HERE = Path(__file__).parent
MODES = ("recording", "volume", "independent")
FIELDS = ["image", "planes", "size", "axial", "seed", "mode", "label", "commit", "seconds", "steps", "median_psnr",
          "median_ssim", "median_noisy_psnr", "volume_psnr", "noisy_volume_psnr", "precision"]


def make_volume(clean: np.ndarray, gain: float, read: float, planes: int, size: int, axial: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy uint8 volume, clean float volume), both (planes, size, size): see the module's docstring."""
    rng = np.random.default_rng(seed)
    top, left = (clean.shape[0] - size) // 2, (clean.shape[1] - size) // 2
    image = clean[top:top + size, left:left + size].astype(np.float64)
    field = gaussian_filter(rng.normal(size=(size, size)), size / 6)
    field = rankdata(field).reshape(field.shape) / field.size  # depths spread evenly over the stack
    height = 2 * axial + field * (planes - 1 - 4 * axial)
    blurs = np.linspace(0, 3, 13)  # |d| in steps of 0.25, blurred with sigma 0.75 |d|
    blurred = np.stack([gaussian_filter(image, 0.75 * d) if d else image for d in blurs])
    cleans = np.empty((planes, size, size))
    rows, cols = np.indices((size, size))
    for z in range(planes):
        defocus = (z - height) / axial
        level = np.clip(np.round(np.abs(defocus) / 0.25).astype(int), 0, len(blurs) - 1)
        cleans[z] = np.exp(-defocus**2 / 2) * blurred[level, rows, cols]
    photons = rng.poisson(cleans / gain) * gain
    noisy = np.clip(np.round(photons + rng.normal(0, np.sqrt(read), cleans.shape)), 0, 255).astype(np.uint8)
    return noisy, cleans


def build(args) -> tuple[np.ndarray, np.ndarray]:
    noisy_path, clean_path = image_paths(args.data, args.image)
    real_noisy, clean = tifffile.imread(noisy_path), tifffile.imread(clean_path)
    gain, read = fit_noise(real_noisy, clean)
    return make_volume(clean, gain, read, args.planes, args.size, args.axial, args.seed)


def one(args) -> dict:
    """Run one mode in this process and return its row."""
    from napari_noise2fast import iter_denoise
    from napari_noise2fast.devices import precision_report

    torch.set_num_threads(args.threads)
    noisy, cleans = build(args)
    start = time.perf_counter()
    job = iter_denoise(noisy, axes="ZYX", seed=args.seed, device="cpu", stack=args.mode, max_steps=args.max_steps,
                       **json.loads(args.params))
    steps = sum(event.step for event in job if event.done)
    seconds = time.perf_counter() - start
    result = job.result()
    scores = [psnr_ssim(cleans[z], result[z]) for z in range(args.planes)]
    return {"image": args.image, "planes": args.planes, "size": args.size, "axial": args.axial, "seed": args.seed,
            "mode": args.mode, "commit": args.commit, "seconds": f"{seconds:.1f}", "steps": steps,
            "median_psnr": f"{statistics.median(p for p, _ in scores):.3f}",
            "median_ssim": f"{statistics.median(s for _, s in scores):.4f}",
            "median_noisy_psnr":
                f"{statistics.median(psnr_ssim(cleans[z], noisy[z])[0] for z in range(args.planes)):.3f}",
            "volume_psnr": f"{peak_signal_noise_ratio(cleans, result.astype(np.float64), data_range=255):.3f}",
            "noisy_volume_psnr": f"{peak_signal_noise_ratio(cleans, noisy.astype(np.float64), data_range=255):.3f}",
            "precision": precision_report("cpu")["precision"]}


def commit() -> str:
    found = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--image", default="fish", choices=["fish", "BPAE_B"])
    parser.add_argument("--planes", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--axial", default="2,0.75", help="axial spreads of the PSF in planes, comma-separated")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default="recording,volume")
    parser.add_argument("--params", default="{}", help="JSON of Noise2Fast settings for every run")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--label", default="defaults", help="the name of these settings in the table")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "volume.csv")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one run, in this process
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--commit", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        args.axial = float(args.axial)
        print(json.dumps(one(args)))
        return 0
    args.commit = commit()
    rows = list(csv.DictReader(args.out.open())) if args.out.exists() else []
    if rows and list(rows[0]) != FIELDS:  # columns added since: rewrite, the old rows with blanks there
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    done = {(r["commit"], r["image"], r["planes"], r["size"], float(r["axial"]), r["seed"], r["mode"],
             r.get("label") or "defaults") for r in rows}
    for axial in (float(a) for a in args.axial.split(",")):
        for seed in args.seeds.split(","):
            for mode in args.modes.split(","):
                key = (args.commit, args.image, str(args.planes), str(args.size), axial, seed, mode, args.label)
                if key in done:
                    continue
                command = [sys.executable, __file__, "--mode", mode, "--commit", args.commit, "--image", args.image,
                           "--planes", str(args.planes), "--size", str(args.size), "--axial", str(axial),
                           "--seed", seed, "--threads", str(args.threads), "--data", str(args.data),
                           "--params", args.params, "--label", args.label]
                if args.max_steps:
                    command += ["--max-steps", str(args.max_steps)]
                finished = subprocess.run(command, capture_output=True, text=True)
                if finished.returncode:
                    raise SystemExit(finished.stderr[-3000:])
                row = {**json.loads(finished.stdout.strip().splitlines()[-1]), "label": args.label}
                append_rows(args.out, FIELDS, [row])
                rows.append({k: str(v) for k, v in row.items()})
                print(row, flush=True)
    print(f"\n{args.planes} planes of {args.size}x{args.size} ({args.image}), commit {args.commit}, "
          f"{args.threads} thread(s)\n")
    print("| axial spread (planes) | mode | seeds | median PSNR | median SSIM | noisy PSNR | volume PSNR "
          "| noisy volume PSNR | median s | median steps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list] = {}
    for r in rows:
        if r["commit"] == args.commit and r["image"] == args.image and r["planes"] == str(args.planes):
            groups.setdefault((float(r["axial"]), f'{r["mode"]} ({r.get("label") or "defaults"})'), []).append(r)
    for (axial, mode), mine in sorted(groups.items(), key=lambda item: (-item[0][0], item[0][1])):
        def median(field, rows=mine):
            return statistics.median(float(r[field]) for r in rows)
        print(f"| {axial:g} | {mode} | {len(mine)} | {median('median_psnr'):.2f} | {median('median_ssim'):.4f} | "
              f"{median('median_noisy_psnr'):.2f} | {median('volume_psnr'):.2f} | {median('noisy_volume_psnr'):.2f} | "
              f"{median('seconds'):.1f} | {median('steps'):.0f} |")
    for axial, label in sorted({(a, name.split(" (", 1)[1]) for a, name in groups}, reverse=True):
        base = {r["seed"]: float(r["median_psnr"]) for r in groups.get((axial, f"recording ({label}"), [])}
        gains = [float(r["median_psnr"]) - base[r["seed"]] for r in groups.get((axial, f"volume ({label}"), [])
                 if r["seed"] in base]
        if gains:
            print(f"\naxial spread {axial:g}, {label[:-1]}: volume minus recording, per seed: "
                  + ", ".join(f"{g:+.2f}" for g in gains) + f" dB; median {statistics.median(gains):+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
