"""The denoising methods the engine can train, by name."""

from __future__ import annotations

from napari_noise2fast.engine import Method
from napari_noise2fast.methods.bm3d_vst import BM3D
from napari_noise2fast.methods.calibrated import Calibrated
from napari_noise2fast.methods.noise2fast import Noise2Fast
from napari_noise2fast.methods.noise2self import Noise2Self
from napari_noise2fast.methods.noise2void import Noise2Void
from napari_noise2fast.methods.noise_net import NoiseNet
from napari_noise2fast.methods.pn2v import PN2V
from napari_noise2fast.methods.self2self import Self2Self
from napari_noise2fast.methods.zs_n2n import ZeroShotNoise2Noise

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (Noise2Fast, Self2Self, ZeroShotNoise2Noise, Noise2Self, Noise2Void, PN2V, NoiseNet, Calibrated,
                BM3D)
}


def get_method(name: str) -> type[Method]:
    """The method class registered under ``name``."""
    try:
        return METHODS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}") from None
