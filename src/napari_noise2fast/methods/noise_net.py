"""The joint denoiser + noise network (Ollion, Ollion, Gassiat, Lehericy & Le Corff 2021, "Self-Supervised
Blind Denoising"), written from the paper's description (no official code exists).

Two networks trained together, by one loss and one optimiser, on random patches of the image (of the
sample of a recording's planes: one model per recording), drawn so that the plane's border pixels are in
them as often as its middle's (``random_patches(even=True)``: its darkest or brightest signals may lie
along a border, and drawn uniformly the noise network saw them seldom):

* the **denoiser** D, the U-Net of :mod:`~napari_noise2fast.methods.noise2void`, sees the patch with a grid
  of pixels masked: every 3rd pixel in each direction from a random offset (0-2 in each), 10% of those grid
  points left unmasked at random, each masked pixel replaced by the Gaussian-weighted average (sigma 1,
  5x5) of its neighbours, itself excluded;
* the **noise network** N (:class:`~napari_noise2fast.noise.NoiseNetwork`) maps D's prediction at a pixel to
  the parameters of a mixture of ``gaussians`` Gaussians (weights, offsets and variances; the mixture's mean
  is D's prediction, its variances clamped from below): the distribution of the observation given the signal.
  It is pixel-wise, so the noise it learns is a curve of the signal, which
  :func:`~napari_noise2fast.estimate_noise` returns and the comparison dock draws.

The paper's loss is the negative log-likelihood of the observed masked pixels (dequantised: plus uniform
noise of one intensity level) under N's mixture centred on D's prediction (``denoiser_loss="nll"``; D's
prediction reaches it through the mixture's centre only, N's parameters computed from it detached, so that D
is not drawn to signal levels where N predicts little noise). By default (``denoiser_loss="mse"``) D learns by
least squares on the masked pixels and N by that likelihood around D's prediction, in the same steps: on the
confocal fish the likelihood weights each pixel by the inverse of its noise variance, so the background
(a third of the crop at 3-4 of 255, almost noiseless) outweighed the structures hundreds of times and D
lost 0.8 dB (the 128x128 crop, seed 0: 26.94 dB against 27.70 dB by least squares; benchmarks/RESULTS.md).
The output, streamed as it improves, is D's J-invariant prediction of the plane: 9 passes, each with one
phase of the grid masked as in training, every pixel taken from the pass that masked it (:func:`_invariant`).
Validation: the likelihood on a fixed mask of the (first) plane; the best-validated pair of networks is kept.
The learning rates fall to zero over the budget (a cosine).

Training is on patches at every plane size; validation and output are predicted in tiles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from napari_noise2fast.devices import resolve_device
from napari_noise2fast.engine import seeded_module
from napari_noise2fast.methods._torch import (
    PRECISIONS,
    TrainedMethod,
    check_patch_settings,
    cosine_rate,
    network_state,
    noise_of,
)
from napari_noise2fast.methods.noise2void import DEPTH, UNet, pad_to_multiple, predict_unet, random_patches
from napari_noise2fast.noise import NoiseNetwork

SPACING = 3  # masked pixels: one in every SPACING x SPACING box, on a grid from a random offset
DROP = 0.1  # share of the grid points left unmasked
DENOISER_LOSSES = ("nll", "mse")  # what trains the denoiser: the joint likelihood (the paper's) or least squares
# steps of the noise network alone, refitted to the kept denoiser's output before it is returned as the image's
# noise, and the pixels it draws a step: trained jointly, its variance also holds the errors of the earlier,
# worse denoisers (on the tests' synthetic scene, six seeds: 8.5-16 % too high a std at the 5th percentile of the
# signal as trained, 5.9-7.8 % refitted; benchmarks/RESULTS.md)
REFIT_STEPS = 300
REFIT_PIXELS = 4096


def _neighbour_kernel() -> torch.Tensor:
    """(1, 1, 5, 5): Gaussian weights (sigma 1) of the 5x5 neighbours, the centre's 0, summing to 1."""
    grid = torch.arange(-2, 3, dtype=torch.float32)
    weights = torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 2)
    weights[2, 2] = 0
    return (weights / weights.sum())[None, None]


