"""Probabilistic Noise2Void bootstrapped from the single image (Krull et al. 2020; Prakash et al. 2020).

Three stages, one engine method:

1. **Bootstrap**: Noise2Void exactly as :mod:`~napari_noise2fast.methods.noise2void` trains it (its
   U-Net, patches, blind spots and validation; ``bootstrap_steps``, default its 1,500 steps). Its output is
   streamed meanwhile, and is the result if the run stops here.
2. **Noise model**: the best-validated Noise2Void prediction is taken as the clean signal; a noise model
   p(x | s) (:mod:`napari_noise2fast.noise`: the Gaussian mixture by default, or the 2D histogram) is
   fitted on (prediction, noisy) pixel pairs whose prediction lies within its 0.5-99.5 percentiles. One
   model for a recording: the pairs come from the planes of its sample.
3. **PN2V**: a U-Net of the same shape whose output is ``samples`` values of the signal per pixel (its body
   starts from the Noise2Void network's, its output layer from the Noise2Void output repeated, so that
   every sample starts at the Noise2Void estimate) is trained with blind-spot masking, the loss on the
   masked pixels -log(mean_k p(x_i | s_i^k)). The output, streamed as it improves, is the MMSE estimate
   sum_k p(x|s_k) s_k / sum_k p(x|s_k) at every pixel. Validation: the same loss on a fixed set of
   masked pixels of the (first) plane; the best-validated network is kept. The validation PSNR reported is
   that of the samples' mean at those pixels against the noisy values (the blind-spot score of stage 1,
   so that the curve goes on across the stages), while the model kept is the one of the lowest loss.

Training is on patches at every plane size; validation and output are predicted in tiles.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from napari_noise2fast.devices import resolve_device
from napari_noise2fast.engine import PART, Countdown, seeded_module
from napari_noise2fast.methods._torch import (
    NOISE_KEY,
    PRECISIONS,
    TrainedMethod,
    check_patch_settings,
    cosine_rate,
    network_state,
    noise_of,
)
from napari_noise2fast.methods.noise2void import (
    DEPTH,
    RECEPTIVE_RADIUS,
    UNet,
    blind_spots,
    pad_to_multiple,
    predict_unet,
    random_patches,
    unet_forward,
)
from napari_noise2fast.noise import KINDS, fit_pairs
from napari_noise2fast.tiling import central_crop, predict_in_tiles

FIT_PIXELS = 2**22  # the noise model is fitted on at most this many pixel pairs (central crops of the planes)
ESTIMATES = ("mmse", "mean")  # the output: PN2V's MMSE estimate, or the mean of the samples (the prior's mean)


def mmse(samples: torch.Tensor, observation: torch.Tensor, noise) -> torch.Tensor:
    """The MMSE estimate from ``samples`` (K along dim 1) of the signal and the ``observation`` (one along
    dim 1): sum_k p(x|s_k) s_k / sum_k p(x|s_k), in log space."""
    weights = torch.softmax(noise.log_likelihood(observation, samples), dim=1)
    return (weights * samples).sum(dim=1, keepdim=True)


def sample_loss(samples: torch.Tensor, observation: torch.Tensor, noise) -> torch.Tensor:
    """-log(mean_k p(x | s^k)) per pixel: ``samples`` (n, K), ``observation`` (n,)."""
    log_p = noise.log_likelihood(observation[:, None], samples)
    return -(torch.logsumexp(log_p, dim=1) - math.log(samples.shape[1]))


def _bytes_per_pixel(samples: int, noise) -> float:
    gaussians = noise.coefficients.shape[1] if getattr(noise, "kind", None) == "gmm" else 1
    return 2048 + 4 * samples * (3 * gaussians + 6)


def _mmse_plane(network: UNet, noise, padded: torch.Tensor, size, dtype, estimate: str = "mmse") -> torch.Tensor:
    """The MMSE estimate (``estimate="mean"``: the samples' mean) of a plane padded to a multiple of
    2**DEPTH, in tiles; (H, W), unpadded."""
    forward = unet_forward(network, dtype, padded.device)
    samples = network.out.out_channels

    def estimated(tile: torch.Tensor) -> torch.Tensor:
        drawn = forward(tile)
        return drawn.mean(dim=1, keepdim=True) if estimate == "mean" else mmse(drawn, tile.float(), noise)

    output = predict_in_tiles(estimated, padded, RECEPTIVE_RADIUS, bytes_per_pixel=_bytes_per_pixel(samples, noise),
                              multiple=2**DEPTH)
    return output[:size[0], :size[1]]


class PN2V(TrainedMethod):
    """PN2V bootstrapped from the image itself (see the module).

    Parameters
    ----------
    steps : int
        PN2V's training steps after the bootstrap (default 3,000; patches as Noise2Void's).
    bootstrap_steps : int
        Noise2Void's steps first (default 1,500, Noise2Void's own default).
    samples : int
        Samples of the signal the network predicts per pixel (K).
    noise_model : str
        ``"gmm"`` (the Gaussian mixture) or ``"histogram"``.
    estimate : str
        The output: ``"mmse"`` (PN2V's) or ``"mean"``, the samples' mean, which uses no noise model at
        prediction (measured in benchmarks/RESULTS.md).
    decay : bool
        PN2V's learning rate falls to zero over its steps (a cosine).
    gaussians, order : int
        The mixture's Gaussians and its polynomials' coefficients.
    fit_steps : int
        Adam steps of the mixture's fit.
    warm_start : bool
        A stack trained plane after plane (``stack="warm"``): each plane after the first starts from the
        one before (its noise model and network; no bootstrap). A saved model given with
        ``model_use="warm"`` is started from in the same way.
    """

    name = "pn2v"
    display_name = "PN2V (bootstrapped)"
    trains_on_stacks = True
    DEFAULTS = {"steps": 3000, "bootstrap_steps": 1500, "report_every": 100, "learning_rate": 4e-4, "batch": 8,
                "patch": 64, "base": 32, "samples": 64, "noise_model": "gmm", "gaussians": 3, "order": 3,
                "fit_steps": 2000, "decay": True, "estimate": "mmse", "precision": "auto", "warm_start": True}

    @classmethod
    def check_params(cls, **params) -> dict:
        settings = super().check_params(**params)
        if settings["estimate"] not in ESTIMATES:
            raise ValueError(f"estimate must be one of {list(ESTIMATES)}, got {settings['estimate']!r}")
        if settings["noise_model"] not in KINDS:
            raise ValueError(f"noise_model must be one of {list(KINDS)}, got {settings['noise_model']!r}")
        positive = ("bootstrap_steps", "samples", "gaussians", "order", "fit_steps", "batch", "base")
        check_patch_settings(settings, positive, 2**DEPTH)
        return settings

    def build(self) -> UNet:
        return UNet(self.settings["base"])

    def __init__(self, noisy, **kwargs):
        super().__init__(noisy, **kwargs)
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**63)))
        self.padded, self.size = pad_to_multiple(noisy[:1], 2**DEPTH)
        height, width = self.size
        self.patch = min(self.settings["patch"], height // 4 * 4, width // 4 * 4)
        spots, neighbours = blind_spots((1, height, width), self.generator, noisy.device)
        flat = noisy[:1].reshape(-1).clone()
        flat[spots] = noisy[:1].reshape(-1)[neighbours]
        self.validation = (pad_to_multiple(flat.reshape(self.size)[None, None], 2**DEPTH)[0], spots)
        self.min_std = max(self.level / 2, 1e-4)
        self.noise = None  # the noise model, once fitted
        self.best_state: dict | None = None  # the best-validated network's weights (of the stage running)
        self.best_loss = math.inf  # PN2V's validation loss of the best state
        self.stage = "bootstrap"
        self.stage_started = 0  # steps of the stages before this one
        self.bootstrap_budget = self.settings["bootstrap_steps"]
        warm = (self.warm or {}).get("best") if self.settings["warm_start"] else None
        if warm is not None:  # a noise model and a PN2V network to go on from: no bootstrap
            self.bootstrap_budget = 0
            self._become_pn2v(warm)

    # -- budget -------------------------------------------------------------------------------------------
    @property
    def _budget(self) -> int:
        return self.bootstrap_budget + self.settings["steps"]

    def progress(self) -> float:
        used = self.steps / self._budget
        if self.settings["seconds"] is not None:
            used = max(used, (time.perf_counter() - self.started) / self.settings["seconds"])
        return min(used, 1.0)

    def countdown(self) -> Countdown:
        if self.settings["seconds"] is not None and self.progress() > self.steps / self._budget:
            return Countdown(round(100 * self.progress()), 100, "% of the time budget")
        return Countdown(self.steps, self._budget, "steps")

    def _bootstrap_over(self) -> bool:
        """At ``bootstrap_steps``, or with a time budget (``seconds``) at the bootstrap's share of it: its share
        of the steps, PN2V's counted at most at their default (3,000), so that a run with unbounded steps
        and a time budget (an equal-time comparison) gives the bootstrap a third of the time, as the
        default run does, and not nothing."""
        if self.steps >= self.bootstrap_budget:
            return True
        seconds = self.settings["seconds"]
        if seconds is None:
            return False
        share = self.bootstrap_budget / (self.bootstrap_budget + min(self.settings["steps"], self.DEFAULTS["steps"]))
        return time.perf_counter() - self.started >= seconds * share

    # -- stages ---------------------------------------------------------------------------------------------
    def train_step(self) -> None:
        target = random_patches(self.noisy, self.rng, self.settings["batch"], self.patch, self.size)
        spots, neighbours = blind_spots((target.shape[0], *target.shape[-2:]), self.generator, target.device)
        network_input = target.reshape(-1).clone()
        network_input[spots] = target.reshape(-1)[neighbours]
        network_input = self.channels_last(network_input.reshape(target.shape))
        self.optimizer.zero_grad(set_to_none=True)
        if self.stage == "bootstrap":
            with self.autocast():
                output = self.network(network_input).float()
            loss = torch.mean((output.reshape(-1)[spots] - target.reshape(-1)[spots]) ** 2)
        else:  # the 1x1 output layer only at the masked pixels: K samples each
            with self.autocast():
                features = self.network.features(network_input)
            features = features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])[spots]
            out = self.network.out
            samples = F.linear(features, out.weight.flatten(1).float(), out.bias.float())
            loss = sample_loss(samples, target.reshape(-1)[spots], self.noise).mean()
        loss.backward()
        self.optimizer.step()

    def _fit_parts(self):
        """The bootstrap's best network on the sample's planes (central crops, at most ``FIT_PIXELS`` pixels
        in all), a noise model fitted to (prediction, noisy), and the PN2V network: parts of that work."""
        self.network.load_state_dict(self.best_state)
        self.network.eval()
        side = max(2**DEPTH, math.isqrt(FIT_PIXELS // self.noisy.shape[0]) // 2**DEPTH * 2**DEPTH)
        signals, observations = [], []
        for plane in self.noisy:
            crop = central_crop(plane[None], side)
            signal = torch.zeros(crop.shape[-2:], device=crop.device)
            for turns in range(4):  # the mean over the 8 flips and turns: less of the network's own error
                for flip in (False, True):
                    view = torch.rot90(crop, turns, dims=(-2, -1))
                    view = view.flip(-1) if flip else view
                    padded, size = pad_to_multiple(view, 2**DEPTH)
                    with torch.inference_mode():
                        output = self._n2v_plane(self.network, padded, size)
                    output = output.flip(-1) if flip else output
                    signal += torch.rot90(output, -turns, dims=(-2, -1)) / 8
                    yield
            signals.append(signal.reshape(-1).cpu())
            observations.append(crop.reshape(-1).cpu())
        model = yield from fit_pairs(torch.cat(signals), torch.cat(observations), self.settings["noise_model"],
                                     generator=self.generator, gaussians=self.settings["gaussians"],
                                     order=self.settings["order"], min_std=self.min_std,
                                     steps=self.settings["fit_steps"])
        state = network_state(self._pn2v_from(self.network).state_dict(), model)
        self._become_pn2v(state, fresh=True)

    def _pn2v_from(self, n2v: UNet) -> UNet:
        """A PN2V network whose body is ``n2v``'s and whose samples all start at ``n2v``'s output."""
        samples = self.settings["samples"]
        network = seeded_module(lambda: UNet(self.settings["base"], samples), int(self.rng.integers(2**63)))
        body = {name: value for name, value in n2v.state_dict().items() if not name.startswith("out.")}
        network.load_state_dict(body, strict=False)
        with torch.no_grad():
            spread = network.out.weight.std() * 0.1  # the samples differ a little, so that they can part
            network.out.weight.copy_(n2v.out.weight.expand_as(network.out.weight) +
                                     spread * torch.randn(network.out.weight.shape, generator=self.generator))
            network.out.bias.copy_(n2v.out.bias.expand_as(network.out.bias))
        return network

    def _become_pn2v(self, state: dict, fresh: bool = False) -> None:
        """Train the PN2V network and noise model of ``state`` (a :meth:`trained_state`) from now on."""
        network, noise = self._unpack(state, self.settings)
        self.network = network.to(self.noisy.device, memory_format=torch.channels_last)
        self.noise = noise
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.settings["learning_rate"])
        self.stage_started = self.steps if fresh else 0
        self.stage = "pn2v"
        self.best_state, self.best_loss = None, math.inf
        self.best_mse = math.inf  # the first PN2V output replaces the bootstrap's

    @staticmethod
    def _unpack(state: dict, settings: dict) -> tuple[UNet, object]:
        """The network (on the CPU) and noise model of a PN2V state; ValueError where they do not fit."""
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("a PN2V model's state must be a dict of tensors")
        weights = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
        noise = noise_of(state)
        network = UNet(settings["base"], settings["samples"])
        try:
            network.load_state_dict(weights)
        except RuntimeError as error:
            raise ValueError(f"the weights do not fit a PN2V network of these settings: "
                             f"{str(error).splitlines()[0]}") from error
        return network, noise

    # -- prediction -----------------------------------------------------------------------------------------
    def _n2v_plane(self, network: UNet, padded: torch.Tensor, size) -> torch.Tensor:
        return predict_unet(network, padded, size, self.compute_dtype)

    def _validation_maps(self) -> torch.Tensor:
        """(2, H, W): the samples' mean and PN2V's loss at every pixel of the masked validation plane."""
        network_input, _ = self.validation
        observation, _ = pad_to_multiple(self.noisy[:1], 2**DEPTH)
        forward = unet_forward(self.network, self.compute_dtype, self.noisy.device)

        def maps(tile: torch.Tensor) -> torch.Tensor:
            samples = forward(tile[:, :1])
            x = tile[:, 1:].float()
            loss = -(torch.logsumexp(self.noise.log_likelihood(x, samples), dim=1, keepdim=True)
                     - math.log(samples.shape[1]))
            return torch.cat([samples.mean(dim=1, keepdim=True), loss], dim=1)

        output = predict_in_tiles(maps, torch.cat([network_input, observation], dim=1), RECEPTIVE_RADIUS,
                                  bytes_per_pixel=_bytes_per_pixel(self.settings["samples"], self.noise),
                                  multiple=2**DEPTH, outputs=2)
        return output[:, :self.size[0], :self.size[1]]

    def report(self) -> tuple[float, torch.Tensor]:
        _, spots = self.validation
        noisy = self.noisy[0, 0].reshape(-1)[spots]
        if self.stage == "bootstrap":
            output = self._n2v_plane(self.network, self.validation[0], self.size)
            mse = torch.mean((output.reshape(-1)[spots] - noisy) ** 2).item()
            if mse < self.best_mse:
                self.best_state = copy.deepcopy(self.network.state_dict())
                return mse, self._n2v_plane(self.network, self.padded, self.size).clamp(0, 1)
            return mse, self.best_output
        mean, loss = self._validation_maps().reshape(2, -1)[:, spots]
        mse, loss = torch.mean((mean - noisy) ** 2).item(), loss.mean().item()
        if loss < self.best_loss or self.best_state is None:
            self.best_loss = loss
            self.best_state = copy.deepcopy(self.network.state_dict())
            self.best_output = _mmse_plane(self.network, self.noise, self.padded, self.size,
                                           self.compute_dtype, self.settings["estimate"]).clamp(0, 1)
        return mse, self.best_output

    def step(self) -> float | None:
        if self.stage == "fit":
            if self._sliced("fit", self._fit_parts) is PART:
                return PART
        self.network.train()
        if self.stage == "pn2v" and self.settings["decay"]:  # cosine to zero over PN2V's share of the budget
            share = (self.progress() - self.stage_started / self._budget) / (1 - self.stage_started / self._budget)
            for group in self.optimizer.param_groups:
                group["lr"] = cosine_rate(self.settings["learning_rate"], min(share, 1.0))
        self.train_step()
        self.steps += 1
        progress = self.progress()
        last = progress >= 1.0
        validate = (self.steps - self.stage_started) % self.settings["report_every"] == 0 or last
        if self.stage == "bootstrap" and self._bootstrap_over():
            validate = True
        if not validate:
            return None
        self.network.eval()
        with torch.inference_mode():
            mse, output = self.report()
        self.best_mse = min(mse, self.best_mse)
        self.best_output = output.float()
        if self.stage == "bootstrap" and self._bootstrap_over() and not last:
            self.stage = "fit"  # the next call fits the noise model, then trains PN2V
        elif last:
            self.stop_reason = "budget" if self.steps >= self._budget else "time"
        return mse

    # -- the engine's model interface --------------------------------------------------------------------
    def _state(self, weights: dict) -> dict:
        return network_state(weights, self.noise)

    def predict_plane(self, plane: torch.Tensor) -> torch.Tensor:
        """Any normalised plane (1, 1, H, W) denoised by the best model so far: PN2V's MMSE once PN2V has
        validated, Noise2Void's output before."""
        padded, size = pad_to_multiple(plane, 2**DEPTH)
        stage, state, network = getattr(self, "_best", (None, None, None))
        if stage != self.stage or state is not self.best_state or network is None:  # once per best, not per plane
            network = copy.deepcopy(self.network)
            if self.best_state is not None:
                network.load_state_dict(self.best_state)
            self._best = (self.stage, self.best_state, network.eval())
        with torch.inference_mode():
            if self.stage == "pn2v" and self.best_state is not None:
                return _mmse_plane(network, self.noise, padded, size, self.compute_dtype,
                                   self.settings["estimate"]).clamp(0, 1)
            return self._n2v_plane(network, padded, size).clamp(0, 1)

    def trained_state(self) -> dict | None:
        """The best-validated PN2V network and the noise model, on the CPU (None before PN2V has validated:
        a run stopped in the bootstrap has no PN2V model)."""
        if self.stage != "pn2v" or self.best_state is None:
            return None
        return self._state(self.best_state)

    def predicting_state(self) -> dict:
        """What :meth:`predict_plane` predicts with now: a PN2V state, or Noise2Void's weights (``network.``
        only) before PN2V has validated."""
        if self.stage == "pn2v" and self.best_state is not None:
            return self._state(self.best_state)
        weights = self.best_state if self.best_state is not None and self.stage == "bootstrap" \
            else self.network.state_dict()
        if self.stage == "pn2v":  # no PN2V validation yet: the network as it is now
            return self._state(weights)
        return network_state(weights)

    @classmethod
    def predictor(cls, state: dict, *, settings: dict, device: str):
        where = resolve_device(device)
        dtype = PRECISIONS[settings["precision"]]
        if any(name.startswith(NOISE_KEY) for name in state):
            network, noise = cls._unpack(state, settings)
        else:
            network, noise = UNet(settings["base"]), None
            network.load_state_dict({k[len("network."):]: v for k, v in state.items()})
        network = network.to(where, memory_format=torch.channels_last).eval().requires_grad_(False)

        def predict(plane: torch.Tensor) -> torch.Tensor:
            padded, size = pad_to_multiple(plane.to(where), 2**DEPTH)
            with torch.inference_mode():
                if noise is not None:
                    return _mmse_plane(network, noise, padded, size, dtype, settings["estimate"]).clamp(0, 1)
                return predict_unet(network, padded, size, dtype).clamp(0, 1)

        return predict

    @classmethod
    def check_state(cls, state: dict, **params) -> None:
        cls._unpack(state, cls.check_params(**params))

    def load_trained(self, state: dict) -> None:
        """Predict with ``state`` (a :meth:`trained_state`) as the best-validated model."""
        self._become_pn2v(state)
        self.best_state = copy.deepcopy(self.network.state_dict())
        self.best_loss = -math.inf

    def carry(self) -> dict | None:
        """For the next plane of a stack (with ``warm_start``): the best PN2V model (``"best"``)."""
        state = self.trained_state() if self.settings["warm_start"] else None
        return None if state is None else {"best": state, "network": None, "optimizer": None}

    def noise_model(self):
        """The fitted noise model (normalised units), or None before the bootstrap has ended."""
        return self.noise
