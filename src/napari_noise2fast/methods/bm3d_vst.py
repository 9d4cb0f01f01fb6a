"""BM3D with a blindly estimated noise model: the classical bar (optional).

Needs the ``bm3d`` package from PyPI, which is **free for non-commercial use
only**; it is an optional extra (``pip install napari-noise2fast[bm3d]``) and
this method says so when it is missing.

The noise model is fitted from the plane alone: the local mean in 7x7 windows
and the local noise variance (the mean square, in the same windows, of each
pixel minus the mean of its four neighbours, divided by 1.25, so that texture
counts little), binned by mean, give a straight line ``variance = gain * mean
+ read`` (a fit through the bins' median variances). When the signal-
dependent part matters (``gain * median intensity`` is at least a quarter of
``read``; Poisson-Gaussian data such as fluorescence), a generalised Anscombe
transform makes the noise variance about 1, BM3D runs at sigma 1, and the
algebraic inverse maps back. Otherwise BM3D runs on the plane with sigma from
``skimage.restoration.estimate_sigma``.

On planes up to ``BLOCK`` on a side one engine step does it all. Larger planes
fit the noise model on the plane's centre (``FIT_SIDE`` square) and run BM3D
block-wise (``BLOCK`` square with ``MARGIN`` pixels of context on each side,
more than its 39x39 search window reaches), one engine step per block, so that
memory stays that of a block and Stop takes effect between blocks; the blocks'
results differ from one pass over the whole plane only where a block match
would have come from beyond the margin.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from skimage.restoration import estimate_sigma

from napari_noise2fast.engine import Countdown, Method
from napari_noise2fast.tiling import apply_in_blocks, central_crop, count_blocks

VSTS = ("auto", "anscombe", "none")
WINDOW = 7
BINS = 32
# The bm3d package (4.0.3) kills the process with a segmentation fault on an image of exactly 8x8 pixels
# and raises on smaller ones; 8x9 up to 64x64 were measured fine. Planes under this size on a side are
# padded (mirrored) to it, denoised, and cropped back.
SAFE_SIZE = 16
BLOCK, MARGIN, FIT_SIDE = 1024, 48, 1024


def fit_noise(image: np.ndarray, clamp: bool = True) -> tuple[float, float]:
    """(gain, read) of ``variance = gain * mean + read`` from 7x7 local statistics, blind; with ``clamp``
    (what the transform needs) gain at least 0 and read above 0, else the line as fitted (a camera's offset
    makes read negative)."""
    image = np.asarray(image, dtype=np.float64)
    mean = uniform_filter(image, WINDOW, mode="reflect")
    # the noise, not the texture: a pixel minus the mean of its 4 neighbours has 1.25 x the noise variance
    neighbours = (np.roll(image, 1, 0) + np.roll(image, -1, 0) + np.roll(image, 1, 1) + np.roll(image, -1, 1)) / 4
    residual = (image - neighbours)[1:-1, 1:-1]
    variance = uniform_filter(residual**2, WINDOW, mode="reflect") / 1.25
    mean = mean[1:-1, 1:-1]
    edges = np.quantile(mean, np.linspace(0.02, 0.98, BINS + 1))
    index = np.digitize(mean.ravel(), edges) - 1
    centres, medians = [], []
    for b in range(BINS):
        chosen = index == b
        if chosen.sum() >= 50:
            centres.append(mean.ravel()[chosen].mean())
            medians.append(np.median(variance.ravel()[chosen]))  # the median resists edges and texture
    if len(centres) < 2:
        return 0.0, float(np.median(variance))
    gain, read = np.polyfit(centres, medians, 1)
    return (max(float(gain), 0.0), max(float(read), 1e-12)) if clamp else (float(gain), float(read))


def anscombe(image: np.ndarray, gain: float, read: float) -> np.ndarray:
    """Generalised Anscombe transform: noise of ``gain * x + read`` variance becomes about unit variance."""
    return (2.0 / gain) * np.sqrt(np.maximum(gain * image + 0.375 * gain**2 + read, 0.0))


def inverse_anscombe(transformed: np.ndarray, gain: float, read: float) -> np.ndarray:
    """The algebraic inverse of :func:`anscombe`."""
    return ((gain * transformed / 2.0) ** 2 - 0.375 * gain**2 - read) / gain


def run_bm3d(image: np.ndarray, sigma: float) -> np.ndarray:
    """``bm3d.bm3d`` on a 2D float plane, single-threaded, mirrored up to ``SAFE_SIZE`` on a side first where
    it is smaller.

    With its own threads (``num_threads=0``) the package's aggregation adds in a varying order, so two runs
    on the same plane differ (measured here: about 3e-5 of the range on Set12, up to 0.7 % at one pixel
    of a nearly constant plane); one thread makes it repeatable, at about 1.2-1.3x its time (Set12 01,
    measured side by side on a 2-core Intel Xeon while the other core was busy).
    """
    bm3d = _bm3d_module()
    height, width = image.shape
    pad = ((0, max(SAFE_SIZE - height, 0)), (0, max(SAFE_SIZE - width, 0)))
    padded = np.pad(image, pad, mode="symmetric") if any(after for _, after in pad) else image
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    return np.asarray(bm3d.bm3d(padded, sigma_psd=sigma, profile=profile))[:height, :width]


def _bm3d_module():
    try:
        import bm3d
    except ImportError:
        raise ValueError(
            "the bm3d method needs the optional 'bm3d' package (free for non-commercial use only): "
            "pip install 'napari-noise2fast[bm3d]'"
        ) from None
    return bm3d


class BM3D(Method):
    """BM3D (``bm3d`` package, optional) with a blind noise estimate and, for Poisson-Gaussian data, a VST.

    Parameters
    ----------
    vst : str
        ``"auto"`` (a generalised Anscombe transform when the fitted noise
        depends on the signal), ``"anscombe"`` (always) or ``"none"``.
    """

    name = "bm3d"
    display_name = "BM3D (optional)"

    @classmethod
    def check_params(cls, **params) -> dict:
        unknown = set(params) - {"vst"}
        if unknown:
            raise ValueError(f"unknown bm3d parameter(s) {sorted(unknown)}; known: ['vst']")
        vst = params.get("vst") or "auto"
        if not isinstance(vst, str) or vst not in VSTS:
            raise ValueError(f"vst must be one of {list(VSTS)}, got {vst!r}")
        _bm3d_module()
        return {"vst": vst}

    def __init__(self, noisy, *, rng, level, warm=None, **params):
        super().__init__(noisy, rng=rng, level=level, warm=warm)
        self.settings = self.check_params(**params)
        self.image = noisy[0, 0].detach().to("cpu").numpy()
        self.output: np.ndarray | None = None
        self.model: dict = {}
        self.blocks = None
        self.blocks_done = 0

    def _denoiser(self):
        """Fit the noise model (on the centre of a large plane); the function that denoises a block."""
        sample = np.asarray(central_crop(self.image, FIT_SIDE), dtype=np.float64)
        gain, read = fit_noise(sample)
        median = float(np.median(sample))
        use_vst = self.settings["vst"] == "anscombe" or (
            self.settings["vst"] == "auto" and gain > 0 and gain * median >= 0.25 * read)
        if use_vst and gain > 0:
            self.model = {"vst": "anscombe", "gain": gain, "read": read}
            return lambda block: inverse_anscombe(run_bm3d(anscombe(block.astype(np.float64), gain, read), 1.0),
                                                  gain, read)
        sigma = max(float(estimate_sigma(sample)), 1e-6)
        self.model = {"vst": "none", "sigma": sigma}
        return lambda block: run_bm3d(block.astype(np.float64), sigma)

    def step(self) -> float | None:
        if self.blocks is None:
            self.blocks = apply_in_blocks(self._denoiser(), self.image, MARGIN, BLOCK)
        try:
            next(self.blocks)
            self.blocks_done += 1
            return None
        except StopIteration as finished:
            self.output = finished.value
        self.stop_reason = "complete"
        # no validation of its own: the MSE to the noisy plane
        return float(np.mean((self.output - self.image) ** 2, dtype=np.float64))

    def countdown(self) -> Countdown:
        """Blocks denoised, of all there are."""
        return Countdown(self.blocks_done, count_blocks(self.image.shape, BLOCK), "blocks")

    def preview(self) -> torch.Tensor:
        return self.noisy[0, 0] if self.output is None else torch.from_numpy(np.asarray(self.output))

    def result(self) -> torch.Tensor:
        return self.preview()
