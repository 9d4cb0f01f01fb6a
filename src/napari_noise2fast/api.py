"""Public API: ``denoise`` and its streaming form ``iter_denoise`` on nD arrays.

Every 2D YX plane (of a stack, time series or any leading axes) and every
channel is denoised independently by the engine.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch

from napari_noise2fast.checks import check_bool, check_int, check_positive_or_none, check_str
from napari_noise2fast.cluster import check_client, is_written
from napari_noise2fast.devices import resolve_device
from napari_noise2fast.engine import Event, PlaneRun, RecordingRun, recording_sample
from napari_noise2fast.intensity import IntensityMap, cast, float_max, integer_bounds, plane_values
from napari_noise2fast.lazy import Planes, is_lazy, is_zarr_path, open_zarr
from napari_noise2fast.methods import get_method
from napari_noise2fast.models import MODEL_USES, SavedModel, digest, load_model, save_model
from napari_noise2fast.noise import NoiseModel, learned_noise_model
from napari_noise2fast.output import Output

MIN_PLANE_SIZE = 8
CHANNEL_LETTERS = "CS"
STACKS = ("recording", "warm", "independent")


def count_planes(image, axes: str | None = None, channel_axis: int | None = None) -> int:
    """How many YX planes :func:`iter_denoise` trains one after another for ``image`` with these axes."""
    shape = np.shape(image)
    y, x, _ = _resolve_layout(shape, axes, channel_axis)
    return int(np.prod([n for i, n in enumerate(shape) if i not in (y, x)], dtype=np.int64))


def _check_image(image) -> tuple[object, str | None]:
    """The array to denoise (lazy inputs stay lazy: nothing is read here) and the axes a zarr store names."""
    store_axes = None
    if is_zarr_path(image):
        image, store_axes = open_zarr(image)
    array = image if is_lazy(image) else np.asarray(image)
    if array.dtype.kind == "b":
        raise ValueError("image has a boolean dtype; a noisy image must hold numbers")
    if array.dtype.kind == "c":
        raise ValueError("image has a complex dtype; denoise the real and imaginary parts separately")
    if array.dtype.kind not in "uif":
        raise ValueError(f"image must be an integer or floating-point array, got dtype {array.dtype}")
    if array.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions (Y, X), got shape {array.shape}")
    if math.prod(array.shape) == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if not is_lazy(array) and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("image contains NaN or infinite values; replace them before denoising")
    return array, store_axes  # a lazy input is checked block by block as it is read (lazy.Planes)


def _resolve_layout(shape: tuple[int, ...], axes: str | None, channel_axis: int | None) -> tuple[int, int, int | None]:
    """Return the (y, x, channel) axis positions, channel None when there is none."""
    ndim = len(shape)
    check_str("axes", axes)
    channel_axis = check_int("channel_axis", channel_axis)
    if axes is not None:
        if channel_axis is not None:
            raise ValueError("give either axes or channel_axis, not both")
        letters = axes.upper()
        if len(letters) != ndim:
            raise ValueError(f"axes {axes!r} has {len(letters)} letters but the image has {ndim} dimensions {shape}")
        if len(set(letters)) != len(letters):
            raise ValueError(f"axes {axes!r} repeats a letter")
        if "Y" not in letters or "X" not in letters:
            raise ValueError(f"axes {axes!r} must contain both 'Y' and 'X'")
        channels = [i for i, letter in enumerate(letters) if letter in CHANNEL_LETTERS]
        if len(channels) > 1:
            raise ValueError(f"axes {axes!r} has more than one channel axis (C or S)")
        return letters.index("Y"), letters.index("X"), channels[0] if channels else None
    if channel_axis is None and ndim == 3 and shape[-1] in (3, 4):
        channel_axis = -1  # RGB or RGBA, as napari guesses it
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for an image of {ndim} dimensions")
        channel_axis %= ndim
        if ndim < 3:
            raise ValueError("an image with a channel axis needs at least 3 dimensions (Y, X and channels)")
    spatial = [i for i in range(ndim) if i != channel_axis]
    return spatial[-2], spatial[-1], channel_axis


def _output_dtype(array, low, high, dtype) -> np.dtype:
    """float32 by default (a constant image: its own dtype, so it comes back unchanged); ValueError where
    the dtype asked for (or float32) cannot hold the image's values, ``low`` to ``high`` (None for a lazy
    input, not read yet: its values are clipped to the dtype's range at the end)."""
    if dtype is None:
        out = array.dtype if low is not None and low == high else np.dtype(np.float32)
    else:
        try:
            out = np.dtype(dtype)
        except TypeError as error:
            raise ValueError(f"dtype must be a NumPy integer or floating-point dtype, got {dtype!r}") from error
    if out.kind not in "uif" or out.itemsize > 8:
        raise ValueError(f"dtype must be a NumPy integer or floating-point dtype of at most 64 bits, got {out}")
    if low is None:
        return out
    if out.kind in "ui":
        integer_bounds(low, high, out)  # ValueError if the dtype holds none of the image's values
    elif not (-float_max(out) <= float(low) and float(high) <= float_max(out)):
        raise ValueError(f"the image's values (from {low:.3g} to {high:.3g}) are beyond {out}'s range; "
                         "pass dtype=np.float64 or rescale the image")
    return out


