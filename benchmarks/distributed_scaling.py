"""Prediction on dask.distributed against the local run (issue 23, item 4): what distribution buys and costs.

(Not ``distributed.py``: run from this folder, a script of that name would be imported in place of
dask.distributed itself.)

A 200-frame recording built from real data as ``timelapse.py`` builds it (the clean FMD fish image along a
drift, Poisson-Gaussian noise fitted to its real noisy pair, uint8), and a model trained once on it and saved
(not timed). Then the prediction-bound job, ``denoise(recording, model=path)``, timed in each mode:

- ``local, 1 thread`` and ``local, 2 threads``: in this process, torch on that many threads;
- ``cluster, 1 worker`` and ``cluster, 2 workers``: a ``LocalCluster`` of processes with one thread each
  (``client=``; ``napari_noise2fast.cluster.local_cluster``), started and warmed (a small job run on it)
  before the clock starts, so that the table shows the prediction, not the start of the workers; and
  ``2 workers, dask's MALLOC_TRIM_THRESHOLD_``: the same with the environment dask's nannies set by default.

Each mode runs twice: the result returned to this process, and written to a zarr output (``out=``), which
on a cluster the workers write themselves (nothing but two numbers a plane comes back). Printed: frames,
seconds, frames per second, the ratio to one worker (with the same output), the peak RSS of this process and of
each worker (VmHWM: the worker processes' own), and the largest difference from the local result.

    python benchmarks/distributed_scaling.py --frames 200 --size 256      # both cores, nothing else running

The numbers: benchmarks/RESULTS.md, "Prediction on dask.distributed".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from large import cpu_name  # noqa: E402
from napari_noise2fast import denoise, iter_denoise  # noqa: E402
from run_benchmark import DEFAULT_DATA, peak_rss_mb  # noqa: E402
from timelapse import build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--image", default="fish")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=200, help="steps of the model trained once (not timed)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    from distributed import Client

    from napari_noise2fast.cluster import local_cluster

    noisy, _ = build(args)
    folder = Path(tempfile.mkdtemp())
    job = iter_denoise(noisy, axes="TYX", seed=args.seed, device="cpu", max_steps=args.train_steps)
    for _ in job:
        pass
    model = job.save_model(folder / "model")
    rows, local = [], None
    zarr_out = iter(range(1000))  # a fresh output folder for every timed run

    def output(to_zarr):
        return str(folder / f"out{next(zarr_out)}.zarr") if to_zarr else None

    for to_zarr in (False, True):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            result = np.asarray(denoise(noisy, axes="TYX", device="cpu", model=model, out=output(to_zarr)))
            seconds = time.perf_counter() - start
            local = result if local is None else local
            rows.append((f"local, {threads} thread(s)" + (", zarr output" if to_zarr else ""), seconds, [],
                         float(np.abs(result - local).max())))
    torch.set_num_threads(1)
    for workers, trim, to_zarr in ((1, False, False), (2, False, False), (2, True, False),
                                   (1, False, True), (2, False, True)):
        with local_cluster(workers, malloc_trim=trim) as cluster, Client(cluster) as client:
            denoise(noisy[:workers * 2], axes="TYX", device="cpu", model=model, client=client,
                    out=output(to_zarr))  # warm the workers
            start = time.perf_counter()
            result = np.asarray(denoise(noisy, axes="TYX", device="cpu", model=model, client=client,
                                        out=output(to_zarr)))
            seconds = time.perf_counter() - start
            memory = sorted(client.run(peak_rss_mb).values())
        name = f"cluster, {workers} worker(s)" + (", dask's MALLOC_TRIM_THRESHOLD_" if trim else "") \
            + (", zarr output written by the workers" if to_zarr else "")
        rows.append((name, seconds, memory, float(np.abs(result - local).max())))
    # one worker's seconds, by output (returned to this process, or written to zarr)
    one_worker = {"zarr" in name: seconds for name, seconds, _, _ in rows if name.startswith("cluster, 1 worker")}
    print(f"{cpu_name()}; {args.frames} frames of {args.size}x{args.size} ({args.image}), a model of "
          f"{args.train_steps} steps; this process peak RSS {peak_rss_mb():.0f} MB\n")
    print("| mode | frames | seconds | frames/s | speed against 1 worker | peak RSS per worker MB | "
          "largest difference from local |")
    print("|---|---|---|---|---|---|---|")
    for name, seconds, memory, difference in rows:
        ratio = one_worker["zarr" in name] / seconds
        print(f"| {name} | {args.frames} | {seconds:.1f} | {args.frames / seconds:.2f} | {ratio:.2f}x | "
              f"{', '.join(f'{m:.0f}' for m in memory) or '-'} | {difference:.3g} |")


if __name__ == "__main__":
    main()
