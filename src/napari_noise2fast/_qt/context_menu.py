"""The layer list's right-click action "Denoise with Noise2Fast", registered through napari's app model.

napari >= 0.5 takes no npe2 contributions to ``napari/layers/context``, so the
action is registered at run time on napari's (private) app model when the
plugin activates (npe2 activates a plugin when one of its commands first runs:
a dock, a menu entry, a sample; napari offers no hook at its start, so the entry
is missing until then: Layers > Filter > Denoise > "Show in the layer right-click
menu" adds it and says so). If that private API moves, registration is skipped
quietly: the same command stays under Layers > Filter > Denoise.
"""

from __future__ import annotations

import logging

ACTION_ID = "napari-noise2fast.denoise_layer_context"
TITLE = "Denoise with Noise2Fast"
logger = logging.getLogger(__name__)


def register() -> bool:
    """Add the action to the layer context menu once; False (and a debug log) if napari does not allow it."""
    try:
        from app_model.expressions import parse_expression
        from app_model.types import Action
        from napari._app_model import get_app_model
        from napari.viewer import Viewer

        app = get_app_model()
        if ACTION_ID in app.commands:
            return True

        def callback(viewer: Viewer) -> None:
            from napari_noise2fast._qt.actions import denoise_with_defaults  # Qt only when the action runs

            denoise_with_defaults(viewer)

        app.register_action(Action(
            id=ACTION_ID,
            title=TITLE,
            callback=callback,
            menus=[{"id": "napari/layers/context", "group": "9_noise2fast",
                    "when": parse_expression("active_layer_type == 'image'")}],
        ))
        return True
    except Exception as error:  # a moved private API must not break the plugin
        logger.debug("Noise2Fast: layer context menu action not registered: %s", error)
        return False


def activate(context=None) -> None:
    """npe2 ``on_activate`` hook."""
    register()
