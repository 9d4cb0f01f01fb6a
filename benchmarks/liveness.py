"""The engine stays live at any plane size (issue 19, item 5): when the preview comes, how long the engine
goes between events while training (so how late a Stop can act), by kind of event.

A fish mosaic (as ``large.py`` builds it) per size; the default preset with a view every ``--view-every``
steps (``Event.view``, as a viewer would ask); ``--steps`` steps, then the run is stopped as a viewer's Stop
does (the consumer stops iterating and asks for the result). Printed per size: the first (preview) event,
the median and longest gap between two training events, the longest gap on a step that validated, on one
that carried a view, on one that did both and on one that did neither, and the wait for the result after
Stop (the whole plane predicted in tiles: the output, not training). The preview scored on the validation
tiles (bounded mode: a second step-0 event) counts as validated. Events sent in the middle of a step or a
held-out check (``Event.partial``, a step in slices) are a kind of their own; the table gives the seconds the
``--steps`` steps took too (slices must not slow training).

    taskset -c 0 python benchmarks/liveness.py --sizes 2048,8192 --threads 1 [--precision float32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from large import cpu_name, make_plane  # noqa: E402
from napari_noise2fast import iter_denoise  # noqa: E402
from run_benchmark import DEFAULT_DATA  # noqa: E402


def probe(size: int, steps: int, view_every: int, data: Path, precision: str | None) -> dict:
    noisy, _ = make_plane(data, "fish", size, 0)
    start = time.perf_counter()
    params = {} if precision is None else {"precision": precision}
    job = iter_denoise(noisy, seed=0, device="cpu", view_every=view_every, **params)
    last, first, kinds = start, None, {"validated": [], "view": [], "both": [], "plain": [], "part": []}
    training = None  # when the first step began (the last step-0 event)
    gaps = []
    for event in job:
        now = time.perf_counter()
        if first is None:
            first = now - start
        else:
            gap = now - last
            gaps.append(gap)
            every = job.current.model.settings["validate_every"]
            validated, viewed = event.step % every == 0, event.view is not None
            kind = "both" if validated and viewed else "validated" if validated else "view" if viewed else "plain"
            kinds["part" if getattr(event, "partial", False) else kind].append(gap)  # older commits: no partial
        if event.step == 0:
            training = now
        last = now
        if event.step >= steps:
            break  # Stop: the consumer stops iterating
    stopped = time.perf_counter()
    job.result()
    return {"size": size, "first": first, "median": statistics.median(gaps), "max": max(gaps),
            "training": stopped - training, "events": len(gaps) + 1,
            **{kind: max(values) if values else float("nan") for kind, values in kinds.items()},
            "result": time.perf_counter() - stopped, "stage": event.stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,8192")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--view-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default=None, help="float32 or bfloat16 (default: the probe's choice)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}, {args.threads} thread(s), {args.steps} steps, a view every {args.view_every}, "
          f"precision {args.precision or 'auto'}\n")
    print("| size | first event s | steps s | events | median gap s | longest gap s | longest: validated | with view | "
          "both | plain | in a step | result after Stop s | stage at Stop |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = probe(size, args.steps, args.view_every, args.data, args.precision)
        print(f"| {size} | {r['first']:.2f} | {r['training']:.1f} | {r['events']} | {r['median']:.2f} | "
              f"{r['max']:.2f} | {r['validated']:.2f} | {r['view']:.2f} | {r['both']:.2f} | {r['plain']:.2f} | "
              f"{r['part']:.2f} | "
              f"{r['result']:.1f} | {r['stage']} |", flush=True)


if __name__ == "__main__":
    main()
