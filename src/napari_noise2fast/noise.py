"""Models of an image's noise, p(observation | signal), learned from the image itself.

Two kinds, both in the engine's normalised units (the plane's minimum 0, maximum 1):

* :class:`GaussianMixture`: PN2V's parametric model (Prakash et al. 2020). Given a signal ``s``, the
  observation is a mixture of ``gaussians`` Gaussians whose weights (by softmax), means and log variances
  are polynomials (``order`` coefficients) in ``s`` scaled over the fitted range; the means are re-centred
  so that the mixture's mean is ``s`` itself, and every variance is clamped from below. Fitted by Adam on
  (signal, observation) pairs, minimising their negative log-likelihood.
* :class:`Histogram`: the non-parametric alternative: a 2D histogram of observations against signals
  (rows normalised), interpolated linearly along the signal so that its likelihood has a gradient there.
* :class:`NoiseNetwork`: the joint denoiser + noise network's noise model, a small pixel-wise network from
  the signal to the same kind of mixture, trained with the denoiser rather than fitted after it.

All compute ``log_likelihood(observation, signal)`` elementwise (broadcasting) and ``std(signal)``, the
standard deviation of the observation at that signal. All are stored as a dict of tensors
(:meth:`state`) and rebuilt from it (:func:`from_state`), so that they travel in a saved model.

:class:`NoiseModel` is what :func:`napari_noise2fast.estimate_noise` returns: ``std(signal)`` in the
image's own units and the fitted parameters. No Qt or napari here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

KINDS = ("gmm", "histogram")
FIT_STEPS, FIT_BATCH, FIT_LEARNING_RATE = 2000, 8192, 0.1  # the mixture's Adam fit (PN2V's lr 0.1)
HISTOGRAM_BINS = 256
PERCENTILES = (0.5, 99.5)  # the signals the model is fitted on (PPN2V's bootstrap)
LOG_2PI = math.log(2 * math.pi)
# the noise network's widest Gaussian, in stds of the mixture's typical one: a Gaussian of tiny weight
# barely changes the likelihood whatever its width, so Adam let one drift wide (the tests' scene, seed 3:
# weight 0.0002, std 160 ADU as trained and 8,800 after the refit against 9 for the others), and it alone
# made the mixture's std, the noise reported, up to 75x the truth at the darkest signals
MAX_SPREAD = 4.0


def mixture(logits: torch.Tensor, offsets: torch.Tensor, log_variances: torch.Tensor, signal: torch.Tensor,
            min_std: float, max_spread: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log weights, means, variances) of a mixture centred on ``signal`` from its raw parameters (each
    (gaussians, *signal.shape)): weights by softmax, variances clamped to at least ``min_std**2`` (and, with
    ``max_spread``, each std to at most that many times the weighted geometric mean of the stds), each
    Gaussian's offset its standard deviation times the tanh of its raw offset, then all re-centred so that
    the mixture's mean is the signal itself."""
    log_weights = torch.log_softmax(logits, dim=0)
    variances = log_variances.exp().clamp(min=min_std**2)
    if max_spread is not None:  # no Gaussian's std more than ``max_spread`` times the weighted geometric mean's
        typical = (log_weights.exp() * variances.log()).sum(dim=0).exp()
        variances = torch.minimum(variances, typical * max_spread**2)
    # each Gaussian within its own standard deviation of the signal: a Gaussian of tiny weight far out
    # barely changes the likelihood, yet would dominate the mixture's variance (seen: weight 0.006 at
    # +1.07, the std at low signal 4.9x the truth)
    offsets = variances.sqrt() * torch.tanh(offsets)
    means = offsets - (log_weights.exp() * offsets).sum(dim=0) + signal
    return log_weights, means, variances


class _Mixture:
    """The likelihood and standard deviation of a mixture of Gaussians given by ``components(signal)``."""

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """log p(observation | signal), elementwise with broadcasting."""
        observation, signal = torch.broadcast_tensors(observation, signal)
        log_weights, means, variances = self.components(signal)
        log_gauss = -0.5 * ((observation - means) ** 2 / variances + torch.log(variances) + LOG_2PI)
        return torch.logsumexp(log_weights + log_gauss, dim=0)

    def std(self, signal: torch.Tensor) -> torch.Tensor:
        """The observation's standard deviation at ``signal``: sqrt(sum w (var + mean^2) - signal^2)."""
        log_weights, means, variances = self.components(signal)
        second = (log_weights.exp() * (variances + means**2)).sum(dim=0)
        return (second - signal**2).clamp(min=0).sqrt()


