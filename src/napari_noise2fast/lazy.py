"""Inputs read plane by plane: NumPy arrays, and lazy ones (dask arrays, zarr arrays, (OME-)Zarr paths).

A lazy input is never read whole: :class:`Planes` reads the block of chunks that holds the plane asked
for (every leading axis's chunk, the whole Y and X extent) and keeps that one block, so reading planes in
order reads every chunk once, and a sample of planes spread over the stack followed by every plane in
order (one model per recording) reads each chunk at most twice. The checks that a NumPy input gets before
any work (finite values, the value range) run on those same reads, block by block.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

BLOCK_BYTES = 256 * 2**20  # a block of chunks larger than this is read a plane at a time instead


def is_lazy(image) -> bool:
    """A dask or zarr array (anything array-like with shape, dtype and indexing that is not NumPy's)."""
    return (not isinstance(image, np.ndarray) and hasattr(image, "shape") and hasattr(image, "dtype")
            and hasattr(image, "__getitem__") and hasattr(image, "chunks"))


def is_zarr_path(image) -> bool:
    return isinstance(image, (str, os.PathLike)) and Path(image).suffix.lower() == ".zarr"


def open_zarr(path, mode: str = "r") -> tuple[object, str | None]:
    """The array of a ``.zarr`` path and its axes letters (None where the store does not say): an OME-Zarr
    image's full-resolution level (its axes from the multiscales metadata), or a plain zarr array."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise ValueError(f"image: no zarr store at {path}")
    try:
        node = zarr.open(str(path), mode=mode)
    except Exception as error:  # zarr raises several kinds for a folder that is not a store
        raise ValueError(f"image: {path} is not a readable zarr store ({error})") from error
    if hasattr(node, "shape"):
        return node, None
    multiscales = ome_multiscales(dict(node.attrs))
    if not multiscales:
        raise ValueError(f"image: {path} is a zarr group without OME-Zarr multiscales metadata; "
                         "pass the array inside it")
    first = multiscales[0]
    array = node[first["datasets"][0]["path"]]
    names = [axis["name"] if isinstance(axis, dict) else axis for axis in first.get("axes", [])]
    axes = "".join(name[0].upper() for name in names) if len(names) == array.ndim else None
    return array, axes


def ome_multiscales(attrs: dict) -> list | None:
    """The multiscales entry of an OME-Zarr group's attributes (OME-NGFF 0.4 or 0.5), or None."""
    return attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")


def _chunk_edges(image, axis: int) -> np.ndarray:
    """The starts of the chunks along ``axis`` and the end (dask: its chunks; zarr: a regular grid)."""
    chunks = image.chunks
    if isinstance(chunks[axis], (tuple, list)):
        sizes = list(chunks[axis])
    else:
        size = int(chunks[axis])
        sizes = [size] * math.ceil(image.shape[axis] / size)
        sizes[-1] = image.shape[axis] - size * (len(sizes) - 1)
    return np.concatenate([[0], np.cumsum(sizes)])


def _read(image, location) -> np.ndarray:
    block = image[location]
    compute = getattr(block, "compute", None)  # dask: the read happens here
    return np.asarray(compute() if compute is not None else block)


class Planes:
    """The YX planes of ``image`` in the job's order (every leading axis in order, then Y, X).

    ``planes[index]`` is one plane (H, W). For a NumPy input it is a view, and the checks ran before; for
    a lazy input it is read (see the module), checked for NaN or infinite values, and ``low``/``high``
    follow the smallest and largest value read so far. ``reads`` counts the blocks read.
    """

    def __init__(self, image, layout: tuple[int, int, int | None]):
        self.image = image
        y, x, _ = layout
        self.leading = [i for i in range(image.ndim) if i not in (y, x)]
        self.leading_shape = tuple(image.shape[i] for i in self.leading)
        self.shape = (int(np.prod(self.leading_shape, dtype=np.int64)), image.shape[y], image.shape[x])
        self.dtype = np.dtype(image.dtype)
        self.y, self.x = y, x
        self.lazy = not isinstance(image, np.ndarray)
        self.low = self.high = None
        self.reads = 0
        if not self.lazy:
            moved = np.transpose(image, (*self.leading, y, x))
            self._view = moved.reshape(-1, *moved.shape[-2:])
            return
        self._edges = [_chunk_edges(image, axis) for axis in self.leading]
        block_planes = np.prod([int(np.diff(edges).max()) for edges in self._edges] or [1])
        self._blockwise = block_planes * self.shape[1] * self.shape[2] * self.dtype.itemsize <= BLOCK_BYTES
        self._block: tuple | None = None  # (key, array of the leading block's planes, its starts)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def transposed(self) -> bool:
        """Whether the input holds its planes X before Y (each plane read is transposed)."""
        return self.x < self.y

    def seen(self, low, high) -> None:
        """A plane read elsewhere (a worker of a cluster) had values from ``low`` to ``high``."""
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def position(self, index: int) -> tuple[int, ...]:
        """Plane ``index``'s place along the leading axes."""
        return tuple(int(p) for p in np.unravel_index(index, self.leading_shape)) if self.leading else ()

    def location(self, index: int) -> tuple:
        """The index into the input of plane ``index`` (integers on the leading axes, ``:`` on Y and X)."""
        location: list = [slice(None)] * self.image.ndim
        for axis, position in zip(self.leading, self.position(index), strict=True):
            location[axis] = position
        return tuple(location)

    def __getitem__(self, index: int) -> np.ndarray:
        if not self.lazy:
            return self._view[index]
        position = self.position(index)
        if self._blockwise:
            chunk = tuple(int(np.searchsorted(edges, p, side="right")) - 1
                          for edges, p in zip(self._edges, position, strict=True))
            if self._block is None or self._block[0] != chunk:
                location: list = [slice(None)] * self.image.ndim
                for axis, edges, k in zip(self.leading, self._edges, chunk, strict=True):
                    location[axis] = slice(int(edges[k]), int(edges[k + 1]))
                self._block = (chunk, self._checked(_read(self.image, tuple(location))),
                               [int(edges[k]) for edges, k in zip(self._edges, chunk, strict=True)])
            _, block, starts = self._block
            inner = [p - s for p, s in zip(position, starts, strict=True)]
            plane = block[tuple(inner[self.leading.index(a)] if a in self.leading else slice(None)
                                for a in range(self.image.ndim))]
        else:
            plane = self._checked(_read(self.image, self.location(index)))
        return plane.T if self.transposed else plane

    def _checked(self, block: np.ndarray) -> np.ndarray:
        self.reads += 1
        if block.size == 0:
            return block
        check_finite(block)
        self.seen(block.min(), block.max())
        return block


def check_finite(block: np.ndarray) -> None:
    """ValueError for NaN or infinite values in ``block`` (read lazily, here or on a worker of a cluster)."""
    if block.dtype.kind == "f" and not np.all(np.isfinite(block)):
        raise ValueError("image contains NaN or infinite values; replace them before denoising")
