"""The streaming engine: trains one method on one 2D plane and yields progress events.

Every front end (the API, the command line, the napari widget) consumes the same
:class:`PlaneRun`. Nothing here imports Qt or napari.
"""

from __future__ import annotations

import functools
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from napari_noise2fast.checks import check_positive_or_none
from napari_noise2fast.cluster import is_written
from napari_noise2fast.devices import resolve_device
from napari_noise2fast.intensity import IntensityMap
from napari_noise2fast.preview import REFINE_PIXELS, calibrated_gaussian, invariant_loss, refined_preview

PREVIEW = "preview"
VIEW_SIDE = 1024
# after a held-out check that fails, the next waits this many steps, then twice as many each time (a check is
# 4 forward passes over the validation pixels: 34 checks took 16 % of a run on Set12 01 when made at every
# validation)
CHECK_BACKOFF = 20
CHECK_BACKOFF_MAX = 160  # the wait stops doubling here: a network that has passed is not kept waiting long
# a method that works in slices (:attr:`Method.slice_seconds`) hands back after about this long, so that a run on a
# large plane sends an event at least every 2 s (a bounded step in float32 took 1.9 s on one thread, 3 s with
# its validation, on an Intel Xeon; a held-out check is 4 validations)
SLICE_SECONDS = 1.0


class _Part:
    def __repr__(self) -> str:
        return "PART"


PART = _Part()  # what a sliced step or check returns when it handed back before its end


def to_end(work):
    """Run ``work``, a generator of parts (see :meth:`Method._sliced`), to its end; its return value."""
    while True:
        try:
            next(work)
        except StopIteration as finished:
            return finished.value


def view_factor(shape: tuple[int, ...]) -> int:
    """The downsampling factor that brings a plane of ``shape`` to at most ``VIEW_SIDE`` on a side."""
    return max(1, math.ceil(max(shape[-2:]) / VIEW_SIDE))


def downsample(plane, factor: int) -> np.ndarray:
    """Block means of ``factor`` x ``factor`` pixels (partial blocks at the far edges averaged over what they
    hold); float32. ``plane`` is a 2D NumPy array or tensor."""
    tensor = torch.as_tensor(plane, dtype=torch.float32)
    if factor == 1:
        return tensor.cpu().numpy().copy()
    return torch.nn.functional.avg_pool2d(tensor[None, None], factor, ceil_mode=True)[0, 0].cpu().numpy()


@dataclass(frozen=True)
class Countdown:
    """How near a method is to stopping by itself: ``done`` of ``total`` ``unit``.

    ``resets``: the count goes back to 0 when the method improves (patience: steps since the last validation
    gain that counted, of the patience now), so the run may last longer than the count says; otherwise a
    fixed budget (steps, candidates and blocks, per cent of a time budget)."""

    done: int
    total: int
    unit: str
    resets: bool = False


@dataclass(frozen=True)
class Event:
    """One progress report of a training run.

    Attributes
    ----------
    step : int
        Optimiser steps taken so far on this plane.
    val_psnr : float
        Validation PSNR in dB of the current output against the noisy input
        (both min-max normalised to [0, 1]); NaN on steps that did not validate.
    best_val_psnr : float
        The highest ``val_psnr`` seen so far on this plane.
    elapsed : float
        Wall-clock seconds since this plane started.
    stage : str
        Which stage the current best output comes from: ``"preview"`` (the
        calibrated Gaussian, or total variation where better, shown first; see
        :mod:`napari_noise2fast.preview`), then the method's name: while training,
        once the method's validation PSNR passes the preview's and its held-out
        check does too (``heldout_psnr``); once the method has stopped by itself
        or at ``max_steps``, where its best validation PSNR beats the preview's.
    output : numpy.ndarray or None
        The current best output in the input's intensity scale (float32), when
        requested (``output_every``), on the preview event and always on the
        final event (but for a plane a cluster's worker wrote into ``out``
        itself: see :mod:`napari_noise2fast.cluster`).
    view : numpy.ndarray or None
        When requested (``view_every``, and on the preview event then): the
        current best downsampled by ``view_factor`` (block means, at most
        ``VIEW_SIDE`` pixels on a side), for showing progress on large planes
        without a whole-plane output. Noise2Fast on large planes refreshes it a
        few tiles per event (:meth:`Noise2Fast.view`).
    view_factor : int
        The downsampling factor of ``view`` (1: full size).
    done : bool
        True on the last event of the plane.

    stop_reason : str or None
        Why the plane stopped (``"patience"``, ``"max_steps"``, ``"cancelled"``,
        ``"constant"``; ``"budget"`` for a method's own step budget,
        ``"complete"`` for one that ends by itself; ``"resumed"`` for a plane a
        resumed run found finished, or predicted by the model it stored;
        ``"model"`` for a plane predicted by a model given, ``model=``) on the
        final event.
    plane, n_planes : int
        Index of the 2D plane and number of planes in the whole job.
    planes_done : int
        Planes of the job finished so far (this one too, on its final event); set by the job.
    eta : float or None
        Seconds left: for a job of several planes, what its remaining planes will take at the pace measured
        between the planes finished so far in this run (set by the job once two have finished); before that,
        and for one plane, what the plane's ``countdown`` has left at its measured step rate (with a
        countdown that ``resets``: at least that long).
    countdown : Countdown or None
        How near the method is to stopping by itself (None where it cannot tell, and on the preview).
    preview_val_psnr : float
        The preview's J-invariant validation PSNR (what the method's validation and held-out PSNR must beat
        for its output to be shown, see ``stage``; NaN without a preview).
    heldout_psnr : float
        While the preview is shown and the method's validation PSNR has passed the preview's: the method's
        J-invariant PSNR (each pixel predicted without its own value), the check that decides when its output
        replaces the preview (:meth:`Method.invariant_psnr`); NaN on other events.
    preview_filter : str
        The preview's filter: ``"Gaussian"``, or ``"total variation"`` once that refinement has beaten it
        (a second step-0 event brings it, on the CPU, for planes up to 1024x1024); empty without a preview.

    partial : bool
        True on an event sent in the middle of a step or a held-out check that runs in slices (a large plane
        on a slow device): nothing new but the time, ``step`` the last finished one; it lets a viewer stay live
        and Stop act within about :data:`SLICE_SECONDS`.

    A method that validates on regions of the plane (:meth:`Method.validation_regions`: Noise2Fast in
    bounded mode) gets a second step-0 event with the preview's validation PSNR on those regions (what
    the method's validation PSNRs compare with), after its model is built and before its first step.
    """

    step: int
    val_psnr: float
    best_val_psnr: float
    elapsed: float
    stage: str
    output: np.ndarray | None = None
    view: np.ndarray | None = None
    view_factor: int = 1
    done: bool = False
    stop_reason: str | None = None
    plane: int = 0
    n_planes: int = 1
    planes_done: int = 0
    eta: float | None = None
    countdown: Countdown | None = None
    preview_val_psnr: float = math.nan
    preview_filter: str = ""
    heldout_psnr: float = math.nan
    partial: bool = False


