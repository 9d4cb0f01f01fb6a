"""Shared fixtures: the benchmark data beside the checkout (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, settings
from skimage.io import imread

# Hypothesis profiles for every property test (HYPOTHESIS_PROFILE): fixed examples by default, more locally
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=300, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DATA = Path(os.environ.get("NOISE2FAST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared benchmark data; missing data fails under CI and skips elsewhere."""
    if not (DATA / "set12").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"benchmark data missing in CI: {DATA}")
        pytest.skip(f"benchmark data not found at {DATA} (set NOISE2FAST_DATA)")
    return DATA


@pytest.fixture(scope="session")
def set12_05_crop(data_dir) -> tuple[np.ndarray, np.ndarray]:
    """(noisy float32, clean float64) 64x64 crop of Set12 image 05 at sigma 25."""
    noisy_path = data_dir / "set12" / "noisy_sigma25" / "05.tif"
    noisy = tifffile.imread(noisy_path)[64:128, 64:128]
    clean = imread(data_dir / "set12" / "clean" / "05.png")[64:128, 64:128].astype(np.float64)
    return noisy, clean


@pytest.fixture
def viewer(make_napari_viewer):
    """A real napari viewer (pytest-qt and napari's make_napari_viewer)."""
    return make_napari_viewer()


@pytest.fixture
def docked(viewer):
    """The Noise2Fast dock widget in ``viewer``."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-noise2fast", "Noise2Fast")
    return widget
