"""One model per recording against warm-started and independent planes (issue 21, item 1).

The time-lapse is built from real data as in ``stack.py``: ``--frames`` crops (default 200 of 256x256) of
the clean FMD confocal image along a random drift of up to 6 px per frame and axis, each frame with its
own Poisson-Gaussian noise fitted to the real noisy/clean pair of the same image, rounded and clipped to
uint8. Every mode runs in a fresh process (one torch thread by default) so that its peak RSS is its own:

- ``independent``: every frame from scratch (``stack="independent"``), on ``--sample`` frames spread
  evenly over the recording (a whole run would take hours), its seconds per frame and PSNR from those;
- ``warm``: frame after frame, each going on from the one before (``stack="warm"``), all frames;
- ``recording``: one model trained on a sample of frames, then every frame predicted (``stack="recording"``).

    taskset -c 1 python benchmarks/timelapse.py --frames 200 --size 256 --sample 8

Rows go to ``results/timelapse.csv`` as they finish; a rerun skips modes already there (same commit,
frames, size, image and seed). Prints the table and the ratios per frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from run_benchmark import DEFAULT_DATA, append_rows, image_paths, peak_rss_mb, psnr_ssim
from stack import fit_noise, make_stack

HERE = Path(__file__).parent
MODES = ("independent", "warm", "recording")
FIELDS = ["image", "frames", "size", "seed", "mode", "commit", "frames_run", "seconds", "seconds_per_frame", "steps",
          "median_psnr", "median_psnr_on_sample", "median_noisy_psnr", "peak_rss_mb", "precision"]


def build(args) -> tuple[np.ndarray, np.ndarray]:
    noisy_path, clean_path = image_paths(args.data, args.image)
    real_noisy, clean = tifffile.imread(noisy_path), tifffile.imread(clean_path)
    gain, read = fit_noise(real_noisy, clean)
    noisy, cleans, _ = make_stack(clean, gain, read, args.frames, args.size, args.seed)
    return noisy, cleans


def sample_frames(frames: int, count: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, frames - 1, min(count, frames)).round()})


def one(args) -> dict:
    """Run one mode in this process and return its row."""
    from napari_noise2fast import iter_denoise
    from napari_noise2fast.devices import precision_report

    torch.set_num_threads(args.threads)
    noisy, cleans = build(args)
    sample = sample_frames(args.frames, args.sample)
    frames = sample if args.mode == "independent" else list(range(args.frames))
    start = time.perf_counter()
    job = iter_denoise(noisy[frames], axes="TYX", seed=args.seed, device="cpu", stack=args.mode)
    steps = sum(event.step for event in job if event.done)
    seconds = time.perf_counter() - start
    result = job.result()
    psnrs = {frame: psnr_ssim(cleans[frame], result[k])[0] for k, frame in enumerate(frames)}
    return {"image": args.image, "frames": args.frames, "size": args.size, "seed": args.seed, "mode": args.mode,
            "commit": args.commit, "frames_run": len(frames), "seconds": f"{seconds:.1f}",
            "seconds_per_frame": f"{seconds / len(frames):.3f}", "steps": steps,
            "median_psnr": f"{statistics.median(psnrs.values()):.3f}",
            "median_psnr_on_sample": f"{statistics.median(psnrs[f] for f in sample):.3f}",
            "median_noisy_psnr": f"{statistics.median(psnr_ssim(cleans[f], noisy[f])[0] for f in frames):.3f}",
            "peak_rss_mb": f"{peak_rss_mb():.0f}",
            "precision": precision_report("cpu")["precision"]}


def commit() -> str:
    found = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--image", default="fish", choices=["fish", "BPAE_B"])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sample", type=int, default=8, help="frames the independent mode runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "timelapse.csv")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in this process
    parser.add_argument("--commit", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(one(args)))
        return 0
    args.commit = commit()
    key = (args.image, str(args.frames), str(args.size), str(args.seed), args.commit)
    done = {}
    if args.out.exists():
        import csv

        with args.out.open() as handle:
            for row in csv.DictReader(handle):
                if (row["image"], row["frames"], row["size"], row["seed"], row["commit"]) == key:
                    done[row["mode"]] = row
    for mode in args.modes.split(","):
        if mode in done:
            continue
        command = [sys.executable, __file__, "--mode", mode, "--commit", args.commit, "--image", args.image,
                   "--frames", str(args.frames), "--size", str(args.size), "--sample", str(args.sample),
                   "--seed", str(args.seed), "--threads", str(args.threads), "--data", str(args.data)]
        finished = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(finished.stdout.strip().splitlines()[-1])
        append_rows(args.out, FIELDS, [row])
        done[mode] = row
        print(row, flush=True)
    print(f"\n{args.frames} frames of {args.size}x{args.size} ({args.image}), seed {args.seed}, commit {args.commit}, "
          f"{args.threads} thread(s)\n")
    print("| mode | frames run | seconds | s per frame | steps | median PSNR | median PSNR on the sample | noisy PSNR "
          "| peak RSS MB |\n|---|---|---|---|---|---|---|---|---|")
    for mode in MODES:
        if mode in done:
            r = done[mode]
            print(f"| {mode} | {r['frames_run']} | {r['seconds']} | {r['seconds_per_frame']} | {r['steps']} | "
                  f"{r['median_psnr']} | {r['median_psnr_on_sample']} | {r['median_noisy_psnr']} | "
                  f"{r['peak_rss_mb']} |")
    if "recording" in done:
        per_frame = float(done["recording"]["seconds_per_frame"])
        for mode in ("independent", "warm"):
            if mode in done:
                gap = float(done["recording"]["median_psnr_on_sample"]) - float(done[mode]["median_psnr_on_sample"])
                print(f"\nrecording against {mode}: {float(done[mode]['seconds_per_frame']) / per_frame:.1f}x faster "
                      f"per frame, median PSNR on the sample frames {gap:+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
