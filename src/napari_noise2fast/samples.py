"""Small sample data made on the fly, without the network.

``noisy_cell`` turns scikit-image's bundled ``cell`` image into a camera-like
fluorescence frame: Poisson photon noise plus Gaussian read noise on an offset,
stored as uint16, at a fixed seed so every user sees the same image.
"""

from __future__ import annotations

import numpy as np
from skimage import data

PHOTONS_AT_WHITE = 40.0
CAMERA_OFFSET = 100.0
READ_NOISE = 2.0


def clean_cell() -> np.ndarray:
    """The 256x256 crop of ``skimage.data.cell()`` around the cell, in expected counts (float64)."""
    crop = data.cell()[248:504, 294:550].astype(np.float64)
    return crop / 255.0 * PHOTONS_AT_WHITE + CAMERA_OFFSET


def noisy_cell(seed: int = 0) -> np.ndarray:
    """The clean crop with Poisson-Gaussian noise, as a uint16 camera image."""
    rng = np.random.default_rng(seed)
    clean = clean_cell()
    photons = rng.poisson(clean - CAMERA_OFFSET)
    counts = photons + CAMERA_OFFSET + rng.normal(0.0, READ_NOISE, clean.shape)
    return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def napari_noisy_cell() -> list[tuple]:
    """npe2 sample data: the noisy cell as an image layer."""
    return [(noisy_cell(), {"name": "noisy cell", "colormap": "gray"}, "image")]


def napari_clean_cell() -> list[tuple]:
    """npe2 sample data: the noise-free cell (a reference for true PSNR), same scale as the noisy one."""
    return [(clean_cell().astype(np.float32), {"name": "clean cell", "colormap": "gray"}, "image")]
