"""Prediction in overlapping tiles equals whole-plane prediction (to float tolerance), at every tile border."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_noise2fast import denoise, tiling
from napari_noise2fast.engine import seeded_module
from napari_noise2fast.methods.noise2fast import RECEPTIVE_RADIUS, noise2fast_network


@pytest.fixture
def network():
    return seeded_module(lambda: noise2fast_network(8), 0).eval()


def tiled(monkeypatch, network, image, side, margin=RECEPTIVE_RADIUS):
    monkeypatch.setattr(tiling, "TILE_OVERRIDE", side)
    with torch.inference_mode():
        return tiling.predict_in_tiles(network, image, margin, bytes_per_pixel=1)


@pytest.mark.parametrize("side", [5, 8, 13, 16, 36])
@pytest.mark.parametrize("shape", [(37, 53), (16, 9), (64, 64)])
def test_tiles_equal_the_whole_plane_in_float32(monkeypatch, network, side, shape):
    image = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole = network(image)[0, 0]
    out = tiled(monkeypatch, network, image, side)
    assert out.shape == shape and out.dtype == torch.float32
    borders = np.zeros(shape, bool)  # the rows and columns on either side of every tile border
    for edge in range(side, max(shape), side):
        borders[max(edge - 1, 0):edge + 1, :] = True
        borders[:, max(edge - 1, 0):edge + 1] = True
    difference = (out - whole).abs().numpy()
    assert difference.max() <= 1e-5 * float(whole.abs().max())
    if borders.any():
        assert difference[borders].max() <= 1e-5 * float(whole.abs().max())


def test_a_margin_below_the_receptive_field_is_not_exact(monkeypatch, network):
    image = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        whole = network(image)[0, 0]
    assert (tiled(monkeypatch, network, image, 10, margin=2) - whole).abs().max() > 1e-4  # the test can fail


def test_bfloat16_tiles_agree_within_the_stated_tolerance(monkeypatch, network):
    # bfloat16 keeps 8 bits of mantissa: tiled and whole-plane outputs may differ by its rounding, stated
    # here as 2e-2 of the output's range (measured: well under it)
    image = torch.rand(1, 1, 48, 40, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        whole = network(image)[0, 0].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiled(monkeypatch, network, image, 12)
    assert (out - whole).abs().max() <= 2e-2 * float(whole.max() - whole.min())


def test_the_tile_follows_the_free_memory(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(tiling, "free_memory", lambda device: 4 * 1000**3)
    assert tiling.tile_side(cpu, bytes_per_pixel=1024, margin=8) == int(np.sqrt(tiling.HOST_TILE_BYTES / 1024)) - 16
    monkeypatch.setattr(tiling, "free_memory", lambda device: 4 * 10**8)  # a quarter of it under the host cap
    assert tiling.tile_side(cpu, bytes_per_pixel=1024, margin=8) == int(np.sqrt(10**8 / 1024)) - 16
    monkeypatch.setattr(tiling, "free_memory", lambda device: 10**6)
    assert tiling.tile_side(cpu, bytes_per_pixel=1024, margin=8) == tiling.MIN_TILE
    monkeypatch.setattr(tiling, "free_memory", lambda device: 10**15)
    assert tiling.tile_side(cpu, bytes_per_pixel=1, margin=8) == tiling.MAX_TILE
    assert tiling.free_memory(cpu) > 0


def test_noise2fast_validates_in_tiles_as_on_the_whole_plane(monkeypatch):
    image = np.random.default_rng(0).normal(100, 20, (45, 38)).astype(np.float32)
    settings = {"seed": 0, "device": "cpu", "max_steps": 20, "preview": False, "precision": "float32"}
    whole = denoise(image, **settings)
    monkeypatch.setattr(tiling, "TILE_OVERRIDE", 16)
    tiles = denoise(image, **settings)
    np.testing.assert_allclose(tiles, whole, rtol=0, atol=1e-4 * float(np.ptp(image)))