class GaussianMixture(_Mixture):
    """PN2V's Gaussian mixture noise model (see the module); ``coefficients`` (3, gaussians, order): the
    polynomials' coefficients of the weights' logits, the means' offsets from the signal (each Gaussian's
    offset is its standard deviation times the tanh of its polynomial, before the re-centring) and the log
    variances, lowest order first."""

    kind = "gmm"

    def __init__(self, coefficients: torch.Tensor, low: float, high: float, min_std: float, central=None):
        self.coefficients = coefficients
        self.low, self.high, self.min_std = float(low), float(high), float(min_std)
        # the 5th and 95th percentiles of the signals fitted on: where the model is well determined
        self.central = (self.low, self.high) if central is None else tuple(float(v) for v in central)

    @classmethod
    def initial(cls, gaussians: int, order: int, low: float, high: float, variance: float,
                min_std: float, generator: torch.Generator) -> GaussianMixture:
        """Equal weights, means at the signal, variances ``variance`` (spread a little so the Gaussians
        differ), the higher orders small random numbers."""
        coefficients = 0.01 * torch.randn((3, gaussians, order), generator=generator, dtype=torch.float64)
        coefficients[2, :, 0] = math.log(max(variance, min_std**2)) + torch.linspace(-0.5, 0.5, gaussians,
                                                                                      dtype=torch.float64)
        return cls(coefficients.float(), low, high, min_std)

    def _polynomials(self, signal: torch.Tensor) -> torch.Tensor:
        """(3, gaussians, *signal.shape): the three polynomials at ``signal``, held at their values at the
        fitted range's ends beyond them (a polynomial extrapolated far overflows)."""
        t = ((signal - self.low) / max(self.high - self.low, 1e-12)).clamp(0, 1)
        powers = torch.stack([t**k for k in range(self.coefficients.shape[-1])], dim=-1)  # (*shape, order)
        return torch.einsum("cgo,...o->cg...", self.coefficients.to(signal.dtype), powers)

    def components(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log weights, means, variances) at ``signal``, each (gaussians, *signal.shape)."""
        return mixture(*self._polynomials(signal), signal, self.min_std)

    def state(self) -> dict[str, torch.Tensor]:
        return {"kind": torch.tensor(0), "coefficients": self.coefficients.detach().cpu().clone(),
                "range": torch.tensor([self.low, self.high, self.min_std, *self.central], dtype=torch.float64)}

    def fit(self, signal: torch.Tensor, observation: torch.Tensor, generator: torch.Generator,
            steps: int = FIT_STEPS, batch: int = FIT_BATCH, learning_rate: float = FIT_LEARNING_RATE):
        """Fit to pairs (1D tensors) by Adam on random batches; a generator of parts (one per 100 steps)."""
        coefficients = self.coefficients.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([coefficients], lr=learning_rate)
        for step in range(steps):
            pick = torch.randint(0, signal.numel(), (min(batch, signal.numel()),), generator=generator)
            self.coefficients = coefficients
            loss = -self.log_likelihood(observation[pick], signal[pick]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 100 == 99:
                yield
        self.coefficients = coefficients.detach()


class Histogram:
    """The 2D-histogram noise model (see the module): ``table`` (bins, bins) of observation densities per
    signal bin, over ``[low, high]`` for both."""

    kind = "histogram"

    def __init__(self, table: torch.Tensor, low: float, high: float, central=None):
        self.table, self.low, self.high = table, float(low), float(high)
        self.central = (self.low, self.high) if central is None else tuple(float(v) for v in central)

    @classmethod
    def fitted(cls, signal: torch.Tensor, observation: torch.Tensor, low: float, high: float,
               bins: int | None = None) -> Histogram:
        """Rows normalised to densities (integrate to 1 over the observation); empty rows copy the nearest
        row that has counts. ``bins`` (None: :data:`HISTOGRAM_BINS`, fewer for fewer pairs, so that a row
        holds about 16 pairs a bin on average: 32 bins for a 128x128 plane)."""
        if bins is None:
            bins = int(min(HISTOGRAM_BINS, max(16, math.isqrt(signal.numel() // 16))))
        width = (high - low) / bins
        rows = ((signal - low) / width).long().clamp(0, bins - 1)
        cols = ((observation - low) / width).long().clamp(0, bins - 1)
        counts = torch.zeros(bins * bins, dtype=torch.float64)
        counts.index_add_(0, rows * bins + cols, torch.ones_like(rows, dtype=torch.float64))
        counts = counts.reshape(bins, bins)
        filled = torch.nonzero(counts.sum(1) > 0).flatten()
        if filled.numel() == 0:
            raise ValueError("no (signal, observation) pairs to fit the histogram to")
        nearest = filled[(torch.arange(bins)[:, None] - filled[None]).abs().argmin(1)]
        counts = counts[nearest]
        table = (counts + 1e-3) / (counts + 1e-3).sum(1, keepdim=True) / width
        return cls(table.float(), low, high)

    def _rows(self, signal: torch.Tensor):
        bins = self.table.shape[0]
        position = ((signal - self.low) / ((self.high - self.low) / bins) - 0.5).clamp(0, bins - 1)
        below = position.floor().long().clamp(max=bins - 2) if bins > 1 else position.floor().long()
        return below, position - below

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        observation, signal = torch.broadcast_tensors(observation, signal)
        bins = self.table.shape[0]
        table = self.table.to(observation.device)
        col = ((observation - self.low) / ((self.high - self.low) / bins)).long().clamp(0, bins - 1)
        below, frac = self._rows(signal)
        density = table[below, col] * (1 - frac) + table[(below + 1).clamp(max=bins - 1), col] * frac
        return torch.log(density)

    def std(self, signal: torch.Tensor) -> torch.Tensor:
        bins = self.table.shape[0]
        width = (self.high - self.low) / bins
        centres = self.low + width * (torch.arange(bins, dtype=torch.float32) + 0.5)
        probability = self.table * width
        mean = probability @ centres
        variance = (probability @ centres**2 - mean**2 - width**2 / 12).clamp(min=0)  # Sheppard's correction
        below, frac = self._rows(signal)
        above = (below + 1).clamp(max=bins - 1)
        return (variance[below] * (1 - frac) + variance[above] * frac).sqrt()

    def state(self) -> dict[str, torch.Tensor]:
        return {"kind": torch.tensor(1), "table": self.table.detach().cpu().clone(),
                "range": torch.tensor([self.low, self.high, 0.0, *self.central], dtype=torch.float64)}


class NoiseNetwork(_Mixture, torch.nn.Module):
    """The noise network of the joint denoiser + noise network (Ollion et al. 2021; see
    :mod:`napari_noise2fast.methods.noise_net`): a small pixel-wise network (two hidden layers of ``hidden``
    units) from the signal to a mixture of ``gaussians`` Gaussians, by :func:`mixture` (weights, offsets
    and log variances; re-centred on the signal, variances clamped from below, each std to at most
    :data:`MAX_SPREAD` times the mixture's typical one). Pixel-wise: the noise of a
    pixel depends on its signal alone, so ``std(signal)`` is a curve like the other models'. Signals are
    scaled over ``[low, high]`` (the normalised plane's range) and held at its ends beyond them."""

    kind = "net"

    def __init__(self, gaussians: int = 3, hidden: int = 32, low: float = 0.0, high: float = 1.0,
                 min_std: float = 1e-4, variance: float | None = None, central=None):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(),
                                          torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                          torch.nn.Linear(hidden, 3 * gaussians))
        self.low, self.high, self.min_std = float(low), float(high), float(min_std)
        self.central = (self.low, self.high) if central is None else tuple(float(v) for v in central)
        if variance is not None:  # start near a constant variance, the Gaussians spread a little
            with torch.no_grad():
                last = self.layers[-1]
                last.weight.mul_(0.1)
                last.bias.zero_()
                last.bias[2 * gaussians:] = math.log(max(variance, min_std**2)) + torch.linspace(-0.5, 0.5,
                                                                                                 gaussians)

    @property
    def gaussians(self) -> int:
        return self.layers[-1].out_features // 3

    def components(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log weights, means, variances) at ``signal``, each (gaussians, *signal.shape)."""
        t = ((signal - self.low) / max(self.high - self.low, 1e-12)).clamp(0, 1)
        raw = self.layers(t.reshape(-1, 1).to(self.layers[0].weight.dtype)).to(signal.dtype)
        raw = raw.T.reshape(3, self.gaussians, *signal.shape)
        return mixture(raw[0], raw[1], raw[2], signal, self.min_std, MAX_SPREAD)

    def state(self) -> dict[str, torch.Tensor]:
        state = {f"layers.{name}": value.detach().cpu().clone() for name, value in self.layers.state_dict().items()}
        return {"kind": torch.tensor(2), **state,
                "range": torch.tensor([self.low, self.high, self.min_std, *self.central], dtype=torch.float64)}

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor], low: float, high: float, min_std: float,
                     central=None) -> NoiseNetwork:
        hidden, outputs = weights["layers.0.weight"].shape[0], weights["layers.4.weight"].shape[0]
        if outputs % 3:
            raise ValueError(f"{outputs} outputs: not three per Gaussian")
        model = cls(outputs // 3, hidden, low, high, min_std, central=central)
        model.layers.load_state_dict({name[len("layers."):]: value.float() for name, value in weights.items()})
        return model


def from_state(state: dict[str, torch.Tensor]) -> GaussianMixture | Histogram | NoiseNetwork:
    """The noise model that :meth:`state` stored; ValueError for anything else."""
    try:
        kind, (low, high, min_std, *central) = int(state["kind"]), state["range"].tolist()
        central = central if len(central) == 2 else None
        if kind == 0:
            coefficients = state["coefficients"].float()
            if coefficients.ndim != 3 or coefficients.shape[0] != 3:
                raise ValueError(f"coefficients of shape {tuple(coefficients.shape)}")
            return GaussianMixture(coefficients, low, high, min_std, central)
        if kind == 1:
            table = state["table"].float()
            if table.ndim != 2 or table.shape[0] != table.shape[1]:
                raise ValueError(f"a table of shape {tuple(table.shape)}")
            return Histogram(table, low, high, central)
        if kind == 2:
            return NoiseNetwork.from_weights({k: v for k, v in state.items() if k.startswith("layers.")},
                                             low, high, min_std, central).requires_grad_(False)
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as error:
        raise ValueError(f"not a noise model: {error}") from None
    raise ValueError(f"not a noise model: kind {kind}")


def fit_pairs(signal: torch.Tensor, observation: torch.Tensor, kind: str, *, generator: torch.Generator,
              gaussians: int = 3, order: int = 3, min_std: float = 1e-4, steps: int = FIT_STEPS):
    """A noise model of ``kind`` fitted to (signal, observation) pairs whose signal lies within the
    :data:`PERCENTILES` of the signals; a generator of parts that returns the model."""
    signal, observation = signal.reshape(-1).float().cpu(), observation.reshape(-1).float().cpu()
    low, high = (float(v) for v in torch.quantile(signal[:2**24], torch.tensor(PERCENTILES) / 100))
    if not high > low:
        low, high = float(signal.min()), float(signal.max()) + 1e-6
    inside = (signal >= low) & (signal <= high)
    signal, observation = signal[inside], observation[inside]
    central = tuple(float(v) for v in torch.quantile(signal[:2**24], torch.tensor([0.05, 0.95])))
    if kind == "histogram":
        yield
        model = Histogram.fitted(signal, observation, min(low, float(observation.min())),
                                 max(high, float(observation.max())))
        model.central = central
        return model
    variance = float(torch.var(observation - signal))
    model = GaussianMixture.initial(gaussians, order, low, high, variance, min_std, generator)
    model.central = central
    yield from model.fit(signal, observation, generator, steps=steps)
    return model


@dataclass
class NoiseModel:
    """An image's noise as fitted: ``std(signal)`` gives the noise standard deviation at signal levels
    given in the image's own units; ``parameters`` the fitted values (``"vst"``: ``gain`` and ``read`` of
    ``variance = gain * signal + read``; ``"pn2v"``: the mixture's or the histogram's, and the same line
    fitted through its variances between the 5th and 95th percentiles of the signals); ``signal_range`` the
    signals it was fitted on (image units)."""

    method: str
    parameters: dict = field(default_factory=dict)
    signal_range: tuple[float, float] = (0.0, 1.0)
    _std: object = field(default=None, repr=False)

    def std(self, signal):
        """The noise standard deviation at ``signal`` (a number or an array, image units)."""
        values = np.asarray(signal, dtype=np.float64)
        return self._std(values) if np.ndim(values) else float(self._std(values[None])[0])

    @property
    def gain(self) -> float:
        """The slope of ``variance = gain * signal + read`` (image units)."""
        return float(self.parameters["gain"])

    @property
    def read(self) -> float:
        """The intercept of ``variance = gain * signal + read`` (image units squared)."""
        return float(self.parameters["read"])

    def curve(self, points: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(signals, stds) over the fitted range: what the noise plot draws."""
        signals = np.linspace(*self.signal_range, points)
        return signals, np.asarray(self.std(signals), dtype=np.float64)


