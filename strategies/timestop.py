"""The ``zscore_timestop`` strategy: the zscore rules plus a time stop.

Entries, exits and the stop are exactly the ``zscore`` rules. In addition, a position held for
``max_hold_half_lives`` x the spread's half-life (in bars) is closed and, like a stop, blocks
re-entry until |z| < entry (otherwise it would re-enter on the next bar). The half-life is
estimated at the entry bar from past data only: an expanding-window OLS of
``spread_t - spread_{t-1}`` on ``spread_{t-1}`` (with intercept) over every bar so far with
both spreads finite; half-life = -ln 2 / ln(1 + slope) bars (as ``engine.stats.half_life``),
infinite unless -1 < slope < 0 or with fewer than 2 pairs (no time stop for that trade). An exit
and a stop take precedence over the time stop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.config import StrategyConfig
from engine.errors import ConfigError
from strategies.base import Strategy
from strategies.zscore import BLOCKED, POS, bands, zscore_decide

# state layout after POS, BLOCKED
BAR = 2  # index of the current bar (bars seen so far - 1)
ENTRY_BAR = 3  # decision bar of the open position's entry
MAX_HOLD = 4  # bars the open position may be held
N = 5  # pairs (spread_{t-1}, diff_t) seen by the half-life fit
MEAN_X = 6  # running mean of spread_{t-1}
MEAN_Y = 7  # running mean of diff_t
CXX = 8  # running sum of squared deviations of spread_{t-1}
CXY = 9  # running co-moment of spread_{t-1} and diff_t
PREV = 10  # the previous bar's spread (NaN when unknown)
#: a fresh state: flat, no bar seen, no spread yet, no time limit
INITIAL_STATE = (0.0, 0.0, -1.0, 0.0, math.inf, 0.0, 0.0, 0.0, 0.0, 0.0, math.nan)


@njit(cache=True)
def half_life_update(state: np.ndarray, spread: float) -> None:
    """Add ``spread`` to the expanding AR(1) fit kept in ``state`` (Welford co-moments)."""
    prev = state[PREV]
    if math.isfinite(spread) and math.isfinite(prev):
        x = prev
        y = spread - prev
        n = state[N] + 1.0
        dx = x - state[MEAN_X]
        state[MEAN_X] += dx / n
        state[MEAN_Y] += (y - state[MEAN_Y]) / n
        state[CXX] += dx * (x - state[MEAN_X])
        state[CXY] += dx * (y - state[MEAN_Y])
        state[N] = n
    state[PREV] = spread


@njit(cache=True)
def half_life_bars(state: np.ndarray) -> float:
    """Half-life (bars) from the fit in ``state``: -ln 2 / ln(1 + slope); inf unless
    -1 < slope < 0 and at least 2 pairs were seen.

    Oracle: statsmodels OLS of diff on [1, lagged spread] in
    tests/strategies/test_timestop_strategy.py.
    """
    if state[N] < 2.0 or not state[CXX] > 0.0:
        return math.inf
    slope = state[CXY] / state[CXX]
    if -1.0 < slope < 0.0:
        return -math.log(2.0) / math.log1p(slope)
    return math.inf


@njit(cache=True)
def timestop_step(
    state: np.ndarray,
    z: float,
    spread: float,
    entry: float,
    exit_: float,
    stop: float,
    max_half_lives: float,
) -> int:
    """Advance ``state`` by one bar (zscore rules + time stop); returns the target position."""
    state[BAR] += 1.0
    half_life_update(state, spread)
    pos = int(state[POS])
    new_pos, blocked = zscore_decide(pos, state[BLOCKED] != 0.0, z, entry, exit_, stop)
    held = state[BAR] - state[ENTRY_BAR]
    if not math.isnan(z) and pos != 0 and new_pos == pos and held >= state[MAX_HOLD]:
        new_pos = 0
        blocked = True
    if pos == 0 and new_pos != 0:
        state[ENTRY_BAR] = state[BAR]
        state[MAX_HOLD] = max_half_lives * half_life_bars(state)
    state[POS] = new_pos
    state[BLOCKED] = 1.0 if blocked else 0.0
    return new_pos


@njit(cache=True)
def timestop_run(
    state: np.ndarray,
    z: np.ndarray,
    spread: np.ndarray,
    entry: float,
    exit_: float,
    stop: float,
    max_half_lives: float,
    out: np.ndarray,
) -> None:
    """``timestop_step`` over every bar, positions into ``out`` (int8)."""
    for i in range(z.shape[0]):
        out[i] = timestop_step(state, z[i], spread[i], entry, exit_, stop, max_half_lives)


@njit(cache=True)
def timestop_step_many(
    states: np.ndarray,
    z: np.ndarray,
    spread: np.ndarray,
    mask: np.ndarray,
    entry: float,
    exit_: float,
    stop: float,
    max_half_lives: float,
    out: np.ndarray,
) -> None:
    """``timestop_step`` on each row i of ``states`` with ``mask[i]``; every row's position into
    ``out`` (int8). Oracle: ``timestop_step`` per row, in tests/strategies/test_step_many.py."""
    for i in range(states.shape[0]):
        if mask[i]:
            out[i] = timestop_step(states[i], z[i], spread[i], entry, exit_, stop, max_half_lives)
        else:
            out[i] = int(states[i, POS])


class TimeStopStrategy(Strategy):
    """zscore rules plus a time stop after k half-lives (``name: zscore_timestop``).

    ``step``/``run`` need the spread as well as z (the half-life is fitted on the spread).
    """

    name = "zscore_timestop"
    _initial_state = INITIAL_STATE

    def __init__(self, config: StrategyConfig) -> None:
        if config.max_hold_half_lives is None:
            raise ConfigError(
                "strategy.max_hold_half_lives: required by zscore_timestop (a positive number "
                "of half-lives); set it or use name: zscore"
            )
        super().__init__(config)
        self._args = (*bands(config), float(config.max_hold_half_lives))

    @property
    def half_life(self) -> float:
        """The current half-life estimate in bars (inf when unknown or not reverting)."""
        return float(half_life_bars(self._state))

    def _step(self, state: np.ndarray, z: float, spread: float) -> int:
        return timestop_step(state, z, spread, *self._args)

    def _run(self, state: np.ndarray, z: np.ndarray, spread: np.ndarray, out: np.ndarray) -> None:
        timestop_run(state, z, spread, *self._args, out)

    def _step_many(
        self,
        states: np.ndarray,
        z: np.ndarray,
        spread: np.ndarray,
        mask: np.ndarray,
        out: np.ndarray,
    ) -> None:
        timestop_step_many(states, z, spread, mask, *self._args, out)