class DenoiseJob:
    """A denoising job over every plane of an image, as an iterator of events.

    Made by :func:`iter_denoise`. Iterating trains plane after plane; stop
    at any time (``break`` or :meth:`close`) and :meth:`result` still returns
    a full array: finished planes, the best so far of the current plane, and
    the untouched input for planes not started.
    """

    def __init__(self, image: np.ndarray, layout: tuple[int, int, int | None], out_dtype: np.dtype,
                 method: str, seeds: list[int | None], run_kwargs: dict, value_range: tuple | None = None,
                 stack: str = "warm", loaded: tuple[SavedModel, str] | None = None, out=None, client=None):
        y, x, c = layout
        self._planes = Planes(image, layout)  # read one at a time where the input is lazy
        leading = self._planes.leading
        self._order = (*leading, y, x)
        self._channel = leading.index(c) if c is not None else None  # the channel's place among the leading axes
        self._moved_shape = (*self._planes.leading_shape, *self._planes.shape[1:])
        self._out = None if out is None else Output(
            out, image.shape, out_dtype, self._planes.location, leading, image=image,
            transpose=x < y,
            signature={"method": method, "stack": stack, "seed": seeds[0], "shape": list(image.shape),
                       "dtype": str(image.dtype), "out_dtype": str(np.dtype(out_dtype)),
                       "settings": {k: v for k, v in run_kwargs.items()
                                    if k not in ("device", "output_every", "view_every")},
                       # a run resumed on it goes on with the same model, used the same way
                       **({"model": {"digest": digest(loaded[0]), "use": loaded[1]}} if loaded else {})})
        # results as they are kept: normalised float32 and each plane's map back (None: the input plane
        # itself); with ``out``, written there instead
        self._results = np.empty(self._planes.shape if out is None else (0,), dtype=np.float32)
        self._maps: list[IntensityMap | None] = [None] * len(self._planes)
        self._done = np.zeros(len(self._planes), dtype=bool)
        if self._out is not None:
            self._done[sorted(self._out.finished)] = True  # a resumed run: these are not done again
        self._range = value_range  # None for a lazy input: the range read so far (self._planes)
        self._method = get_method(method)
        self._is_integer = image.dtype.kind in "ui"
        self._seeds = seeds
        self._run_kwargs = run_kwargs
        self.stack = stack
        # a model from a file (``model=``) and its use: ``"predict"`` (no training) or ``"warm"``
        self._loaded, self._model_use = loaded if loaded is not None else (None, None)
        self._client = client  # a dask.distributed Client: a recording's planes are predicted on its workers
        # each channel group's trained model as training ends (the last plane's, planes trained one by one):
        # (weights on the CPU, the (low, high) its planes were normalised from), for :meth:`save_model`
        self._trained: dict[int, tuple[dict, tuple[float, float]]] = {}
        self._noise: dict[int, NoiseModel] = {}  # each channel group's fitted noise model (PN2V), image units
        self.out_dtype = out_dtype
        self.current: PlaneRun | RecordingRun | None = None
        self.events: Iterator[Event] = self._counted(self._events())

    @property
    def n_planes(self) -> int:
        return len(self._planes)

    @property
    def out(self):
        """The array the job writes into (``out=``; a zarr array for a path), or None."""
        return None if self._out is None else self._out.array

    @property
    def _low(self):
        return self._range[0] if self._range is not None else self._planes.low

    @property
    def _high(self):
        return self._range[1] if self._range is not None else self._planes.high

    @property
    def device(self) -> torch.device:
        """The device the job trains on (``"auto"`` already resolved)."""
        return self._run_kwargs["device"]

    def _events(self) -> Iterator[Event]:
        if self._model_use == "predict":
            for group, indices in enumerate(self._channel_groups()):  # every plane by the model of its channel
                if all(self._done[indices]):
                    yield from self._resumed(indices)
                    continue
                sample = self._sample(indices)
                if len(indices) > 1 and sample.min() == sample.max():  # no range to share: each plane its own
                    for index in indices:
                        yield from self._recording_events(group, [index], self._sample([index]),
                                                          trained=self._given(group))
                    continue
                yield from self._recording_events(group, indices, sample, trained=self._given(group))
            return
        if self.stack != "recording":
            yield from self._plane_events(range(self.n_planes))
            return
        for group, indices in enumerate(self._channel_groups()):  # one model per channel: channels differ
            if all(self._done[indices]):
                yield from self._resumed(indices)
                continue
            if len(indices) > 1:
                planes = self._sample(indices)  # its first read of them
                if planes.min() != planes.max():
                    yield from self._recording_events(group, indices, planes, warm=self._warm(group))
                    continue
            yield from self._plane_events(indices)

    def _sample(self, indices: list[int]) -> np.ndarray:
        """The planes a recording of ``indices`` trains on (:func:`~napari_noise2fast.engine.recording_sample`),
        read."""
        shape = self._planes.shape[1:]
        return np.stack([self._planes[indices[k]] for k in recording_sample(len(indices), shape)])

    def _given(self, group: int) -> dict | None:
        """The weights of channel group ``group`` in the model given (``model=``; one model serves every
        channel); None without one."""
        if self._loaded is None:
            return None
        states = self._loaded.states
        return states[group] if len(states) > 1 else states[0]

    def _warm(self, group: int) -> dict | None:
        """What the first plane (or the recording) of ``group`` starts from with ``model_use="warm"``: the
        saved weights, for the network and its average (Adam starts afresh)."""
        state = self._given(group) if self._model_use == "warm" else None
        return None if state is None else {"best": state, "network": state, "optimizer": None}

    def _group_of(self, index: int) -> int:
        """The channel group of plane ``index`` (its position along the channel axis; 0 without one)."""
        return 0 if self._channel is None else int(np.unravel_index(index, self._moved_shape[:-2])[self._channel])

    @property
    def has_model(self) -> bool:
        """Whether :meth:`save_model` has a model to save (every channel's trained, or given)."""
        return self._method.trains_on_stacks and len(self._trained) == len(self._channel_groups())

    def save_model(self, path, overwrite: bool = False):
        """Save the trained model to ``path`` (the name as given, no suffix added): the weights of each
        channel's model (a recording's; planes trained one by one: the last plane's), the intensities they
        were normalised from, the method and its settings, the versions (see :mod:`napari_noise2fast.models`).
        Use it with ``denoise(..., model=path)``. ValueError before a model is trained (or where the method
        keeps none: every method but Noise2Fast), for a channel with no model yet, or an existing file
        without ``overwrite``. Returns the path."""
        if not self._method.trains_on_stacks:
            raise ValueError(f"{self._method.display_name} does not save trained models (Noise2Fast does)")
        groups = len(self._channel_groups())
        missing = [group for group in range(groups) if group not in self._trained]
        if len(missing) == groups:
            raise ValueError("no trained model to save yet: run the job first (at least one validation)")
        if missing:
            raise ValueError(f"channel(s) {missing} have no trained model yet: run the job to the end first")
        settings = {k: v for k, v in self._run_kwargs.items()
                    if k not in ("device", "max_steps", "output_every", "view_every", "preview")}
        from napari_noise2fast import __version__

        preset = {"preset": settings["preset"]} if "preset" in settings else {}  # its None settings are its own
        model = SavedModel(method=self._method.name, settings={**preset, **self._method.check_params(**settings)},
                           states=[self._trained[group][0] for group in range(groups)],
                           ranges=[self._trained[group][1] for group in range(groups)],
                           package_version=__version__)
        return save_model(path, model, overwrite=overwrite)

    def _remember(self, index: int, state: dict | None, plane_map: IntensityMap) -> None:
        if state is not None:
            self._trained[self._group_of(index)] = (state, (float(plane_map.low), float(plane_map.high)))
        fitted = self._fitted_noise(self.current)
        if fitted is not None:
            self._noise[self._group_of(index)] = fitted

    def _fitted_noise(self, run) -> NoiseModel | None:
        model = None if run is None else run.model
        noise = getattr(model, "noise_model", lambda: None)() if model is not None else None
        if noise is None or run.map.constant:
            return None
        return learned_noise_model(noise, self._method.name, float(run.map.low), run.map.range)

    def noise_model(self, channel: int = 0) -> NoiseModel | None:
        """The noise model the method fitted (PN2V; see :func:`~napari_noise2fast.estimate_noise`) for the
        planes of ``channel`` (0 without a channel axis), in the image's units: the recording's, or the last
        plane's trained; the plane's in the making where none has finished. None where the method fits no
        noise model or has not fitted it yet."""
        if channel in self._noise:
            return self._noise[channel]
        run = self.current
        index = getattr(run, "plane_index", -1)
        indices = getattr(run, "indices", [index])
        if run is None or not indices or self._group_of(indices[0]) != channel:
            return None
        return self._fitted_noise(run)

    def _counted(self, events: Iterator[Event]) -> Iterator[Event]:
        """``events`` with the job's progress in planes: ``planes_done`` and the ``eta`` of the rest."""
        done = 0  # every plane has one final event, a resumed run's finished planes too ("resumed")
        times: list[float] = []
        try:
            for event in events:
                if event.done and event.stop_reason != "resumed":
                    times.append(time.perf_counter())
                if event.done:
                    done += 1
                pace = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
                if pace is not None:
                    eta = pace * (self.n_planes - done)
                elif event.eta is not None and not event.done:  # the plane's own, the planes after it as long
                    eta = event.eta + (event.elapsed + event.eta) * (self.n_planes - done - 1)
                else:
                    eta = None
                yield dataclasses.replace(event, planes_done=done, eta=eta)
        finally:
            events.close()

    def _resumed(self, indices) -> Iterator[Event]:
        """A done event for each plane a resumed run finds finished in ``out``."""
        for index in indices:
            yield Event(step=0, val_psnr=math.nan, best_val_psnr=math.nan, elapsed=0.0, stage=self._method.name,
                        done=True, stop_reason="resumed", plane=index, n_planes=self.n_planes)

    def _plane_events(self, indices) -> Iterator[Event]:
        """Plane after plane, each warm-started from the one before where the method can."""
        warm = self._warm(self._group_of(indices[0])) if len(indices) else None
        for index in indices:
            if self._done[index]:
                yield from self._resumed([index])
                warm = None if self._out is None else self._out.load_model("warm")  # where the plane left off
                continue
            self.current = PlaneRun(
                self._planes[index], self._method, seed=self._seeds[index], is_integer=self._is_integer,
                plane_index=index, n_planes=self.n_planes, warm=warm, **self._run_kwargs,
            )
            for event in self.current:
                if event.done:
                    self._keep(index, self.current)
                    if self.current.model is not None:
                        self._remember(index, self.current.model.trained_state(), self.current.map)
                    warm = self.current.carry() or warm
                    if self._out is not None and warm is not None:
                        self._out.save_model("warm", warm)  # for a resumed run: the next plane starts here
                yield event
        self.current = None

    def _channel_groups(self) -> list[list[int]]:
        """The planes of each channel, in order (all planes where the image has no channel axis)."""
        if self._channel is None:
            return [list(range(self.n_planes))]
        channel = np.unravel_index(np.arange(self.n_planes), self._moved_shape[:-2])[self._channel]
        return [np.flatnonzero(channel == k).tolist() for k in range(self._moved_shape[self._channel])]

    def _recording_events(self, group: int, indices: list[int], sample: np.ndarray, trained: dict | None = None,
                          warm: dict | None = None) -> Iterator[Event]:
        """One model for the planes ``indices`` (``stack="recording"``; channel ``group``), trained on
        ``sample`` (their :func:`~napari_noise2fast.engine.recording_sample`, read; from ``warm``), or with
        ``out`` of a resumed run the model stored there, or the ``trained`` weights given (``model=``):
        see :class:`~napari_noise2fast.engine.RecordingRun`."""
        kwargs = {k: v for k, v in self._run_kwargs.items() if k != "preview"}
        out = self._out
        stored = None if out is None else out.load_model(group)

        def on_trained(state):
            self._remember(indices[0], state, run.map)
            if out is not None:
                out.save_model(group, state)

        self.current = run = RecordingRun(
            self._planes, self._method, indices=indices, sample=sample, seed=self._seeds[indices[0]],
            is_integer=self._is_integer, keep=lambda index, normalised: self._store(index, normalised, run.map),
            trained=stored if stored is not None else trained, on_trained=on_trained, warm=warm,
            reason="resumed" if stored is not None else "model", client=self._client,
            destination=self._destination if self._client is not None and out is not None
            and out.workers_can_write else None,
            skip=[index for index in indices if self._done[index]], **kwargs)
        if run.trained is not None:  # nothing to train: the model is already the one to save
            self._remember(indices[0], run.trained, run.map)
        yield from run
        fitted = self._fitted_noise(run)  # a model given (or resumed) brings its noise model
        if fitted is not None:
            self._noise[group] = fitted
        self.current = None

    def _destination(self, index: int):
        """Where a cluster's worker writes plane ``index`` into ``out`` itself, clipped as :meth:`_store` clips."""
        return self._out.destination(index, self._low, self._high)

    def _store(self, index: int, normalised: np.ndarray | None, plane_map: IntensityMap | None) -> None:
        """Keep plane ``index``'s result (``normalised`` None: the plane itself, unchanged; ``WRITTEN``: a
        cluster's worker wrote it into ``out``)."""
        if is_written(normalised):
            self._out.finish(index)
        elif self._out is not None:
            plane = self._planes[index] if normalised is None else None
            self._out.write(index, plane_values(plane, normalised, plane_map, self.out_dtype, self._low, self._high))
        elif normalised is not None:
            self._results[index] = normalised
            self._maps[index] = plane_map
        self._done[index] = True

    def plane_location(self, index: int) -> tuple:
        """Index into the input array of plane ``index`` (integers on the other axes, ``:`` on Y and X)."""
        return self._planes.location(index)

    def _keep(self, index: int, run: PlaneRun) -> None:
        self._store(index, run.normalised_result(), run.map)

    def cast(self, values: np.ndarray) -> np.ndarray:
        """``values`` (an event's output) in the job's output dtype: integers rounded and clipped to the
        input's value range, floats to the dtype's finite range."""
        return cast(values, self.out_dtype, self._low, self._high)

    def _plane_result(self, index: int) -> np.ndarray:
        running = self.current is not None and self.current.plane_index == index and not self._done[index]
        if running:
            normalised, plane_map = self.current.normalised_result(), self.current.map
        elif self._out is not None:  # not finished (finished ones are in out already): the input stands
            normalised, plane_map = None, None
        else:
            normalised, plane_map = self._results[index], self._maps[index]
        if normalised is None or plane_map is None:  # constant or not started: the input plane itself
            return plane_values(self._planes[index], None, None, self.out_dtype, self._low, self._high)
        return plane_values(None, normalised, plane_map, self.out_dtype, self._low, self._high)

    def __iter__(self) -> Iterator[Event]:
        return self.events

    def __next__(self) -> Event:
        return next(self.events)

    def close(self) -> None:
        """Stop training; :meth:`result` keeps what was learned."""
        if self.current is not None:
            self.current.close()
        self.events.close()

    def result(self):
        """The denoised image so far, in the input's shape and the output dtype: a NumPy array, or ``out``.

        A NumPy ``out`` gets what a job without one returns (the planes not finished too); a zarr ``out``
        holds the finished planes only, so that a run started again on it goes on where this one stopped.
        """
        if self._out is not None:
            if not self._out.resumable:
                for index in np.flatnonzero(~self._done):
                    self._out.write(int(index), self._plane_result(int(index)))
            return self._out.array
        results = np.empty(self._planes.shape, dtype=self.out_dtype)
        for index in range(self.n_planes):
            results[index] = self._plane_result(index)
        moved = results.reshape(self._moved_shape)
        return np.ascontiguousarray(np.transpose(moved, np.argsort(self._order)))


