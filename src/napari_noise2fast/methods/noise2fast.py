"""Noise2Fast (Lequyer et al., Nat. Mach. Intell. 2022): pairs, network, one training step.

The ``reference`` preset follows the published reference code: four chequerboard
pairs, eight 3x3 convolutions 64 wide with ReLU, a 1x1 convolution and a sigmoid,
binary cross-entropy, Adam at 1e-3, batch size 1, validation on the whole noisy
plane after every step, patience 100, and the mean of the last 105 validation
outputs as the result (restarting once at 5e-6 if that mean is nearly flat).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_noise2fast.activations import ReLU
from napari_noise2fast.checks import check_settings
from napari_noise2fast.devices import fast_layout, resolve_device
from napari_noise2fast.engine import Countdown, Method, downsample, mse_to_psnr, seeded_module, to_end
from napari_noise2fast.methods._torch import PRECISIONS, autocast, compute_dtype
from napari_noise2fast.methods.noise2self import GRID, grid_mask, interpolate_masked
from napari_noise2fast.tiling import predict_in_tiles, tiles, with_margin

# Bounded training (issue 19; benchmarks/RESULTS.md, "Large planes"): where a half-plane holds more than
# BUDGET pixels, every step trains on random crops of one pair holding BUDGET pixels in all, and validation
# runs on a fixed subset of about VALIDATION pixels, in tiles spread over the plane (chosen once); the
# whole plane is predicted in tiles only for the result. Smaller planes train and validate whole.
BUDGET = 131072  # a 512x512 plane's half-plane: planes up to 512x512 train whole, as before
VALIDATION = 16 * 128 * 128
VALIDATION_TILE = 128
OUTPUTS_MEMORY = 256 * 2**20  # bytes: a longer window of outputs keeps weight snapshots instead
VIEW_PIXELS = 512 * 512  # pixels predicted per call of Noise2Fast.view in bounded mode
# A bounded step's backward passes take this many crops each (of 8 at the default budget), so that a step can hand
# back between them (Method.slice_seconds); on one thread a step's backward passes in parts of 2 took 0.83x the
# time of one batch of 8 in bfloat16, 0.81x in float32 (both ways in one run, Intel Xeon with AMX)
PART_CROPS = 2

# Right after a start the averaged weights are close to their initial ones and the first validation scores
# about a flat image; on bounded crops the network can take longer than ``patience`` to beat that (Set12 11 at
# 1024x1024: its validation fell after step 10 and passed the step-10 value at step 90), so while the best
# validation is still the first one patience is this long instead
START_PATIENCE = 200
# ... and while the best validation is still within this of a flat image's (the validation pixels' own
# variance): a first gain of a few tenths of a dB on the plateau is not learning yet (Set12 12 at 1024x1024,
# seed 1: 17.13 dB at step 10, 17.64 at step 20, flat 17.04 dB after; with the start patience ended at step 20
# it stopped at step 80 with 27.15 dB where seed 0 reached 28.77)
START_MARGIN_DB = 1.0

# A validation resets patience only if it gains 0.5 % of the gain so far (benchmarks/stopping.py, replayed on
# traces of fast runs on ../shared/data and two nuclei tiles: median PSNR cost 0.010 dB, worst 0.103 dB,
# 31 % less time in all; absolute minimum gains cut the nuclei runs to 70 steps)
MIN_RELATIVE_GAIN = 0.005
# In bounded mode (large planes, recordings) a smaller share: there the training draws from far more pixels than a
# 512x512 plane holds, and the validation on tiles keeps climbing slowly and steadily. Measured (fish mosaics, one
# run on an Intel Xeon without bfloat16, benchmarks/RESULTS.md "Large planes"): with 0.002 2048x2048 took 1.53x the
# time of 512x512 at 0.14 dB below it, 4096x4096 2.26x at 0.26 dB below; with 0.005, 4096x4096 stopped at 360 steps
# 0.53 dB below (AMX Xeon), and a sparse 32-plane volume stopped on a 40-step plateau 6 dB short of its seed's twin
MIN_RELATIVE_GAIN_BOUNDED = 0.002

REFERENCE = {
    "patience": 100,
    "window": 105,
    "learning_rate": 1e-3,
    "restart_learning_rate": 5e-6,
    "width": 64,
    "validate_every": 1,
    "average": "outputs",
    "precision": "float32",
    "channels_last": False,
    "warm_start": False,
    "warm_patience": 100,
    "budget": None,
    "crop": 128,
    "context": False,
    "sampling": "tiles",
    "validation": VALIDATION,
    "augment": False,
    "min_gain": 0.0,
    "min_relative_gain": 0.0,
    "min_relative_gain_bounded": 0.0,
    "start_patience": None,
    "raw_start": False,
}
PRESETS: dict[str, dict] = {
    "reference": REFERENCE,
    # See benchmarks/RESULTS.md (ablation): same network and pairs, validated every 10 steps on an
    # averaged copy of the weights, the precision and layout measured fastest (devices.precision_report), shorter
    # patience; the planes of a stack after the first go on from the one before; bounded steps on
    # large planes.
    "fast": {**REFERENCE, "patience": 50, "validate_every": 10, "average": "weights", "precision": "auto",
             "channels_last": "auto", "warm_start": True, "warm_patience": 20, "budget": BUDGET,
             "start_patience": START_PATIENCE, "min_relative_gain": MIN_RELATIVE_GAIN,
             "min_relative_gain_bounded": MIN_RELATIVE_GAIN_BOUNDED, "context": True, "raw_start": False},
}
AVERAGES = ("outputs", "weights")
SAMPLINGS = ("tiles", "random")
RECEPTIVE_RADIUS = 8  # eight 3x3 convolutions: an output pixel sees 8 pixels on each side
# the J-invariant check's passes: 4 of the 16 phases of Noise2Self's 4x4 grid of masks (scikit-image's stride, as
# the preview's), one in each row and column of it, so a quarter of the pixels spread evenly (each pass is a
# forward over the validation pixels: the 16 took 6.4 s at 512x512 on one thread)
INVARIANT_PHASES = ((0, 0), (1, 2), (2, 1), (3, 3))
FLAT_PIXELS = 25


def chequerboard_pairs(image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The four (input, target) training pairs of chequerboard downsampling.

    An odd height or width is cropped by one pixel first. With ``x`` that
    crop, the "up" images ``a, b`` have shape (H/2, W): for even columns
    ``a[i, j] = x[2i+1, j]`` and ``b[i, j] = x[2i, j]``, for odd columns the
    rows swap. The "left" images ``c, d`` (H, W/2) are the same with rows and
    columns exchanged. The pairs are ``a->b, b->a, c->d, d->c``.

    Parameters
    ----------
    image : torch.Tensor
        Shape (..., H, W) with H, W >= 2.
    """
    height, width = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
    x = image[..., :height, :width]
    upper, lower = x[..., 0::2, :], x[..., 1::2, :]
    a = torch.where(_odd(width, image, dim=-1), upper, lower)
    b = torch.where(_odd(width, image, dim=-1), lower, upper)
    left, right = x[..., :, 0::2], x[..., :, 1::2]
    c = torch.where(_odd(height, image, dim=-2), left, right)
    d = torch.where(_odd(height, image, dim=-2), right, left)
    return [(a, b), (b, a), (c, d), (d, c)]


