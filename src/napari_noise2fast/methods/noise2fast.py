"""Noise2Fast (Lequyer et al., Nat. Mach. Intell. 2022): pairs, network, one training step.

The ``reference`` preset follows the published reference code: four chequerboard
pairs, eight 3x3 convolutions 64 wide with ReLU, a 1x1 convolution and a sigmoid,
binary cross-entropy, Adam at 1e-3, batch size 1, validation on the whole noisy
plane after every step, patience 100, and the mean of the last 105 validation
outputs as the result (restarting once at 5e-6 if that mean is nearly flat).
"""

from __future__ import annotations

import copy
from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from napari_noise2fast.checks import check_settings
from napari_noise2fast.engine import Method, seeded_module
from napari_noise2fast.methods._torch import PRECISIONS, autocast, compute_dtype
from napari_noise2fast.tiling import predict_in_tiles

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
}
PRESETS: dict[str, dict] = {
    "reference": REFERENCE,
    # See benchmarks/RESULTS.md (ablation): same network and pairs, validated every 10 steps on an
    # averaged copy of the weights, bfloat16 where the hardware runs it fast, channels-last, shorter
    # patience; the planes of a stack after the first go on from the one before.
    "fast": {**REFERENCE, "patience": 50, "validate_every": 10, "average": "weights", "precision": "auto",
             "channels_last": True, "warm_start": True, "warm_patience": 20},
}
AVERAGES = ("outputs", "weights")
RECEPTIVE_RADIUS = 8  # eight 3x3 convolutions: an output pixel sees 8 pixels on each side
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


def noise2fast_network(width: int = 64) -> nn.Sequential:
    """Four blocks of two 3x3 convolutions with ReLU, then a 1x1 convolution (logits)."""
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(8):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        channels = width
    layers.append(nn.Conv2d(width, 1, 1))
    return nn.Sequential(*layers)


