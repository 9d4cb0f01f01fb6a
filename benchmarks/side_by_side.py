"""Today's defaults against an older checkout and against ``reference``, in one run (issue 20, item 4).

Every (image, variant) is a fresh subprocess on one torch thread, run one after the other, so all see
the same machine; the variants:

- ``new``: this checkout's defaults (the ``fast`` preset, ``precision="auto"``);
- ``new-float32``: the same with ``precision="float32"``;
- ``old``: the ``fast`` preset of another checkout (``--old``: a worktree of an older main; its ``src`` is
  put first on ``PYTHONPATH``);
- ``reference``: this checkout's ``reference`` preset (the published code's settings).

Images: ``sample`` (the bundled noisy cell, PSNR against its clean version with the CLI's data range)
and the names of ``../shared/data`` (Set12 sigma 25, FMD), PSNR/SSIM as ``run_benchmark.py``.

    git worktree add --detach ../old b0abf50
    taskset -c 1 python benchmarks/side_by_side.py --old ../old --images sample --variants new,new-float32,old
    taskset -c 1 python benchmarks/side_by_side.py --old ../old --images set12,confocal

``--report a.csv,b.csv --variants new,old,reference --images set12,confocal`` runs nothing: it pairs the
rows of those files (this CPU's, or ``--cpu``'s) per image, ``new`` against each other variant, with the
medians over the images that have both and the commits of the rows paired.

``--repeats 3`` runs every (image, variant) three times, all variants of one repeat before the next (the
medians then are over the repeats, each repeat shown as ``image#k``). ``--seeds 0,1,2`` runs each image
with each seed (seed k > 0 shown as ``image@k``), all variants of one seed before the next.

``old-float32`` is the older checkout with ``precision="float32"``: what its ``auto`` ran on CPUs without
AMX tiles (the CPU issue 20 was filed on), for its PSNR on a CPU where its ``auto`` picks bfloat16; its
seconds are this CPU's float32, not what the older main takes here.

Rows go to ``benchmarks/results/side_by_side.csv`` as each run ends (with the commit of the code that ran
it and the CPU); a rerun skips rows already there. At the end it prints the report of ``--report`` on
this run's rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from large import cpu_name
from run_benchmark import DEFAULT_DATA, append_rows, expand

FIELDS = ["image", "variant", "commit", "psnr", "ssim", "steps", "seconds", "precision", "cpu"]
HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
import numpy as np, torch
torch.set_num_threads(1)
from napari_noise2fast import iter_denoise
image, preset, precision, seed = {image!r}, {preset!r}, {precision!r}, {seed!r}
if image == "sample":
    from skimage.metrics import peak_signal_noise_ratio
    from napari_noise2fast.samples import clean_cell, noisy_cell
    noisy, clean = noisy_cell(), clean_cell()
else:
    from stopping import load
    from run_benchmark import psnr_ssim
    noisy, clean = load(__import__("pathlib").Path({data!r}), image)
kwargs = {{"preset": preset}} if precision is None else {{"preset": preset, "precision": precision}}
start = time.perf_counter()
job = iter_denoise(noisy, seed=seed, device="cpu", **kwargs)
plane, dtype = None, ""
for _ in job:
    plane = job.current or plane
    if plane is not None and getattr(plane, "model", None) is not None:
        dtype = str(getattr(plane.model, "compute_dtype", "")).replace("torch.", "")
result = job.result()
seconds = time.perf_counter() - start
if image == "sample":
    span = clean.max() - clean.min()
    psnr, ssim = peak_signal_noise_ratio(clean, result.astype(np.float64), data_range=span), float("nan")
else:
    psnr, ssim = psnr_ssim(clean, result)
print(json.dumps({{"psnr": f"{{psnr:.3f}}", "ssim": f"{{ssim:.4f}}", "steps": plane.step,
                  "seconds": f"{{seconds:.1f}}", "precision": dtype}}))
"""

VARIANTS = {"new": ("fast", None, False), "new-float32": ("fast", "float32", False), "old": ("fast", None, True),
            "old-float32": ("fast", "float32", True), "reference": ("reference", None, False)}


def commit(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def run_one(args, image: str, variant: str) -> dict:
    preset, precision, old = VARIANTS[variant]
    tree = args.old if old else HERE.parent
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    name, _, seed = image.partition("#")[0].partition("@")
    code = CHILD.format(bench=str(HERE), image=name, preset=preset, precision=precision, seed=int(seed or 0),
                        data=str(args.data))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=HERE)
    if done.returncode:
        raise SystemExit(f"{image} {variant} failed:\n{done.stderr[-3000:]}")
    return {"image": image, "variant": variant, "commit": commit(tree), **json.loads(done.stdout.splitlines()[-1])}