def iter_denoise(
    image,
    method: str = "noise2fast",
    *,
    axes: str | None = None,
    channel_axis: int | None = None,
    device: str | torch.device = "auto",
    seed: int | None = None,
    max_steps: int | None = None,
    output_every: int | None = None,
    view_every: int | None = None,
    dtype=None,
    preview: bool = True,
    stack: str | None = None,
    out=None,
    model=None,
    model_use: str = "predict",
    client=None,
    **params,
) -> DenoiseJob:
    """Streaming form of :func:`denoise`: a job that yields :class:`~napari_noise2fast.engine.Event`.

    Takes the same arguments as :func:`denoise` (but ``progress``), plus
    ``output_every``: attach the current best output to every
    ``output_every``-th event (the final event of each plane always has it), and
    ``view_every``: attach a downsampled view of it (at most 1024 pixels on a
    side; cheap on any plane, see :attr:`~napari_noise2fast.engine.Event.view`)
    to the preview event and every ``view_every``-th event.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_noise2fast import iter_denoise
    >>> noisy = np.random.default_rng(0).normal(100, 10, (32, 32)).astype(np.float32)
    >>> job = iter_denoise(noisy, seed=0, max_steps=3, device="cpu")
    >>> [(event.step, event.stage) for event in job]
    [(0, 'preview'), (1, 'preview'), (2, 'preview'), (3, 'preview')]
    >>> job.result().shape
    (32, 32)
    """
    job_arguments = check_denoise(image, method, axes=axes, channel_axis=channel_axis, device=device, seed=seed,
                                  max_steps=max_steps, output_every=output_every, view_every=view_every,
                                  dtype=dtype, preview=preview, stack=stack, out=out, model=model,
                                  model_use=model_use, client=client, **params)
    low, high = job_arguments[6] or (None, None)
    if low is not None and low == high:
        warnings.warn("image is constant; it is returned unchanged", UserWarning, stacklevel=2)
    return DenoiseJob(*job_arguments, out=out, client=client)


