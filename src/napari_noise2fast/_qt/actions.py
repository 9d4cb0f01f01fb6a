"""One-click actions (Layers > Filter > Denoise, and the layer list's right-click menu).

Both open the dock widget, pick the layer there and start a run with what the
dock shows (method, settings, scope; the defaults the first time), so the
validation curve is visible and what runs is what the dock says; the widget
owns the worker. An output of this plugin is not denoised from here: the
action says so and points at its input.
"""

from __future__ import annotations

from napari.layers import Image
from napari.utils.notifications import show_info, show_warning
from napari.viewer import Viewer

from napari_noise2fast.layers import made_by_plugin

PLUGIN, WIDGET = "napari-noise2fast", "Noise2Fast"


def open_widget(viewer: Viewer):
    """The plugin's dock widget in ``viewer``, docked if it was not yet (in a tab with the comparison dock where
    that is open)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET, tabify=True)
    return widget


def denoise_with_defaults(viewer: Viewer, layer: Image | None = None):
    """Denoise ``layer`` (default: the active layer) with the dock's settings, shown in the dock widget; returns
    the worker, or None where the run waits for torch to load (the first run after opening the dock)."""
    layer = layer if layer is not None else viewer.layers.selection.active
    if not isinstance(layer, Image):
        show_warning("Noise2Fast: select an image layer first.")
        return None
    made_by = made_by_plugin(layer)
    if made_by is not None:
        show_warning(f"Noise2Fast: {layer.name!r} is an output of this plugin; select its input "
                     f"{made_by['source']!r} (or pick the output in the dock to denoise it again).")
        return None
    return open_widget(viewer).start_when_warm(layer)  # the viewer stays live while torch loads


def show_in_context_menu(viewer: Viewer | None = None) -> bool:
    """Layers > Filter > Denoise > "Show in the layer right-click menu": put "Denoise with Noise2Fast" in the
    layer list's right-click menu now, and say why it was not there.

    napari lets plugins add to that menu only from their own code, which napari runs once one of the plugin's
    commands has run (a dock, a menu entry, a sample): so the entry appears from then on, not at napari's start.
    """
    from napari_noise2fast._qt.context_menu import TITLE, register

    added = register()
    if added:
        show_info(f"Noise2Fast: right-click an image layer in the layer list for {TITLE!r}. napari lets a plugin add "
                  "to that menu only once the plugin has started (any of its docks, menu entries or samples), "
                  "so the entry appears from then on in each napari session.")
    else:
        show_info("Noise2Fast: this napari version does not let plugins add to the layer list's right-click menu; "
                  "use Layers > Filter > Denoise instead.")
    return added
