"""Where a job's results go when they need not (or cannot) be held in memory: ``out=`` of ``denoise``.

``out`` is a NumPy array or a zarr array to write into, or a path ending in ``.zarr`` (created, or opened
to resume). Planes are written as they are finished; with a zarr array whose chunks hold several planes,
a chunk is written once all its planes are finished, so no chunk is ever half written. A zarr output
records in its attributes (``noise2fast``) the run's settings and the planes finished, so a run started
again on it (same input, same settings) skips them; a path output also keeps the trained model of a
recording beside the array (``<path>/noise2fast/``), so the resumed run predicts with the same weights.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch

from napari_noise2fast.lazy import is_lazy, is_zarr_path
from napari_noise2fast.models import write_torch

ATTRS_KEY = "noise2fast"


def new_plane_store(path: Path, shape: tuple[int, ...], dtype, leading: list[int] | None = None):
    """A new zarr array at ``path`` chunked a plane at a time (one along each ``leading`` axis, default every
    axis but the last two; the whole plane along the others)."""
    import zarr

    leading = list(range(len(shape) - 2)) if leading is None else leading
    chunks = tuple(1 if axis in leading else n for axis, n in enumerate(shape))
    return zarr.open_array(str(path), mode="w", shape=tuple(shape), chunks=chunks, dtype=dtype)


class Output:
    """The results of a job written into ``target`` plane by plane (see the module).

    ``location(index)`` gives plane ``index``'s place in the array (integers on the leading axes);
    ``signature`` describes the run (method, settings, seed, input shape and dtype): a zarr output made
    by a run with another signature is refused rather than mixed.
    """

    def __init__(self, target, shape: tuple[int, ...], dtype: np.dtype, location, leading: list[int],
                 signature: dict, image=None, transpose: bool = False):
        self.folder: Path | None = None
        self._transpose = transpose  # the input's X axis comes before its Y axis: planes are written as X, Y
        source = array_folder(image) if image is not None and is_lazy(image) else None
        if target is image or (source is not None and is_zarr_path(target)
                               and Path(target).resolve() == source.resolve()):
            raise ValueError("out must not be the input: the input is never modified")
        if is_zarr_path(target):
            self.folder = Path(target)
            target = self._open_path(self.folder, shape, dtype, leading)
        elif isinstance(target, np.ndarray):
            if image is not None and isinstance(image, np.ndarray) and np.shares_memory(target, image):
                raise ValueError("out must not be the input: the input is never modified")
            if not target.flags.writeable:
                raise ValueError("out is a read-only array")
        elif is_lazy(target) and hasattr(target, "attrs"):
            self.folder = array_folder(target)
        else:
            raise ValueError(f"out must be a NumPy array, a zarr array or a path ending in .zarr, got "
                             f"{type(target).__name__}")
        if tuple(target.shape) != tuple(shape):
            raise ValueError(f"out has shape {tuple(target.shape)}; it must have the image's shape {tuple(shape)}")
        if np.dtype(target.dtype) != np.dtype(dtype):
            raise ValueError(f"out has dtype {target.dtype}; this run writes {np.dtype(dtype)} (pass dtype= to match)")
        self.array = target
        self.location = location
        self.resumable = not isinstance(target, np.ndarray)
        self.finished: set[int] = set()
        if self.resumable:
            record = dict(target.attrs).get(ATTRS_KEY)
            if record is not None and record.get("signature") != _plain(signature):
                raise ValueError("out holds a run with other settings or another input; pass another output or "
                                 "delete it to start again")
            self.finished = set(record.get("finished", [])) if record else set()
            self._signature = _plain(signature)
            self._record()
        # planes waiting for the rest of their chunk (zarr chunks of several planes along the leading axes)
        self._chunks = ([int(c) for c in np.broadcast_to(target.chunks, (target.ndim,))]
                        if self.resumable else None)
        self._leading = leading
        self._pending: dict[tuple, dict[int, np.ndarray]] = {}

    @staticmethod
    def _open_path(path: Path, shape, dtype, leading) -> object:
        import zarr

        if path.exists():
            try:
                array = zarr.open_array(str(path), mode="r+")
            except Exception as error:
                raise ValueError(f"out: {path} exists and is not a zarr array; it is left as it is") from error
            if ATTRS_KEY not in dict(array.attrs):
                raise ValueError(f"out: {path} exists and was not written by noise2fast; it is left as it is")
            return array
        return new_plane_store(path, shape, dtype, leading)

    def _record(self) -> None:
        self.array.attrs[ATTRS_KEY] = {"signature": self._signature, "finished": sorted(self.finished)}

    def _chunk_key(self, index: int) -> tuple:
        location = self.location(index)
        return tuple(location[axis] // self._chunks[axis] for axis in self._leading)

    def _chunk_planes(self, key: tuple) -> list[int]:
        """The planes in the chunk ``key`` (along the leading axes, in the job's order)."""
        shape = [self.array.shape[axis] for axis in self._leading]
        ranges = [range(k * self._chunks[axis], min((k + 1) * self._chunks[axis], n))
                  for k, axis, n in zip(key, self._leading, shape, strict=True)]
        return [int(np.ravel_multi_index(position, shape)) for position in itertools.product(*ranges)]

    def write(self, index: int, values: np.ndarray) -> None:
        """Plane ``index``'s result (Y, X, in the output dtype), written now or with the rest of its chunk."""
        values = values.T if self._transpose else values
        if not self.resumable:
            self.array[self.location(index)] = values
            return
        if all(self._chunks[axis] == 1 for axis in self._leading):  # one plane a chunk (as a path output is made)
            self.array[self.location(index)] = values
            self.finished.add(index)
            self._record()
            return
        key = self._chunk_key(index)
        waiting = self._pending.setdefault(key, {})
        waiting[index] = values
        members = [i for i in self._chunk_planes(key) if i not in self.finished]
        if any(i not in waiting for i in members):
            return
        if len(members) == 1:
            self.array[self.location(index)] = values
        else:  # the whole chunk along the leading axes at once
            block = [slice(None)] * self.array.ndim
            for axis, k in zip(self._leading, key, strict=True):
                block[axis] = slice(k * self._chunks[axis], (k + 1) * self._chunks[axis])
            current = np.asarray(self.array[tuple(block)])
            for i, plane in waiting.items():
                local = list(self.location(i))
                for axis in self._leading:
                    local[axis] -= block[axis].start
                current[tuple(local)] = plane
            self.array[tuple(block)] = current
        self.finished.update(waiting)
        del self._pending[key]
        self._record()

    @property
    def workers_can_write(self) -> bool:
        """Whether a cluster's workers may write planes here themselves: a zarr array in a local folder (or one
        the workers share), one plane per chunk (no chunk is shared by two tasks' planes)."""
        return (self.folder is not None and self.resumable
                and all(self._chunks[axis] == 1 for axis in self._leading))

    def destination(self, index: int, low, high):
        """Where a worker writes plane ``index`` (:class:`~napari_noise2fast.cluster.Destination`), integer
        outputs clipped to ``[low, high]`` widened by the plane's own range."""
        from napari_noise2fast.cluster import Destination

        return Destination(self.folder, self.location(index), self.array.dtype, low, high, self._transpose)

    def finish(self, index: int) -> None:
        """Record plane ``index`` as written (by a worker)."""
        self.finished.add(index)
        self._record()

    # a recording's trained model (``group``: its channel), or the state a warm-started plane hands on
    # (``"warm"``), beside a path output
    def model_path(self, group) -> Path | None:
        return None if self.folder is None else self.folder / ATTRS_KEY / f"model-{group}.pt"

    def save_model(self, group, state: dict | None) -> None:
        path = self.model_path(group)
        if path is None or state is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_torch(path, state)

    def load_model(self, group) -> dict | None:
        path = self.model_path(group)
        if path is None or not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)


def array_folder(array) -> Path | None:
    """The folder of a zarr array in a local store (None elsewhere: in memory, remote)."""
    root = getattr(getattr(array, "store", None), "root", None) or getattr(getattr(array, "store", None), "path", None)
    if root is None or not Path(str(root)).is_dir():
        return None
    return Path(str(root)) / (getattr(array, "path", "") or "")


def _plain(value):
    """``value`` as JSON would give it back (tuples as lists, NumPy scalars as numbers, anything else as text)."""
    return json.loads(json.dumps(value, default=str))