def check_denoise(image, method: str = "noise2fast", *, axes=None, channel_axis=None, device="auto", seed=None,
                  max_steps=None, output_every=None, view_every=None, dtype=None, preview=True, stack=None,
                  out=None, model=None, model_use="predict", client=None, **params) -> tuple:
    """Check every argument of :func:`iter_denoise` before any work; ValueError naming the first wrong one.

    Returns the arguments of the :class:`DenoiseJob` they make.
    """
    check_str("method", method, allow_none=False)
    array, store_axes = _check_image(image)
    if axes is None and channel_axis is None and store_axes is not None and len(store_axes) == array.ndim:
        axes = store_axes
    layout = _resolve_layout(array.shape, axes, channel_axis)
    y, x, _ = layout
    if array.shape[y] < MIN_PLANE_SIZE or array.shape[x] < MIN_PLANE_SIZE:
        raise ValueError(
            f"each YX plane must be at least {MIN_PLANE_SIZE}x{MIN_PLANE_SIZE} pixels, "
            f"got {array.shape[y]}x{array.shape[x]} (check axes/channel_axis)"
        )
    loaded = _load(model, model_use, method, array.shape[layout[2]] if layout[2] is not None else 1)
    if loaded is not None:  # the model's settings (its network), under those given
        params = {**{k: v for k, v in loaded[0].settings.items() if k != "warm_start"}, **params}
        for state in loaded[0].states:
            try:
                get_method(method).check_state(state, **{k: v for k, v in params.items() if k != "stack"})
            except ValueError as error:
                raise ValueError(f"model {str(model)!r}: {error}") from error
    params = _stack_params(get_method(method), stack, params)
    stack = params.pop("stack")
    settings = get_method(method).check_params(**params)
    if check_client(client) is not None and stack != "recording" and (loaded is None or model_use != "predict"):
        raise ValueError(f"client= predicts a recording's planes on a cluster: it needs stack='recording' or a model "
                         f"to predict with (model=); stack={stack!r} trains plane after plane where the job runs")
    if loaded is not None and model_use == "warm" and not settings["warm_start"]:
        raise ValueError("model_use='warm' needs warm_start (stack='independent' and the reference preset train "
                         "every plane from scratch)")
    get_method(method).check_plane((array.shape[y], array.shape[x]))
    resolved = resolve_device(device)
    check_positive_or_none("max_steps", max_steps)
    check_positive_or_none("output_every", output_every)
    check_positive_or_none("view_every", view_every)
    seed = check_int("seed", seed, minimum=0)
    check_bool("preview", preview)
    # one pass, shared by the dtype check and the job; a lazy input's range is found as it is read
    value_range = None if is_lazy(array) else (array.min(), array.max())
    if dtype is None and out is not None and hasattr(out, "dtype"):
        dtype = out.dtype  # an array to write into sets the output dtype
    out_dtype = _output_dtype(array, *(value_range or (None, None)), dtype)
    n_planes = count_planes(array, axes, channel_axis)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_planes)] \
        if seed is not None else [None] * n_planes
    run_kwargs = {"device": resolved, "max_steps": max_steps, "output_every": output_every, "view_every": view_every,
                  "preview": preview, **params}
    return array, layout, out_dtype, method, seeds, run_kwargs, value_range, stack, loaded