def throttle(items, min_interval: float, event_of=None, clock=time.perf_counter):
    """``(item, show)`` for each of ``items`` (an iterator of :class:`Event`, or of items ``event_of(item)`` maps
    to one): ``show`` says whether a viewer should draw the event's output now. At most one output every
    ``min_interval`` seconds goes through, but a preview (step 0) and a final output (``done``) always do; an
    item without an output is never shown. Returns what ``items`` returns (a generator's return value), so that
    a worker can drain it. What a front end redraws is throttled here, headless, not in each front end."""
    last = -math.inf
    while True:
        try:
            item = next(items)
        except StopIteration as finished:
            return finished.value
        event = item if event_of is None else event_of(item)
        show = event.output is not None
        if show:
            now = clock()
            show = event.done or event.step == 0 or now - last >= min_interval
            if show:
                last = now
        yield item, show


class Method(ABC):
    """A zero-shot denoiser trained on one normalised plane.

    ``noisy`` is a float32 tensor of shape (1, 1, H, W) with values in [0, 1],
    already on the compute device. ``rng`` drives every random choice, so a
    seeded run is repeatable. ``level`` is one intensity level of the input in
    normalised units (used by rules stated in the original intensity scale).
    ``warm`` is what :meth:`carry` of the previous plane of the same job
    returned (None for the first plane); a method may start from it.
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    # Methods that train on whole planes refuse larger ones (their memory grows with the plane)
    max_pixels: ClassVar[int | None] = None
    # Methods that can train one model on a stack of planes (``noisy`` (N, 1, H, W)) and then denoise any
    # plane with it (:meth:`predict_plane`): what :class:`RecordingRun` needs
    trains_on_stacks: ClassVar[bool] = False
    # Set by the engine: a method whose steps can be long (Noise2Fast) hands back after about this many seconds
    # with :data:`PART` (see :meth:`_sliced`); None: every call runs to its end
    slice_seconds: float | None = None

    def __init__(self, noisy: torch.Tensor, *, rng: np.random.Generator, level: float, warm=None):
        self.noisy = noisy
        self.rng = rng
        self.level = level
        self.warm = warm
        self.initial_mse: float | None = None  # a validation before any step (e.g. of warm weights)
        self.stop_reason: str | None = None

    @classmethod
    def check_params(cls, **params) -> dict:
        """Validate the method's keyword arguments before any training; ValueError if invalid."""
        if params:
            raise ValueError(f"{cls.name} takes no parameters, got {sorted(params)}")
        return {}

    @classmethod
    def check_plane(cls, shape: tuple[int, int]) -> None:
        """ValueError, before any work, for a plane of ``shape`` (H, W) larger than ``max_pixels``."""
        if cls.max_pixels is not None and shape[0] * shape[1] > cls.max_pixels:
            side = math.isqrt(cls.max_pixels)
            raise ValueError(
                f"{cls.display_name} trains on whole planes and takes at most {cls.max_pixels:,} pixels a plane "
                f"(about {side}x{side}, for bounded memory); this plane is {shape[0]}x{shape[1]}: crop it, or use "
                "noise2fast, noise2void, calibrated or bm3d, which take planes of any size")

    @abstractmethod
    def step(self) -> float | None:
        """Take one optimiser step; return the validation MSE, or None if it did not validate (or :data:`PART`:
        see :attr:`slice_seconds`)."""

    def _sliced(self, name: str, make, key=None):
        """Run ``make()``, a generator that yields between the parts of some work and returns its value, to its
        end; or, with :attr:`slice_seconds` set, until that long has passed at the end of a part: then
        :data:`PART`, and the next call with the same ``name`` (and ``key``: what the work is of; work under
        way for another key is dropped) goes on where it stopped. Where the parts fall does not depend on the
        time, so a seeded run computes the same either way."""
        works = self.__dict__.setdefault("_works", {})
        pending = works.pop(name, None)
        work = pending[1] if pending is not None and pending[0] == key else make()
        deadline = None if self.slice_seconds is None else time.perf_counter() + self.slice_seconds
        try:
            while True:
                next(work)
                if deadline is not None and time.perf_counter() >= deadline:
                    works[name] = (key, work)
                    return PART
        except StopIteration as finished:
            return finished.value

    @abstractmethod
    def preview(self) -> torch.Tensor:
        """The best single output so far, shape (H, W), normalised scale."""

    @abstractmethod
    def result(self) -> torch.Tensor:
        """The method's own output rule applied to what it has so far."""

    def carry(self):
        """What the next plane of the same job may start from (``warm``); None: nothing."""
        return None

    def countdown(self) -> Countdown | None:
        """How near the method is to stopping by itself (see :class:`Countdown`); None: it cannot tell."""
        return None

    def invariant_psnr(self) -> float | None:
        """The validation PSNR of the output shown, J-invariant as the preview's (each pixel predicted without
        its own noisy value), where the method can compute it; None: its validation PSNR stands (:data:`PART`: see
        :attr:`slice_seconds`)."""
        return None

    def result_val_psnr(self) -> float | None:
        """The validation PSNR of what :meth:`result` returns, where it is not simply the best seen (Noise2Fast
        with ``raw_start``: the best was the training network's, the result is its average's); None: the
        best seen."""
        return None

    def finish(self, reason: str) -> None:
        """The engine stopped the method (``reason``: ``"max_steps"``); a method whose result depends on
        whether it has stopped sets its ``stop_reason`` here."""
        return None  # most methods' results do not depend on it

    def predict_plane(self, plane: torch.Tensor) -> torch.Tensor:
        """A normalised plane (1, 1, H, W) denoised by the best model so far (H, W); methods that
        ``trains_on_stacks`` only."""
        raise NotImplementedError(f"{self.display_name} does not train one model for a stack")

    def trained_state(self) -> dict | None:
        """What :meth:`load_trained` needs to predict as this model does now (on the CPU); methods that
        ``trains_on_stacks`` only."""
        return None

    def predicting_state(self) -> dict:
        """The weights :meth:`predict_plane` predicts with now, on the CPU; methods that ``trains_on_stacks``
        only."""
        raise NotImplementedError(f"{self.display_name} cannot predict elsewhere")

    def prediction_spec(self) -> dict:
        """What :meth:`predictor` needs besides the weights to predict as :meth:`predict_plane` does
        (settings, precision, device type); methods that ``trains_on_stacks`` only."""
        raise NotImplementedError(f"{self.display_name} cannot predict elsewhere")

    @classmethod
    def predictor(cls, state: dict, **spec):
        """A function that denoises a normalised plane (1, 1, H, W) with the weights ``state`` as
        :meth:`predict_plane` of the model they came from does, ``spec`` its :meth:`prediction_spec`: how a
        worker of a cluster predicts (see :mod:`napari_noise2fast.cluster`)."""
        raise NotImplementedError(f"{cls.display_name} cannot predict elsewhere")

    @classmethod
    def check_state(cls, state: dict, **params) -> None:
        """ValueError where ``state`` (a :meth:`trained_state`, e.g. from a file) does not fit the model that
        ``params`` make."""
        raise ValueError(f"{cls.display_name} cannot load a trained model")

    def load_trained(self, state: dict) -> None:
        """Take a :meth:`trained_state` (of a model of the same settings) as this model's best."""
        raise NotImplementedError(f"{self.display_name} cannot load a trained model")

    def validation_regions(self) -> list[tuple[int, int, int, int]] | None:
        """Where the method validates, if not on the whole plane: boxes ``(top, left, bottom, right)``.

        The engine then scores the preview on the same pixels, so that the two stages' validation PSNRs
        compare (a subset chosen on structure holds more signal, and so more noise, than the plane's centre)."""
        return None