def grid_mask(shape, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask (batch, 1, H, W): per image, every :data:`SPACING`-th pixel from a random offset in
    each direction, :data:`DROP` of those left out at random."""
    batch, _, height, width = shape
    offsets = torch.randint(0, SPACING, (batch, 2), generator=generator)
    rows = torch.arange(height)[None, :, None] % SPACING == offsets[:, 0, None, None]
    cols = torch.arange(width)[None, None, :] % SPACING == offsets[:, 1, None, None]
    kept = torch.rand((batch, height, width), generator=generator) >= DROP
    return (rows & cols & kept)[:, None]


def masked(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``image`` (batch, 1, H, W) with its ``mask``ed pixels replaced by the weighted average of their
    neighbours (:func:`_neighbour_kernel`), at the borders of those inside the image (a reflected border
    would bring a pixel next to the border its own value)."""
    kernel = _neighbour_kernel().to(image.device, image.dtype)
    total = F.conv2d(image, kernel, padding=2)
    weights = F.conv2d(torch.ones_like(image[:1]), kernel, padding=2)
    return torch.where(mask.to(image.device), total / weights, image)


def noise_loss(prediction: torch.Tensor, observation: torch.Tensor, noise: NoiseNetwork) -> torch.Tensor:
    """-log p(observation | prediction) per pixel (1D tensors): the mixture's parameters from the prediction
    detached, its centre the prediction itself (see the module)."""
    signal = prediction.detach()
    return -noise.log_likelihood(observation - prediction + signal, signal)


class NoiseNet(TrainedMethod):
    """The joint denoiser + noise network (see the module).

    Parameters
    ----------
    steps : int
        Training steps (default 2,000) of ``batch`` patches of ``patch`` x ``patch`` pixels.
    gaussians : int
        Gaussians of the noise network's mixture (1: a Gaussian whose variance depends on the signal).
    hidden : int
        Units of each of the noise network's two hidden layers.
    noise_learning_rate : float
        The noise network's learning rate (the denoiser's is ``learning_rate``).
    denoiser_loss : str
        ``"mse"`` (least squares on the masked pixels) or ``"nll"`` (the paper's joint likelihood).
    decay : bool
        The learning rates fall to zero over the budget (a cosine).
    warm_start : bool
        A stack trained plane after plane (``stack="warm"``): each plane after the first starts from the
        networks of the one before. A saved model given with ``model_use="warm"`` is started from.
    """

    name = "noise-net"
    display_name = "Noise network (Ollion)"
    trains_on_stacks = True
    keeps_last = True  # report() returns the output of the lowest loss, not of the lowest MSE
    DEFAULTS = {"steps": 800, "report_every": 100, "learning_rate": 4e-4, "noise_learning_rate": 1e-2,
                "batch": 8, "patch": 64, "base": 32, "gaussians": 3, "hidden": 32, "denoiser_loss": "mse",
                "decay": True, "precision": "auto", "warm_start": True}

    @classmethod
    def check_params(cls, **params) -> dict:
        settings = super().check_params(**params)
        if not isinstance(settings["noise_learning_rate"], (int, float)) or not settings["noise_learning_rate"] > 0:
            raise ValueError(f"noise_learning_rate must be positive, got {settings['noise_learning_rate']!r}")
        if settings["denoiser_loss"] not in DENOISER_LOSSES:
            raise ValueError(f"denoiser_loss must be one of {list(DENOISER_LOSSES)}, got {settings['denoiser_loss']!r}")
        check_patch_settings(settings, ("gaussians", "hidden", "batch", "base"), 2**DEPTH)
        return settings

    def build(self) -> UNet:
        return UNet(self.settings["base"])

    def __init__(self, noisy, **kwargs):
        super().__init__(noisy, **kwargs)
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**63)))
        first = noisy[:1]
        self.padded, self.size = pad_to_multiple(first, 2**DEPTH)
        height, width = self.size
        self.patch = min(self.settings["patch"], height // 4 * 4, width // 4 * 4)
        mask = grid_mask(first.shape, self.generator)
        flat = mask.to(noisy.device).reshape(-1)
        self.validation = (pad_to_multiple(masked(first, mask), 2**DEPTH)[0], flat,
                           self._dequantised(first.reshape(-1)[flat]))
        # the noise starts near the variance of a pixel less its neighbours' average (independent noise)
        kernel = _neighbour_kernel()
        residual = first - masked(first, torch.ones_like(first, dtype=torch.bool))
        variance = float(residual.float().var()) / (1 + float((kernel**2).sum()))
        # its weights drawn from the run's seed, as the denoiser's (torch's global generator would make a
        # seeded run's noise network, and with it the checkpoint kept, differ from one run to the next)
        self.noise = seeded_module(lambda: NoiseNetwork(self.settings["gaussians"], self.settings["hidden"],
                                                        min_std=max(self.level / 2, 1e-4), variance=variance),
                                   int(self.rng.integers(2**63))).to(noisy.device)
        warm = (self.warm or {}).get("best") if self.settings["warm_start"] else None
        if warm is not None:
            self._load(warm)
        self._optimise()
        self.best_state: dict | None = None  # the best-validated networks' weights, as :meth:`trained_state`
        self._refit: tuple[dict | None, NoiseNetwork | None] = (None, None)  # best state, its refitted noise

    def _optimise(self) -> None:
        self.optimizer = torch.optim.Adam([
            {"params": self.network.parameters(), "lr": self.settings["learning_rate"]},
            {"params": self.noise.parameters(), "lr": self.settings["noise_learning_rate"]}])

    # -- training -------------------------------------------------------------------------------------------
    def _denoised(self, network_input: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.network(self.channels_last(network_input)).float()

    def train_step(self) -> None:
        target = random_patches(self.noisy, self.rng, self.settings["batch"], self.patch, self.size, even=True)
        mask = grid_mask(target.shape, self.generator).to(target.device)
        prediction = self._denoised(masked(target, mask))
        flat = mask.reshape(-1)
        observation = self._dequantised(target.reshape(-1)[flat])
        prediction = prediction.reshape(-1)[flat]
        if self.settings["denoiser_loss"] == "nll":
            loss = noise_loss(prediction, observation, self.noise).mean()
        else:  # the denoiser by least squares, the noise network by the likelihood around it (Adam scales
            # each parameter's steps by its own gradients, so the two terms need no weighting)
            loss = noise_loss(prediction.detach(), observation, self.noise).mean() \
                + torch.mean((prediction - target.reshape(-1)[flat]) ** 2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _dequantised(self, observation: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``observation`` plus uniform noise of one intensity level: integer values become a density for the
        noise network to fit (a Gaussian of the clamped width could otherwise sit on one integer value)."""
        uniform = torch.rand(observation.shape, generator=generator or self.generator).to(observation.device)
        return observation + (uniform - 0.5) * self.level

    def after_step(self, progress: float) -> None:
        if self.settings["decay"]:
            for group, rate in zip(self.optimizer.param_groups, ("learning_rate", "noise_learning_rate"), strict=True):
                group["lr"] = cosine_rate(self.settings[rate], progress)

    def report(self) -> tuple[float, torch.Tensor]:
        """The blind-spot MSE on the fixed mask (the validation PSNR shown); the best state is the one of
        the lowest loss there."""
        network_input, mask, dequantised = self.validation
        prediction = self._plane(self.network, network_input).reshape(-1)[mask]
        mse = torch.mean((prediction - self.noisy[:1].reshape(-1)[mask]) ** 2).item()
        loss = noise_loss(prediction, dequantised, self.noise).mean().item()
        if self.best_state is None or loss < self.best_loss:
            output = _invariant(self.network, self.padded, self.size, self.compute_dtype).clamp(0, 1)
            low, high = torch.quantile(output.reshape(-1)[:2**24].float(), torch.tensor([0.05, 0.95],
                                                                                        device=output.device))
            self.noise.central = (float(low), float(high))  # where the signals are: the noise's gain line
            self.best_loss, self.best_state = loss, self._state()
            return mse, output
        return mse, self.best_output

    # -- prediction ---------------------------------------------------------------------------------------------
    def _plane(self, network: UNet, padded: torch.Tensor) -> torch.Tensor:
        return predict_unet(network, padded, self.size, self.compute_dtype)

    def _state(self) -> dict:
        return network_state(self.network.state_dict(), self.noise)

    def _load(self, state: dict) -> None:
        network, noise = self._unpack(state, self.settings)
        self.network.load_state_dict(network.state_dict())
        self.noise.load_state_dict(noise.state_dict())
        self.noise.central = noise.central

    @staticmethod
    def _unpack(state: dict, settings: dict) -> tuple[UNet, NoiseNetwork]:
        """The denoiser and noise network (on the CPU) of a state; ValueError where they do not fit."""
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("a noise-net model's state must be a dict of tensors")
        noise = noise_of(state)
        if not isinstance(noise, NoiseNetwork) or noise.gaussians != settings["gaussians"] \
                or noise.layers[0].out_features != settings["hidden"]:
            raise ValueError(f"the noise model does not fit a noise network of {settings['gaussians']} Gaussians "
                             f"and {settings['hidden']} hidden units")
        network = UNet(settings["base"])
        try:
            network.load_state_dict({k[len("network."):]: v for k, v in state.items() if k.startswith("network.")})
        except RuntimeError as error:
            raise ValueError(f"the weights do not fit a denoiser of these settings: "
                             f"{str(error).splitlines()[0]}") from error
        return network, noise

    def predict_plane(self, plane: torch.Tensor) -> torch.Tensor:
        """Any normalised plane (1, 1, H, W) denoised by the best-validated denoiser so far."""
        state = self.best_state if self.best_state is not None else self._state()
        cached_state, network = getattr(self, "_best", (None, None))
        if cached_state is not state:  # once per best, not per plane
            network = self._unpack(state, self.settings)[0].to(self.noisy.device, memory_format=torch.channels_last)
            self._best = (state, network.eval())
        return _denoise_plane(network, plane, self.compute_dtype)

    def trained_state(self) -> dict | None:
        """The best-validated denoiser and noise network, on the CPU (None before the first validation)."""
        return self.best_state

    def predicting_state(self) -> dict:
        return self.best_state if self.best_state is not None else self._state()

    @classmethod
    def predictor(cls, state: dict, *, settings: dict, device: str):
        where = resolve_device(device)
        dtype = PRECISIONS[settings["precision"]]
        network = cls._unpack(state, settings)[0]
        network = network.to(where, memory_format=torch.channels_last).eval().requires_grad_(False)

        return lambda plane: _denoise_plane(network, plane.to(where), dtype)

    @classmethod
    def check_state(cls, state: dict, **params) -> None:
        cls._unpack(state, cls.check_params(**params))

    def load_trained(self, state: dict) -> None:
        """Predict with ``state`` (a :meth:`trained_state`) as the best-validated model."""
        self._load(state)
        self.best_state, self.best_loss = self._state(), -math.inf  # -inf: loaded, not reported

    def carry(self) -> dict | None:
        """For the next plane of a stack (with ``warm_start``): the best networks (``"best"``)."""
        state = self.best_state if self.settings["warm_start"] else None
        return None if state is None else {"best": state, "network": None, "optimizer": None}

    def noise_model(self) -> NoiseNetwork:
        """The image's noise (normalised units): the noise network in training before the first validation;
        after it the best-validated one refitted to the best-validated denoiser (:meth:`_refitted`), once per
        best state. A saved model keeps the noise network as trained."""
        if self.best_state is None:
            return self.noise
        state, noise = self._refit
        if state is not self.best_state:
            noise = self._refitted()
            self._refit = (self.best_state, noise)
        return noise

    def _refitted(self) -> NoiseNetwork:
        """The best-validated noise network trained alone for :data:`REFIT_STEPS` steps (the learning rate
        falling to zero) on pairs of (the denoiser's J-invariant prediction, the observation) of the first
        plane's pixels, :data:`REFIT_PIXELS` drawn at random a step: the spread of the observations around
        the output that is kept, every pixel as likely as any other. The prediction is the output
        :meth:`report` made of the best state (``best_output``; made again only for a loaded model). Its
        random draws are its own, seeded from the training's."""
        noise = noise_of(self.best_state).to(self.noisy.device).requires_grad_(True)
        loaded = self.best_loss == -math.inf
        signal = self.predict_plane(self.noisy[:1]) if loaded else self.best_output
        signal = signal.reshape(-1).float()
        generator = torch.Generator().manual_seed(self.generator.initial_seed() + 1)
        observation = self._dequantised(self.noisy[0, 0].reshape(-1), generator)
        rate = self.settings["noise_learning_rate"]
        optimizer = torch.optim.Adam(noise.parameters(), lr=rate)
        for step in range(REFIT_STEPS):
            pick = torch.randint(0, signal.numel(), (REFIT_PIXELS,), generator=generator).to(signal.device)
            loss = noise_loss(signal[pick], observation[pick], noise).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for group in optimizer.param_groups:
                group["lr"] = cosine_rate(rate, (step + 1) / REFIT_STEPS)
        return noise.requires_grad_(False).eval()


def _invariant(network: UNet, padded: torch.Tensor, size, dtype: torch.dtype) -> torch.Tensor:
    """The denoiser's J-invariant prediction of a plane padded to a multiple of 2**DEPTH: one pass (in tiles)
    per phase of the :data:`SPACING` grid with that phase masked as in training, each pixel taken from the
    pass that masked it; (H, W). The denoiser never learns what to output at a pixel it sees (the loss is on
    masked pixels only), and can tell masked pixels from the others, so on the unmasked plane it can pass
    some of a pixel's own noise through (seen on the confocal fish crop, seed 1: 26.70 dB unmasked against
    27.17 J-invariant after 2,000 steps)."""
    output = torch.zeros(padded.shape[-2:], device=padded.device)
    for row in range(SPACING):
        for col in range(SPACING):
            mask = torch.zeros((1, 1, *padded.shape[-2:]), dtype=torch.bool, device=padded.device)
            mask[..., row::SPACING, col::SPACING] = True
            prediction = predict_unet(network, masked(padded, mask), padded.shape[-2:], dtype)
            output = torch.where(mask[0, 0], prediction, output)
    return output[:size[0], :size[1]]


def _denoise_plane(network: UNet, plane: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A normalised plane (1, 1, H, W) denoised by the J-invariant prediction; (H, W) within [0, 1]."""
    padded, size = pad_to_multiple(plane, 2**DEPTH)
    with torch.inference_mode():
        return _invariant(network, padded, size, dtype).clamp(0, 1)
