"""Shared fixtures: the benchmark data beside the checkout (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.io import imread

DATA = Path(os.environ.get("NOISE2FAST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def set12_05_crop() -> tuple[np.ndarray, np.ndarray]:
    """(noisy float32, clean float64) 64x64 crop of Set12 image 05 at sigma 25."""
    noisy_path = DATA / "set12" / "noisy_sigma25" / "05.tif"
    if not noisy_path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"benchmark data missing in CI: {noisy_path}")
        pytest.skip(f"benchmark data not found at {DATA} (set NOISE2FAST_DATA)")
    noisy = tifffile.imread(noisy_path)[64:128, 64:128]
    clean = imread(DATA / "set12" / "clean" / "05.png")[64:128, 64:128].astype(np.float64)
    return noisy, clean