def _load(model, model_use: str, method: str, channels: int) -> tuple[SavedModel, str] | None:
    """``model=`` loaded and checked against the job (its method and channels), with ``model_use``."""
    check_str("model_use", model_use, allow_none=False)
    if model_use not in MODEL_USES:
        raise ValueError(f"model_use must be one of {', '.join(map(repr, MODEL_USES))}, got {model_use!r}")
    if model is None:
        return None
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be the path of a saved model file, got {type(model).__name__}")
    if not get_method(method).trains_on_stacks:
        raise ValueError(f"model= needs a method that saves trained models (noise2fast); "
                         f"{get_method(method).display_name} does not")
    saved = load_model(model, get_method(method).name)
    if len(saved.states) not in (1, channels):
        raise ValueError(f"model {str(model)!r} holds {len(saved.states)} channels' models; this image has "
                         f"{channels} channel(s)")
    return saved, model_use


def resolved_stack(method: str, stack: str | None, params: dict) -> str:
    """What ``stack`` becomes for ``method`` with ``params`` (None: its default; see :func:`denoise`)."""
    return _stack_params(get_method(method), stack, params)["stack"]


def _stack_params(method_cls, stack: str | None, params: dict) -> dict:
    """``params`` with ``stack`` resolved (None: ``"recording"`` for methods that train one model for a stack
    in their default preset, else ``"warm"``) and, for those methods, ``warm_start`` set to match."""
    check_str("stack", stack)
    if stack is not None and stack not in STACKS:
        raise ValueError(f"stack must be one of {', '.join(map(repr, STACKS))}, got {stack!r}")
    stacked = method_cls.trains_on_stacks
    reference = params.get("preset") == "reference"
    if stack is None:
        stack = "recording" if stacked and not reference else "warm"
    if stack == "recording" and not stacked:
        raise ValueError(f"stack='recording' needs a method that trains one model for a stack (noise2fast); "
                         f"{method_cls.display_name} takes stack='warm' or 'independent'")
    if stack == "recording" and reference:
        raise ValueError("stack='recording' is not the published method: the reference preset takes "
                         "stack='warm' or 'independent'")
    if stacked and stack != "recording" and "warm_start" not in params:
        params = {**params, "warm_start": stack == "warm"}
    return {**params, "stack": stack}


