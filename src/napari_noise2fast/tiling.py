"""Prediction in overlapping tiles: the engine's one tiling mechanism, for every method's network.

A fully convolutional network's output at a pixel depends only on the input
within its receptive field; cutting the plane into tiles that overlap by at
least that radius and keeping each tile's centre gives the whole-plane output
(to float rounding), at the memory of one tile. The tile size is chosen from
the device's free memory, never by the user (``TILE_OVERRIDE`` is for tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

MIN_TILE, MAX_TILE = 64, 4096
MEMORY_SHARE = 0.25  # of the free memory, one tile's activations may take
HOST_TILE_BYTES = 512 * 2**20  # and at most this much in host memory, so that a process's peak stays bounded
TILE_OVERRIDE: int | None = None  # tests only: a fixed tile side


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors on ``device`` now (CUDA: the driver's count; elsewhere the system's)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def tile_side(device: torch.device, bytes_per_pixel: float, margin: int) -> int:
    """The side of a tile's kept centre such that the tile with its margins fits ``MEMORY_SHARE`` of the
    free memory (in host memory at most ``HOST_TILE_BYTES``) at ``bytes_per_pixel`` (a network's
    activations per pixel), within 64 to 4096."""
    if TILE_OVERRIDE is not None:
        return TILE_OVERRIDE
    budget = MEMORY_SHARE * free_memory(device)
    if device.type != "cuda":
        budget = min(budget, HOST_TILE_BYTES)
    pixels = budget / bytes_per_pixel
    return int(min(max(math.isqrt(int(pixels)) - 2 * margin, MIN_TILE), MAX_TILE))


def with_margin(region: tuple[int, int, int, int], shape: tuple[int, int], margin: int):
    """``(cut, inner)`` for ``region`` (top, left, bottom, right) of a plane of ``shape``: the region with
    ``margin`` pixels of context on each side that is not the plane's edge, and the region within it."""
    top, left, bottom, right = region
    y0, x0 = max(top - margin, 0), max(left - margin, 0)
    y1, x1 = min(bottom + margin, shape[0]), min(right + margin, shape[1])
    return ((slice(y0, y1), slice(x0, x1)), (slice(top - y0, bottom - y0), slice(left - x0, right - x0)))


def tiles(shape: tuple[int, int], side: int, margin: int, multiple: int = 1):
    """The tiles of a plane of ``shape``: ``(kept, cut, inner)`` slices for each, in raster order.

    ``kept`` (a tile's centre, ``side`` square) tiles the plane exactly; ``cut`` is that centre with
    ``margin`` pixels of context on each side that is not the plane's edge; ``inner`` locates the
    centre within the cut. With ``multiple`` > 1 every cut starts at a multiple of it (for networks
    that pool), ``side`` and ``margin`` being rounded to multiples of it.
    """
    height, width = shape
    side = max(multiple, side // multiple * multiple)
    margin = -(-margin // multiple) * multiple
    for top in range(0, height, side):
        for left in range(0, width, side):
            bottom, right = min(top + side, height), min(left + side, width)
            yield ((slice(top, bottom), slice(left, right)),
                   *with_margin((top, left, bottom, right), shape, margin))


def predict_in_tiles(forward: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, margin: int,
                     bytes_per_pixel: float, multiple: int = 1, outputs: int = 1) -> torch.Tensor:
    """``forward`` applied to ``image`` (shape (1, C, H, W)) tile by tile; the (H, W) float32 output
    (``outputs`` > 1: (outputs, H, W)).

    ``forward`` maps a (1, C, h, w) tensor to (1, outputs, h, w). ``margin`` must be at least the network's
    receptive-field radius: every tile is cut with that much real context on each side that is not the
    plane's edge, so each kept centre equals the whole-plane output there. A plane that fits one tile is
    passed whole, exactly as without tiling. ``multiple``: see :func:`tiles` (the plane's own height and
    width must then be multiples of it too).
    """
    height, width = image.shape[-2:]
    side = tile_side(image.device, bytes_per_pixel, margin)
    channel = 0 if outputs == 1 else slice(None)
    if side >= height and side >= width:
        return forward(image)[0, channel].float()
    output = torch.empty((outputs, height, width)[outputs == 1:], dtype=torch.float32, device=image.device)
    for kept, cut, inner in tiles((height, width), side, margin, multiple):
        output[(..., *kept)] = forward(image[(..., *cut)])[0, channel][(..., *inner)].float()
    return output


def apply_in_blocks(function: Callable[[np.ndarray], np.ndarray], image: np.ndarray, margin: int,
                    side: int) -> Iterator[np.ndarray]:
    """``function`` (a 2D array filter) applied to ``image`` block by block, each with ``margin`` pixels
    of context: a generator that yields between blocks (for progress and cancelling) and returns the
    float64 output (as ``StopIteration.value``) after the last, so that ``count_blocks`` calls of ``next``
    run it. One block, the plane whole, where it fits."""
    height, width = image.shape
    if side >= height and side >= width:
        return np.asarray(function(image), dtype=np.float64)
    output = np.empty((height, width), dtype=np.float64)
    for index, (kept, cut, inner) in enumerate(tiles((height, width), side, margin)):
        if index:
            yield output
        output[kept] = np.asarray(function(image[cut]))[inner]
    return output


def filter_in_tiles(function: Callable[[np.ndarray], np.ndarray], image: np.ndarray, margin: int, side: int,
                    workers: int = 1) -> np.ndarray:
    """``function`` (a 2D filter whose output at a pixel depends on the input within ``margin`` of it, and
    which releases the GIL, as SciPy's do) applied tile by tile in ``workers`` threads: the whole-plane
    output, float32, exactly."""
    output = np.empty(image.shape, dtype=np.float32)

    def one(tile) -> None:
        kept, cut, inner = tile
        output[kept] = function(image[cut])[inner]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(one, tiles(image.shape, side, margin)))  # raises a tile's error, if any
    return output


def count_blocks(shape: tuple[int, int], side: int) -> int:
    """How many blocks :func:`apply_in_blocks` takes for a plane of ``shape``."""
    if side >= shape[0] and side >= shape[1]:
        return 1
    return math.ceil(shape[0] / side) * math.ceil(shape[1] / side)


def central_crop(plane, side: int):
    """The plane's centre, at most ``side`` x ``side``: a sample to calibrate on where the plane is large."""
    height, width = plane.shape[-2:]
    top, left = max((height - side) // 2, 0), max((width - side) // 2, 0)
    return plane[..., top:top + side, left:left + side]
