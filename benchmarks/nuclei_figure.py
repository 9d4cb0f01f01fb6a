"""The README picture of the real nuclei planes (issue 19, item 7): noisy, ours, the published code's.

``large.py --sizes 2175 --images nuclei-A,nuclei-N --save DIR`` denoises the stitched 2175x2175 planes
(the top-left 3x3 of each image's 725x725 tiles) with the default preset; the published Noise2Fast code
ran on each tile alone (``nuclei/published_n2f``). The panels show the same crop of the centre tile (1, 1)
from the noisy plane, our whole-plane output and the published code's output of that tile.

    python benchmarks/nuclei_figure.py benchmarks/out/nuclei --out docs/nuclei.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import tifffile

from large import NUCLEI_TILE, nuclei_plane
from run_benchmark import DEFAULT_DATA

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", type=Path, help="folder of large.py --save outputs")
    parser.add_argument("--images", default="A,N")
    parser.add_argument("--crop", type=int, default=256, help="side of the crop, at the centre tile's centre")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("docs/nuclei.png"))
    args = parser.parse_args()
    names = args.images.split(",")
    figure, axes = plt.subplots(len(names), 3, figsize=(9, 3.1 * len(names)), squeeze=False)
    start = NUCLEI_TILE + (NUCLEI_TILE - args.crop) // 2  # within tile (1, 1)
    window = (slice(start, start + args.crop), slice(start, start + args.crop))
    inside = (slice(start - NUCLEI_TILE, start - NUCLEI_TILE + args.crop),) * 2
    for row, name in zip(axes, names, strict=True):
        noisy = nuclei_plane(args.data, name)
        ours = tifffile.imread(args.outputs / f"nuclei-{name}_{noisy.shape[0]}_seed0.tif")
        published = tifffile.imread(args.data / "nuclei" / "published_n2f" / f"{name}_1_1.tif")
        panels = [(noisy[window], f"{name}: noisy (2175x2175 plane)"),
                  (ours[window], "ours: whole plane, default preset"),
                  (np.asarray(published)[inside], "published code: tile (1, 1) alone")]
        # the nuclei stand about one noise deviation above the background: the noisy panel is shown over its
        # own 0.5-99.5 percentiles, both outputs over the same range, our crop's
        ranges = [np.percentile(noisy[window], [0.5, 99.5])] + [np.percentile(ours[window], [0.5, 99.5])] * 2
        for axis, (image, title), (low, high) in zip(row, panels, ranges, strict=True):
            axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
