"""Lazy inputs (dask, zarr, OME-Zarr paths): read plane by plane, each chunk at most twice, never whole."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_noise2fast import denoise, iter_denoise, lazy

QUICK = {"max_steps": 4, "seed": 0, "device": "cpu"}


class Counting:
    """An array that records every read (the slices of each ``__getitem__``) for dask to wrap."""

    def __init__(self, array: np.ndarray):
        self.array, self.reads = array, []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        out = self.array[key]
        if out.size:  # dask slices zero-size pieces to learn the dtype: not a read of the data
            self.reads.append(key)
        return out


def stack(frames=12, size=48, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    clean = np.linspace(0, 200, size)[None, :] + np.linspace(0, 50, size)[:, None]
    return (clean + rng.normal(0, 20, (frames, size, size))).astype(dtype)


def chunk_reads(counting: Counting, chunks: tuple[int, ...]) -> dict[tuple, int]:
    """How often each chunk (its index along every axis) was read."""
    counts: dict[tuple, int] = {}
    for key in counting.reads:
        key = tuple(slice(k, k + 1) if isinstance(k, (int, np.integer)) else k for k in np.atleast_1d(key))
        key = key + (slice(None),) * (len(counting.shape) - len(key))
        starts = tuple(k.start or 0 for k in key)
        stops = tuple(k.stop if k.stop is not None else n for k, n in zip(key, counting.shape, strict=True))
        for index in np.ndindex(*[-(-(stop - start) // c) for start, stop, c in zip(starts, stops, chunks,
                                                                                       strict=True)]):
            chunk = tuple(start // c + i for start, c, i in zip(starts, chunks, index, strict=True))
            counts[chunk] = counts.get(chunk, 0) + 1
    return counts


@pytest.mark.parametrize("stack_mode", ["recording", "warm"])
def test_a_dask_stack_is_read_by_chunks_at_most_twice_and_equals_the_numpy_result(stack_mode):
    image = stack()
    counting = Counting(image)
    lazy_image = da.from_array(counting, chunks=(2, 48, 48), asarray=False)
    job = iter_denoise(lazy_image, axes="TYX", stack=stack_mode, **QUICK)
    list(job)
    out = job.result()
    assert job._planes.lazy and job._planes.reads == len(counting.reads)  # read by the job, block by block
    reads = chunk_reads(counting, (2, 48, 48))
    assert sorted(reads) == [(k, 0, 0) for k in range(6)]  # every chunk read...
    assert max(reads.values()) <= (2 if stack_mode == "recording" else 1)  # ...at most twice (sample, prediction)
    assert all(key[0].stop - (key[0].start or 0) < 12 for key in counting.reads)  # no read of the whole stack
    expected = denoise(image, axes="TYX", stack=stack_mode, **QUICK)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and isinstance(out, np.ndarray)


def test_planes_inside_one_chunk_are_read_with_it():
    image = stack(frames=8)
    counting = Counting(image)
    job = iter_denoise(da.from_array(counting, chunks=(4, 48, 48), asarray=False), axes="TYX", **QUICK)
    list(job)
    assert len(counting.reads) <= 4  # two chunks, each at most twice, whatever the planes sampled
    assert job._planes.reads == len(counting.reads)


def test_a_chunk_larger_than_the_block_limit_is_read_plane_by_plane(monkeypatch):
    monkeypatch.setattr(lazy, "BLOCK_BYTES", 48 * 48 * 4)  # one float32 plane
    image = stack(frames=6)
    counting = Counting(image)
    denoise(da.from_array(counting, chunks=(6, 48, 48), asarray=False), axes="TYX", stack="warm", **QUICK)
    assert len(counting.reads) == 6 and all(isinstance(key[0], int) or key[0].stop - key[0].start == 1
                                            for key in counting.reads)


def test_zarr_arrays_and_ome_zarr_paths(tmp_path):
    image = stack(frames=4, dtype=np.uint16)
    store = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=image.shape, chunks=(1, 48, 48),
                            dtype=image.dtype)
    store[:] = image
    expected = denoise(image, axes="TYX", **QUICK)
    np.testing.assert_array_equal(denoise(store, axes="TYX", **QUICK), expected)
    np.testing.assert_array_equal(denoise(str(tmp_path / "plain.zarr"), axes="TYX", **QUICK), expected)

    from ome_zarr.writer import write_image

    write_image(image, zarr.open_group(str(tmp_path / "movie.ome.zarr"), mode="w"), axes="tyx", scale_factors=(2,))
    job = iter_denoise(tmp_path / "movie.ome.zarr", **QUICK)  # the axes come from the OME metadata
    list(job)
    assert job.n_planes == 4
    np.testing.assert_array_equal(job.result(), expected)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "plain.zarr"), mode="r")[:], image)  # unchanged


def test_bad_lazy_inputs_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="no zarr store"):
        denoise(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(ValueError, match="multiscales"):
        denoise(tmp_path / "group.zarr")
    with pytest.raises(ValueError, match="boolean"):
        denoise(da.zeros((16, 16), dtype=bool))
    image = stack(frames=4)
    image[3, 5, 5] = np.nan
    job = iter_denoise(da.from_array(image, chunks=(1, 48, 48)), axes="TYX", stack="warm", **QUICK)
    with pytest.raises(ValueError, match="NaN"):  # found when its chunk is read, not before
        list(job)
