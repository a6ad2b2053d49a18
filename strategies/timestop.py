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
from strategies.base import Strategy, bands
from strategies.zscore import BLOCKED, POS, zscore_decide

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
def timestop_step(state: np.ndarray, z: float, spread: float, args: tuple) -> int:
    """Advance ``state`` by one bar (zscore rules + time stop); returns the target position.

    ``args``: (entry, exit, stop, max_hold_half_lives) with stop +inf when there is none."""
    entry, exit_, stop, max_half_lives = args
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


class TimeStopStrategy(Strategy):
    """zscore rules plus a time stop after k half-lives (``name: zscore_timestop``).

    ``step``/``run`` need the spread as well as z (the half-life is fitted on the spread).
    """

    name = "zscore_timestop"
    initial_state = INITIAL_STATE
    kernel = timestop_step

    def __init__(self, config: StrategyConfig) -> None:
        if config.max_hold_half_lives is None:
            raise ConfigError(
                "strategy.max_hold_half_lives: required by zscore_timestop (a positive number "
                "of half-lives); set it or use name: zscore"
            )
        super().__init__(config)

    def kernel_args(self) -> tuple:
        """(entry, exit, stop, max_hold_half_lives), stop +inf when None."""
        return (*bands(self.config), float(self.config.max_hold_half_lives))

    @property
    def half_life(self) -> float:
        """The current half-life estimate in bars (inf when unknown or not reverting)."""
        return float(half_life_bars(self._state))
