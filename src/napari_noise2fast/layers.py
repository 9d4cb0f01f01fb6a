"""Denoise a napari ``Image`` layer (or an array) from a script: layer data in, layer data out.

No napari import is needed: a layer is read through its attributes, and the
result is a ``(data, metadata, "image")`` tuple that napari turns into a layer::

    viewer = napari.Viewer(show=False)            # or napari.components.ViewerModel()
    layer = viewer.add_image(noisy, scale=(0.2, 0.2))
    data, meta, kind = denoise_layer(layer, seed=0)
    viewer.add_image(data, **meta)
"""

from __future__ import annotations

import numpy as np

from napari_noise2fast.names import method_key, short_name


def output_name(input_name: str, method: str = "noise2fast") -> str:
    """``"<input name> [Noise2Fast]"``: the name of the layer a run writes to (the method's short name, so that
    it fits napari's layer list)."""
    return f"{input_name} [{short_name(method)}]"


def layer_settings(layer) -> dict:
    """How to read a layer's data: RGB(A) layers are denoised per channel."""
    return {"channel_axis": -1} if getattr(layer, "rgb", False) else {}


MARK = "napari_noise2fast"  # the key in an output layer's metadata that says what made it


def output_metadata(layer, method: str = "noise2fast") -> dict:
    """Metadata for the output layer: the input's name + method, scale, translate, contrast limits (the
    output is float32, RGB included, shown with the input's limits), and a mark saying what made it."""
    name = getattr(layer, "name", "image")
    return {
        "name": output_name(name, method),
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rgb": bool(getattr(layer, "rgb", False)),
        "contrast_limits": tuple(layer.contrast_limits),
        "metadata": {MARK: {"source": name, "method": method_key(method)}},
    }


def made_by_plugin(layer) -> dict | None:
    """What made ``layer`` (``{"source": input name, "method": name}``) if it is an output of this plugin."""
    mark = getattr(layer, "metadata", {}).get(MARK)
    return mark if isinstance(mark, dict) else None


def denoise_layer(layer_or_array, method: str = "noise2fast", **kwargs) -> tuple[np.ndarray, dict, str]:
    """Denoise an ``Image`` layer (or an array) and return napari layer data.

    Parameters
    ----------
    layer_or_array : napari.layers.Image or array_like
        The input; a layer's data is never modified (lazy dask data is read once).
    method : str
        The method's name.
    **kwargs
        Passed to :func:`napari_noise2fast.denoise` (``seed``, ``max_steps``,
        ``device``, ``preset``, ...).

    Returns
    -------
    tuple
        ``(data, metadata, "image")``: ``metadata`` carries the name
        ``"<input name> [Noise2Fast]"`` and the input's scale, translate and
        contrast limits, so ``viewer.add_image(data, **metadata)`` lines it up.
    """
    from napari_noise2fast.api import denoise  # torch only when something is denoised

    if hasattr(layer_or_array, "data") and hasattr(layer_or_array, "scale"):
        layer = layer_or_array
        data = np.asarray(layer.data)
        meta = output_metadata(layer, method)
        kwargs = {**layer_settings(layer), **kwargs}
    else:
        data = np.asarray(layer_or_array)
        meta = {"name": output_name("image", method)}
    return denoise(data, method, **kwargs), meta, "image"
