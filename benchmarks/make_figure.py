"""Make the README picture: noisy, denoised and clean crops of benchmark images, with PSNR.

Uses outputs written by ``run_benchmark.py --save-outputs DIR``:

    python benchmarks/make_figure.py benchmarks/out/reference --images 01,fish --out docs/denoising.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import tifffile
from skimage.io import imread

from run_benchmark import DEFAULT_DATA, image_paths, psnr_ssim

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", type=Path, help="folder of <image>_run0.tif files")
    parser.add_argument("--images", default="01,fish")
    parser.add_argument("--crop", type=int, default=128, help="side of the centre crop")
    parser.add_argument("--label", default="Noise2Fast")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("docs/denoising.png"))
    args = parser.parse_args(argv)

    names = args.images.split(",")
    figure, axes = plt.subplots(len(names), 3, figsize=(9, 3.1 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        noisy_path, clean_path = image_paths(args.data, name)
        noisy, clean = tifffile.imread(noisy_path), imread(clean_path)
        denoised = tifffile.imread(args.outputs / f"{name}_run0.tif")
        y0, x0 = (np.array(clean.shape) - args.crop) // 2
        window = np.s_[y0:y0 + args.crop, x0:x0 + args.crop]
        panels = [("noisy", noisy), (args.label, denoised), ("clean", clean)]
        for ax, (title, image) in zip(row, panels, strict=True):
            ax.imshow(image[window], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if title != "clean":
                psnr, ssim = psnr_ssim(clean, image)
                title = f"{title}: {psnr:.2f} dB, SSIM {ssim:.3f}"
            ax.set_title(f"{name} {title}", fontsize=9)
            ax.axis("off")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
