"""A plane's intensities onto [0, 1] and back, range-safe, and casts that never wrap around.

The engine trains on every plane normalised to [0, 1] and keeps its results in
that form (float32), with the plane's :class:`IntensityMap` to map them back
when they are asked for. The map works on halves (``x / 2 - min / 2``), so it
stays finite for any finite range, even one such as +-1e308 whose width
overflows float64. Casts to an integer dtype are done in float64, rounded, and
clipped to the input's own value range (inside the dtype's), so no value
wraps around near a dtype's maximum.
"""

from __future__ import annotations

import numpy as np


def float_max(dtype) -> float:
    """The largest finite value of a floating-point ``dtype``."""
    return float(np.finfo(dtype).max)


def to_integers(values: np.ndarray, dtype: np.dtype, low: int, high: int) -> np.ndarray:
    """``values`` rounded and clipped to ``[low, high]`` (integers that ``dtype`` holds), in ``dtype``.

    The clip bounds are compared in float64 and the values at them written as
    exact integers, so a bound that float64 cannot hold exactly (2**63 - 1) does
    not overflow the cast.
    """
    rounded = np.rint(np.asarray(values, dtype=np.float64))
    result = np.empty(rounded.shape, dtype=dtype)
    top, bottom = rounded >= float(high), rounded <= float(low)
    middle = ~(top | bottom)
    result[middle] = rounded[middle].astype(dtype)
    result[top] = high
    result[bottom] = low
    return result


def integer_bounds(low, high, dtype: np.dtype) -> tuple[int, int]:
    """The integers of ``dtype`` inside ``[round(low), round(high)]``; ValueError if there are none."""
    info = np.iinfo(dtype)
    lo = int(low) if isinstance(low, np.integer) else round(float(low))
    hi = int(high) if isinstance(high, np.integer) else round(float(high))
    lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
    if lo > hi:
        raise ValueError(f"dtype {dtype} cannot hold the image's values (from {low} to {high}); "
                         "ask for another dtype")
    return lo, hi


def cast(values: np.ndarray, dtype: np.dtype, low, high) -> np.ndarray:
    """Float ``values`` in ``dtype``: integers rounded and clipped to the input's range ``[low, high]``,
    floats clipped to the dtype's finite range (a finite input never gives Inf)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return to_integers(values, dtype, *integer_bounds(low, high, dtype))
    limit = float_max(dtype)
    return np.clip(np.asarray(values, dtype=np.float64), -limit, limit).astype(dtype)


def plane_values(plane: np.ndarray, normalised, plane_map, dtype: np.dtype, low, high) -> np.ndarray:
    """A plane's result in ``dtype``, integers clipped to ``[low, high]``: ``normalised`` mapped back by
    ``plane_map``, or for ``normalised`` None (a constant plane) the ``plane`` itself."""
    if normalised is None:
        return plane if plane.dtype == np.dtype(dtype) else cast(plane, dtype, low, high)
    return plane_map.back(normalised, dtype, low, high)


class IntensityMap:
    """The affine map of one plane onto [0, 1] (its minimum to 0, its maximum to 1) and back.

    ``low`` and ``high`` are the plane's minimum and maximum in its own dtype.
    A constant plane maps to zeros and back to its own value.
    """

    def __init__(self, plane: np.ndarray):
        plane = np.asarray(plane)
        self.dtype = plane.dtype
        self.low, self.high = plane.min(), plane.max()
        self._half_low = float(self.low) / 2
        if self.dtype.kind in "ui":  # exact: int64 extremes a few units apart are one value in float64
            self._half_range = (int(self.high) - int(self.low)) / 2
        else:
            self._half_range = float(self.high) / 2 - self._half_low

    @property
    def small_integers(self) -> bool:
        """Integers of at most 16 bits: every value, the minimum and the range are exact in float32."""
        return self.dtype.kind in "ui" and self.dtype.itemsize <= 2

    @property
    def constant(self) -> bool:
        return bool(self.low == self.high)

    @property
    def range(self) -> float:
        """``high - low`` in float64 (Inf when the width overflows float64)."""
        return 2 * self._half_range

    def normalise(self, plane: np.ndarray) -> np.ndarray:
        """The plane in [0, 1], float32 (zeros for a constant plane)."""
        if self.constant:
            return np.zeros(np.shape(plane), dtype=np.float32)
        if self.small_integers:  # float32 throughout, with the very result of the float64 path below:
            # the difference is exact and a quotient of exact floats rounded twice (float64, then float32)
            # equals it rounded once
            result = np.asarray(plane).astype(np.float32)
            result -= np.float32(self.low)
            result /= np.float32(self.range)
            return result
        if self.dtype.kind in "ui":  # the exact difference to the minimum, modulo 2**64 in uint64
            offset = np.uint64(int(self.low) % 2**64)
            difference = (np.asarray(plane).astype(np.uint64) - offset).astype(np.float64)
            return np.clip(difference / (2 * self._half_range), 0.0, 1.0).astype(np.float32)
        halves = np.asarray(plane, dtype=np.float64) / 2
        return np.clip((halves - self._half_low) / self._half_range, 0.0, 1.0).astype(np.float32)

    def to_float64(self, normalised) -> np.ndarray:
        """Normalised values back in the plane's intensities, float64 (finite wherever the result is)."""
        values = np.asarray(normalised, dtype=np.float64)
        return (self._half_low + values * self._half_range) * 2

    def fits(self, dtype) -> bool:
        """Whether a float ``dtype`` holds the plane's whole range."""
        limit = float_max(dtype)
        return -limit <= float(self.low) and float(self.high) <= limit

    def display_dtype(self) -> np.dtype:
        """float32 for events, float64 where float32 cannot hold the plane's values."""
        return np.dtype(np.float32 if self.fits(np.float32) else np.float64)

    def back(self, normalised, dtype, low=None, high=None) -> np.ndarray:
        """Normalised values in ``dtype``; integer outputs stay inside ``[low, high]`` (default: the plane's)."""
        low = self.low if low is None else low
        high = self.high if high is None else high
        if self.small_integers and np.dtype(dtype) == np.float32:  # events' outputs: float32 throughout,
            result = np.array(normalised, dtype=np.float32)  # within an ulp of the float64 path
            result *= np.float32(self.range)
            result += np.float32(self.low)
            return result
        return cast(self.to_float64(normalised), dtype, low, high)
