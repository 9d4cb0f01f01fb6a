"""One-click actions (Layers > Filter > Denoise, and the layer list's right-click menu).

Both open the dock widget, so the validation curve is visible, and start a run
with the default settings on the whole layer; the widget owns the worker.
"""

from __future__ import annotations

from napari.layers import Image
from napari.utils.notifications import show_warning
from napari.viewer import Viewer

from napari_noise2fast._widget import DEFAULTS, WHOLE_LAYER

PLUGIN, WIDGET = "napari-noise2fast", "Noise2Fast"


def open_widget(viewer: Viewer):
    """The plugin's dock widget in ``viewer``, docked if it was not yet."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def denoise_with_defaults(viewer: Viewer, layer: Image | None = None):
    """Denoise ``layer`` (default: the active layer) with the default settings, shown in the dock widget."""
    layer = layer if layer is not None else viewer.layers.selection.active
    if not isinstance(layer, Image):
        show_warning("Noise2Fast: select an image layer first.")
        return None
    widget = open_widget(viewer)
    return widget.start(layer, settings=DEFAULTS, scope=WHOLE_LAYER)
