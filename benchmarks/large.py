"""Large planes at bounded cost (issue 19): seconds, peak memory, steps and PSNR against the plane's size.

Planes with ground truth are mosaics of a clean FMD confocal image (512x512): its eight flips and
transposes laid out so that no two neighbouring tiles are the same, with Poisson-Gaussian noise whose two
parameters are fitted from the real noisy/clean pair (as ``stack.py`` does), rounded and stored as uint16
like a camera's plane. Set12 mosaics (``--image 08`` ...) get Gaussian noise of sigma 25, unclipped float32,
as the Set12 protocol. Every run is a fresh subprocess, so that its peak resident memory
(``run_benchmark.peak_rss_mb``, VmHWM: input, output and torch included) is its own.
``max_gap_s`` is the longest wait between two events while training (the preview first, then the steps),
``final_s`` the wait for the last event (the final prediction of the whole plane in tiles).

    taskset -c 1 python benchmarks/large.py --sizes 512,1024,2048,4096,8192 --threads 1
    taskset -c 1 python benchmarks/large.py --compare 1024 --images fish,BPAE_B,08,09,10,11,12 --seeds 0,1,2

    taskset -c 1 python benchmarks/large.py --sizes 2175 --images nuclei-A,nuclei-N --save benchmarks/out/nuclei

The first form prints the curve (default preset); the third the real nuclei planes (``nuclei_plane``: no
clean image, so no PSNR), saving the outputs for ``nuclei_figure.py``; the second the bounded-vs-whole-plane
table at one size
(``whole``: ``budget=0``, every step on a whole pair, validation on the whole plane; ``--budgets``
adds bounded runs at those budgets instead of the default's). ``--max-steps``
caps every run (then seconds are not a whole run's). Rows go to ``benchmarks/results/large.csv`` as they
finish; a rerun skips rows already there.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from skimage.io import imread

from run_benchmark import DEFAULT_DATA, image_paths

FIELDS = ["image", "size", "mode", "seed", "pixels", "seconds", "first_event_s", "max_gap_s", "steps",
          "peak_rss_mb", "psnr", "noisy_psnr", "bounded", "max_steps", "cpu", "final_s", "precision"]


def dihedral(tile: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the eight flips and transposes of a square tile."""
    tile = np.rot90(tile, k % 4)
    return tile.T if k // 4 % 2 else tile


