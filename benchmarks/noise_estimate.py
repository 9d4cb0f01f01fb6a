"""How close each ``estimate_noise`` method comes to the known noise of a synthetic camera image (issues 24, 25).

The tests' scene (``tests/test_pn2v.py``'s ``poisson_gaussian``: 128x128 photon counts, gain 2 ADU a
photon, read noise 3 ADU, offset 100): per method and seed, the fitted gain, the relative error of
``std(signal)`` at the 5th, 10th, 25th, 50th and 95th percentiles of the clean signal, the worst over the
5th-95th, and the seconds. ``noise-net as trained`` is the noise network before its refit to the kept
denoiser (``REFIT_STEPS = 0``).

    taskset -c 0 python benchmarks/noise_estimate.py --methods noise-net,noise-net-as-trained --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from napari_noise2fast import estimate_noise  # noqa: E402
from napari_noise2fast.methods import noise_net  # noqa: E402
from test_pn2v import poisson_gaussian, worst_relative_error  # noqa: E402

PERCENTILES = (5, 10, 25, 50, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="vst,pn2v,noise-net,noise-net-as-trained")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    noisy, clean, true_std = poisson_gaussian()
    signals = np.percentile(clean, PERCENTILES)
    print(f"| method | seed | gain | {' | '.join(f'p{p}' for p in PERCENTILES)} | worst p5-p95 | seconds |")
    print("|---|---|---|" + "---|" * len(PERCENTILES) + "---|---|")
    refit = noise_net.REFIT_STEPS
    for method in args.methods.split(","):
        for seed in [int(s) for s in args.seeds.split(",")] if method != "vst" else [0]:
            noise_net.REFIT_STEPS = 0 if method == "noise-net-as-trained" else refit
            start = time.perf_counter()
            model = estimate_noise(noisy, method.removesuffix("-as-trained"), seed=seed, device="cpu")
            seconds = time.perf_counter() - start
            errors = model.std(signals) / true_std(signals) - 1
            print(f"| {method} | {seed} | {model.gain:.3f} | {' | '.join(f'{e:+.3f}' for e in errors)} | "
                  f"{worst_relative_error(model, clean, true_std):.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
