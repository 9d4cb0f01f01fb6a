"""The napari side: the two docks, their shared base, the menu and right-click actions.

Everything here is a thin client of the engine's events (:mod:`napari_noise2fast.engine`); nothing
outside this package imports Qt or napari.
"""
