"""A fast first output: a Gaussian filter calibrated blindly by the J-invariant loss, then where it does better
total variation, calibrated the same way (:func:`refined_preview`).

Before a network has learned anything its outputs are worse than the noisy input,
so the engine first shows this classical estimate (well under a second on a
512x512 plane). Its width is chosen without any clean image: scikit-image's
``calibrate_denoiser`` masks a grid of pixels, smooths with each candidate
sigma, and keeps the sigma whose masked pixels best predict the noisy values
(Batson & Royer, 2019). That self-supervised loss estimates the error against
the clean image plus the noise variance, the same quantity Noise2Fast validates
with, so the two stages' validation PSNRs can be compared.

On planes larger than ``CALIBRATION_SIDE`` squared the sigma is calibrated on the
plane's centre (``CALIBRATION_SIDE`` x ``CALIBRATION_SIDE``) and the whole plane
is then filtered once in float32 (:func:`separable_gaussian`: SciPy's filter to
float32 rounding, faster), in tiles spread over as many threads as torch uses (the
same output as one whole-plane filtering), so that the first output of a 8192x8192
plane costs one filtering, not ten on float64 copies.

A method that validates on a subset of the plane (bounded Noise2Fast: tiles on structure) has the
preview scored again on that subset (:func:`invariant_loss`): a loss on the centre would not compare
with one on brighter, noisier tiles.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.filters import gaussian
from skimage.restoration import calibrate_denoiser, denoise_invariant, denoise_tv_chambolle, estimate_sigma

from napari_noise2fast.tiling import central_crop, filter_in_tiles, with_margin

SIGMAS = (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0)
CALIBRATION_SIDE = 512
# large planes are filtered in tiles of this side (in cache: 256 measured 1.3-2x as fast as 128 or 1024 on
# 8192x8192, one thread), in as many threads as torch uses
FILTER_TILE = 256
TRUNCATE = 4.0  # SciPy's default: the kernel reaches int(TRUNCATE * sigma + 0.5) pixels
# the refined preview (total variation): calibrated on the central REFINE_SIDE square (about half a second on one
# CPU thread), for planes up to REFINE_PIXELS (filtering the plane takes about a second at 1024x1024)
REFINE_SIDE = 256
REFINE_PIXELS = 1024 * 1024
TV_WEIGHTS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian(image, sigma=sigma, mode="reflect", preserve_range=True)


def calibrated_gaussian(plane: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Smooth a normalised 2D plane with the Gaussian that minimises the J-invariant loss.

    Parameters
    ----------
    plane : numpy.ndarray
        2D float array (normalised to [0, 1] by the engine).

    Returns
    -------
    output : numpy.ndarray
        The smoothed plane, float32.
    loss : float
        The self-supervised (J-invariant) mean squared error of the chosen sigma
        (on the centre where the plane is large).
    sigma : float
        The chosen sigma in pixels.
    """
    large = plane.size > CALIBRATION_SIDE**2
    sample = central_crop(plane, CALIBRATION_SIDE) if large else plane
    image = np.asarray(sample, dtype=np.float64)
    parameters = {"sigma": list(SIGMAS)}
    denoiser, (tested, losses) = calibrate_denoiser(image, _smooth, parameters, extra_output=True)
    best = int(np.argmin(losses))
    sigma = float(tested[best]["sigma"])
    if large:
        output = filter_in_tiles(lambda tile: separable_gaussian(tile, sigma), np.asarray(plane, dtype=np.float32),
                                 int(TRUNCATE * sigma + 0.5), FILTER_TILE, workers=torch.get_num_threads())
    else:
        output = denoiser(image).astype(np.float32)
    return output, float(losses[best]), sigma


def _total_variation(image: np.ndarray, weight: float) -> np.ndarray:
    return denoise_tv_chambolle(image, weight=weight)


