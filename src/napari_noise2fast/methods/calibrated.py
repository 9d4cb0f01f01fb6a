"""Classical denoisers calibrated blindly by the J-invariant self-supervised loss.

Batson & Royer (ICML 2019): for a J-invariant function (its output at a pixel
ignores that pixel), the mean squared difference to the noisy image equals the
error against the clean image plus the noise variance. scikit-image's
``denoise_invariant`` makes any denoiser J-invariant by masking a grid of pixels
(stride 4) and filling them by interpolation, so each candidate parameter can
be scored on the noisy image alone. Every engine step scores one candidate
(non-local means, wavelet, total variation, each over a grid scaled by the
blind noise estimate of ``estimate_sigma``); then the best one is applied to
the whole plane. The instant baseline of the comparison.

On planes larger than ``CALIBRATION_SIDE`` squared the noise estimate and the
scoring use the plane's centre (``CALIBRATION_SIDE`` square), and the winner
runs block-wise (``BLOCK`` square, ``MARGIN`` pixels of context on each side,
one engine step per block): memory stays that of a block and Stop takes effect
between blocks. Non-local means (search radius 8) is then exact; the wavelet
and total-variation filters are global, so block-wise they differ slightly
from one pass over the whole plane.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from skimage.restoration import (
    denoise_invariant,
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
    estimate_sigma,
)

from napari_noise2fast.checks import check_int
from napari_noise2fast.engine import Countdown, Method
from napari_noise2fast.tiling import apply_in_blocks, central_crop, count_blocks

FAMILIES = ("nl_means", "wavelet", "tv")
# Multiples of the estimated noise sigma tried for each family's strength parameter.
SCALES = {
    "nl_means": (0.5, 0.7, 0.9, 1.1, 1.3),
    "wavelet": (0.5, 0.75, 1.0, 1.5, 2.0),
    "tv": (0.5, 1.0, 1.5, 2.0, 3.0),
}


def _nl_means(image: np.ndarray, strength: float, sigma: float) -> np.ndarray:
    return denoise_nl_means(image, h=strength, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)


def _wavelet(image: np.ndarray, strength: float, sigma: float) -> np.ndarray:
    return denoise_wavelet(image, sigma=strength, mode="soft", method="BayesShrink", rescale_sigma=False)


def _tv(image: np.ndarray, strength: float, sigma: float) -> np.ndarray:
    return denoise_tv_chambolle(image, weight=strength)


DENOISERS = {"nl_means": _nl_means, "wavelet": _wavelet, "tv": _tv}
CALIBRATION_SIDE = 512
BLOCK, MARGIN = 1024, 32


class Calibrated(Method):
    """The best of several classical denoisers, chosen by the J-invariant loss.

    Parameters
    ----------
    families : tuple of str
        Any of ``"nl_means"``, ``"wavelet"``, ``"tv"`` (all by default).
    stride : int
        Grid spacing of the J-invariant masks (``stride**2`` masked passes per candidate).
    """

    name = "calibrated"
    display_name = "Calibrated classical"

    @classmethod
    def check_params(cls, **params) -> dict:
        unknown = set(params) - {"families", "stride"}
        if unknown:
            raise ValueError(f"unknown calibrated parameter(s) {sorted(unknown)}; known: ['families', 'stride']")
        families = params.get("families") or FAMILIES
        stride = check_int("calibrated parameter 'stride'", params.get("stride"), minimum=2) or 4
        if isinstance(families, str):
            families = (families,)
        if not isinstance(families, (list, tuple)) or not families \
                or any(not isinstance(f, str) or f not in DENOISERS for f in families):
            raise ValueError(f"families must be a non-empty subset of {list(FAMILIES)}, got {families!r}")
        families = tuple(families)
        return {"families": families, "stride": int(stride)}

    def __init__(self, noisy, *, rng, level, warm=None, **params):
        super().__init__(noisy, rng=rng, level=level, warm=warm)
        self.settings = self.check_params(**params)
        self.image = noisy[0, 0].detach().to("cpu").numpy()
        self.sample = np.asarray(central_crop(self.image, CALIBRATION_SIDE), dtype=np.float64)
        self.sigma = max(float(estimate_sigma(self.sample)), 1e-4)
        self.candidates = [(family, scale * self.sigma) for family in self.settings["families"]
                           for scale in SCALES[family]]
        self.scores: list[tuple[str, float, float]] = []  # (family, strength, J-invariant MSE)
        self.best_mse = np.inf
        self.best_invariant: np.ndarray | None = None
        self.final: np.ndarray | None = None
        self.blocks = None  # the winner running block-wise
        self.blocks_done = 0

    @property
    def best(self) -> tuple[str, float] | None:
        """(family, strength) of the lowest J-invariant loss so far."""
        if not self.scores:
            return None
        family, strength, _ = min(self.scores, key=lambda s: s[2])
        return family, strength

    def step(self) -> float | None:
        index = len(self.scores)
        if index == len(self.candidates):  # all scored: denoise the whole plane with the winner, block by block
            if self.blocks is None:
                family, strength = self.best
                winner = partial(DENOISERS[family], strength=strength, sigma=self.sigma)
                self.blocks = apply_in_blocks(lambda block: winner(block.astype(np.float64)), self.image,
                                              MARGIN, BLOCK)
            try:
                next(self.blocks)
                self.blocks_done += 1
            except StopIteration as finished:
                self.final = finished.value
                self.stop_reason = "complete"
            return None
        family, strength = self.candidates[index]
        denoiser = partial(DENOISERS[family], strength=strength, sigma=self.sigma)
        invariant = denoise_invariant(self.sample, denoiser, stride=self.settings["stride"])
        mse = float(np.mean((invariant - self.sample) ** 2))
        self.scores.append((family, strength, mse))
        if mse < self.best_mse:
            self.best_mse, self.best_invariant = mse, invariant
        return mse

    def countdown(self) -> Countdown:
        """Candidates scored and blocks denoised, of all there are."""
        blocks = count_blocks(self.image.shape, BLOCK)
        return Countdown(len(self.scores) + self.blocks_done, len(self.candidates) + blocks, "candidates and blocks")

    def preview(self) -> torch.Tensor:
        if self.final is not None:
            return torch.from_numpy(self.final)
        if self.best_invariant is not None and self.best_invariant.shape == self.image.shape:
            return torch.from_numpy(self.best_invariant)
        return self.noisy[0, 0]

    def result(self) -> torch.Tensor:
        return self.preview()
