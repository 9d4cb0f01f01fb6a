"""Several zero-shot denoisers on the same image, one after another: outputs, curves and a table.

Consumed by the API (:func:`compare`), the command line (``noise2fast compare``)
and the widget's comparison mode alike; nothing here imports Qt or napari.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_noise2fast.api import DenoiseJob, check_denoise, count_planes, iter_denoise
from napari_noise2fast.checks import check_bool, check_positive_or_none, check_real
from napari_noise2fast.engine import Event
from napari_noise2fast.methods import get_method
from napari_noise2fast.noise import NoiseModel, estimate_noise

DEFAULT_METHODS = ("noise2fast", "calibrated")
# Step budgets large enough that a method's time, not its steps, ends it under "equal time".
UNBOUNDED_STEPS = 10**9
# the last column is each method's own validation score, of a different kind for each: it does not compare
# across methods (the docks say so in its header's tooltip)
TABLE_COLUMNS = ("method", "PSNR", "SSIM", "seconds", "steps", "stop", "own validation PSNR")
NOISY_ROW = "noisy input"


@dataclass(frozen=True)
class Progress:
    """One report of a comparison: which method, its engine event, the job running it, the new curve
    point ``(seconds since the method started, value)`` if this event made one, and the comparison so
    far (rows and outputs of the methods already finished)."""

    method: str
    event: Event
    job: DenoiseJob
    point: tuple[float, float] | None
    comparison: Comparison


@dataclass
class Row:
    """One method's line of the comparison table.

    ``val_psnr`` is the method's own validation score in dB (each method's own
    kind: see its module; NaN if it has none); ``psnr`` and ``ssim`` are
    against the reference, None without one.
    """

    method: str
    display_name: str
    steps: int
    seconds: float
    val_psnr: float
    psnr: float | None = None
    ssim: float | None = None
    stop: str | None = None

    def cells(self) -> list[str]:
        def number(value, digits):
            return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

        if self.method == NOISY_ROW:  # the input itself: nothing ran
            return [self.display_name, number(self.psnr, 2), number(self.ssim, 3), "", "", "", ""]
        return [self.display_name, number(self.psnr, 2), number(self.ssim, 3), f"{self.seconds:.1f}",
                str(self.steps), self.stop or "", number(self.val_psnr, 2)]


@dataclass
class Comparison:
    """What a comparison produced: outputs and table rows per method, and the curves.

    ``curves[method]`` is a list of (seconds since that method started, value):
    PSNR against the reference when one was given, else the method's own
    validation PSNR (``curve_kind`` says which).
    """

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    curve_kind: str = "validation PSNR"
    noisy: Row | None = None  # the noisy input against the reference (with one): the bar to clear
    # the noise models the methods fitted (PN2V...), and "vst", the blind line through the first plane's local
    # statistics beside them (image units; see napari_noise2fast.estimate_noise)
    noise_models: dict[str, NoiseModel] = field(default_factory=dict)

    def all_rows(self) -> list[Row]:
        """The noisy input's row (with a reference), then the methods'."""
        return ([self.noisy] if self.noisy is not None else []) + self.rows

    def best(self) -> dict[str, str]:
        """Per column, the method whose value is best (highest PSNR and SSIM, fewest seconds), where scored."""
        found = {}
        for column, key, better in (("PSNR", "psnr", max), ("SSIM", "ssim", max), ("seconds", "seconds", min)):
            scored = [row for row in self.rows if getattr(row, key) is not None and math.isfinite(getattr(row, key))]
            if scored:
                found[column] = better(scored, key=lambda row, key=key: getattr(row, key)).method
        return found

    def table(self) -> str:
        """The rows as a Markdown table (the noisy input first, with a reference)."""
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(row.cells()) + " |" for row in self.all_rows()]
        return "\n".join(lines)

    def csv(self) -> str:
        """The rows as CSV text (for the clipboard or a file), the noisy input first with a reference."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(TABLE_COLUMNS)
        writer.writerows(row.cells() for row in self.all_rows())
        return buffer.getvalue()


def _data_range(reference: np.ndarray) -> float:
    return 255.0 if reference.dtype == np.uint8 else float(np.ptp(reference)) or 1.0


def psnr_against(reference: np.ndarray, output: np.ndarray, data_range: float | None = None) -> float:
    """PSNR only (cheap: the curves' points are computed while a method trains)."""
    reference = np.asarray(reference)
    if data_range is None:
        data_range = _data_range(reference)
    return float(peak_signal_noise_ratio(np.asarray(reference, dtype=np.float64),
                                         np.asarray(output, dtype=np.float64), data_range=data_range))


