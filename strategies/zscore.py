"""The ``zscore`` strategy (docs/semantics.md "Pair and backtest semantics").

No signal while z is NaN. Flat: short spread when entry < z (<= stop), long spread when
z < -entry (>= -stop). A long exits when z >= -exit, a short when z <= exit. In a position,
|z| > stop closes it and blocks re-entry until |z| < entry; a bar where both the exit rule and
the stop hold is an exit and blocks nothing. One action per bar: a bar that exits does not enter.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from strategies.base import Strategy

# state layout shared by the z-score strategies
POS = 0  # current target position
BLOCKED = 1  # 1.0 while re-entry is blocked after a stop


@njit(cache=True)
def zscore_decide(pos: int, blocked: bool, z: float, entry: float, exit_: float, stop: float):
    """One bar of the zscore rules -> (new position, new blocked flag).

    ``stop`` is +inf when there is none. Oracle: the plain-Python rule loop written from
    docs/semantics.md in tests/strategies/test_zscore.py.
    """
    if math.isnan(z):
        return pos, blocked
    if pos == 0:
        if blocked:
            # |z| < entry lifts the block; no entry is possible on such a bar anyway
            return 0, not (abs(z) < entry)
        if entry < z <= stop:
            return -1, False
        if -stop <= z < -entry:
            return 1, False
        return 0, False
    exits = z >= -exit_ if pos > 0 else z <= exit_
    if exits:
        return 0, False
    if abs(z) > stop:
        return 0, True
    return pos, False


@njit(cache=True)
def zscore_step(state: np.ndarray, z: float, spread: float, args: tuple) -> int:
    """Advance ``state`` [position, blocked] by one bar; returns the target position.

    ``args``: (entry, exit, stop) with stop +inf when there is none; the spread is not used."""
    entry, exit_, stop = args
    pos, blocked = zscore_decide(int(state[POS]), state[BLOCKED] != 0.0, z, entry, exit_, stop)
    state[POS] = pos
    state[BLOCKED] = 1.0 if blocked else 0.0
    return pos


class ZScoreStrategy(Strategy):
    """Mean reversion on the z-score with entry/exit/stop bands (``name: zscore``)."""

    name = "zscore"
    initial_state = (0.0, 0.0)
    kernel = zscore_step
