"""The denoising methods the engine can train, by name."""

from __future__ import annotations

from napari_noise2fast.engine import Method
from napari_noise2fast.methods.noise2fast import Noise2Fast

METHODS: dict[str, type[Method]] = {Noise2Fast.name: Noise2Fast}


def get_method(name: str) -> type[Method]:
    """The method class registered under ``name``."""
    try:
        return METHODS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}") from None
