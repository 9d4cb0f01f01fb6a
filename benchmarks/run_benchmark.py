"""Run a denoising method on the shared benchmark data and print a table.

Images: Set12 sigma-25 noisy (float32, unclipped) against the clean PNGs, and
the two FMD confocal images against their clean versions; data range 255.

    python benchmarks/run_benchmark.py --preset reference --images 01,02,07,fish,BPAE_B
    python benchmarks/run_benchmark.py --images set12 --repeats 3 --csv results.csv

Rows are printed (and appended to ``--csv``) as each run finishes, so a long
background run keeps what it has measured.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.io import imread
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_noise2fast import iter_denoise

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SET12 = [f"{i:02d}" for i in range(1, 13)]
CONFOCAL = ["fish", "BPAE_B"]
COLUMNS = ["image", "run", "size", "noisy_psnr", "psnr", "ssim", "steps", "seconds", "stop"]


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: Linux's VmHWM, which starts afresh at exec. ``ru_maxrss`` does
    not: across a vfork and exec (Python's subprocess) it starts from the parent's peak, so a child of a big
    process (pytest after many tests) reports at least the parent's memory."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def image_paths(data: Path, name: str) -> tuple[Path, Path]:
    """(noisy, clean) files of one benchmark image."""
    if name in CONFOCAL:
        return data / "confocal" / "noisy" / f"{name}.tif", data / "confocal" / "clean" / f"{name}.tif"
    return data / "set12" / "noisy_sigma25" / f"{name}.tif", data / "set12" / "clean" / f"{name}.png"


def load_with_range(data: Path, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(noisy, clean, data range for PSNR) of a benchmark image (255) or of the bundled sample, ``"sample"``
    (the clean cell's own range, as side_by_side.py and the README score it)."""
    if name == "sample":
        from napari_noise2fast.samples import clean_cell, noisy_cell

        clean = clean_cell()
        return noisy_cell(), clean, float(np.ptp(clean))
    noisy_path, clean_path = image_paths(data, name)
    clean = imread(clean_path) if clean_path.suffix == ".png" else tifffile.imread(clean_path)
    return tifffile.imread(noisy_path), clean, 255.0


def expand(names: str) -> list[str]:
    groups = {"set12": SET12, "confocal": CONFOCAL, "all": SET12 + CONFOCAL}
    out: list[str] = []
    for name in names.split(","):
        out += groups.get(name, [name])
    return out


def append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path``, writing the header first if the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def psnr_ssim(clean: np.ndarray, result: np.ndarray) -> tuple[float, float]:
    clean, result = clean.astype(np.float64), result.astype(np.float64)
    psnr = peak_signal_noise_ratio(clean, result, data_range=255)
    ssim = structural_similarity(clean, result, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return psnr, ssim


def run_one(noisy: np.ndarray, args) -> tuple[np.ndarray, int, float, str]:
    """Denoise one image; return (result, steps, seconds, stop reason)."""
    params = {"preset": args.preset} if args.preset else {}
    start = time.perf_counter()
    job = iter_denoise(noisy, args.method, seed=args.seed, device=args.device, max_steps=args.max_steps,
                       **params)
    events = list(job)
    last = events[-1]
    result = job.result()
    return result, last.step, time.perf_counter() - start, last.stop_reason


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", default="01,02,07,fish,BPAE_B", help="names, or set12/confocal/all")
    parser.add_argument("--method", default="noise2fast")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="base seed; run k uses seed+k")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--csv", type=Path, default=None, help="append rows to this CSV file")
    parser.add_argument("--save-outputs", type=Path, default=None, help="write denoised TIFFs here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"# method={args.method} preset={args.preset} device={args.device} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}", flush=True)
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    rows = []
    for name in expand(args.images):
        noisy_path, clean_path = image_paths(args.data, name)
        noisy, clean = tifffile.imread(noisy_path), imread(clean_path)
        noisy_psnr, _ = psnr_ssim(clean, noisy)
        for run in range(args.repeats):
            seed = None if args.seed is None else args.seed + run
            args_run = argparse.Namespace(**{**vars(args), "seed": seed})
            result, steps, seconds, stop = run_one(noisy, args_run)
            psnr, ssim = psnr_ssim(clean, result)
            row = {"image": name, "run": run, "size": "x".join(map(str, noisy.shape)),
                   "noisy_psnr": f"{noisy_psnr:.2f}", "psnr": f"{psnr:.2f}", "ssim": f"{ssim:.3f}",
                   "steps": steps, "seconds": f"{seconds:.1f}", "stop": stop}
            rows.append(row)
            print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |", flush=True)
            if args.csv:
                new = not args.csv.exists()
                with args.csv.open("a", newline="") as handle:
                    writer = csv.DictWriter(handle, COLUMNS + ["method", "preset"])
                    if new:
                        writer.writeheader()
                    writer.writerow({**row, "method": args.method, "preset": args.preset})
            if args.save_outputs:
                args.save_outputs.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(args.save_outputs / f"{name}_run{run}.tif", result)
    if rows:
        print(f"\nmedian over {len(rows)} runs: PSNR {statistics.median(float(r['psnr']) for r in rows):.2f} dB, "
              f"SSIM {statistics.median(float(r['ssim']) for r in rows):.3f}, "
              f"steps {statistics.median(r['steps'] for r in rows):.0f}, "
              f"seconds {statistics.median(float(r['seconds']) for r in rows):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
