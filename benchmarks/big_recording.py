"""A recording bigger than it is worth holding: lazily generated frames denoised into a zarr store (issue 21).

The recording is a dask array made chunk by chunk on demand (never whole in memory): ``--frames`` frames
(default 2000) of ``--size`` x ``--size`` (default 512) uint16, a crop of the clean FMD fish image drifting
by up to 3 px a frame (tiled with its flips where the crop leaves the image), each frame with its own
Poisson-Gaussian noise (the gain and read noise fitted to the real noisy/clean pair, as ``stack.py``),
scaled to a camera-like uint16 range; chunks of ``--chunk`` frames. It is denoised with the defaults
(``stack="recording"``: one model) into a new ``.zarr`` under ``--out``, in a fresh process whose peak
resident memory (``peak_rss_mb``: VmHWM) is the figure: the issue's bound is 1.5 GB for 2000 frames of 512x512
(2 GB as float32). Prints one table row; ``--psnr-frames`` frames are checked against their clean version.

    taskset -c 1 python benchmarks/big_recording.py --frames 2000 --size 512
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from run_benchmark import DEFAULT_DATA, image_paths, peak_rss_mb

SCALE = 40.0  # counts per unit of the clean image: a uint16 camera-like range


def recording(data: Path, frames: int, size: int, chunk: int, seed: int):
    """(lazy noisy uint16 dask array, function giving the clean frame k as float64)."""
    import dask.array as da
    import tifffile

    from stack import fit_noise

    noisy_path, clean_path = image_paths(data, "fish")
    clean_tile = tifffile.imread(clean_path).astype(np.float64)
    gain, read = fit_noise(tifffile.imread(noisy_path), clean_tile)
    big = np.block([[clean_tile, clean_tile[:, ::-1]], [clean_tile[::-1], clean_tile[::-1, ::-1]]])
    steps = np.random.default_rng(seed).integers(-3, 4, size=(frames, 2))
    path = np.cumsum(steps, axis=0)
    path = path - path.min(axis=0)
    span = np.array(big.shape) - size
    path = path % np.maximum(span, 1)  # wrap around inside the mirrored 2x2 tile

    def clean(k: int) -> np.ndarray:
        y, x = path[k]
        return big[y:y + size, x:x + size]

    def block(block_id=None):
        first = block_id[0] * chunk
        out = np.empty((min(chunk, frames - first), size, size), np.uint16)
        for i in range(len(out)):
            rng = np.random.default_rng([seed, first + i])
            frame = clean(first + i)
            photons = rng.poisson(frame / gain) * gain + rng.normal(0, np.sqrt(read), frame.shape)
            out[i] = np.clip(np.round(100 + SCALE * photons), 0, 65535)
        return out

    chunks = ((chunk,) * (frames // chunk) + ((frames % chunk,) if frames % chunk else ()), (size,), (size,))
    lazy = da.map_blocks(block, dtype=np.uint16, chunks=chunks)
    return lazy, lambda k: 100 + SCALE * clean(k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--psnr-frames", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="folder for the .zarr output (default: a temporary one)")
    args = parser.parse_args(argv)

    import torch
    from skimage.metrics import peak_signal_noise_ratio

    from napari_noise2fast import iter_denoise
    from napari_noise2fast.devices import precision_report

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(dir=args.out))
    target = folder / "denoised.zarr"
    lazy, clean = recording(args.data, args.frames, args.size, args.chunk, args.seed)
    start = time.perf_counter()
    job = iter_denoise(lazy, axes="TYX", seed=args.seed, device="cpu", out=target)
    steps, first_frame, frames_done = 0, None, 0
    for event in job:
        if event.done:
            steps += event.step
            frames_done += 1
            if first_frame is None:
                first_frame = time.perf_counter() - start
    seconds = time.perf_counter() - start
    out = job.result()
    peak = peak_rss_mb()
    check = np.linspace(0, args.frames - 1, args.psnr_frames).round().astype(int)
    span = float(SCALE * 255)
    psnr = [peak_signal_noise_ratio(clean(k), np.asarray(out[k], np.float64), data_range=span) for k in check]
    noisy = [peak_signal_noise_ratio(clean(k), np.asarray(lazy[k], np.float64), data_range=span) for k in check]
    row = {"frames": args.frames, "size": args.size, "chunk": args.chunk, "seconds": round(seconds, 1),
           "training_s": round(first_frame or 0, 1), "seconds_per_frame": round(seconds / args.frames, 3),
           "steps": steps, "frames_written": frames_done, "peak_rss_mb": round(peak),
           "float32_result_mb": round(args.frames * args.size**2 * 4 / 2**20),
           "median_psnr": round(float(np.median(psnr)), 2), "median_noisy_psnr": round(float(np.median(noisy)), 2),
           "precision": precision_report("cpu")["precision"], "out_shape": list(out.shape), "out_dtype": str(out.dtype)}
    print(json.dumps(row), flush=True)
    if args.out is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
