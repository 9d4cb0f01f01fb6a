"""Scripting with a viewer model: layer in, layer data out (no Qt needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_noise2fast.layers import denoise_layer, output_name
from napari_noise2fast.samples import noisy_cell

components = pytest.importorskip("napari.components")


def test_denoise_layer_returns_layer_data_lined_up_with_the_input():
    viewer = components.ViewerModel()
    data = noisy_cell()[:48, :48].copy()
    layer = viewer.add_image(data, name="cell", scale=(0.3, 0.3), translate=(5, 6), contrast_limits=(95, 150))
    out, meta, kind = denoise_layer(layer, seed=0, max_steps=10, device="cpu")
    assert kind == "image" and out.shape == data.shape and out.dtype == np.float32
    assert meta["name"] == "cell [Noise2Fast]" == output_name("cell")
    assert meta["scale"] == (0.3, 0.3) and meta["translate"] == (5, 6) and meta["contrast_limits"] == (95, 150)
    added = viewer.add_image(out, **meta)
    assert added.name == "cell [Noise2Fast]" and not np.array_equal(added.data, data)
    np.testing.assert_array_equal(layer.data, noisy_cell()[:48, :48])


def test_denoise_layer_handles_rgb_layers_and_plain_arrays():
    viewer = components.ViewerModel()
    rgb = np.random.default_rng(0).integers(0, 255, (24, 24, 3)).astype(np.uint8)
    layer = viewer.add_image(rgb, name="rgb", rgb=True)
    out, meta, _ = denoise_layer(layer, seed=0, max_steps=2, device="cpu")
    assert meta["rgb"] and meta["contrast_limits"] == tuple(layer.contrast_limits) and out.shape == rgb.shape
    out, meta, _ = denoise_layer(rgb[..., 0], seed=0, max_steps=2, device="cpu")
    assert out.shape == (24, 24) and meta == {"name": "image [Noise2Fast]"}
