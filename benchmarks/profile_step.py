"""Where the time of one Noise2Fast step goes, its FLOPs, and the achieved rate (issue 3, item 4).

    python benchmarks/profile_step.py --size 256 --threads 1 --repeats 20

For each preset: the median seconds of the parts of a step (training forward,
backward, Adam, weight average, validation forward on the whole plane, the copy
of the output to NumPy), the FLOPs of each part counted from the network by
``torch.utils.flop_counter`` (a multiply-add counts as 2), and the rate they
achieve against this machine's measured throughput of a large 3x3 convolution
(64 to 64 channels on the plane, forward only) in the same precision and
memory layout (the better of contiguous and channels-last).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_noise2fast.engine import to_end
from napari_noise2fast.methods._torch import autocast
from napari_noise2fast.methods.noise2fast import Noise2Fast


def timed(function, repeats: int) -> float:
    """Median seconds of ``function()`` over ``repeats`` calls after two warm-up calls."""
    for _ in range(2):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def conv_throughput(size: int, dtype: torch.dtype, memory_format, repeats: int) -> float:
    """GFLOP/s of one 3x3 convolution 64 -> 64 channels over a size x size plane (forward)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=memory_format)
    x = torch.randn(1, 64, size, size).contiguous(memory_format=memory_format)
    def run():
        with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
            conv(x)

    return flops(run) / timed(run, repeats) / 1e9


def profile(method: Noise2Fast, repeats: int) -> list[tuple[str, float, int]]:
    """(part, median seconds, FLOPs) of one step's parts."""
    source, target = method.pairs[0]
    autocast = method._autocast
    state = {}

    def forward():
        method.optimizer.zero_grad(set_to_none=True)
        with autocast():
            state["logits"] = method.network(source)
        state["loss"] = torch.nn.functional.binary_cross_entropy_with_logits(state["logits"].float(), target)

    def backward():
        forward()
        state["loss"].backward()

    def adam():
        method.optimizer.step()

    def average():
        if method.averaged is not None:
            method.steps = max(method.steps, 1)
            method._update_average()

    def validate():
        to_end(method._validate())

    def to_numpy():
        method.best_output.detach().to("cpu", torch.float64).numpy()

    counts = {"forward": flops(forward), "backward": flops(backward) - flops(forward), "validate": flops(validate)}
    t_forward = timed(forward, repeats)
    t_both = timed(backward, repeats)
    t_adam = timed(adam, repeats)  # the gradients of the last backward are still there
    parts = [
        ("training forward (one pair, half plane)", t_forward, counts["forward"]),
        ("training backward", t_both - t_forward, counts["backward"]),
        ("Adam update", t_adam, 0),
        ("weight average (EMA)", timed(average, repeats), 0),
        ("validation forward (whole plane)", timed(validate, repeats), counts["validate"]),
        ("output copy to NumPy", timed(to_numpy, repeats), 0),
    ]
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--presets", default="reference,fast,fast:float32",
                        help="presets, each optionally with :precision")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {args.size}x{args.size}, threads={torch.get_num_threads()}, torch={torch.__version__}, "
          f"medians of {args.repeats}")
    noisy = torch.from_numpy(np.random.default_rng(0).random((1, 1, args.size, args.size), dtype=np.float32))
    for spec in args.presets.split(","):
        preset, _, precision = spec.partition(":")  # e.g. "fast:float32", as on a CPU without AMX
        method = Noise2Fast(noisy, rng=np.random.default_rng(0), level=1 / 255, preset=preset,
                            precision=precision or None)
        every = method.settings["validate_every"]
        peak = max(conv_throughput(args.size, method.compute_dtype, layout, args.repeats)
                   for layout in (torch.contiguous_format, torch.channels_last))
        parts = profile(method, args.repeats)
        per_step = {name: seconds / every if name.startswith(("validation", "output")) else seconds
                    for name, seconds, _ in parts}
        step_seconds = sum(per_step.values())
        step_flops = sum(f / every if name.startswith("validation") else f for name, _, f in parts)
        print(f"\n## preset {spec}: {method.compute_dtype}, "
              f"{'channels-last' if method.settings['channels_last'] else 'contiguous'}, validation every {every}")
        print("| part | ms per call | GFLOP per call | GFLOP/s | ms per step | share |")
        print("|---|---|---|---|---|---|")
        for name, seconds, count in parts:
            rate = f"{count / seconds / 1e9:.0f}" if count else ""
            print(f"| {name} | {seconds * 1e3:.1f} | {count / 1e9:.2f} | {rate} | {per_step[name] * 1e3:.1f} | "
                  f"{per_step[name] / step_seconds:.0%} |")
        print(f"| **one step** | | | {step_flops / step_seconds / 1e9:.0f} | {step_seconds * 1e3:.1f} | 100% |")
        print(f"\nFLOPs per step: {step_flops / 1e9:.2f} GFLOP; achieved {step_flops / step_seconds / 1e9:.0f} GFLOP/s "
              f"against {peak:.0f} GFLOP/s measured for a 3x3 convolution 64->64 on {args.size}x{args.size} "
              f"in {method.compute_dtype} (best of both layouts) ({step_flops / step_seconds / 1e9 / peak:.0%}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
