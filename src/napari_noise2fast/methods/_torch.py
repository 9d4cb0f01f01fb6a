"""What the trained comparison methods share: precision, step budget, reporting cadence."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from napari_noise2fast.checks import check_settings
from napari_noise2fast.devices import fast_dtype
from napari_noise2fast.engine import Countdown, Method, seeded_module

NOISE_KEY = "noise."  # a noise model's tensors in a saved state, beside the network's ("network.")
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compute_dtype(device: torch.device, precision: str) -> torch.dtype:
    """``"auto"``: bfloat16 where a timed probe measures it faster (see :func:`fast_dtype`), else float32."""
    if precision == "auto":
        return fast_dtype(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
    return PRECISIONS[precision]


def cosine_rate(rate: float, progress: float) -> float:
    """``rate`` on a cosine falling to zero as ``progress`` goes from 0 to 1."""
    return rate * 0.5 * (1 + math.cos(math.pi * progress))


def check_patch_settings(settings: dict, positive: tuple[str, ...], multiple: int) -> None:
    """ValueError unless each of ``positive`` is a positive integer and ``patch`` an integer of at least
    ``multiple`` (the U-Net's pooling)."""
    for name in positive:
        if not isinstance(settings[name], int) or isinstance(settings[name], bool) or settings[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {settings[name]!r}")
    if not isinstance(settings["patch"], int) or settings["patch"] < multiple:
        raise ValueError(f"patch must be an integer of at least {multiple}, got {settings['patch']!r}")


def network_state(weights: dict, noise=None) -> dict:
    """A saved model's state: the network's ``weights`` as ``network.*`` and a noise model's
    (:mod:`napari_noise2fast.noise`) as ``noise.*``, on the CPU."""
    state = {f"network.{name}": value.detach().to("cpu").clone() for name, value in weights.items()}
    if noise is not None:
        state.update({NOISE_KEY + name: value for name, value in noise.state().items()})
    return state


def noise_of(state: dict):
    """The noise model stored in a :func:`network_state`; ValueError where there is none."""
    from napari_noise2fast.noise import from_state

    return from_state({k[len(NOISE_KEY):]: v for k, v in state.items() if k.startswith(NOISE_KEY)})


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``, or nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class TrainedMethod(Method):
    """A network trained for a budget of ``steps`` (and optionally ``seconds``), scored every ``report_every`` steps.

    Subclasses set ``DEFAULTS`` (which must hold ``steps``, ``report_every``,
    ``learning_rate`` and ``precision``), build ``self.network`` in
    :meth:`build`, and implement :meth:`train_step` (one optimiser step; returns
    nothing) and :meth:`report` (the validation MSE of the current state, and
    the output to keep if it is the best so far). Schedules over the budget
    (learning-rate decay, Self2Self's ensemble) follow :meth:`progress` in
    :meth:`after_step`, so that they also run their course when the budget is
    wall-clock ``seconds`` (an equal-time comparison) rather than steps.
    """

    DEFAULTS: dict = {}

    @classmethod
    def check_params(cls, **params) -> dict:
        known = {"seconds": None, **cls.DEFAULTS}
        unknown = set(params) - set(known)
        if unknown:
            raise ValueError(f"unknown {cls.name} parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        check_settings(cls.name, params, known)
        settings = {**known, **{k: v for k, v in params.items() if v is not None}}
        if settings["steps"] < 1 or settings["report_every"] < 1 or settings["learning_rate"] <= 0 \
                or (settings["seconds"] is not None and settings["seconds"] <= 0):
            raise ValueError(f"invalid {cls.name} settings: {settings}")
        compute_dtype(torch.device("cpu"), settings["precision"])  # raises for an unknown precision
        return settings

    def __init__(self, noisy, *, rng, level, warm=None, **params):
        super().__init__(noisy, rng=rng, level=level, warm=warm)
        self.settings = self.check_params(**params)
        self.compute_dtype = compute_dtype(noisy.device, self.settings["precision"])
        # channels-last: 3.6x faster bfloat16 convolutions here for ZS-N2N's small network (benchmarks/RESULTS.md)
        self.network = seeded_module(self.build, int(rng.integers(2**63))).to(noisy.device,
                                                                               memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.settings["learning_rate"])
        self.steps = 0
        self.started = time.perf_counter()
        self.best_mse = float("inf")
        self.best_output = noisy[0, 0]

    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    @staticmethod
    def channels_last(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.contiguous(memory_format=torch.channels_last)

    def autocast(self):
        return autocast(self.noisy.device, self.compute_dtype)

    def train_step(self) -> None:
        raise NotImplementedError

    def progress(self) -> float:
        """Share of the budget used, 0 to 1: steps taken over ``steps``, or elapsed over ``seconds`` if further."""
        used = self.steps / self.settings["steps"]
        if self.settings["seconds"] is not None:
            used = max(used, (time.perf_counter() - self.started) / self.settings["seconds"])
        return min(used, 1.0)

    def countdown(self) -> Countdown:
        """Steps of the budget, or per cent of the time budget where that ends first."""
        if self.settings["seconds"] is not None and self.progress() > self.steps / self.settings["steps"]:
            return Countdown(round(100 * self.progress()), 100, "% of the time budget")
        return Countdown(self.steps, self.settings["steps"], "steps")

    def after_step(self, progress: float) -> None:
        """Called after each step with :meth:`progress`; schedules over the budget go here."""

    def report(self) -> tuple[float, torch.Tensor]:
        raise NotImplementedError

    def step(self) -> float | None:
        self.network.train()
        self.train_step()
        self.steps += 1
        progress = self.progress()
        last = progress >= 1.0
        self.after_step(progress)
        if self.steps % self.settings["report_every"] and not last:
            return None
        self.network.eval()
        with torch.inference_mode():
            mse, output = self.report()
        if mse < self.best_mse or self.keeps_last:
            self.best_mse, self.best_output = min(mse, self.best_mse), output.float()
        if last:
            self.stop_reason = "budget" if self.steps >= self.settings["steps"] else "time"
        return mse

    keeps_last = False  # True: the output is the latest report's, not the best-scored one

    def prediction_spec(self) -> dict:
        """The settings with the precision this model chose, and its device type (see :meth:`predictor`)."""
        precision = next(name for name, dtype in PRECISIONS.items() if dtype == self.compute_dtype)
        return {"settings": {**self.settings, "precision": precision}, "device": self.noisy.device.type}

    def preview(self) -> torch.Tensor:
        return self.best_output

    def result(self) -> torch.Tensor:
        return self.best_output
