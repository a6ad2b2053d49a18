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

from engine.config import StrategyConfig
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
def zscore_step(state: np.ndarray, z: float, entry: float, exit_: float, stop: float) -> int:
    """Advance ``state`` [position, blocked] by one bar; returns the target position."""
    pos, blocked = zscore_decide(int(state[POS]), state[BLOCKED] != 0.0, z, entry, exit_, stop)
    state[POS] = pos
    state[BLOCKED] = 1.0 if blocked else 0.0
    return pos


@njit(cache=True)
def zscore_run(
    state: np.ndarray, z: np.ndarray, entry: float, exit_: float, stop: float, out: np.ndarray
) -> None:
    """``zscore_step`` over every bar of ``z``, positions into ``out`` (int8)."""
    for i in range(z.shape[0]):
        out[i] = zscore_step(state, z[i], entry, exit_, stop)


@njit(cache=True)
def zscore_step_many(
    states: np.ndarray,
    z: np.ndarray,
    mask: np.ndarray,
    entry: float,
    exit_: float,
    stop: float,
    out: np.ndarray,
) -> None:
    """``zscore_step`` on each row i of ``states`` with ``mask[i]``; every row's position into
    ``out`` (int8). Oracle: ``zscore_step`` per row, in tests/strategies/test_step_many.py."""
    for i in range(states.shape[0]):
        if mask[i]:
            out[i] = zscore_step(states[i], z[i], entry, exit_, stop)
        else:
            out[i] = int(states[i, POS])


def bands(config: StrategyConfig) -> tuple[float, float, float]:
    """(entry, exit, stop) of a StrategyConfig as the kernels take them: stop +inf when None.

    The thresholds were checked by StrategyConfig (engine.config), the one place that does."""
    stop = math.inf if config.stop is None else float(config.stop)
    return float(config.entry), float(config.exit), stop


class ZScoreStrategy(Strategy):
    """Mean reversion on the z-score with entry/exit/stop bands (``name: zscore``)."""

    name = "zscore"
    _initial_state = (0.0, 0.0)

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self._args = bands(config)

    def _step(self, state: np.ndarray, z: float, spread: float) -> int:
        return zscore_step(state, z, *self._args)

    def _run(self, state: np.ndarray, z: np.ndarray, spread: np.ndarray, out: np.ndarray) -> None:
        zscore_run(state, z, *self._args, out)

    def _step_many(
        self,
        states: np.ndarray,
        z: np.ndarray,
        spread: np.ndarray,
        mask: np.ndarray,
        out: np.ndarray,
    ) -> None:
        zscore_step_many(states, z, mask, *self._args, out)