def line_through(signals: np.ndarray, stds: np.ndarray) -> tuple[float, float]:
    """(gain, read) of the straight line ``variance = gain * signal + read`` through the points."""
    gain, read = np.polyfit(np.asarray(signals, np.float64), np.asarray(stds, np.float64) ** 2, 1)
    return float(gain), float(read)


def learned_noise_model(model, method: str, low: float, scale: float) -> NoiseModel:
    """A :class:`NoiseModel` in image units (``image = low + scale * normalised``) of a learned model."""

    def std(signal: np.ndarray) -> np.ndarray:
        normalised = torch.from_numpy((signal - low) / scale).float()
        with torch.no_grad():
            return model.std(normalised).double().numpy() * scale

    signal_range = (low + scale * model.low, low + scale * model.high)
    signals = np.linspace(low + scale * model.central[0], low + scale * model.central[1], 64)
    gain, read = line_through(signals, std(signals))  # where most signals were: the 5th-95th percentiles
    parameters = {"kind": model.kind, "gain": gain, "read": read}
    if isinstance(model, GaussianMixture):
        parameters["coefficients"] = model.coefficients.tolist()
    return NoiseModel(method, parameters, signal_range, std)


ESTIMATORS = ("pn2v", "noise-net", "vst")


def estimate_noise(image, method: str = "pn2v", *, device="auto", seed: int | None = None,
                   **params) -> NoiseModel:
    """The noise of ``image`` as a :class:`NoiseModel`: its standard deviation against the signal, in the
    image's units, learned from the image alone.

    ``image``: a 2D plane, or planes stacked along the leading axes (a recording: one model for all).
    ``method``: ``"pn2v"``, PN2V's bootstrap (Noise2Void trained on the image, its prediction taken as the
    signal, a Gaussian mixture fitted to the pairs, see :mod:`napari_noise2fast.methods.pn2v`; ``params``
    are PN2V's, e.g. ``bootstrap_steps``, ``noise_model="histogram"``); ``"noise-net"``, the noise network
    trained jointly with a denoiser on the image (its whole training, see
    :mod:`napari_noise2fast.methods.noise_net`; ``params`` are its own, e.g. ``steps``); ``"vst"``, the
    straight line ``variance = gain * signal + read`` through local 7x7 statistics that the ``bm3d``
    method's transform fits (the middle plane of a stack). All give ``gain`` and ``read``: the line
    through the model's variances."""
    from napari_noise2fast.checks import check_int, check_str

    check_str("method", method, allow_none=False)
    if method not in ESTIMATORS:
        raise ValueError(f"method must be one of {list(ESTIMATORS)}, got {method!r}")
    array = np.asarray(image)
    if array.ndim < 2 or min(array.shape[-2:]) < 8 or array.dtype.kind not in "uif":
        raise ValueError(f"image must be a numeric array of planes of at least 8x8 pixels, got shape "
                         f"{array.shape} and dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("image holds NaN or infinite values")
    planes = array.reshape(-1, *array.shape[-2:])
    if method == "vst":
        if params:
            raise ValueError(f"method 'vst' takes no parameters, got {sorted(params)}")
        from napari_noise2fast.methods.bm3d_vst import FIT_SIDE, fit_noise
        from napari_noise2fast.tiling import central_crop

        plane = np.asarray(planes[len(planes) // 2], dtype=np.float64)
        gain, read = fit_noise(central_crop(plane, FIT_SIDE), clamp=False)
        low, high = (float(v) for v in np.percentile(plane, PERCENTILES))

        def std(signal: np.ndarray) -> np.ndarray:
            return np.sqrt(np.maximum(gain * signal + read, 0.0))

        return NoiseModel("vst", {"gain": gain, "read": read}, (low, high), std)

    from napari_noise2fast.devices import resolve_device
    from napari_noise2fast.engine import PART, recording_sample
    from napari_noise2fast.intensity import IntensityMap
    from napari_noise2fast.methods import get_method

    seed = check_int("seed", seed, minimum=0)
    sample = planes[recording_sample(len(planes), planes.shape[-2:])]
    plane_map = IntensityMap(sample)
    if plane_map.constant:
        raise ValueError("image is constant: it has no noise to model")
    level = 1.0 / plane_map.range if array.dtype.kind in "ui" else 1.0 / 255.0
    noisy = torch.from_numpy(plane_map.normalise(sample)).to(resolve_device(device))[:, None]
    model = get_method(method)(noisy, rng=np.random.default_rng(seed), level=level, **params)
    # PN2V: the bootstrap and the fit (its own training is not needed); the noise network: its training
    while method == "noise-net" or model.noise_model() is None:
        if model.step() is not PART and model.stop_reason is not None:
            break
    if model.noise_model() is None:
        raise ValueError("the bootstrap ended before a noise model was fitted")
    return learned_noise_model(model.noise_model(), method, float(plane_map.low), plane_map.range)
