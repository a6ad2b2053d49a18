"""Validation of the float series the analytics take: one place for the checks and their messages.

Used by the wrappers in ``engine.kalman``, ``engine.rolling`` and ``engine.stats``; each passes a
``hint`` that tells the caller what to do about NaN/inf values in its own context.
"""

from __future__ import annotations

import numpy as np

from engine.errors import DataError


def finite_1d(name: str, values: object, hint: str = "") -> np.ndarray:
    """A contiguous float64 1-D array of ``values`` (no copy when it already is one).

    Raises DataError naming ``name`` when the values are not numbers, not 1-D, or hold NaN/inf
    (that message counts them, gives the first index and ends with ``hint`` when given).
    """
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: expected a 1-D array of numbers ({exc})") from None
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = f"{name}: {int(bad.sum())} NaN/inf (non-finite) value(s), first at index"
        raise DataError(f"{where} {int(np.argmax(bad))}" + (f"; {hint}" if hint else ""))
    return arr
