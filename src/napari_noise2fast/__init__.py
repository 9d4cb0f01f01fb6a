"""Blind zero-shot denoising with Noise2Fast, for napari and for scripts.

The public names are imported on first use (PEP 562), so that importing a light part of the package (the
napari sample data, the layer helpers, the dock before its first run) does not load torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_PUBLIC = {
    "DenoiseJob": "napari_noise2fast.api",
    "denoise": "napari_noise2fast.api",
    "iter_denoise": "napari_noise2fast.api",
    "Comparison": "napari_noise2fast.comparison",
    "compare": "napari_noise2fast.comparison",
    "iter_compare": "napari_noise2fast.comparison",
    "Event": "napari_noise2fast.engine",
    "NoiseModel": "napari_noise2fast.noise",
    "estimate_noise": "napari_noise2fast.noise",
    "PlaneRun": "napari_noise2fast.engine",
}
__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_noise2fast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