def mse_to_psnr(mse: float) -> float:
    """PSNR in dB for signals normalised to a data range of 1."""
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def seeded_module(factory, seed: int) -> torch.nn.Module:
    """Build a module with its weights drawn from ``seed``, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class _Pace:
    """The pace of a run, measured from the first event with a countdown on (the preview and the model's set-up
    excluded), and the seconds a countdown has left at that pace: steps without a gain at the step rate for a
    countdown that resets, else the rest of the budget at the rate its count has moved."""

    def __init__(self):
        self.first: tuple[int, int, float] | None = None  # (step, countdown done, time) when counting started

    def left(self, step: int, countdown: Countdown | None) -> float | None:
        if countdown is None:
            return None
        now = time.perf_counter()
        if self.first is None:
            self.first = (step, countdown.done, now)
            return None
        step0, done0, start = self.first
        moved = step - step0 if countdown.resets else countdown.done - done0
        if moved <= 0:
            return None
        return (now - start) / moved * max(countdown.total - countdown.done, 0)


class _Run:
    """What a plane's run and a recording's share: the method and its settings, the device, the budgets,
    the seeded generator and the clock."""

    _started: float | None = None

    def _setup(self, method: type[Method], shape: tuple[int, int], device, params: dict, max_steps,
               output_every, view_every, seed) -> None:
        check_positive_or_none("max_steps", max_steps)
        check_positive_or_none("output_every", output_every)
        check_positive_or_none("view_every", view_every)
        method.check_plane(shape)
        self.device = resolve_device(device)
        self.method_cls = method
        self.params = params
        self.max_steps = max_steps
        self.output_every = output_every
        self.view_every = view_every
        self.view_factor = view_factor(shape)
        self.rng = np.random.default_rng(seed)

    def _intensities(self, plane_map: IntensityMap, is_integer: bool) -> None:
        """The map to [0, 1] and one intensity level in its units (1/255 of the range for float data)."""
        self.map = plane_map
        self.level = 1.0 if plane_map.constant else (1.0 / plane_map.range if is_integer else 1.0 / 255.0)

    @property
    def elapsed(self) -> float:
        return 0.0 if self._started is None else time.perf_counter() - self._started

    def _check_stop(self) -> None:
        """After a step: the method's own stop, else ``max_steps`` (the method is told, see
        :meth:`Method.finish`)."""
        if self.model.stop_reason is not None:
            self.stop_reason = self.model.stop_reason
        elif self.max_steps is not None and self.step >= self.max_steps:
            self.stop_reason = "max_steps"
            self.model.finish(self.stop_reason)

    def method_output(self) -> np.ndarray | None:
        """The method's own best output of a single plane, whatever the run shows; None where there is none
        (see :meth:`PlaneRun.method_output`)."""
        return None

    def _whole(self, call):
        """``call()`` (a method's step or check, sliced: see :meth:`Method._sliced`) until it returns more than
        :data:`PART`, with a partial event (:meth:`_partial`) each time it does; its value."""
        while (value := call()) is PART:
            yield self._partial()
        return value


class PlaneRun(_Run):
    """Train ``method`` on one 2D plane, as an iterator of :class:`Event`.

    Iterate it to train; stop iterating (or call :meth:`close`) at any time and
    :meth:`result` still gives the best result so far. The input is never
    modified.

    Parameters
    ----------
    plane : numpy.ndarray
        A 2D array of real numbers, finite.
    method : type[Method]
        The method class to train.
    device : str or torch.device
        ``"auto"`` picks CUDA, then Apple MPS, then the CPU.
    seed : int or None
        Seed for weights and every random choice.
    max_steps : int or None
        Cap on optimiser steps; ``None`` leaves stopping to the method.
    output_every : int or None
        Attach the current best output to every ``output_every``-th event.
    view_every : int or None
        Attach a downsampled view of the current best (:attr:`Event.view`) to the
        preview event and every ``view_every``-th event.
    is_integer : bool
        Whether the input had an integer dtype; then one intensity level is 1,
        else 1/255 of the plane's range.
    plane_index, n_planes : int
        Carried into the events for multi-plane jobs.
    preview : bool
        First yield a step-0 event with a calibrated Gaussian estimate (stage
        ``"preview"``; a second with total variation where that scores better),
        and let :meth:`preview` and :meth:`result` return it while :attr:`stage`
        is ``"preview"``.
    warm : object, optional
        Passed to the method: what the previous plane's method carried over.
    **params
        Keyword arguments of the method.
    """

    def __init__(
        self,
        plane: np.ndarray,
        method: type[Method],
        *,
        device: str | torch.device = "auto",
        seed: int | None = None,
        max_steps: int | None = None,
        output_every: int | None = None,
        view_every: int | None = None,
        is_integer: bool = False,
        plane_index: int = 0,
        n_planes: int = 1,
        preview: bool = True,
        warm=None,
        **params,
    ):
        if plane.ndim != 2:
            raise ValueError(f"PlaneRun needs a 2D plane, got shape {plane.shape}")
        self._setup(method, plane.shape, device, params, max_steps, output_every, view_every, seed)
        self.warm = warm
        self.plane_index = plane_index
        self.n_planes = n_planes
        self._intensities(IntensityMap(plane), is_integer)
        self._plane = plane
        self._normalised = None if self.map.constant else self.map.normalise(plane)
        self.model: Method | None = None
        self.step = 0
        self.best_val_psnr = -math.inf
        self.stop_reason: str | None = None
        self.use_preview = preview
        self._preview: np.ndarray | None = None
        self._preview_psnr = -math.inf
        self.preview_filter = "Gaussian"  # the preview's filter: "Gaussian", or "total variation" where better
        self._method_shown = False  # the method's output has beaten the preview (see _check_stage)
        self._next_check = (0, CHECK_BACKOFF)  # (the first step the next held-out check may run, the wait after it)
        self._last_check = math.nan  # the last held-out PSNR (a method scores an unchanged network once)
        self._pace = _Pace()

    @property
    def stage(self) -> str:
        """``"preview"`` while the preview is the better estimate, else the method's name.

        While training (and for a run cancelled, which keeps what it showed) the method's output replaces the
        preview once it passes the held-out check (:meth:`_check_stage`). Once the method has stopped, the
        method's own rule decides, as it did before the check existed: its best validation PSNR against the
        preview's. The check is conservative: J-invariant scoring also undervalues the network where it leans on
        the pixel itself (a 64x64 crop of Set12 05: the network 26.05 dB against total variation's 25.24, yet a
        lower held-out score), so it decides what is shown meanwhile, not the result.
        """
        if self._preview is None:
            return self.method_cls.name
        if self.stop_reason not in (None, "cancelled"):
            kept = self.model.result_val_psnr() if self.model is not None else None
            kept = self.best_val_psnr if kept is None else kept
            return PREVIEW if kept <= self._preview_psnr else self.method_cls.name
        return self.method_cls.name if self._method_shown else PREVIEW

    def _check_stage(self, val_psnr: float) -> float:
        """While the preview is shown: has the method beaten it? Returns the held-out PSNR checked (NaN if none).

        A method with :meth:`Method.invariant_psnr` (Noise2Fast) is checked by it, the preview's own
        J-invariant measure, once its plain validation PSNR passes the preview's (which it overstates: each
        pixel's own noise reaches the output); any other method by its validation PSNR alone."""
        if self._method_shown or self._preview is None or not val_psnr > self._preview_psnr:
            return math.nan
        if self.step < self._next_check[0]:  # a check failed lately: the next after a wait that doubles
            return math.nan
        checked = self.model.invariant_psnr()
        if checked is PART:  # under way: called again before the next step
            return PART
        if checked is None:
            self._method_shown = True
            return math.nan
        if checked == self._last_check:  # the same network as at the last check: nothing new, no longer wait
            return math.nan
        self._last_check = checked
        self._method_shown = checked > self._preview_psnr
        if not self._method_shown:
            wait = self._next_check[1]
            self._next_check = (self.step + wait, min(2 * wait, CHECK_BACKOFF_MAX))
        return checked

    def _to_intensity(self, normalised: np.ndarray | None) -> np.ndarray:
        """Float32 in the input's intensities (float64 where float32 cannot hold the plane's range)."""
        if normalised is None:  # nothing learned: the input itself
            return np.asarray(self._plane, dtype=self.map.display_dtype()).copy()
        return self.map.back(normalised, self.map.display_dtype())

    def _partial(self) -> Event:
        return self._event(math.nan, with_output=False, partial=True)

    def _event(self, val_psnr: float, with_output: bool, done: bool = False, with_view: bool = False,
               heldout: float = math.nan, partial: bool = False) -> Event:
        output = view = None
        if with_output:
            output = self.result() if done else self.preview()
        if with_view and self.view_every is not None:
            view = self.view()
        countdown = None if self.model is None or done else self.model.countdown()
        return Event(
            step=self.step,
            val_psnr=val_psnr,
            best_val_psnr=max(self.best_val_psnr, self._preview_psnr),
            elapsed=self.elapsed,
            stage=self.stage,
            output=output,
            view=view,
            view_factor=self.view_factor,
            done=done,
            stop_reason=self.stop_reason if done else None,
            plane=self.plane_index,
            n_planes=self.n_planes,
            eta=0.0 if done else self._pace.left(self.step, countdown),
            countdown=countdown,
            preview_val_psnr=self._preview_psnr if self._preview is not None else math.nan,
            preview_filter=self.preview_filter if self._preview is not None else "",
            heldout_psnr=heldout,
            partial=partial,
        )

    def __iter__(self) -> Iterator[Event]:
        if self._started is not None:
            raise RuntimeError("a PlaneRun can be iterated only once")
        self._started = time.perf_counter()
        if self._normalised is None:
            self.stop_reason = "constant"
            yield self._event(math.nan, with_output=True, done=True)
            return
        try:
            gain = 0.0  # the refined preview's over the Gaussian, dB
            if self.use_preview:
                self._preview, loss, sigma = calibrated_gaussian(self._normalised)
                self._preview_psnr = mse_to_psnr(loss)
                yield self._event(self._preview_psnr, with_output=True, with_view=True)
                refined = self._refined(sigma)
                if refined is not None:
                    self._preview, gain, _ = refined
                    self._preview_psnr += gain
                    self.preview_filter = "total variation"
                    yield self._event(self._preview_psnr, with_output=True, with_view=True)
            noisy = torch.from_numpy(self._normalised).to(self.device)[None, None]
            self.model = self.method_cls(noisy, rng=self.rng, level=self.level, warm=self.warm, **self.params)
            self.model.slice_seconds = SLICE_SECONDS
            regions = self.model.validation_regions()
            if self._preview is not None and regions is not None:
                self._preview_psnr = mse_to_psnr(invariant_loss(self._normalised, sigma, regions)) + gain
                # the preview's score where the method validates: an event of its own, since building the
                # model of a large plane (choosing its regions) takes as long as a step or two
                yield self._event(self._preview_psnr, with_output=False)
            if self.model.initial_mse is not None:
                self.best_val_psnr = max(self.best_val_psnr, mse_to_psnr(self.model.initial_mse))
            while True:
                mse = yield from self._whole(self.model.step)
                val_psnr = math.nan if mse is None else mse_to_psnr(mse)
                self.step += 1
                if val_psnr > self.best_val_psnr:
                    self.best_val_psnr = val_psnr
                self._check_stop()
                # a finished run's stage is the method's own rule: no check then
                heldout = math.nan if self.stop_reason is not None else \
                    (yield from self._whole(functools.partial(self._check_stage, val_psnr)))
                if self.stop_reason is not None:
                    yield self._event(val_psnr, with_output=True, done=True, heldout=heldout)
                    return
                wanted = self.output_every is not None and self.step % self.output_every == 0
                viewed = self.view_every is not None and self.step % self.view_every == 0
                yield self._event(val_psnr, with_output=wanted, with_view=viewed, heldout=heldout)
        finally:
            if self.stop_reason is None:
                self.stop_reason = "cancelled"

    def _refined(self, sigma: float):
        """:func:`~napari_noise2fast.preview.refined_preview` where it is worth its time: on the CPU (a GPU's
        network passes both previews within about a second) and on planes up to ``REFINE_PIXELS``."""
        if self.device.type != "cpu" or self._normalised.size > REFINE_PIXELS:
            return None
        return refined_preview(self._normalised, sigma)

    def close(self) -> None:
        """Mark the run as cancelled; :meth:`result` keeps what was learned."""
        if self.stop_reason is None:
            self.stop_reason = "cancelled"

    def carry(self):
        """What the next plane may start from: the method's :meth:`Method.carry` of a finished run, else None."""
        if self.model is None or self.stop_reason in (None, "cancelled", "constant"):
            return None
        return self.model.carry()

    def _current(self, method_output) -> np.ndarray | None:
        if self.stage == PREVIEW:
            return self._preview
        if self.model is None:
            return None
        return _as_numpy(method_output())

    def normalised_result(self) -> np.ndarray | None:
        """:meth:`result` in [0, 1] (float32, what a job keeps), or None where the result is the input itself."""
        return self._current(lambda: self.model.result())

    def view(self) -> np.ndarray:
        """The current best downsampled by ``view_factor`` (float32, input intensity scale): see
        :attr:`Event.view`."""
        if self._normalised is None:
            return downsample(self._plane, self.view_factor)
        base = self._preview if self._preview is not None else self._normalised  # the best before the method's
        if self.stage == PREVIEW or self.model is None:
            return self._to_intensity(downsample(base, self.view_factor))
        model_view = getattr(self.model, "view", None)
        if model_view is None:
            return self._to_intensity(downsample(self.model.preview(), self.view_factor))
        return self._to_intensity(_as_numpy(model_view(self.view_factor, lambda: downsample(base, self.view_factor))))

    def preview(self) -> np.ndarray:
        """Best single output so far (float32, input intensity scale)."""
        return self._to_intensity(self._current(lambda: self.model.preview()))

    def method_output(self) -> np.ndarray | None:
        """The method's own best single output so far (float32, input intensity scale), whatever the stage shows;
        None before the method exists (a forward pass of the plane: for a viewer scoring it against a
        reference while the preview is shown)."""
        if self.model is None:
            return None
        return self._to_intensity(_as_numpy(self.model.preview()))

    def result(self) -> np.ndarray:
        """The result so far (float32, input intensity scale): the method's own output
        rule once it validates better than the preview stage, else the preview.

        Before anything ran, and for a constant plane, this is a copy of the input.
        """
        return self._to_intensity(self.normalised_result())


def _as_numpy(output: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(output, torch.Tensor):
        return output.detach().to("cpu", torch.float32).numpy()
    return np.asarray(output, dtype=np.float32)


# One model per recording (issue 21): it trains on at most this many frames, spread evenly over the
# recording, and at most this many bytes of them (normalised float32) in memory at once
RECORDING_PLANES = 16
RECORDING_SAMPLE_BYTES = 128 * 2**20


def recording_sample(n_planes: int, shape: tuple[int, int]) -> list[int]:
    """The frames a recording's model trains on: up to ``RECORDING_PLANES`` (fewer where they would take more
    than ``RECORDING_SAMPLE_BYTES``), evenly spaced from the first to the last."""
    count = min(n_planes, RECORDING_PLANES, max(1, RECORDING_SAMPLE_BYTES // (4 * shape[0] * shape[1])))
    return sorted({int(i) for i in np.linspace(0, n_planes - 1, count).round()})


class RecordingRun(_Run):
    """One model for the planes of a stack (a recording or a volume), as an iterator of :class:`Event`.

    ``planes`` are the job's planes; the recording is those at ``indices`` (default: all; the job passes
    one channel's). The method (one that ``trains_on_stacks``) trains once on a sample of them
    (:func:`recording_sample`), every plane normalised by one map, ``value_range`` (default: the sample's);
    then every plane is denoised by the best-validated model, in tiles. Training events carry the first
    plane's index (its best output so far is what ``output_every`` attaches); then each plane gets one
    final event (``done``) with its output, the first of them carrying the training's steps and its last
    validation PSNR, the others ``step=0`` and NaN; a constant plane is not predicted (its output is the
    plane itself, ``stop_reason`` ``"constant"``). Planes are read one at a time (``planes[index]``) for
    the sample and for prediction; ``sample``, if given, is the sample's planes already read. A resumed run
    passes ``trained`` (a :meth:`Method.trained_state`: no training, ``stop_reason`` ``reason``) and
    ``skip`` (planes finished already: a ``done`` event without output each); ``on_trained`` receives the
    trained state before the first plane is predicted. ``warm`` is what the model starts training from (a
    :meth:`Method.carry`, or saved weights: see ``model_use`` of :func:`~napari_noise2fast.denoise`).

    Stop iterating (or :meth:`close`) during training and :meth:`normalised_result` of the first plane is
    its best so far; planes not yet predicted have no result (the input stands).
    """

    def __init__(self, planes, method: type[Method], *, value_range: tuple | None = None, indices=None,
                 sample: np.ndarray | None = None, device: str | torch.device = "auto", seed: int | None = None,
                 max_steps: int | None = None, output_every: int | None = None, view_every: int | None = None,
                 is_integer: bool = False, keep=None, trained: dict | None = None, on_trained=None,
                 skip=(), warm=None, reason: str = "resumed", client=None, destination=None, **params):
        if not method.trains_on_stacks:
            raise ValueError(f"{method.display_name} cannot train one model for a stack")
        self.planes = planes
        self.n_planes = len(planes)  # of the whole job; this recording is the planes ``indices`` (default all)
        self.indices = list(range(self.n_planes)) if indices is None else list(indices)
        shape = getattr(planes, "shape", None)  # a stack or :class:`~napari_noise2fast.lazy.Planes`: no read
        self.shape = tuple(shape[-2:]) if shape is not None else tuple(planes[self.indices[0]].shape)
        self.sample = [self.indices[k] for k in recording_sample(len(self.indices), self.shape)]
        # the sample's planes as read (given by a caller that has read them already), and the value range
        self._sample = np.stack([planes[index] for index in self.sample]) if sample is None else sample
        if value_range is None:
            value_range = (self._sample.min(), self._sample.max())
        self._setup(method, self.shape, device, params, max_steps, output_every, view_every, seed)
        self._intensities(IntensityMap(np.asarray(value_range, dtype=self._sample.dtype)), is_integer)
        self.keep = keep  # called with (index, normalised output; None: the plane itself) for every plane done
        self.trained = trained  # a trained_state to predict with instead of training (a resumed run)
        self.trained_reason = reason  # the planes' stop_reason then: "resumed", or "model" for a model given
        self.warm = warm  # what the model starts from (Method's ``warm``), or None
        self.client = client  # a dask.distributed Client: the planes are predicted on its workers
        # with a client: where a worker writes plane ``index``'s result itself (a cluster.Destination), or None
        self.destination = destination
        self.on_trained = on_trained  # called with the trained_state once training ends
        self.skip = set(skip)  # planes finished already (a resumed run): not predicted again
        self.model: Method | None = None
        self.plane_index = self.indices[0]  # the plane whose result is in the making (-1 while predicting)
        self._pace = _Pace()
        self.step = 0
        self.best_val_psnr = -math.inf
        self.stop_reason: str | None = None

    def _tensor(self, plane: np.ndarray) -> torch.Tensor:
        """A plane (H, W) as read, normalised by the recording's map, on the device: (1, 1, H, W)."""
        return torch.from_numpy(self.map.normalise(plane)).to(self.device)[None, None]

    def _partial(self) -> Event:
        return self._event(math.nan, self.indices[0], self.step, partial=True)

    def _event(self, val_psnr: float, plane: int, step: int, output=None, view=None, done=False,
               reason: str | None = None, partial: bool = False) -> Event:
        countdown = self.model.countdown() if self.model is not None and self.plane_index >= 0 else None
        return Event(step=step, val_psnr=val_psnr, best_val_psnr=self.best_val_psnr, elapsed=self.elapsed,
                     stage=self.method_cls.name, output=output, view=view, view_factor=self.view_factor,
                     done=done, stop_reason=(reason or self.stop_reason) if done else None, plane=plane,
                     n_planes=self.n_planes, countdown=countdown, eta=self._pace.left(step, countdown),
                     partial=partial)

    def __iter__(self) -> Iterator[Event]:
        if self._started is not None:
            raise RuntimeError("a RecordingRun can be iterated only once")
        self._started = time.perf_counter()
        try:
            noisy = torch.from_numpy(self.map.normalise(self._sample)).to(self.device)[:, None]
            self._sample = None
            self.model = self.method_cls(noisy, rng=self.rng, level=self.level, warm=self.warm, **self.params)
            self.model.slice_seconds = SLICE_SECONDS
            del noisy
            val_psnr = math.nan
            if self.trained is not None:
                self.model.load_trained(self.trained)
                self.stop_reason = self.trained_reason
            while self.stop_reason is None:
                mse = yield from self._whole(self.model.step)
                val_psnr = math.nan if mse is None else mse_to_psnr(mse)
                self.step += 1
                self.best_val_psnr = max(self.best_val_psnr, val_psnr) if not math.isnan(val_psnr) \
                    else self.best_val_psnr
                self._check_stop()
                if self.stop_reason is None:
                    wanted = self.output_every is not None and self.step % self.output_every == 0
                    viewed = self.view_every is not None and self.step % self.view_every == 0
                    output = self.preview() if wanted else None
                    view = downsample(self.model.preview(), self.view_factor) if viewed else None
                    yield self._event(val_psnr, self.indices[0], self.step, output, self._intensity(view))
            if self.trained is None and self.on_trained is not None:
                self.on_trained(self.model.trained_state())
            self.plane_index = -1
            step = self.step  # the first plane's event carries the last step's number and validation
            predicted = self._predicted_here() if self.client is None else self._predicted_on_cluster()
            for index, reason, value in predicted:
                if reason == "resumed":
                    output = None
                elif reason == "constant":  # a constant plane comes back unchanged, as on its own
                    output = value.astype(np.float32)
                    value = None
                elif is_written(value):  # a worker wrote it to the output; nothing came back
                    output = None
                else:
                    output = self._intensity(value)
                if self.keep is not None and reason != "resumed":
                    self.keep(index, value)
                yield self._event(val_psnr, index, step, output, done=True, reason=reason)
                step, val_psnr = 0, math.nan
        finally:
            if self.stop_reason is None:
                self.stop_reason = "cancelled"

    def _intensity(self, normalised):
        return None if normalised is None else self.map.back(normalised, self.map.display_dtype())

    def _predicted_here(self) -> Iterator[tuple]:
        """``(index, reason, value)`` for each plane in order: ``"resumed"`` (to ``skip``, value None),
        ``"constant"`` (value the plane), else reason None and the normalised output."""
        for index in self.indices:
            if index in self.skip:
                yield index, "resumed", None
                continue
            plane = np.asarray(self.planes[index])
            if plane.min() == plane.max():
                yield index, "constant", plane
                continue
            yield index, None, _as_numpy(self.model.predict_plane(self._tensor(plane)))  # the plane read above

    def _predicted_on_cluster(self) -> Iterator[tuple]:
        """As :meth:`_predicted_here`, every plane but those to ``skip`` predicted on the cluster of ``client``
        (see :mod:`napari_noise2fast.cluster`): the weights sent to each worker once, then the planes in tasks
        of a few each (:func:`~napari_noise2fast.cluster.task_planes`), yielded as their tasks finish (the
        planes to ``skip`` first). With ``destination`` the workers write the results themselves: the value is
        then ``cluster.WRITTEN`` (a constant plane too)."""
        from distributed import as_completed

        from napari_noise2fast.cluster import Source, predict_planes, task_planes

        state = self.client.scatter(self.model.predicting_state(), broadcast=True)
        spec = self.model.prediction_spec()
        token = uuid.uuid4().hex  # the workers build the network once for this run
        lazy = getattr(self.planes, "lazy", False)  # a lazy input: each worker reads its planes itself
        todo = [index for index in self.indices if index not in self.skip]
        size = task_planes(len(todo), self.shape, sum(self.client.nthreads().values()))
        tasks = {}
        for first in range(0, len(todo), size):
            indices = todo[first:first + size]
            sources = [Source(self.planes.image, self.planes.location(index), self.planes.transposed) if lazy
                       else Source(np.asarray(self.planes[index])) for index in indices]
            destinations = None if self.destination is None else [self.destination(index) for index in indices]
            tasks[self.client.submit(predict_planes, token, self.method_cls.name, spec, state, sources, self.map,
                                     destinations, pure=False)] = indices
        for index in self.skip:
            yield index, "resumed", None
        try:
            for task in as_completed(tasks):
                for index, (normalised, low, high) in zip(tasks.pop(task), task.result(), strict=True):
                    if lazy:
                        self.planes.seen(low, high)
                    if normalised is None:
                        yield index, "constant", np.asarray(self.planes[index])
                    else:  # the normalised output, or WRITTEN
                        yield index, None, normalised
        finally:
            for task in tasks:  # stopped: the planes not predicted yet are not
                task.cancel()

    def close(self) -> None:
        if self.stop_reason is None:
            self.stop_reason = "cancelled"

    def normalised_result(self) -> np.ndarray | None:
        """The first plane's best so far while training (None before any validation: the input stands)."""
        if self.model is None or self.plane_index < 0:
            return None
        return _as_numpy(self.model.preview())

    def preview(self) -> np.ndarray | None:
        """The first plane's best output so far in the input's intensities (None before the model exists)."""
        normalised = None if self.model is None else _as_numpy(self.model.preview())
        return self._intensity(normalised)