def denoise(
    image,
    method: str = "noise2fast",
    *,
    axes: str | None = None,
    channel_axis: int | None = None,
    device: str | torch.device = "auto",
    seed: int | None = None,
    progress: Callable[[Event], None] | None = None,
    max_steps: int | None = None,
    dtype=None,
    preview: bool = True,
    stack: str | None = None,
    out=None,
    model=None,
    model_use: str = "predict",
    client=None,
    **params,
):
    """Denoise an image blindly, learning from the image alone.

    Parameters
    ----------
    image : array_like
        Integer or floating-point array of 2 or more dimensions. Every 2D YX
        plane and every channel is denoised independently. The input is never
        modified.
    method : str
        ``"noise2fast"`` (default), or a comparison method: ``"self2self"``,
        ``"zs-n2n"``, ``"noise2self"``, ``"noise2void"``, ``"calibrated"``,
        ``"bm3d"`` (optional package); see :mod:`napari_noise2fast.methods`.
    axes : str, optional
        One letter per dimension, e.g. ``"ZYX"``, ``"TCYX"``, ``"YXS"``: ``Y``
        and ``X`` are the plane, ``C`` or ``S`` a channel axis, anything else is
        iterated over. By default the last two non-channel axes are YX.
    channel_axis : int, optional
        The channel axis (scikit-image style), if ``axes`` is not given. A 3D
        array whose last axis has length 3 or 4 is taken as RGB(A).
    device : str or torch.device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    seed : int, optional
        Makes a run on the CPU repeatable.
    progress : callable, optional
        Called with every :class:`~napari_noise2fast.engine.Event`.
    max_steps : int, optional
        Cap on optimiser steps per plane; by default the method's own stopping rule decides.
    dtype : dtype, optional
        Output dtype. By default integer input keeps its dtype (rounded and
        clipped) and floating-point input gives float32.
    preview : bool
        Start every plane with a calibrated Gaussian estimate (event stage
        ``"preview"``, under a second on 512x512), kept as the result until
        the method validates better (see :attr:`Event.stage`: while training its
        held-out PSNR must beat the preview's too); a run stopped early then
        still returns a denoised image. (Not with
        ``stack="recording"``, which trains one model for all planes.)
    stack : str, optional
        How the planes of a stack (Z, T or any leading axes) are trained:
        ``"recording"`` (the default for Noise2Fast's ``fast`` preset): one
        model trained on a sample of up to 16 planes spread over the stack,
        then every plane denoised by it; ``"warm"`` (the default otherwise):
        plane after plane, each going on from the one before where the method
        can (Noise2Fast); ``"independent"``: every plane from scratch.
        Stopped during training, a recording's planes keep the input but the
        first, which has its best so far.
    out : numpy.ndarray, zarr array or path, optional
        Where to write the result instead of a new array (the image's shape;
        its dtype is the output dtype unless ``dtype`` says otherwise): a
        NumPy or zarr array, or a path ending in ``.zarr`` (created, chunked a
        plane at a time). Planes are written as they finish, a chunk only once
        all its planes are done. A zarr output records the finished planes and
        the run's settings, and a path output also the trained model of a
        recording (``<path>/noise2fast/``): the same call on the same input
        after an interruption goes on from there, with the same weights.
        Returns ``out`` (a zarr array for a path).
    model : str or path, optional
        A model saved by :meth:`DenoiseJob.save_model` (or the CLI's ``--save-model``; Noise2Fast), e.g. from
        the last recording of the same experiment. Its settings are the run's (those given override them).
        Files of another method or model format are refused with a ValueError; loading runs no code.
    model_use : str
        With ``model``: ``"predict"`` (default): no training, every plane denoised by the model (of its
        channel), normalised as a run on this image would normalise it; ``"warm"``: train as usual, the first
        plane (or each channel's recording) starting from the model's weights.
    client : dask.distributed.Client, optional
        Predict a recording's planes on the cluster's workers (``stack="recording"``, or a ``model`` to
        predict with): the model is trained (or loaded) here, its weights sent to every worker once, then
        each plane is a task (a lazy input is read by the workers themselves). The same result as a run
        without it to float tolerance (:mod:`napari_noise2fast.cluster`).
    **params
        The method's settings; for Noise2Fast ``preset`` (``"fast"``, the
        default, or ``"reference"``, the published code's settings) and any
        of its settings to override (see
        :class:`~napari_noise2fast.methods.noise2fast.Noise2Fast`).

    Returns
    -------
    numpy.ndarray
        The denoised image, same shape as ``image``.

    Raises
    ------
    ValueError
        For NaN or infinite values, fewer than 2 dimensions, planes smaller
        than 8x8, complex or boolean dtypes, ``axes`` that do not match the
        shape, or unknown methods, devices or settings. A constant image is
        returned unchanged with a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_noise2fast import denoise
    >>> noisy = np.random.default_rng(0).normal(100, 10, (2, 32, 32)).astype(np.uint16)
    >>> out = denoise(noisy, axes="ZYX", max_steps=2, seed=0, device="cpu")
    >>> out.shape, out.dtype
    ((2, 32, 32), dtype('uint16'))
    """
    job = iter_denoise(image, method, axes=axes, channel_axis=channel_axis, device=device, seed=seed,
                       max_steps=max_steps, dtype=dtype, preview=preview, stack=stack, out=out, model=model,
                       model_use=model_use, client=client, **params)
    for event in job:
        if progress is not None:
            progress(event)
    return job.result()
