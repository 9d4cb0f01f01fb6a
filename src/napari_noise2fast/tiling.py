"""Prediction in overlapping tiles: the engine's one tiling mechanism, for every method's network.

A fully convolutional network's output at a pixel depends only on the input
within its receptive field; cutting the plane into tiles that overlap by at
least that radius and keeping each tile's centre gives the whole-plane output
(to float rounding), at the memory of one tile. The tile size is chosen from
the device's free memory, never by the user (``TILE_OVERRIDE`` is for tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

MIN_TILE, MAX_TILE = 64, 4096
MEMORY_SHARE = 0.25  # of the free memory, one tile's activations may take
TILE_OVERRIDE: int | None = None  # tests only: a fixed tile side


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors on ``device`` now (CUDA: the driver's count; elsewhere the system's)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def tile_side(device: torch.device, bytes_per_pixel: float, margin: int) -> int:
    """The side of a tile's kept centre such that the tile with its margins fits ``MEMORY_SHARE`` of the
    free memory at ``bytes_per_pixel`` (a network's activations per pixel), within 64 to 4096."""
    if TILE_OVERRIDE is not None:
        return TILE_OVERRIDE
    pixels = MEMORY_SHARE * free_memory(device) / bytes_per_pixel
    return int(min(max(math.isqrt(int(pixels)) - 2 * margin, MIN_TILE), MAX_TILE))


def predict_in_tiles(forward: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, margin: int,
                     bytes_per_pixel: float) -> torch.Tensor:
    """``forward`` applied to ``image`` (shape (1, C, H, W)) tile by tile; the (H, W) float32 output.

    ``forward`` maps a (1, C, h, w) tensor to (1, 1, h, w). ``margin`` must be at least the network's
    receptive-field radius: every tile is cut with that much real context on each side that is not the
    plane's edge, so each kept centre equals the whole-plane output there. A plane that fits one tile is
    passed whole, exactly as without tiling.
    """
    height, width = image.shape[-2:]
    side = tile_side(image.device, bytes_per_pixel, margin)
    if side >= height and side >= width:
        return forward(image)[0, 0].float()
    output = torch.empty((height, width), dtype=torch.float32, device=image.device)
    for top in range(0, height, side):
        for left in range(0, width, side):
            bottom, right = min(top + side, height), min(left + side, width)
            y0, x0 = max(top - margin, 0), max(left - margin, 0)
            y1, x1 = min(bottom + margin, height), min(right + margin, width)
            piece = forward(image[..., y0:y1, x0:x1])[0, 0]
            output[top:bottom, left:right] = piece[top - y0:bottom - y0, left - x0:right - x0].float()
    return output