def pairs(rows: list[dict], base: str, others: list[str]) -> None:
    """Per image, ``base`` against each of ``others`` (speed: their seconds over ``base``'s; dB: ``base`` minus
    them), then the medians over the images that have both, with the commit of each row."""
    by = {(r["image"], r["variant"]): r for r in rows}  # later rows (later files) win
    images = [i for i in dict.fromkeys(r["image"] for r in rows) if (i, base) in by]
    head = " | ".join(f"{v} PSNR | s | steps" for v in [base, *others])
    ratios = " | ".join(f"faster than {v} | {base} - {v} dB" for v in others)
    print(f"| image | {' | '.join(filter(None, [head, ratios]))} |\n|---|" + "---|---|---|" * (1 + len(others))
          + "---|---|" * len(others))
    for image in images:
        cells = [f"{float(by[image, v]['psnr']):.2f} | {float(by[image, v]['seconds']):,.1f} | {by[image, v]['steps']}"
                 if (image, v) in by else " | | " for v in [base, *others]]
        cells += [f"{float(by[image, v]['seconds']) / float(by[image, base]['seconds']):.2f}x | "
                  f"{float(by[image, base]['psnr']) - float(by[image, v]['psnr']):+.2f}" if (image, v) in by else " | "
                  for v in others]
        print(f"| {image} | {' | '.join(cells)} |")
    print()
    for v in others:
        both = [i for i in images if (i, v) in by]
        if not both:
            continue
        speed = [float(by[i, v]["seconds"]) / float(by[i, base]["seconds"]) for i in both]
        diff = {i: float(by[i, base]["psnr"]) - float(by[i, v]["psnr"]) for i in both}
        worst = min(diff, key=diff.get)
        commits = sorted({by[i, x]["commit"] for i in both for x in (base, v)})
        print(f"{base} vs {v} over {len(both)} ({','.join(both)}): median speed {statistics.median(speed):.2f}x "
              f"(range {min(speed):.2f}-{max(speed):.2f}), median PSNR {base} "
              f"{statistics.median(float(by[i, base]['psnr']) for i in both):.3f} {v} "
              f"{statistics.median(float(by[i, v]['psnr']) for i in both):.3f}, median diff "
              f"{statistics.median(diff.values()):+.3f}, worst {diff[worst]:+.3f} ({worst}); median s "
              f"{statistics.median(float(by[i, base]['seconds']) for i in both):.1f} vs "
              f"{statistics.median(float(by[i, v]['seconds']) for i in both):.1f}; commits {', '.join(commits)}")


def image_names(groups: str) -> list[str]:
    return [n for group in groups.split(",") for n in (["sample"] if group == "sample" else expand(group))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="default: sample (with --report: every image in the files)")
    parser.add_argument("--variants", default="new,new-float32,old,reference")
    parser.add_argument("--old", type=Path, default=None, help="an older checkout (for the 'old' variant)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "side_by_side.csv")
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated; seed k > 0 is the image 'name@k'")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every (image, variant), interleaved; repeat k > 0 is the image 'name#k'")
    parser.add_argument("--report", default=None,
                        help="CSVs (comma-separated; a later file's row replaces an earlier one's): print the first "
                             "of --variants against the others per image and over the images, run nothing")
    parser.add_argument("--cpu", default=None, help="with --report: the rows of this CPU (default: this machine's)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if args.report:
        cpu = args.cpu or cpu_name()
        rows = [r for path in args.report.split(",") for r in csv.DictReader(Path(path).open()) if r["cpu"] == cpu]
        if args.images:
            wanted = set(image_names(args.images))
            rows = [r for r in rows if r["image"].partition("#")[0].partition("@")[0] in wanted]
        pairs(rows, variants[0], variants[1:])
        return
    unknown = set(variants) - set(VARIANTS)
    if unknown or (any(v.startswith("old") for v in variants) and args.old is None):
        parser.error(f"variants are {', '.join(VARIANTS)}; 'old' and 'old-float32' need --old" if unknown
                     else "'old' and 'old-float32' need --old")
    cpu = cpu_name()
    rows = list(csv.DictReader(args.out.open())) if args.out.exists() else []
    names = image_names(args.images or "sample")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    seeded = [f"{n}@{seed}" if seed else n for seed in seeds for n in names]
    images = [f"{n}#{k}" if k else n for k in range(args.repeats) for n in seeded]
    for image in images:
        for variant in variants:
            if any(r["image"] == image and r["variant"] == variant and r["cpu"] == cpu for r in rows):
                continue
            row = {**run_one(args, image, variant), "cpu": cpu}
            append_rows(args.out, FIELDS, [row])
            rows.append(row)
            print(row, flush=True)
    pairs([r for r in rows if r["cpu"] == cpu and r["image"] in images], variants[0], variants[1:])


if __name__ == "__main__":
    main()
