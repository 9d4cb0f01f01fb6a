"""Prediction on a dask.distributed cluster: the planes of a recording denoised as tasks on its workers.

The job trains (or loads) the model where it runs; then the trained weights go to every worker once
(``Client.scatter(..., broadcast=True)``), and each plane is a task: the worker reads the plane (from a lazy
input, such as a zarr store it can open, itself; a NumPy input's plane travels with the task), normalises it
with the recording's map, predicts it in tiles with the engine's tiling, and sends back the normalised output
(float32, the plane's size), or, where the job's output is a zarr array in a folder the workers can open
(``out=`` a path ending in .zarr, or a zarr array stored a plane per chunk in a local folder), writes the plane
into it itself and sends back only the plane's lowest and highest values (:class:`Destination`). What
travels: the weights (about 1 MB) once, the settings and the map with each task, a plane each way for NumPy
inputs; for a zarr input only the output comes back, and with a zarr output nothing but two numbers a plane.
Nothing here imports Qt or napari; ``distributed`` is imported only when a client is given.
"""

from __future__ import annotations

import os
import threading

import numpy as np


class Source:
    """A plane's place: the input (a lazy array the worker reads from), the plane's index into it and whether
    the plane is stored X before Y; or the plane itself. A holder, so that dask does not compute a dask-array
    input when the task is submitted."""

    def __init__(self, image, location=None, transposed: bool = False):
        self.image, self.location, self.transposed = image, location, transposed

    def read(self) -> np.ndarray:
        """The plane (H, W); ValueError for NaN or infinite values, as a plane read where the job runs."""
        if self.location is None:
            return np.asarray(self.image)
        from napari_noise2fast.lazy import check_finite

        plane = np.asarray(self.image[self.location])
        check_finite(plane)
        return plane.T if self.transposed else plane


class Destination:
    """Where a worker writes a plane's result: the zarr array in ``folder`` at ``location``, in ``dtype``, X
    before Y where ``transposed``; integer outputs clipped to ``[low, high]``, the input's range as known
    when the task was made, widened by the plane's own (the job clips to the range read so far, which for a
    lazy input grows as planes are read: the two differ only where a plane's output goes beyond every value
    read before it but inside one read later)."""

    def __init__(self, folder: str, location: tuple, dtype, low, high, transposed: bool = False):
        self.folder, self.location, self.dtype = str(folder), location, np.dtype(dtype)
        self.low, self.high, self.transposed = low, high, transposed

    def write(self, plane: np.ndarray, plane_range: tuple, normalised, plane_map, token: str) -> None:
        """Write the result (``normalised`` by ``plane_map``; None: ``plane`` itself, a constant plane; the
        plane's ``(lowest, highest)`` value given) into the array, opened once per run (``token``) here."""
        from napari_noise2fast.intensity import plane_values

        low = plane_range[0] if self.low is None else min(self.low, plane_range[0])
        high = plane_range[1] if self.high is None else max(self.high, plane_range[1])
        values = plane_values(plane, normalised, plane_map, self.dtype, low, high)
        _output_array(token, self.folder)[self.location] = values.T if self.transposed else values


WRITTEN = "written"  # a task's result for a plane its worker wrote to the output itself


def is_written(value) -> bool:
    """Whether a plane's result is ``WRITTEN`` (a string after its trip from the worker, not the same object)."""
    return isinstance(value, str) and value == WRITTEN


def local_cluster(workers: int, malloc_trim: bool = False):
    """A ``distributed.LocalCluster`` of ``workers`` worker processes with one thread each, without the
    ``MALLOC_TRIM_THRESHOLD_=65536`` that dask's nannies set by default (``malloc_trim=True`` keeps it): with
    it glibc returns memory to the system after every large free, and two workers took 1.21x as long to
    predict a 200-frame recording (one run of benchmarks/distributed_scaling.py, Intel Xeon with AMX; see
    benchmarks/RESULTS.md). On a cluster of your own, set the dask config key
    ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_`` to null for the same. This process's
    environment is left as it was."""
    import dask
    from distributed import LocalCluster

    unset = {} if malloc_trim else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    environ = dict(os.environ)
    try:
        with dask.config.set(unset):
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    finally:  # the nannies set OMP_NUM_THREADS=1 and more in this process's environment to spawn the workers:
        # left there, every process started from here later (a subprocess) would run one thread
        os.environ.clear()
        os.environ.update(environ)


