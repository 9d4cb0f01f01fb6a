"""The CUDA path, checked on a lent GPU (the library's ``device`` machine): one short script, printed tables.

Run from the repository root with the data copied beside it (the device machine has no ``../shared``)::

    mkdir -p .devdata/nuclei/noisy && cp -r ../shared/data/set12 ../shared/data/confocal .devdata/
    cp ../shared/data/nuclei/noisy/A_[012]_[012].tif .devdata/nuclei/noisy/
    PYTHONPATH=src:benchmarks python benchmarks/cuda_check.py --data .devdata

What it checks, each on ``device="cuda"``:

1. the precision probe's report (``precision_report(DEVICE)``);
2. tiled prediction equals whole-plane prediction (float32: to 1e-5 of the output's range; bfloat16: 2e-2,
   the tolerance the CPU tests state), on odd sizes and small tiles;
3. the sample with the defaults, with ``precision="float32"`` and with ``reference``: seconds, steps, PSNR;
4. every registered method on Set12 01 (each with a short time budget): PSNR, seconds, steps;
5. large planes (fish mosaics 2048-8192 and the real 2175x2175 nuclei plane): seconds, steps, PSNR, first
   event, longest gap between events, peak GPU memory and peak resident memory;
6. a recording (one model for a 16-plane stack) against warm-starting plane by plane.

Nothing here is a test: CI has no GPU. Numbers go to stdout (and ``--out`` as JSON lines).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from napari_noise2fast import compare, iter_denoise, tiling
from napari_noise2fast.devices import precision_report
from napari_noise2fast.engine import seeded_module
from napari_noise2fast.methods import METHODS
from napari_noise2fast.methods.noise2fast import RECEPTIVE_RADIUS, noise2fast_network
from napari_noise2fast.samples import clean_cell, noisy_cell
from run_benchmark import peak_rss_mb

DEVICE = torch.device("cuda")  # --device cpu: a dry run of the script here


def emit(out, section: str, **row) -> None:
    print(section, " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                            for key, value in row.items()), flush=True)
    if out is not None:
        with open(out, "a") as handle:
            handle.write(json.dumps({"section": section, **row}) + "\n")


def run(noisy, clean=None, data_range=None, **kwargs) -> dict:
    """Denoise on CUDA, timing events; peak GPU memory since the start."""
    gpu = DEVICE.type == "cuda"
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    job = iter_denoise(noisy, seed=0, device=DEVICE, **kwargs)
    times, steps = [], 0
    for event in job:
        times.append(time.perf_counter() - start)
        steps += event.step if event.done else 0
    result = job.result()
    seconds = time.perf_counter() - start
    gaps = np.diff([0.0] + times)
    row = {"seconds": seconds, "steps": steps, "first_event_s": times[0],
           "max_gap_s": float(gaps[1:-1].max()) if len(gaps) > 2 else 0.0,
           "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0,
           "rss_peak_mb": peak_rss_mb()}
    if clean is not None:
        span = data_range if data_range is not None else float(clean.max() - clean.min())
        row["psnr"] = peak_signal_noise_ratio(clean, result.astype(np.float64), data_range=span)
        row["noisy_psnr"] = peak_signal_noise_ratio(clean, noisy.astype(np.float64), data_range=span)
    return row


def check_tiles(out) -> None:
    network = seeded_module(lambda: noise2fast_network(8), 0).eval().to(DEVICE)
    for shape in [(37, 53), (257, 190), (1024, 1024)]:
        image = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
        for dtype in (torch.float32, torch.bfloat16):
            with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype != torch.float32), torch.inference_mode():
                whole = network(image)[0, 0].float()
                for side in (13, 64):
                    tiling.TILE_OVERRIDE = side
                    tiled = tiling.predict_in_tiles(network, image, RECEPTIVE_RADIUS, bytes_per_pixel=1)
                    tiling.TILE_OVERRIDE = None
                    span = float(whole.max() - whole.min())
                    error = float((tiled - whole).abs().max()) / span
                    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
                    emit(out, "tiles", shape=f"{shape[0]}x{shape[1]}", dtype=str(dtype).split(".")[1], side=side,
                         max_error_of_range=error, within=error <= tolerance)
        # the tile side the free GPU memory gives for this network at 1024x1024
    emit(out, "tiles", free_gpu_gb=tiling.free_memory(DEVICE) / 1e9,
         side_chosen=tiling.tile_side(DEVICE, bytes_per_pixel=64 * 4 * 6, margin=RECEPTIVE_RADIUS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(".devdata"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--sections", default="probe,tiles,sample,methods,large,recording")
    parser.add_argument("--sizes", default="2048,4096,8192")
    parser.add_argument("--method-budget", type=float, default=10.0, help="seconds per method in section 4")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", default="auto", help="the large planes' precisions, e.g. auto,bfloat16")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    sections = args.sections.split(",")
    print("torch", torch.__version__, torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else DEVICE, flush=True)

    if "probe" in sections:
        report = precision_report(DEVICE)
        emit(args.out, "probe", precision=report["precision"], channels_last=report["channels_last"],
             reason=report["reason"], seconds=json.dumps(report["seconds"]))
    if "tiles" in sections:
        check_tiles(args.out)
    if "sample" in sections:
        noisy, clean = noisy_cell(), clean_cell()
        run(noisy, max_steps=20)  # the device's first run (kernel choice, allocator) is not timed
        for label, kwargs in [("defaults", {}), ("float32", {"precision": "float32"}),
                              ("bfloat16", {"precision": "bfloat16"}), ("reference", {"preset": "reference"})]:
            emit(args.out, "sample", variant=label, **run(noisy, clean, **kwargs))
    if "methods" in sections:
        import tifffile
        from skimage.io import imread

        noisy = tifffile.imread(args.data / "set12" / "noisy_sigma25" / "01.tif").astype(np.float32)
        clean = imread(args.data / "set12" / "clean" / "01.png").astype(np.float64)
        for name in METHODS:
            try:
                result = compare(noisy, [name], reference=clean, seed=0, device=DEVICE,
                                 time_budget=args.method_budget)
            except (ImportError, ValueError) as error:
                emit(args.out, "methods", method=name, error=str(error).splitlines()[0][:120])
                continue
            row = result.rows[0]
            emit(args.out, "methods", method=name, psnr=row.psnr, ssim=row.ssim, seconds=row.seconds,
                 steps=row.steps, stop=row.stop)
    if "large" in sections:
        from large import make_plane, nuclei_plane

        for size in [int(s) for s in args.sizes.split(",")]:
            noisy, clean = make_plane(args.data, "fish", size, 0)
            for precision in args.precisions.split(","):
                emit(args.out, "large", image="fish", size=size, precision=precision,
                     **run(noisy, clean, data_range=255.0, precision=precision))
            del noisy, clean
        plane = nuclei_plane(args.data, "A")
        emit(args.out, "large", image="nuclei-A", size=plane.shape[0], **run(plane))
    if "recording" in sections:
        from timelapse import build

        noisy, cleans = build(argparse.Namespace(data=args.data, image="fish", frames=16, size=256, seed=0))
        for mode in ("recording", "warm"):
            row = run(noisy, cleans, data_range=255.0, axes="TYX", stack=mode)
            emit(args.out, "recording", mode=mode, frames=len(noisy), **row)


if __name__ == "__main__":
    main()