def mosaic(clean: np.ndarray, size: int) -> np.ndarray:
    """A size x size plane of the clean tile's flips and transposes, neighbours never the same."""
    side = clean.shape[0]
    count = -(-size // side)
    rows = [np.concatenate([dihedral(clean, (3 * r + c) % 8) for c in range(count)], axis=1) for r in range(count)]
    return np.concatenate(rows, axis=0)[:size, :size].astype(np.float64)


NUCLEI_TILE = 725  # the nuclei tiles' side; the top-left 3x3 of each image stitch into 2175x2175


def nuclei_plane(data: Path, image: str) -> np.ndarray:
    """The real noisy nuclei image ``image`` ("A" or "N"): its top-left 3x3 tiles stitched, 2175x2175."""
    folder = data / "nuclei" / "noisy"
    return np.block([[tifffile.imread(folder / f"{image}_{row}_{col}.tif") for col in range(3)] for row in range(3)])


def make_plane(data: Path, name: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(noisy plane, clean plane) of a mosaic of ``name`` at ``size``; for ``nuclei-A`` and ``nuclei-N`` the real
    noisy stitched plane's top-left ``size`` x ``size`` and no clean plane."""
    from stack import fit_noise

    if name.startswith("nuclei-"):
        return nuclei_plane(data, name.removeprefix("nuclei-"))[:size, :size], None

    noisy_path, clean_path = image_paths(data, name)
    clean_tile = imread(clean_path) if clean_path.suffix == ".png" else tifffile.imread(clean_path)
    clean = mosaic(clean_tile, size)
    rng = np.random.default_rng(seed)
    if noisy_path.parent.parent.name == "confocal":
        gain, read = fit_noise(tifffile.imread(noisy_path), clean_tile)
        noisy = rng.poisson(clean / gain) * gain + rng.normal(0, np.sqrt(read), clean.shape)
        return np.clip(np.round(noisy), 0, 65535).astype(np.uint16), clean
    return (clean + rng.normal(0, 25, clean.shape)).astype(np.float32), clean


ONE = """
import json, sys, time
sys.path.insert(0, {here!r})
import numpy as np, torch
torch.set_num_threads({threads})
from large import make_plane
from run_benchmark import peak_rss_mb
from pathlib import Path
from napari_noise2fast import iter_denoise
from skimage.metrics import peak_signal_noise_ratio
noisy, clean = make_plane(Path({data!r}), {image!r}, {size}, {seed})
params = json.loads({params!r})
start = time.perf_counter()
job = iter_denoise(noisy, seed={seed}, device="cpu", max_steps={max_steps}, **params)
times, bounded, step, precision = [], None, 0, ""
for event in job:
    times.append(time.perf_counter() - start)
    step = event.step
    if bounded is None and job.current is not None and job.current.model is not None:
        bounded = getattr(job.current.model, "bounded", None)
        precision = str(getattr(job.current.model, "compute_dtype", "")).replace("torch.", "")
out = job.result()
seconds = time.perf_counter() - start
if {save!r}:
    import tifffile
    Path({save!r}).mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(Path({save!r}) / "{image}_{size}_seed{seed}.tif", out)
gaps = np.diff([0.0] + times)
rng = 255.0
print(json.dumps({{"seconds": seconds, "first_event_s": times[0], "max_gap_s": float(gaps[1:-1].max()) if len(gaps) > 2
                  else 0.0, "final_s": float(gaps[-1]), "steps": step,
                  "precision": precision, "peak_rss_mb": peak_rss_mb(),
                  "psnr": None if clean is None else peak_signal_noise_ratio(clean, out.astype(np.float64),
                                                                             data_range=rng),
                  "noisy_psnr": None if clean is None else peak_signal_noise_ratio(clean, noisy.astype(np.float64),
                                                                                   data_range=rng),
                  "bounded": bounded}}))
"""


def cpu_name() -> str:
    """The CPU's model name and its widest vector feature (the model name alone does not tell apart
    the machines these benchmarks ran on)."""
    name, flags = "unknown", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "unknown":
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    widest = next((label for flag, label in [("amx_tile", "AMX"), ("avx512_bf16", "AVX512-BF16"),
                                             ("avx512f", "AVX512"), ("avx2", "AVX2")] if flag in flags), "")
    return f"{name} ({widest})" if widest else name


def decibels(value) -> str:
    return "" if value is None else f"{value:.2f}"


def run_one(args, image: str, size: int, seed: int, params: dict) -> dict:
    script = ONE.format(here=str(Path(__file__).parent), threads=args.threads, data=str(args.data), image=image,
                        size=size, seed=seed, params=json.dumps(params), max_steps=args.max_steps,
                        save=str(args.save) if args.save else "")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{image} {size}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024,2048,4096,8192")
    parser.add_argument("--images", default="fish")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--compare", type=int, default=None, help="the bounded-vs-whole table at this size")
    parser.add_argument("--budgets", default=None,
                        help="with --compare: bounded runs at each of these budgets (pixels per step) too")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--params", default="{}", help="JSON of Noise2Fast settings for every run")
    parser.add_argument("--label", default="default", help="the mode's name for the runs with --params")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "large.csv")
    parser.add_argument("--save", type=Path, default=None,
                        help="write each run's output here (<image>_<size>_seed<s>.tif)")
    args = parser.parse_args()
    params = json.loads(args.params)
    done = set()
    cpu = cpu_name()
    cap = "" if args.max_steps is None else str(args.max_steps)  # as the CSV holds it
    if args.out.exists():
        with args.out.open() as handle:
            old = list(csv.DictReader(handle))
        if old and list(old[0]) != FIELDS:  # columns added since: rewrite, the old rows with blanks there
            with args.out.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, FIELDS)
                writer.writeheader()
                writer.writerows(old)
        done = {(r["image"], r["size"], r["mode"], r["seed"], r["max_steps"] or "", r["cpu"]) for r in old}
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as handle:
            csv.writer(handle).writerow(FIELDS)
    sizes = [args.compare] if args.compare else [int(s) for s in args.sizes.split(",")]
    modes = {} if args.compare and args.budgets else {args.label: params}
    if args.compare:
        modes["whole"] = {**params, "budget": 0}
        for budget in (args.budgets.split(",") if args.budgets else []):
            modes[f"budget {budget}"] = {**params, "budget": int(budget)}
    for image in args.images.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for size in sizes:
                for mode, settings in modes.items():
                    key = (image, str(size), mode, str(seed), cap, cpu)
                    if key in done:
                        continue
                    report = run_one(args, image, size, seed, settings)
                    row = [image, size, mode, seed, size * size, f"{report['seconds']:.1f}",
                           f"{report['first_event_s']:.2f}", f"{report['max_gap_s']:.2f}", report["steps"],
                           f"{report['peak_rss_mb']:.0f}", decibels(report["psnr"]), decibels(report["noisy_psnr"]),
                           report["bounded"], args.max_steps, cpu, f"{report['final_s']:.2f}",
                           report["precision"]]
                    print(*row, flush=True)
                    with args.out.open("a", newline="") as handle:
                        csv.writer(handle).writerow(row)
    with args.out.open() as handle:
        rows = list(csv.DictReader(handle))
    print("\n| CPU | image | size | mode | seeds | max steps | median s | first event s | max gap s | steps | "
          "peak RSS MB | PSNR | noisy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["cpu"], r["image"], int(r["size"]), r["mode"], r["max_steps"]), []).append(r)
    for (machine, image, size, mode, steps_cap), mine in sorted(groups.items()):
        def median(field, rows=mine):
            values = [float(r[field]) for r in rows if r[field] not in ("", None)]
            return statistics.median(values) if values else float("nan")
        print(f"| {machine} | {image} | {size} | {mode} | {len(mine)} | {steps_cap} | {median('seconds'):.1f} | "
              f"{median('first_event_s'):.2f} | {median('max_gap_s'):.2f} | {median('steps'):.0f} | "
              f"{median('peak_rss_mb'):.0f} | {median('psnr'):.2f} | {median('noisy_psnr'):.2f} |")
    if args.compare:
        print_gaps(rows, args.compare, cap, cpu)


def print_gaps(rows: list[dict], size: int, cap, cpu: str) -> None:
    """The quality bar at one size: each bounded mode's PSNR minus the whole-plane run's on the same image and
    seed (this CPU's rows), the median over seeds per image, then the median and worst over images."""
    mine = [r for r in rows if int(r["size"]) == size and (r["max_steps"] or "") == cap and r["cpu"] == cpu]
    whole = {(r["image"], r["seed"]): float(r["psnr"]) for r in mine if r["mode"] == "whole"}
    for mode in sorted({r["mode"] for r in mine} - {"whole"}):
        gaps: dict[str, list[float]] = {}
        for r in mine:
            if r["mode"] == mode and (r["image"], r["seed"]) in whole:
                gaps.setdefault(r["image"], []).append(float(r["psnr"]) - whole[r["image"], r["seed"]])
        if not gaps:
            continue
        per_image = {image: statistics.median(values) for image, values in gaps.items()}
        print(f"\n{mode} minus whole at {size}x{size} (dB, median over seeds): "
              + ", ".join(f"{image} {gap:+.2f} ({len(gaps[image])})" for image, gap in per_image.items())
              + f"; median {statistics.median(per_image.values()):+.2f}, worst {min(per_image.values()):+.2f}")


if __name__ == "__main__":
    main()