def check_client(client):
    """``client`` if it is a ``dask.distributed.Client`` (or None); ValueError naming ``client`` otherwise."""
    if client is None:
        return None
    try:
        from distributed import Client
    except ImportError as error:
        raise ValueError("client= needs dask.distributed (pip install distributed)") from error
    if not isinstance(client, Client):
        raise ValueError(f"client must be a dask.distributed Client, got {type(client).__name__}")
    return client


# on a worker: the predictors of the runs in use (by the run's token), each built at its first plane; a worker
# of several threads may serve two runs at once
_PREDICTORS: dict = {}
_ARRAYS: dict = {}  # the zarr outputs open for writing, by (run's token, folder)
_PREDICTORS_LOCK = threading.Lock()
KEEP_PREDICTORS = 2


# planes per task: enough tasks for every worker to have several (a slow worker does not hold up the end), as
# few as that allows (each task costs the scheduler and the client some milliseconds), and at most this many
# bytes of output per task
TASKS_PER_WORKER = 4
TASK_BYTES = 256 * 2**20


def task_planes(planes: int, shape: tuple[int, int], threads: int) -> int:
    """How many of ``planes`` planes of ``shape`` one task predicts on a cluster of ``threads`` worker
    threads in all."""
    most = max(1, TASK_BYTES // (4 * shape[0] * shape[1]))
    return max(1, min(most, -(-planes // (TASKS_PER_WORKER * max(1, threads)))))


def _predictor(token: str, method: str, spec: dict, state: dict):
    """The predictor of run ``token`` on this worker, built once (on the run's device type where this worker
    has one, else on the device ``"auto"`` finds here)."""
    from napari_noise2fast.devices import resolve_device
    from napari_noise2fast.methods import get_method

    with _PREDICTORS_LOCK:
        if token not in _PREDICTORS:
            while len(_PREDICTORS) >= KEEP_PREDICTORS:  # the oldest run's network (and output) goes
                _PREDICTORS.pop(next(iter(_PREDICTORS)))
            for key in [key for key in _ARRAYS if key[0] not in _PREDICTORS]:
                del _ARRAYS[key]
            try:
                resolve_device(spec["device"])
            except ValueError:  # trained on a GPU this worker lacks
                spec = {**spec, "device": "auto"}
            _PREDICTORS[token] = get_method(method).predictor(state, **spec)
        return _PREDICTORS[token]


def _output_array(token: str, folder: str):
    """The zarr array in ``folder`` opened for run ``token`` on this worker (opening it for every plane took
    about 2 ms, 5 % of predicting a 256x256 plane), kept as long as the run's predictor."""
    import zarr

    with _PREDICTORS_LOCK:
        key = (token, folder)
        if key not in _ARRAYS:
            _ARRAYS[key] = zarr.open_array(folder, mode="r+")
        return _ARRAYS[key]


def predict_planes(token: str, method: str, spec: dict, state: dict, sources: list[Source], plane_map,
                   destinations: list[Destination] | None = None) -> list:
    """On a worker: each plane of ``sources`` normalised by ``plane_map`` and denoised by the model of
    ``state`` (:meth:`Method.predictor`, ``spec`` its settings; built once per run, ``token``). Returns for
    each the normalised float32 output (None for a constant plane: its output is the plane itself), or
    ``WRITTEN`` where it was written to its ``destinations`` entry, and the plane's lowest and highest values."""
    import torch

    results = []
    for k, source in enumerate(sources):
        plane = source.read()
        low, high = plane.min(), plane.max()
        if low == high:
            normalised = None
        else:
            tensor = torch.from_numpy(plane_map.normalise(plane))[None, None]
            normalised = _predictor(token, method, spec, state)(tensor).cpu().numpy()
        if destinations is not None:
            destinations[k].write(plane, (low, high), normalised, plane_map, token)
            normalised = WRITTEN
        results.append((normalised, low, high))
    return results