class Noise2Fast(Method):
    """Noise2Fast on one plane.

    Parameters
    ----------
    preset : str
        ``"fast"`` (the default: averaged weights validated every 10 steps,
        patience 50, bfloat16 where the hardware runs it fast, channels-last) or
        ``"reference"`` (the published code's settings). Other arguments override it.
    patience : int
        Stop after ``patience + 1`` steps in a row without a better validation score.
    window : int
        The result is the mean of the last ``window`` validation outputs; a run
        cancelled before that many steps returns its best single output.
    learning_rate, restart_learning_rate : float
        Adam's learning rate, and the one of the single restart taken when the
        averaged output is nearly flat (``restart_learning_rate=None`` disables it).
    width : int
        Channels of every hidden convolution.
    validate_every : int
        Validate on the whole plane every this many steps (patience still counts steps).
    average : str
        ``"outputs"``: the result is the mean of the last ``window`` validation
        outputs (the reference). ``"weights"``: an exponential moving average of
        the weights (a running mean for the first ``(window + 1) / 2`` steps,
        then centre of mass ``window`` steps) is validated, and the result is
        its best-validated output.
    precision : str
        ``"float32"``, ``"bfloat16"``, or ``"auto"`` (bfloat16 on CUDA GPUs and
        AMX CPUs that support it, float32 elsewhere); weights, loss and
        outputs stay float32.
    channels_last : bool
        Use the channels-last memory layout (faster convolutions on CPUs).
    warm_start : bool
        On every plane of a stack after the first, go on from where the previous
        plane stopped: its training weights and Adam's state carry over, and
        with ``average="weights"`` the average starts from the previous plane's
        best-validated average (validated on the new plane before any step) and
        is exponential at once. Such planes stop after ``warm_patience``
        instead of ``patience``.
    warm_patience : int
        The patience of warm-started planes.
    """

    name = "noise2fast"
    display_name = "Noise2Fast"

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
        check_settings("Noise2Fast", overrides, PRESETS[preset])
        settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        if (settings["patience"] < 0 or settings["warm_patience"] < 0 or settings["window"] < 1
                or settings["learning_rate"] <= 0 or settings["validate_every"] < 1
                or settings["average"] not in AVERAGES or settings["precision"] not in {"auto", *PRECISIONS}):
            raise ValueError(f"invalid Noise2Fast settings: {settings}")
        return settings

    def __init__(self, noisy, *, rng, level, warm=None, **params):
        super().__init__(noisy, rng=rng, level=level, warm=warm)
        self.settings = settings = self.check_params(**params)
        precision = settings["precision"]
        self.compute_dtype = compute_dtype(noisy.device, precision)
        self.memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
        self.noisy = noisy.contiguous(memory_format=self.memory_format)
        self.pairs = [(source.contiguous(memory_format=self.memory_format), target)
                      for source, target in chequerboard_pairs(noisy)]
        self.restarted = False
        self.warm_started = settings["warm_start"] and self.warm is not None
        self.patience = settings["warm_patience"] if self.warm_started else settings["patience"]
        self.best_state: dict[str, torch.Tensor] | None = None
        self._start(settings["learning_rate"])
        if self.warm_started:
            self.initial_mse, _ = self._validate()

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
        if self._from_warm:
            self.optimizer.load_state_dict(self.warm["optimizer"])
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate
        self.averaged = None
        if self.settings["average"] == "weights":
            self.averaged = copy.deepcopy(self.network).requires_grad_(False)
            if self._from_warm:
                self.averaged.load_state_dict(self.warm["best"])
            self._average_pairs = (list(self.averaged.parameters()), list(self.network.parameters()))
        self.outputs: deque[torch.Tensor] = deque(maxlen=self.settings["window"])
        self.best_mse = float("inf")
        self.best_output = self.noisy[0, 0]
        self.since_best = 0
        self.steps = 0  # since the (re)start; a restart happens on a validation step, so the cadence holds

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

    def step(self) -> float | None:
        source, target = self.pairs[self.rng.integers(len(self.pairs))]
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.network(source)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        if self.averaged is not None:
            self._update_average()
        every = self.settings["validate_every"]
        if self.steps % every:
            return None
        mse, improved = self._validate()
        if not improved:
            self.since_best += every
        if self.since_best > self.patience:
            self._finish_or_restart()
        return mse

    def _validate(self) -> tuple[float, bool]:
        """Validate the current (averaged) network on the whole plane; keep its output if best.

        Returns the validation MSE and whether it was the best so far."""
        validator = self.network if self.averaged is None else self.averaged
        def forward(tile: torch.Tensor) -> torch.Tensor:
            return validator(tile.contiguous(memory_format=self.memory_format))

        with torch.inference_mode(), self._autocast():  # in tiles where the plane is larger than memory allows
            output = torch.sigmoid(predict_in_tiles(forward, self.noisy, RECEPTIVE_RADIUS,
                                                    bytes_per_pixel=16 * self.settings["width"])).contiguous()
            mse = torch.mean((output - self.noisy[0, 0]) ** 2).item()
        if self.averaged is None:
            self.outputs.append(output)
        if mse < self.best_mse:
            self.best_mse, self.best_output, self.since_best = mse, output, 0
            if self.settings["warm_start"]:
                self.best_state = {name: value.detach().clone() for name, value in validator.state_dict().items()}
            return mse, True
        return mse, False

    def carry(self) -> dict[str, dict] | None:
        """For the next plane of a stack (with ``warm_start``): the best-validated weights
        (``"best"``), the training network's weights and Adam's state as they are now."""
        if self.best_state is None:
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

    def preview(self) -> torch.Tensor:
        return self.best_output

    def result(self) -> torch.Tensor:
        if self.averaged is not None or len(self.outputs) < self.outputs.maxlen:
            return self.best_output
        return torch.stack(tuple(self.outputs)).mean(dim=0)