def _odd(size: int, like: torch.Tensor, dim: int) -> torch.Tensor:
    """Boolean mask, True at odd indices along the last (-1) or second-last (-2) axis."""
    odd = torch.arange(size, device=like.device) % 2 == 1
    return odd if dim == -1 else odd[:, None]


def pair_crops(image: torch.Tensor, pair: int, corners, shape: tuple[int, int],
               planes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of pair ``pair`` of :func:`chequerboard_pairs` (``image`` shape (1, C, H, W)), batched.

    Each crop is ``pair_image[..., top:top + h, left:left + w]`` for ``(top, left)`` in ``corners``
    and ``(h, w) = shape``, cut from the plane directly (the pairs are never built whole): for the
    "up" pairs (0, 1) ``left`` and ``w`` must be even, for the "left" pairs (2, 3) ``top`` and ``h``.
    With ``planes`` (one index per corner) ``image`` is a stack (N, C, H, W) and each crop comes from
    its own plane.
    """
    height, width = shape
    sources, targets = [], []
    for index, (top, left) in enumerate(corners):
        plane = image if planes is None else image[planes[index]:planes[index] + 1]
        if pair < 2:
            region = plane[..., 2 * top:2 * (top + height), left:left + width]
        else:
            region = plane[..., top:top + height, 2 * left:2 * (left + width)]
        source, target = chequerboard_pairs(region)[pair]
        sources.append(source)
        targets.append(target)
    return torch.cat(sources), torch.cat(targets)


def crop_grid(shape: tuple[int, int], crop: tuple[int, int], pair: int) -> list[tuple[int, int]]:
    """Corners of a fixed grid of ``crop``-sized crops covering a pair's image of ``shape``: steps of the
    crop's side, the last row and column moved in to end at the image's edge (rounded down to even where
    :func:`pair_crops` needs an even corner: the columns of up pairs, the rows of left pairs)."""

    def starts(size: int, side: int, even: bool) -> list[int]:
        found = list(range(0, size - side + 1, side))
        last = size - side
        if even:
            last -= last % 2
        if found[-1] < last:
            found.append(last)
        return found

    tops = starts(shape[0], crop[0], even=pair >= 2)
    lefts = starts(shape[1], crop[1], even=pair < 2)
    return [(top, left) for top in tops for left in lefts]


def pair_shape(plane: tuple[int, int], pair: int) -> tuple[int, int]:
    """Shape of pair ``pair``'s images for a plane of shape ``plane``."""
    height, width = plane[0] // 2 * 2, plane[1] // 2 * 2
    return (height // 2, width) if pair < 2 else (height, width // 2)


def validation_tiles(plane: torch.Tensor, pixels: int, tile: int = VALIDATION_TILE) -> list[tuple[int, int, int, int]]:
    """A fixed validation subset: about ``pixels`` pixels in tiles (top, left, bottom, right) of the plane
    (shape (1, 1, H, W)), spread over it and holding signal.

    The plane is cut into a grid of blocks, one per tile (as square as the plane allows); in each block
    the tile is placed where the plane, averaged over 4x4 pixels to damp the noise, varies most: the
    tiles cover every part of the plane, each on structure rather than flat background where there is any.
    """
    height, width = plane.shape[-2:]
    tile_h, tile_w = min(tile, height), min(tile, width)
    count = max(1, pixels // (tile_h * tile_w))
    rows = min(max(1, round(math.sqrt(count * height / width))), max(1, height // tile_h))
    cols = min(max(1, count // rows), max(1, width // tile_w))
    factor = 4
    smooth = F.avg_pool2d(plane.float(), factor, ceil_mode=True)[0, 0].double().cpu()  # the search runs here
    integral = F.pad(smooth.cumsum(0).cumsum(1), (1, 0, 1, 0))
    squares = F.pad((smooth**2).cumsum(0).cumsum(1), (1, 0, 1, 0))

    def variances(tops: torch.Tensor, lefts: torch.Tensor) -> torch.Tensor:
        """The smoothed plane's variance in the tile at every corner (tops x lefts), from the integral images."""
        y0, x0 = (tops // factor)[:, None], (lefts // factor)[None, :]
        y1 = torch.maximum(y0 + 1, ((tops + tile_h) // factor)[:, None])
        x1 = torch.maximum(x0 + 1, ((lefts + tile_w) // factor)[None, :])
        area = (y1 - y0) * (x1 - x0)
        total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        square = squares[y1, x1] - squares[y0, x1] - squares[y1, x0] + squares[y0, x0]
        return square / area - (total / area) ** 2

    tiles = []
    for row in range(rows):
        y_lo, y_hi = row * height // rows, (row + 1) * height // rows
        for col in range(cols):
            x_lo, x_hi = col * width // cols, (col + 1) * width // cols
            tops = torch.arange(y_lo, max(y_lo, min(y_hi, height) - tile_h) + 1, max(1, tile_h // 4))
            lefts = torch.arange(x_lo, max(x_lo, min(x_hi, width) - tile_w) + 1, max(1, tile_w // 4))
            best = int(torch.argmax(variances(tops, lefts)))  # the first of equals, in raster order
            top, left = int(tops[best // len(lefts)]), int(lefts[best % len(lefts)])
            top, left = min(top, height - tile_h), min(left, width - tile_w)
            tiles.append((top, left, top + tile_h, left + tile_w))
    return tiles


def dihedral(image: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th (0-7) of the eight flips and rotations of ``image`` over its last two axes (a quarter turn
    ``k % 4`` times, then a transpose for k >= 4), or with ``inverse`` the transform that undoes it."""
    turns, transpose = k % 4, k >= 4
    if inverse:
        image = image.transpose(-2, -1) if transpose else image
        return torch.rot90(image, -turns, dims=(-2, -1))
    image = torch.rot90(image, turns, dims=(-2, -1))
    return image.transpose(-2, -1) if transpose else image


def noise2fast_network(width: int = 64) -> nn.Sequential:
    """Four blocks of two 3x3 convolutions with ReLU, then a 1x1 convolution (logits)."""
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(8):
        layers += [nn.Conv2d(channels, width, 3, padding=1), ReLU()]
        channels = width
    layers.append(nn.Conv2d(width, 1, 1))
    return nn.Sequential(*layers)


class Noise2Fast(Method):
    """Noise2Fast on one plane, or one model for the planes of a recording.

    Given a stack of planes (``noisy`` of shape (N, 1, H, W), N > 1: a sample of a recording's frames,
    see :class:`~napari_noise2fast.engine.RecordingRun`), it trains in bounded mode at any plane size:
    every step's crops (``budget`` pixels, or one half-plane's where that is less) come from all the
    planes' pairs, and validation is on fixed tiles spread over all of them; :meth:`predict_plane` then
    denoises any frame with the best weights.

    Parameters
    ----------
    preset : str
        ``"fast"`` (the default: averaged weights validated every 10 steps,
        patience 50, the precision and layout measured fastest,
        bounded steps on large planes) or ``"reference"`` (the published code's
        settings, whole planes at any size). Other arguments override it.
    patience : int
        Stop after ``patience + 1`` steps in a row without a better validation score.
    min_gain : float
        The validation PSNR gain (dB) that counts for ``patience``: a validation better than the best by
        less keeps the better weights but does not reset the count, so a curve creeping up by hundredths
        of a dB ends. 0: every gain counts (the reference).
    start_patience : int or None
        The patience while the best validation is still the first one since the start or restart (a
        network that has not yet beaten its first validation has not begun to learn); None or anything
        up to ``patience``: ``patience``.
        Not for warm-started planes.
    min_relative_gain : float
        As ``min_gain``, as a fraction of the gain so far (the PSNR that last counted minus the first
        validation's since the start or restart); the larger of the two counts. 0: off (the reference);
        the fast preset: 0.005.
    min_relative_gain_bounded : float
        ``min_relative_gain`` in bounded mode (large planes, recordings), where the validation on tiles climbs
        slowly and steadily for longer; the fast preset: 0.002.
    raw_start : bool
        With ``average="weights"``: after a start or restart, validate the training network too and show its
        best while it validates better than the average's, until the average catches up (the average of the
        first steps' weights lags far behind them: on the sample the network's output replaced the preview at
        step 60 instead of 190). Patience counts the average alone. Off in the fast preset: measured
        (``benchmarks/shown.py``) it cost 7-17 % more time (a second validation each time) for the same
        result on the sample, Set12 01 and the fish, and the held-out check that now decides when the
        network's output replaces the preview kept the preview as long without it on 01 and the fish.
    window : int
        The result is the mean of the last ``window`` validation outputs; a run
        cancelled before that many steps returns its best single output.
    learning_rate, restart_learning_rate : float
        Adam's learning rate, and the one of the single restart taken when the
        averaged output is nearly flat (``restart_learning_rate=None`` disables it).
    width : int
        Channels of every hidden convolution.
    validate_every : int
        Validate every this many steps (patience still counts steps).
    average : str
        ``"outputs"``: the result is the mean of the last ``window`` validation
        outputs (the reference). ``"weights"``: an exponential moving average of
        the weights (a running mean for the first ``(window + 1) / 2`` steps,
        then centre of mass ``window`` steps) is validated, and the result is
        its best-validated output.
    precision : str
        ``"float32"``, ``"bfloat16"``, or ``"auto"`` (bfloat16 where a timed probe
        measures it faster, see :func:`napari_noise2fast.devices.precision_report`);
        weights, loss and outputs stay float32.
    channels_last : bool or str
        Use the channels-last memory layout; ``"auto"`` (the ``fast`` preset): as measured fastest by
        :func:`napari_noise2fast.devices.precision_report`.
    warm_start : bool
        On every plane of a stack after the first, go on from where the previous
        plane stopped: its training weights and Adam's state carry over, and
        with ``average="weights"`` the average starts from the previous plane's
        best-validated average (validated on the new plane before any step) and
        is exponential at once. Such planes stop after ``warm_patience``
        instead of ``patience``.
    warm_patience : int
        The patience of warm-started planes.
    budget : int or None
        Pixels per training step on large planes: where a half-plane (one pair's
        image) holds more, each step trains on ``crop`` x ``crop`` crops (see ``sampling``) of
        one pair, ``budget`` pixels in all, and validates on the fixed subset of
        ``validation`` pixels (:func:`validation_tiles`); the cost of a step and
        its memory then no longer grow with the plane. 0 (or None in a preset: the ``reference``):
        whole pairs at any size.
    crop : int
        Side of the training crops in bounded mode (even).
    sampling : str
        Where the crops come from in bounded mode. ``"tiles"`` (the default): each pair's image is cut once
        into a fixed grid of crops (:func:`crop_grid`), and every step takes the next ones of one pair in an
        order shuffled at every pass, so each pass sees every pixel once, as whole-pair training does.
        ``"random"``: crops at random places at every step, measured about 1 dB worse (Set12 03, 300
        steps: 28.26 against 29.02 dB with one 128x128 crop a step, 28.22 against 29.11 with seven 64x64;
        whole pairs 29.22; benchmarks/RESULTS.md, "Large planes").
    context : bool
        Cut each crop with the network's receptive field (8 pixels) of real surroundings on every side
        where the pair has them, the loss on the crop only, so that only the pair's own edges are seen
        as zero padding, as in whole-pair training. On in the ``fast`` preset: on 1024x1024 mosaics (300
        steps) crops without it left the network near a flat output for about 130 steps on Set12 10
        (25.11 dB against 28.56 with context; whole pairs 27.95), while it cost 0.2-0.3 dB on FMD and
        Set12 08 (benchmarks/RESULTS.md, "Crops with their context"). (Measured worse with crops at
        random places, before the grid sampling: Set12 03, 26.31 against 28.22 dB.)
    validation : int
        Pixels of the validation subset in bounded mode.
    augment : bool
        Test-time augmentation: the result is the mean of the best network's outputs on the eight flips
        and rotations of the plane (each undone), predicted in tiles, instead of its output on the plane
        alone. Validation and the events' previews stay unaugmented. Needs ``average="weights"``.

    Whatever the plane's size, the best-so-far state is kept as weights (about
    1 MB), the whole plane is predicted in tiles (:mod:`napari_noise2fast.tiling`),
    and a ``window`` of outputs too large for memory is kept as weight snapshots
    whose outputs are averaged at the end.
    """

    name = "noise2fast"
    display_name = "Noise2Fast"
    trains_on_stacks = True

    @classmethod
    def check_params(cls, preset: str = "fast", **overrides) -> dict:
        """The settings of ``preset`` with ``overrides`` applied; ValueError if any is invalid."""
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        unknown = set(overrides) - set(PRESETS[preset])
        if unknown:
            raise ValueError(
                f"unknown Noise2Fast parameter(s) {sorted(unknown)}; "
                f"known: {sorted(PRESETS[preset])}"
            )
        layout = overrides.get("channels_last")
        if layout is not None and layout != "auto" and type(layout).__name__ not in ("bool", "bool_"):
            raise ValueError(f"Noise2Fast parameter 'channels_last' must be True, False or 'auto', got {layout!r}")
        check_settings("Noise2Fast", {k: v for k, v in overrides.items() if k != "channels_last"}, PRESETS[preset])
        settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        if (settings["patience"] < 0 or settings["warm_patience"] < 0 or settings["window"] < 1
                or (settings["start_patience"] is not None and settings["start_patience"] < 0)
                or settings["min_gain"] < 0 or settings["min_relative_gain"] < 0
                or settings["min_relative_gain_bounded"] < 0
                or settings["learning_rate"] <= 0 or settings["validate_every"] < 1
                or settings["average"] not in AVERAGES or settings["precision"] not in {"auto", *PRECISIONS}):
            raise ValueError(f"invalid Noise2Fast settings: {settings}")
        if settings["augment"] and settings["average"] != "weights":
            raise ValueError("Noise2Fast: augment needs average='weights' (the result is one network's output)")
        if settings["sampling"] not in SAMPLINGS:
            raise ValueError(f"Noise2Fast: sampling must be one of {SAMPLINGS}, got {settings['sampling']!r}")
        if settings["crop"] < 2 or settings["crop"] % 2 or settings["validation"] < 1 \
                or (settings["budget"] and settings["budget"] < settings["crop"] ** 2) \
                or (settings["budget"] is not None and settings["budget"] < 0):
            raise ValueError(f"Noise2Fast: crop must be even and at least 2, budget 0 or at least crop**2 pixels and "
                             f"validation at least 1 pixel; got crop={settings['crop']}, "
                             f"budget={settings['budget']}, validation={settings['validation']}")
        return settings

    def __init__(self, noisy, *, rng, level, warm=None, **params):
        super().__init__(noisy, rng=rng, level=level, warm=warm)
        self.settings = settings = self.check_params(**params)
        precision = settings["precision"]
        self.compute_dtype = compute_dtype(noisy.device, precision)
        if settings["channels_last"] == "auto":
            self.memory_format = fast_layout(noisy.device)
        else:
            self.memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
        self.noisy = noisy.contiguous(memory_format=self.memory_format)
        plane = tuple(noisy.shape[-2:])
        budget = settings["budget"]
        self.n_planes = int(noisy.shape[0])
        if self.n_planes > 1 and not budget:
            raise ValueError("Noise2Fast trains one model on a stack's planes in bounded mode only; "
                             "budget must be positive")
        half_plane = max(math.prod(pair_shape(plane, k)) for k in range(4))
        self.bounded = bool(budget) and (self.n_planes > 1 or half_plane > budget)
        # pixels per step: the budget, or for a stack of small planes one half-plane (a step costs what it
        # does on one of them)
        self.step_pixels = min(budget, half_plane) if self.bounded else None
        if self.bounded:
            self.pairs = None  # crops are cut from the planes at each step
            # (plane, tile): the fixed validation subset, shared out over the planes
            share = max(1, settings["validation"] // self.n_planes)
            self.validation_set = [(index, region) for index in range(self.n_planes)
                                   for region in validation_tiles(noisy[index:index + 1], share)]
            self.tiles = [region for _, region in self.validation_set] if self.n_planes == 1 else None
        else:
            self.pairs = [(source.contiguous(memory_format=self.memory_format), target)
                          for source, target in chequerboard_pairs(noisy)]
            self.tiles = None
        # a window of whole outputs where it fits in OUTPUTS_MEMORY, else of weight snapshots
        self.keeps_outputs = not self.bounded and settings["window"] * math.prod(plane) * 4 <= OUTPUTS_MEMORY
        self.restarted = False
        self._flat_mse: float | None = None  # see _near_flat
        self.warm_started = settings["warm_start"] and self.warm is not None
        self.patience = settings["warm_patience"] if self.warm_started else settings["patience"]
        self.best_state: dict[str, torch.Tensor] | None = None
        self._start(settings["learning_rate"])
        if self.warm_started:
            self.initial_mse, _ = to_end(self._validate())

    @property
    def _from_warm(self) -> bool:
        """Whether the weights in training came from the previous plane (not a restart)."""
        return self.warm_started and not self.restarted

    def _start(self, learning_rate: float) -> None:
        seed = int(self.rng.integers(2**63))
        self.network = seeded_module(lambda: noise2fast_network(self.settings["width"]), seed)
        if self._from_warm:
            self.network.load_state_dict(self.warm["network"])
        self.network.to(self.noisy.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=learning_rate)
        if self._from_warm and self.warm["optimizer"] is not None:  # None: saved weights, Adam afresh
            self.optimizer.load_state_dict(self.warm["optimizer"])
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate
        self.averaged = None
        # the training network is validated beside its average until the average validates at least as well:
        # the average of the first steps' weights lags far behind them (the sample: the training network beat
        # the preview at step 65, the average after step 150)
        self.racing = self.settings["raw_start"] and self.settings["average"] == "weights" and not self._from_warm
        self.lead: tuple[float, dict, torch.Tensor | None] | None = None  # the training network's best while racing
        if self.settings["average"] == "weights":
            self.averaged = copy.deepcopy(self.network).requires_grad_(False)
            if self._from_warm:
                self.averaged.load_state_dict(self.warm["best"])
            self._average_pairs = (list(self.averaged.parameters()), list(self.network.parameters()))
        # the last `window` validations: outputs (H, W), or weight snapshots where those would not fit
        self.outputs: deque = deque(maxlen=self.settings["window"])
        self.best_mse = float("inf")
        self.counted_psnr = -math.inf  # the validation PSNR that last reset patience (see min_gain)
        self.first_psnr: float | None = None  # the first validation's PSNR since the (re)start
        self.best_is_first = True  # no validation since the (re)start has beaten the first one
        self.best_output = None if self.bounded else self.noisy[0, 0]
        self.best_state = None
        self.since_best = 0
        self.steps = 0  # since the (re)start; a restart happens on a validation step, so the cadence holds
        self._cached: tuple[tuple, torch.Tensor] | None = None
        self._canvas: np.ndarray | None = None  # the progressive view (see view)
        self._view_tiles = None
        self._best: tuple = (None, None)  # (key, network with the best weights)
        self._invariant: tuple = (None, math.nan)  # (key of the network and phases scored, its held-out PSNR)
        self._passes: dict[int, list[tuple[int, int, int]]] = {}  # per pair: the grid crops left in this pass

    def _autocast(self):
        return autocast(self.noisy.device, self.compute_dtype)

    def _update_average(self) -> None:
        """Running mean of the weights, then (past ``(window + 1) / 2`` steps) an exponential
        moving average whose centre of mass is ``window`` steps: no bias towards the initial weights."""
        weight = 2.0 / (self.settings["window"] + 1)
        if not self._from_warm:
            weight = max(weight, 1.0 / self.steps)
        with torch.no_grad():
            torch._foreach_lerp_(*self._average_pairs, weight)

    def training_batch(self) -> list[tuple[torch.Tensor, torch.Tensor, tuple[slice, slice]]]:
        """One step's ``(sources, targets, inner)`` groups: a whole pair, or in bounded mode ``budget`` pixels
        of crops of one, each source cut (with ``context``) with the receptive field's real surroundings
        where the pair has them; the loss counts ``targets`` at ``sources[..., inner]`` only."""
        pair = int(self.rng.integers(4))
        whole = (slice(None), slice(None))
        if not self.bounded:
            return [(*self.pairs[pair], whole)]
        pair_height, pair_width = pair_shape(tuple(self.noisy.shape[-2:]), pair)
        crop = self.settings["crop"]
        height, width = min(crop, pair_height), min(crop, pair_width)
        count = max(1, self.step_pixels // (height * width))
        if self.settings["sampling"] == "tiles":
            planes, tops, lefts = np.array(self._next_crops(pair, (pair_height, pair_width), (height, width),
                                                            count)).T
        else:
            planes = self.rng.integers(0, self.n_planes, count)
            tops = self.rng.integers(0, pair_height - height + 1, count)
            lefts = self.rng.integers(0, pair_width - width + 1, count)
            if pair < 2:  # the chequerboard's phase follows the parity of the column (up pairs) or row (left)
                lefts -= lefts % 2
            else:
                tops -= tops % 2
        margin = RECEPTIVE_RADIUS if self.settings["context"] else 0  # even: the phase holds
        groups: dict[tuple, list] = {}
        for index, top, left in zip(planes.tolist(), tops.tolist(), lefts.tolist(), strict=True):
            (rows, cols), inner = with_margin((top, left, top + height, left + width), (pair_height, pair_width),
                                              margin)
            shape = (rows.stop - rows.start, cols.stop - cols.start)  # crops of one cut shape batch together
            groups.setdefault((shape, inner[0].start, inner[1].start), []).append((index, rows.start, cols.start))
        batches = []
        for (shape, above, before), cut in groups.items():
            indices, corners = [index for index, _, _ in cut], [(row, col) for _, row, col in cut]
            sources, targets = pair_crops(self.noisy, pair, corners, shape, planes=indices)
            inner = (slice(above, above + height), slice(before, before + width))
            batches.append((sources.contiguous(memory_format=self.memory_format), targets[(..., *inner)], inner))
        return batches

    def _next_crops(self, pair: int, shape: tuple[int, int], crop: tuple[int, int], count: int) -> list:
        """The next ``count`` (plane, top, left) of pair ``pair``'s crop grid over every plane, a new shuffled
        pass begun where one ends."""
        chosen: list[tuple[int, int, int]] = []
        while len(chosen) < count:
            left = self._passes.get(pair)
            if not left:
                grid = [(index, *corner) for index in range(self.n_planes) for corner in crop_grid(shape, crop, pair)]
                left = self._passes[pair] = [grid[i] for i in self.rng.permutation(len(grid))]
            take = min(count - len(chosen), len(left))
            chosen += left[:take]
            del left[:take]
        return chosen

    def step(self) -> float | None:
        return self._sliced("step", self._step_parts)

    def _step_parts(self):
        """One step in parts (see :meth:`Method._sliced`): the backward pass of each ``PART_CROPS`` crops in
        bounded mode (of the whole pair otherwise), then each tile of a validation."""
        self.optimizer.zero_grad(set_to_none=True)
        batches = self.training_batch()
        pixels = sum(target.numel() for _, target, _ in batches)
        for source, target, inner in batches:
            if not self.bounded:  # one batch, the whole pair: as the published code, the mean over it
                with self._autocast():
                    logits = self.network(source)[(..., *inner)]
                F.binary_cross_entropy_with_logits(logits.float(), target).backward()
                yield
                continue
            for first in range(0, len(source), PART_CROPS):
                part = slice(first, first + PART_CROPS)
                with self._autocast():
                    logits = self.network(source[part])[(..., *inner)]
                loss = F.binary_cross_entropy_with_logits(logits.float(), target[part], reduction="sum") / pixels
                loss.backward()
                yield
        self.optimizer.step()
        self.steps += 1
        if self.averaged is not None:
            self._update_average()
        every = self.settings["validate_every"]
        if self.steps % every:
            return None
        mse, improved = yield from self._validate()
        if not improved:
            self.since_best += every
        if self.since_best > self._patience():
            self._finish_or_restart()
        return mse

    def countdown(self) -> Countdown:
        """Steps since the last validation gain that counted, of the patience now (a gain resets it)."""
        return Countdown(self.since_best, self._patience(), "steps without a gain", resets=True)

    def _patience(self) -> int:
        start = self.settings["start_patience"]
        if start is None or self._from_warm or not (self.best_is_first or self._near_flat()):
            return self.patience
        return max(start, self.patience)

    def _near_flat(self) -> bool:
        """Whether the best validation so far is within ``START_MARGIN_DB`` of a flat image's: the MSE of the
        best constant, the variance of the validation pixels (the whole first plane, or the fixed tiles)."""
        if self._flat_mse is None:
            if self.bounded:
                pixels = torch.cat([self.noisy[index, 0, top:bottom, left:right].reshape(-1)
                                    for index, (top, left, bottom, right) in self.validation_set])
            else:
                pixels = self.noisy[0, 0].reshape(-1)
            self._flat_mse = float(torch.var(pixels.double(), unbiased=False))
        return self.best_mse * 10 ** (START_MARGIN_DB / 10) > self._flat_mse

    def _forward(self, network: nn.Module):
        def forward(tile: torch.Tensor) -> torch.Tensor:
            return network(tile.contiguous(memory_format=self.memory_format))
        return forward

    def predict(self, network: nn.Module, plane: torch.Tensor | None = None) -> torch.Tensor:
        """``network``'s output (H, W, float32) on the whole plane (default: the first of ``noisy``; else
        ``plane``, shape (1, 1, H, W)), in tiles as memory requires."""
        plane = self.noisy[:1] if plane is None else plane.contiguous(memory_format=self.memory_format)
        with torch.inference_mode(), self._autocast():
            return torch.sigmoid(predict_in_tiles(self._forward(network), plane, RECEPTIVE_RADIUS,
                                                  bytes_per_pixel=16 * self.settings["width"])).contiguous()

    def predict_plane(self, plane: torch.Tensor) -> torch.Tensor:
        """Any normalised plane (1, 1, H, W) denoised by the best-validated network (the training network
        before any validation), in tiles: how a recording's frames are denoised by one model."""
        network = self._best_network() if self._shown_state() is not None else self.network
        if self.settings["augment"]:
            return self.augmented(network, plane)
        return self.predict(network, plane)

    def prediction_spec(self) -> dict:
        """The settings with the precision and memory layout this model chose, and its device type."""
        precision = next(name for name, dtype in PRECISIONS.items() if dtype == self.compute_dtype)
        return {"settings": {**self.settings, "precision": precision,
                             "channels_last": self.memory_format == torch.channels_last},
                "device": self.noisy.device.type}

    @classmethod
    def predictor(cls, state: dict, *, settings: dict, device: str):
        """As :meth:`predict_plane` of the model whose :meth:`prediction_spec` gave ``settings`` and ``device``,
        with the weights ``state``: the same prediction code (:meth:`predict`, :meth:`augmented`) on an instance
        that holds only what prediction reads (no pairs, no optimiser); the network is built once."""
        model = cls.__new__(cls)
        model.settings = settings
        model.compute_dtype = PRECISIONS[settings["precision"]]
        model.memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
        where = resolve_device(device)
        network = noise2fast_network(settings["width"])
        network.load_state_dict(state)
        network = network.to(where, memory_format=model.memory_format).requires_grad_(False)

        def predict(plane: torch.Tensor) -> torch.Tensor:
            model.noisy = plane = plane.to(where)
            return model.augmented(network, plane) if settings["augment"] else model.predict(network, plane)

        return predict

    def trained_state(self) -> dict | None:
        """The best-validated weights on the CPU, those shown (None before any validation)."""
        return None if self._shown_state() is None else self.predicting_state()

    def predicting_state(self) -> dict:
        """The weights :meth:`predict_plane` predicts with now (the training network's before any validation),
        on the CPU."""
        state = self._shown_state()
        state = self.network.state_dict() if state is None else state
        return {name: tensor.detach().to("cpu").clone() for name, tensor in state.items()}

    @classmethod
    def check_state(cls, state: dict, **params) -> None:
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("a Noise2Fast model's weights must be a dict of tensors")
        network = noise2fast_network(cls.check_params(**params)["width"])
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"the weights do not fit a Noise2Fast network: {str(error).splitlines()[0]}") from error

    def load_trained(self, state: dict) -> None:
        """Predict with ``state`` (a :meth:`trained_state`) as the best-validated weights."""
        self.best_state = {name: tensor.to(self.noisy.device) for name, tensor in state.items()}
        self.best_mse = -math.inf  # a key of its own for the rebuilt best network

    def _subset_parts(self, network: nn.Module):
        """Validation MSE on the fixed tiles, each predicted with its receptive field's context; a generator
        of parts, a tile each (:func:`~napari_noise2fast.engine.to_end` runs it whole)."""
        shape = tuple(self.noisy.shape[-2:])
        total, count = 0.0, 0
        forward = self._forward(network)
        for index, (top, left, bottom, right) in self.validation_set:
            cut, inner = with_margin((top, left, bottom, right), shape, RECEPTIVE_RADIUS)
            with torch.inference_mode(), self._autocast():
                logits = forward(self.noisy[(slice(index, index + 1), slice(None), *cut)])[0, 0][inner]
                error = torch.sigmoid(logits.float()) - self.noisy[index, 0, top:bottom, left:right]
                total += float(torch.sum(error**2))
            count += error.numel()
            yield
        return total / count

    def _snapshot(self, network: nn.Module) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in network.state_dict().items()}

    def _score(self, network: nn.Module):
        """``network``'s validation MSE, and its output on a whole plane (None in bounded mode); a generator of
        parts (a tile each in bounded mode)."""
        if self.bounded:
            return (yield from self._subset_parts(network)), None
        output = self.predict(network)
        yield
        return torch.mean((output - self.noisy[0, 0]) ** 2).item(), output

    def _validate(self):
        """Validate the current (averaged) network on the whole plane, or the fixed subset in bounded mode;
        keep its weights (and, on a whole plane, its output) if best. A generator of parts (see
        :meth:`_step_parts`) that returns ``(mse, counted)``.

        While the average still lags behind the training network after a start (``raw_start``), the training
        network is validated too and its best kept as the ``lead``: shown (:meth:`preview`, :meth:`view`,
        :meth:`result`) while it validates better than the average's best. Only the average's validations
        count for patience, so a run takes as many steps as without it; the race ends once the average's best
        is as good as the lead's. Where it never is, the result is the lead's (the better validated: on the
        sample 37.24 against the average's 37.09 dB, on Set12 05 28.95 against 28.96, on 01 the same).

        Returns the validation MSE shown (the better of the two while racing) and whether it counts for
        patience: the average's best so far, by at least ``min_gain`` dB (or ``min_relative_gain`` times the
        gain so far) over the one that last counted."""
        validator = self.network if self.averaged is None else self.averaged
        mse, output = yield from self._score(validator)
        shown = mse
        if self.racing:
            raw_mse, raw_output = yield from self._score(self.network)
            shown = min(mse, raw_mse)
            if self.lead is None or raw_mse < self.lead[0]:
                self.lead = (raw_mse, self._snapshot(self.network), raw_output)
        counted = self._keep(validator, mse, output)
        if self.racing and self.best_mse <= self.lead[0]:  # the average has caught up: it alone from now on
            self.racing, self.lead = False, None
        return shown, counted

    def _keep(self, validator: nn.Module, mse: float, output: torch.Tensor | None) -> bool:
        """Keep ``validator``'s weights (and output) if its ``mse`` is the best; whether it counts for patience."""
        if self.averaged is None:
            self.outputs.append(output if self.keeps_outputs else self._snapshot(validator))
        if mse < self.best_mse:
            self.best_mse = mse
            self.best_state = self._snapshot(validator)
            if output is not None:
                self.best_output = output
            psnr = -10.0 * math.log10(mse) if mse > 0 else math.inf
            if self.first_psnr is None:
                self.first_psnr = psnr
            else:
                self.best_is_first = False
            gained = self.counted_psnr - self.first_psnr  # -inf before the first count
            gained = gained if math.isfinite(gained) and gained > 0 else 0.0
            share = self.settings["min_relative_gain_bounded" if self.bounded else "min_relative_gain"]
            need = max(self.settings["min_gain"], share * gained)
            if psnr >= self.counted_psnr + need:
                self.counted_psnr, self.since_best = psnr, 0
                return True
        return False

    def validation_regions(self) -> list[tuple[int, int, int, int]] | None:
        """The fixed validation tiles in bounded mode (the engine scores the preview on them); None on whole planes."""
        return self.tiles

    def carry(self) -> dict[str, dict] | None:
        """For the next plane of a stack (with ``warm_start``): the best-validated weights
        (``"best"``), the training network's weights and Adam's state as they are now."""
        if self.best_state is None or not self.settings["warm_start"]:
            return None
        return {"best": self.best_state, "network": copy.deepcopy(self.network.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def _finish_or_restart(self) -> None:
        restart_lr = self.settings["restart_learning_rate"]
        if restart_lr is not None and not self.restarted and self._is_flat(self.result()):
            self.restarted = True
            self._start(restart_lr)
        else:
            self.stop_reason = "patience"

    def _is_flat(self, output: torch.Tensor) -> bool:
        """At most 25 interior pixels differ from the mean by one intensity level after rounding."""
        interior = output[1:-1, 1:-1]
        away = torch.round((interior - interior.mean()) / self.level) != 0
        return int(away.sum()) <= FLAT_PIXELS

    def _predicted(self, key: tuple, compute) -> torch.Tensor:
        """``compute()``, cached while ``key`` (the state it depends on) is unchanged."""
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # free the old output first
            self._cached = (key, compute())
        return self._cached[1]

    def _with_weights(self, state: dict[str, torch.Tensor]) -> nn.Module:
        network = copy.deepcopy(self.averaged if self.averaged is not None else self.network)
        network.load_state_dict(state)
        return network.requires_grad_(False)

    def _leading(self) -> bool:
        """Whether the training network's best (while racing) validates better than the average's best; never
        once the run has stopped by itself: its result is then the average's best, as without ``raw_start`` (the
        training network's best validated better on the fish 512x512 mosaic but was 0.22 dB worse)."""
        return self.lead is not None and self.lead[0] < self.best_mse and self.stop_reason is None

    def result_val_psnr(self) -> float | None:
        """The best validation PSNR of the weights the result comes from (the average's: never the lead's once
        stopped); None where none is known (before a validation, or weights loaded from a store)."""
        return mse_to_psnr(self.best_mse) if 0 < self.best_mse < math.inf else None

    def finish(self, reason: str) -> None:
        """Stopped by the engine (``max_steps``): the result is the average's best, as when stopped by itself."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def invariant_psnr(self, phases=INVARIANT_PHASES) -> float | None:
        """The J-invariant validation PSNR of the network shown, comparable with the preview's (see
        :mod:`napari_noise2fast.preview`): each pixel predicted with itself replaced by the mean of its four
        neighbours, one pass per mask of Noise2Self's 4x4 grid (:func:`~.noise2self.grid_mask`, in the plane's
        coordinates), as scikit-image's ``denoise_invariant``
        does; on the whole plane, or in bounded mode on the validation tiles (each with its receptive field of
        context). ``phases``: the grid's (row, column) phases scored (None: all, scikit-image's exactly; the
        default: 4 of 16, a quarter of the pixels, an estimate at a quarter of the cost). None before any
        validation; computed once per network shown.

        The plain validation PSNR sees each pixel's own noise through the network and overstates: on the
        noisy cell sample the training network's passed the Gaussian preview's at step 60 with a true PSNR of
        30.9 dB against the preview's 36.96; this one passed it at step 120 (35.8 dB).
        """
        if self._shown_state() is None:
            return None
        if phases is None:
            phases = list(itertools.product(range(GRID), repeat=2))
        network = self._best_network()  # first: its key is the network shown now
        key = (self._best[0], tuple(phases))
        if self._invariant[0] == key:  # the same network: the same score
            return self._invariant[1]
        return self._sliced("invariant", lambda: self._invariant_parts(network, key, phases), key=key)

    def _invariant_parts(self, network: nn.Module, key: tuple, phases):
        """:meth:`invariant_psnr` a pass a part."""
        regions = self.validation_set if self.bounded else [(0, (0, 0, *self.noisy.shape[-2:]))]
        shape = tuple(self.noisy.shape[-2:])
        total, count = 0.0, 0
        forward = self._forward(network)
        for index, (top, left, bottom, right) in regions:
            (rows, cols), inner = with_margin((top, left, bottom, right), shape, RECEPTIVE_RADIUS + 1)
            cut = self.noisy[index:index + 1, :, rows, cols].float()
            for phase_y, phase_x in phases:  # the grid's phase in the plane, not in the cut
                phase = (phase_y - rows.start) % GRID * GRID + (phase_x - cols.start) % GRID
                with torch.inference_mode(), self._autocast():
                    mask = grid_mask(tuple(cut.shape[-2:]), phase, cut.device)
                    masked = interpolate_masked(cut, mask).contiguous(memory_format=self.memory_format)
                    output = torch.sigmoid(forward(masked).float())
                    error = (output - cut)[0, 0][inner][mask[0, 0][inner].bool()]
                    total += float(torch.sum(error**2))
                count += error.numel()
                yield
        self._invariant = (key, mse_to_psnr(total / count))
        return self._invariant[1]

    def _shown_state(self) -> dict[str, torch.Tensor] | None:
        """The weights shown: the lead's while it leads, else the best-validated average's."""
        return self.lead[1] if self._leading() else self.best_state

    def preview(self) -> torch.Tensor:
        """The best-validated output: kept as is on whole planes, predicted from the best weights in bounded mode
        (the training network's best while it leads the average, see :meth:`_validate`)."""
        if self._leading():
            if self.lead[2] is not None:
                return self.lead[2]
            return self._predicted(("lead", self.restarted, self.lead[0]), lambda: self.predict(self._best_network()))
        if self.best_output is not None:
            return self.best_output
        if self.best_state is None:
            return self.noisy[0, 0]
        return self._predicted(("best", self.restarted, self.best_mse), lambda: self.predict(self._best_network()))

    def view(self, factor: int, start) -> np.ndarray:
        """The best-validated output downsampled by ``factor`` (block means), cheaply on any plane.

        On whole planes the kept best output, downsampled. In bounded mode a downsampled canvas starts as
        ``start()`` (the engine's preview, downsampled) and every call predicts about ``VIEW_PIXELS`` more
        of the plane, tile by tile in raster order and round again, with the best weights of the moment:
        the view fills in from the top while training goes on, at a bounded cost per call.
        """
        if not self.bounded or self._shown_state() is None:
            return downsample(self.preview(), factor)
        side = max(factor, math.isqrt(VIEW_PIXELS) // factor * factor)  # tiles aligned to the blocks
        if self._canvas is None:
            self._canvas = np.array(start(), dtype=np.float32)
            self._view_tiles = itertools.cycle(list(tiles(tuple(self.noisy.shape[-2:]), side, RECEPTIVE_RADIUS)))
        forward = self._forward(self._best_network())
        with torch.inference_mode(), self._autocast():
            for _ in range(max(1, VIEW_PIXELS // side**2)):
                kept, cut, inner = next(self._view_tiles)
                output = torch.sigmoid(forward(self.noisy[(slice(0, 1), slice(None), *cut)])[0, 0][inner].float())
                self._canvas[kept[0].start // factor:-(-kept[0].stop // factor),
                             kept[1].start // factor:-(-kept[1].stop // factor)] = downsample(output, factor)
        return self._canvas

    def _best_network(self) -> nn.Module:
        """A network holding the weights shown (:meth:`_shown_state`; rebuilt when they change)."""
        key = (self.restarted, self.best_mse, self.lead[0] if self._leading() else None)
        if self._best[0] != key:
            self._best = (key, self._with_weights(self._shown_state()))
        return self._best[1]

    def augmented(self, network: nn.Module, plane: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of ``network``'s outputs on the eight flips and rotations of the plane (default: the first
        of ``noisy``), each undone."""
        plane = self.noisy[:1] if plane is None else plane
        total = torch.zeros(plane.shape[-2:], dtype=torch.float32, device=plane.device)
        with torch.inference_mode(), self._autocast():
            for k in range(8):
                logits = predict_in_tiles(self._forward(network), dihedral(plane, k), RECEPTIVE_RADIUS,
                                          bytes_per_pixel=16 * self.settings["width"])
                total += dihedral(torch.sigmoid(logits), k, inverse=True)
        return total / 8

    def result(self) -> torch.Tensor:
        if self.settings["augment"] and self.best_state is not None:
            return self._predicted(("augmented", self.restarted, self.best_mse),
                                   lambda: self.augmented(self._best_network()))
        if self.averaged is not None or len(self.outputs) < self.outputs.maxlen:
            return self.preview()
        if self.keeps_outputs:
            return torch.stack(tuple(self.outputs)).mean(dim=0)
        return self._predicted(("mean", self.restarted, self.steps), self._mean_of_snapshots)

    def _mean_of_snapshots(self) -> torch.Tensor:
        """The mean of the window's outputs, predicted in tiles from their weight snapshots, one at a time."""
        network = self._with_weights(self.outputs[0])
        total = torch.zeros(self.noisy.shape[-2:], dtype=torch.float32, device=self.noisy.device)
        for state in self.outputs:
            network.load_state_dict(state)
            total += self.predict(network)
        return total / len(self.outputs)
