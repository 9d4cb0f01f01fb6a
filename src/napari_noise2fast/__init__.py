"""Blind zero-shot denoising with Noise2Fast, for napari and for scripts."""

from napari_noise2fast.api import DenoiseJob, denoise, iter_denoise
from napari_noise2fast.compare import Comparison, compare, iter_compare
from napari_noise2fast.engine import Event, PlaneRun

__version__ = "0.1.0"
__all__ = ["Comparison", "DenoiseJob", "Event", "PlaneRun", "compare", "denoise", "iter_compare", "iter_denoise",
           "__version__"]