def quality(reference: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of ``output`` against ``reference``.

    The data range is 255 for a uint8 reference, else the reference's range. SSIM
    (Gaussian weights, sigma 1.5) is averaged over the 2D planes of a stack;
    a last axis of 3 or 4 is taken as colour channels.
    """
    reference = np.asarray(reference)
    data_range = _data_range(reference)
    reference, output = reference.astype(np.float64), np.asarray(output, dtype=np.float64)
    psnr = psnr_against(reference, output, data_range)  # arrays already float64: no second copy
    colour = reference.ndim >= 3 and reference.shape[-1] in (3, 4)
    plane_shape = reference.shape[-3:] if colour else reference.shape[-2:]
    pairs = zip(reference.reshape(-1, *plane_shape), output.reshape(-1, *plane_shape), strict=True)
    ssim = np.mean([structural_similarity(r, o, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, channel_axis=-1 if colour else None)
                    for r, o in pairs])
    return float(psnr), float(ssim)


def check_comparison(image, methods: Sequence[str], *, reference=None, equal_time: bool = False,
                     params: dict[str, dict] | None = None, time_budget: float | None = None,
                     curve_every: int = 10, **common) -> list[str]:
    """ValueError with a plain message for anything wrong, before any training; the methods in run order.

    Checks the image and ``common`` as :func:`~napari_noise2fast.iter_denoise` does, every method's
    ``params``, the reference (real, finite, the image's shape) and the budgets.
    """
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, Sequence) or not all(isinstance(name, str) for name in methods):
        raise ValueError(f"methods must be a method name or a list of them, got {methods!r}")
    if not methods:
        raise ValueError("give at least one method to compare")
    names = [get_method(name).name for name in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"a method is named twice: {list(methods)}")
    check_bool("equal_time", equal_time)
    check_real("time_budget", time_budget, positive=True)
    check_positive_or_none("curve_every", curve_every)
    if equal_time:
        if "noise2fast" not in names:
            raise ValueError("equal time needs noise2fast among the methods (its time is the budget)")
        names = ["noise2fast"] + [n for n in names if n != "noise2fast"]
    if params is not None and (not isinstance(params, dict) or not all(isinstance(p, dict) for p in params.values())):
        raise ValueError(f"params must map method names to dicts of their settings, got {params!r}")
    unknown = set(params or {}) - set(names)
    if unknown:
        raise ValueError(f"params names method(s) not compared: {sorted(unknown)}")
    array, (y, x, _), *_ = check_denoise(image, names[0], **common)  # the image and the common arguments
    if reference is not None:
        ref = np.asarray(reference)
        if ref.dtype.kind not in "uif":
            raise ValueError(f"reference must be an integer or floating-point array, got dtype {ref.dtype}")
        if ref.shape != np.shape(image):
            raise ValueError(f"the reference has shape {ref.shape}, the image {np.shape(image)}; they must match")
        if ref.dtype.kind == "f" and not np.all(np.isfinite(ref)):
            raise ValueError("reference contains NaN or infinite values")
    for name in names:
        get_method(name).check_params(**(params or {}).get(name, {}))
        get_method(name).check_plane((array.shape[y], array.shape[x]))
    return names


def iter_compare(
    image,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    reference=None,
    time_budget: float | None = None,
    equal_time: bool = False,
    params: dict[str, dict] | None = None,
    curve_every: int = 10,
    **common,
) -> Generator[Progress, None, Comparison]:
    """Run ``methods`` one after another on ``image``; yield :class:`Progress`; return the :class:`Comparison`.

    Use it as ``comparison = yield from iter_compare(...)`` or iterate it and
    catch ``StopIteration.value``; :func:`compare` does that for you.

    Parameters
    ----------
    time_budget : float, optional
        Wall-clock seconds each method may take. The trained comparison methods
        get it as their ``seconds`` (shared evenly by the planes), stop
        themselves and fit their schedules into it (Self2Self's ensemble,
        ZS-N2N's learning-rate decay); any other is stopped at the next step
        after that time and keeps its best so far.
    equal_time : bool
        Give every other method the wall time ``noise2fast`` needed (it runs
        first; the Noise2Fast paper's equal-time comparison). Methods with a
        step budget then run until that time instead.
    params : dict, optional
        Per-method keyword arguments, e.g. ``{"self2self": {"steps": 500}}``.
    curve_every : int
        With a reference, its PSNR is computed for every ``curve_every``-th step's output.
    **common
        Passed to :func:`~napari_noise2fast.iter_denoise` for every method
        (``axes``, ``channel_axis``, ``device``, ``seed``, ...). ``preview``
        is False unless given: each method is judged on its own output.
    """
    names = check_comparison(image, methods, reference=reference, equal_time=equal_time, params=params,
                             time_budget=time_budget, curve_every=curve_every, **common)
    params = dict(params or {})
    common.setdefault("preview", False)  # each method's own output, not the shared Gaussian preview
    image = np.asarray(image)
    reference = None if reference is None else np.asarray(reference)
    # the curves' points use the whole reference's range, as the table does, not each plane's own
    data_range = None if reference is None else _data_range(reference)
    comparison = Comparison(curve_kind="PSNR against reference" if reference is not None else "validation PSNR")
    if reference is not None:
        psnr, ssim = quality(reference, image)
        comparison.noisy = Row(NOISY_ROW, NOISY_ROW, 0, 0.0, math.nan, psnr, ssim)
    budget = time_budget
    planes = count_planes(image, common.get("axes"), common.get("channel_axis"))
    for name in names:
        settings = dict(params.get(name, {}))
        known = get_method(name).check_params()
        if equal_time and name != "noise2fast" and "steps" in known:
            settings.setdefault("steps", UNBOUNDED_STEPS)
        # a method that knows its time budget stops itself and fits its schedules into it
        timed = budget is not None and "seconds" in known
        if timed:
            settings["seconds"] = budget / planes
        job = iter_denoise(image, name, output_every=curve_every if reference is not None else None,
                           **common, **settings)
        curve: list[tuple[float, float]] = []
        comparison.curves[name] = curve
        start = time.perf_counter()
        steps, best_val, stop = 0, -math.inf, None
        for event in job:
            seconds = time.perf_counter() - start
            point = None
            if reference is not None and event.output is not None:
                point = (seconds, psnr_against(reference[job.plane_location(event.plane)], event.output,
                                                data_range))
            elif reference is None and math.isfinite(event.val_psnr):
                point = (seconds, event.val_psnr)
            if point is not None:
                curve.append(point)
            if event.done:
                steps += event.step
                best_val = max(best_val, event.best_val_psnr)
                stop = event.stop_reason
            yield Progress(name, event, job, point, comparison)
            if budget is not None and not timed and time.perf_counter() - start >= budget and not event.done:
                job.close()
                stop = "time"
                steps += event.step
                best_val = max(best_val, event.best_val_psnr)
                break
        seconds = time.perf_counter() - start
        output = job.result()
        comparison.outputs[name] = output
        psnr, ssim = quality(reference, output) if reference is not None else (None, None)
        comparison.rows.append(Row(name, get_method(name).display_name, steps, seconds, best_val, psnr, ssim, stop))
        fitted = job.noise_model()
        if fitted is not None:
            if "vst" not in comparison.noise_models:
                comparison.noise_models["vst"] = estimate_noise(image[job.plane_location(0)], "vst")
            comparison.noise_models[name] = fitted
        if equal_time and name == "noise2fast":
            budget = seconds
    return comparison


def compare(image, methods: Sequence[str] = DEFAULT_METHODS, *, reference=None, time_budget: float | None = None,
            equal_time: bool = False, params: dict[str, dict] | None = None, progress=None, **common) -> Comparison:
    """Denoise ``image`` with each of ``methods`` in turn and compare them.

    Returns a :class:`Comparison` with every method's output (same shape and
    dtype rules as :func:`~napari_noise2fast.denoise`), the table rows
    (method, steps, seconds, validation PSNR, and PSNR/SSIM against
    ``reference`` when given) and the curves. ``progress``, if given, is
    called with ``(method, event)`` for every event. See :func:`iter_compare`
    for the other arguments.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_noise2fast import compare
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(0, 200, 32), (32, 1))
    >>> noisy = (clean + rng.normal(0, 20, clean.shape)).astype(np.float32)
    >>> result = compare(noisy, ["calibrated", "zs-n2n"], reference=clean, seed=0, device="cpu",
    ...                  params={"zs-n2n": {"steps": 20}})
    >>> [row.method for row in result.rows], sorted(result.outputs)
    (['calibrated', 'zs-n2n'], ['calibrated', 'zs-n2n'])
    """
    runs = iter_compare(image, methods, reference=reference, time_budget=time_budget, equal_time=equal_time,
                        params=params, **common)
    while True:
        try:
            report = next(runs)
        except StopIteration as finished:
            return finished.value
        if progress is not None:
            progress(report.method, report.event)
