"""Chequerboard pairs against a slow pixel-by-pixel definition, and the network's shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_noise2fast.methods.noise2fast import chequerboard_pairs, noise2fast_network


def slow_pairs(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The definition in ../shared/METHODS.md, one pixel at a time."""
    height, width = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    a = np.zeros((height // 2, width)); b = np.zeros_like(a)  # noqa: E702
    for i in range(height // 2):
        for j in range(width):
            rows = (2 * i + 1, 2 * i) if j % 2 == 0 else (2 * i, 2 * i + 1)
            a[i, j], b[i, j] = x[rows[0], j], x[rows[1], j]
    c = np.zeros((height, width // 2)); d = np.zeros_like(c)  # noqa: E702
    for i in range(height):
        for j in range(width // 2):
            cols = (2 * j + 1, 2 * j) if i % 2 == 0 else (2 * j, 2 * j + 1)
            c[i, j], d[i, j] = x[i, cols[0]], x[i, cols[1]]
    return [(a, b), (b, a), (c, d), (d, c)]


@pytest.mark.parametrize("shape", [(8, 8), (9, 8), (8, 11), (13, 17), (2, 2), (31, 6)])
def test_chequerboard_pairs_match_pixel_definition(shape):
    x = np.random.default_rng(sum(shape)).random(shape)
    fast = chequerboard_pairs(torch.from_numpy(x))
    for (fast_in, fast_target), (slow_in, slow_target) in zip(fast, slow_pairs(x), strict=True):
        np.testing.assert_array_equal(fast_in.numpy(), slow_in)
        np.testing.assert_array_equal(fast_target.numpy(), slow_target)


def test_pairs_keep_batch_dimensions():
    x = torch.rand(1, 1, 10, 12)
    shapes = [(a.shape, b.shape) for a, b in chequerboard_pairs(x)]
    assert shapes[0] == ((1, 1, 5, 12), (1, 1, 5, 12))
    assert shapes[2] == ((1, 1, 10, 6), (1, 1, 10, 6))


def test_network_matches_reference_architecture():
    network = noise2fast_network()
    convs = [m for m in network if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 8 + [(1, 1)]
    assert [c.out_channels for c in convs] == [64] * 8 + [1]
    assert sum(p.numel() for p in network.parameters()) == 259_201
    assert network(torch.zeros(1, 1, 13, 17)).shape == (1, 1, 13, 17)
