"""Argument checks shared by the API, the engine and the methods: a ValueError naming the argument.

A wrong type is refused, never coerced: ``True`` is not an integer here, ``1.5``
is not a channel axis, ``"3"`` is not a step count. NumPy integer and
floating-point scalars count as integers and reals.
"""

from __future__ import annotations

import math
from numbers import Integral, Real


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def check_int(name: str, value, *, minimum: int | None = None, allow_none: bool = True) -> int | None:
    """``value`` as an int; ValueError unless it is an integer (not a bool) of at least ``minimum``."""
    if value is None and allow_none:
        return None
    if _is_bool(value) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer{' or None' if allow_none else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_positive_or_none(name: str, value) -> None:
    """ValueError unless ``value`` is None or a positive integer."""
    if value is not None and (_is_bool(value) or not isinstance(value, Integral) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def check_real(name: str, value, *, positive: bool = False, allow_none: bool = True) -> float | None:
    """``value`` as a float; ValueError unless it is a finite real number (not a bool), > 0 if ``positive``."""
    if value is None and allow_none:
        return None
    if _is_bool(value) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{' or None' if allow_none else ''}, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return float(value)


def check_str(name: str, value, *, allow_none: bool = True) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    if not _is_bool(value):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_settings(owner: str, settings: dict, defaults: dict) -> None:
    """Each of ``settings`` of the type of its default: bool, int, float (ints accepted) or str.

    A default of None (an optional number such as a time budget) takes a positive real.
    """
    for key, value in settings.items():
        default = defaults[key]
        label = f"{owner} parameter {key!r}"
        if value is None:
            continue
        if _is_bool(default):
            check_bool(label, value)
        elif isinstance(default, int):
            check_int(label, value)
        elif isinstance(default, float) or default is None:
            check_real(label, value, positive=default is None)
        elif isinstance(default, str):
            check_str(label, value)
