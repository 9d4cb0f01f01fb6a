"""The methods' and presets' names, for menus, layer names and tables, without importing torch or a method.

:mod:`napari_noise2fast.methods` holds the methods themselves; a test checks that the two agree.
"""

from __future__ import annotations

# method key -> the name shown in the docks and tables (each method class's ``display_name``)
METHOD_NAMES = {
    "noise2fast": "Noise2Fast",
    "self2self": "Self2Self",
    "zs-n2n": "ZS-N2N",
    "noise2self": "Noise2Self",
    "noise2void": "Noise2Void",
    "pn2v": "PN2V (bootstrapped)",
    "noise-net": "Noise network (Ollion)",
    "calibrated": "Calibrated classical",
    "bm3d": "BM3D (optional)",
}
# method key -> the short name in output layer names ("<input> [short]"), to fit napari's layer list
SHORT_NAMES = {**METHOD_NAMES, "pn2v": "PN2V", "noise-net": "Noise net", "calibrated": "Calibrated", "bm3d": "BM3D"}
PRESET_NAMES = ("fast", "reference")


def method_key(name: str) -> str:
    """The key of the method called ``name`` (any case); ValueError naming the choices otherwise."""
    key = name.lower() if isinstance(name, str) else None
    if key not in METHOD_NAMES:
        raise ValueError(f"method must be one of {sorted(METHOD_NAMES)}, got {name!r}")
    return key


def short_name(method: str) -> str:
    """The method's short name, as output layers carry it."""
    return SHORT_NAMES[method_key(method)]