def refined_preview(plane: np.ndarray, sigma: float) -> tuple[np.ndarray, float, float] | None:
    """A second classical estimate, total variation (Chambolle), where it beats the Gaussian of ``sigma``.

    On the plane's central ``REFINE_SIDE`` square, total variation's weight is calibrated by the J-invariant
    loss on one of the ``stride**2`` masks (weights ``TV_WEIGHTS`` times the blind noise estimate of
    ``estimate_sigma``; scikit-image's approximate loss), then the chosen weight and the Gaussian are scored
    alike, on all the masks (``denoise_invariant``). Where total variation's loss is lower, returns (the plane
    filtered with that weight, float32, its gain over the Gaussian in dB on that square, the weight); else None.
    Total variation keeps edges the Gaussian blurs.

    The two are compared on the same pixels: a total variation scored on one mask against a Gaussian scored
    on all of them (as before 2026-12-07) decided by which mask happened to be drawn. Measured
    (``benchmarks/preview_refinement.py``): chosen on all 12 Set12 images at sigma 25 (true gain 0.7-3.4 dB),
    on the noisy cell sample (+0.66 dB) and on the BPAE confocal image (-0.16 dB); not chosen on the FMD fish,
    where it would lose 1.09 dB.
    """
    sample = np.asarray(central_crop(plane, REFINE_SIDE), dtype=np.float64)
    noise = max(float(estimate_sigma(sample)), 1e-6)
    _, (tested, losses) = calibrate_denoiser(sample, _total_variation,
                                             {"weight": [scale * noise for scale in TV_WEIGHTS]}, extra_output=True)
    weight = float(tested[int(np.argmin(losses))]["weight"])
    refined_loss = _invariant_mse(sample, _total_variation, weight=weight)
    smooth_loss = _invariant_mse(sample, _smooth, sigma=sigma)
    if not refined_loss < smooth_loss:
        return None
    output = _total_variation(np.asarray(plane, dtype=np.float64), weight).astype(np.float32)
    return output, 10.0 * float(np.log10(smooth_loss / refined_loss)), weight


def _invariant_mse(image: np.ndarray, denoiser, **kwargs) -> float:
    """The J-invariant loss of ``denoiser(image, **kwargs)`` on every pixel (all the masks)."""
    return float(np.mean((denoise_invariant(image, denoiser, denoiser_kwargs=kwargs) - image) ** 2))


def separable_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """SciPy's ``gaussian_filter(image, sigma, mode="reflect", truncate=TRUNCATE)`` of a float32 2D image, in
    float32 (to about 1e-7 of a unit range): the same kernel applied along each axis as shifted slices added
    in place: 1.4-2.3x as fast as SciPy's line-by-line filter over a 8192x8192 plane in 256x256 tiles, one
    thread (Intel Xeon with AMX, sigma 0.5-3)."""
    radius = int(TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    height, width = image.shape
    padded = torch.from_numpy(np.pad(np.asarray(image, dtype=np.float32), radius, mode="symmetric"))  # "reflect"
    rows = torch.zeros((height + 2 * radius, width))
    for shift, weight in enumerate(weights.tolist()):
        rows.add_(padded[:, shift:shift + width], alpha=weight)
    output = torch.zeros((height, width))
    for shift, weight in enumerate(weights.tolist()):
        output.add_(rows[shift:shift + height], alpha=weight)
    return output.numpy()


def invariant_loss(plane: np.ndarray, sigma: float, regions) -> float:
    """The J-invariant loss of the Gaussian of ``sigma`` on the boxes ``regions`` of ``plane``.

    As :func:`calibrated_gaussian` scores a sigma (scikit-image's ``denoise_invariant``: each pixel predicted
    with itself masked out), but on the boxes ``(top, left, bottom, right)`` only, each cut with enough of its
    real surroundings that the masked filtering inside it does not see the cut's edge.
    """
    margin = int(TRUNCATE * sigma + 0.5) + 4  # the kernel's reach, plus the masks' stride
    total, count = 0.0, 0
    for box in regions:
        (rows, cols), inner = with_margin(tuple(box), plane.shape, margin)
        cut = np.asarray(plane[rows, cols], dtype=np.float64)
        masked = denoise_invariant(cut, _smooth, denoiser_kwargs={"sigma": sigma})
        error = masked[inner] - cut[inner]
        total += float(np.sum(error**2))
        count += error.size
    return total / count
