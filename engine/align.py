"""THE alignment rule of two legs (docs/semantics.md "Pair and backtest semantics", Alignment).

A pair steps on every interval in which at least one leg traded, once both legs have traded at
least once; a leg with no bar in that interval carries its last close forward. Two forms:

- batch: ``align_bars(bars_y, bars_x) -> Aligned`` over whole bar arrays (backtests, the UI);
- streaming: ``LiveAlign`` for many pairs at once, fed one bar time at a time with the closes
  of every symbol at that time (the PairBook); a numba kernel ``_pick`` does the work.

Fed bar by bar, the streaming form gives exactly ``align_bars``' rows (times, carried closes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from engine.errors import DataError
from engine.schemas import as_bar_records


@dataclass(frozen=True)
class Aligned:
    """Two legs on the union of their bar times (ms), from the first time both have traded.

    A leg without a bar at ``ts`` carries its last close forward, which also stands in for its
    open; ``has_y``/``has_x`` say which leg really had a bar.
    """

    ts: np.ndarray
    open_y: np.ndarray
    close_y: np.ndarray
    open_x: np.ndarray
    close_x: np.ndarray
    has_y: np.ndarray
    has_x: np.ndarray


def _bars(name: str, bars: Any) -> np.ndarray:
    bars = as_bar_records(name, bars)
    ts = bars["ts"]
    if ts.size > 1 and not (np.diff(ts) > 0).all():
        raise DataError(f"{name}: bar times must be strictly increasing")
    for field in ("open", "close"):
        if not np.isfinite(bars[field]).all():
            raise DataError(f"{name}: {field} prices must be finite")
    return bars


def _leg_on(ts: np.ndarray, bars: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(open, close, has) of one leg at times ``ts`` (each >= the leg's first bar)."""
    idx = np.searchsorted(bars["ts"], ts, side="right") - 1
    has = bars["ts"][idx] == ts
    close = bars["close"][idx]
    return np.where(has, bars["open"][idx], close), close, has


def align_bars(bars_y: Any, bars_x: Any) -> Aligned:
    """Align two legs' bars (BAR_DTYPE arrays or BAR_SCHEMA tables) as docs/semantics.md says."""
    by = _bars("bars_y", bars_y)
    bx = _bars("bars_x", bars_x)
    if by.size == 0 or bx.size == 0:
        ts = np.empty(0, dtype=np.int64)
        empty = np.empty(0)
        none = np.empty(0, dtype=bool)
        return Aligned(ts, empty, empty.copy(), empty.copy(), empty.copy(), none, none.copy())
    ts = np.union1d(by["ts"], bx["ts"])
    ts = ts[ts >= max(by["ts"][0], bx["ts"][0])]
    open_y, close_y, has_y = _leg_on(ts, by)
    open_x, close_x, has_x = _leg_on(ts, bx)
    return Aligned(ts, open_y, close_y, open_x, close_x, has_y, has_x)


# ---------------------------------------------------------------- streaming


@njit(cache=True)
def _pick(col, iy, ix, next_t, limit, t, last_y, last_x, mask):
    """Pairs stepping at bar time ``t``: ``mask[i]`` when t is in [next_t[i], limit[i]], a leg
    has a bar at t (``col[leg]`` not NaN: ``last_y``/``last_x`` take it) and both legs have a
    close by now. Returns whether any pair steps. Oracle: ``align_bars`` (the test feeds it bar
    by bar and compares the rows)."""
    some = False
    for i in range(mask.shape[0]):
        m = False
        if next_t[i] <= t and t <= limit[i]:
            cy, cx = col[iy[i]], col[ix[i]]
            has_y, has_x = not np.isnan(cy), not np.isnan(cx)
            if has_y:
                last_y[i] = cy
            if has_x:
                last_x[i] = cx
            m = (has_y or has_x) and not np.isnan(last_y[i]) and not np.isnan(last_x[i])
        mask[i] = m
        some |= m
    return some


class LiveAlign:
    """Streaming alignment of many pairs over a shared list of symbols.

    ``iy[i]``/``ix[i]``: the symbol indices of pair i's legs. ``last_y``/``last_x``: each pair's
    last close of each leg (raw price, NaN until the leg's first bar), carried forward.
    """

    def __init__(self, iy: np.ndarray, ix: np.ndarray):
        self.iy = np.ascontiguousarray(iy, dtype=np.intp)
        self.ix = np.ascontiguousarray(ix, dtype=np.intp)
        if self.iy.shape != self.ix.shape or self.iy.ndim != 1:
            raise DataError(f"iy and ix must be 1-D of one length, got {iy.shape} and {ix.shape}")
        n = self.iy.shape[0]
        self.last_y = np.full(n, np.nan)
        self.last_x = np.full(n, np.nan)
        self.mask = np.zeros(n, dtype=bool)

    def step(self, t: int, closes: np.ndarray, next_t: np.ndarray, limit: np.ndarray) -> bool:
        """Bar time ``t`` (ms) with ``closes[k]`` the close of symbol k's bar at t (NaN: none).

        Only pairs with t in [next_t[i], limit[i]] (int64 ms) look at it. Sets ``mask`` to the
        pairs that step at t (their ``last_y``/``last_x`` are then the aligned closes) and
        returns whether any does. Times must come in increasing order per pair.
        """
        return _pick(closes, self.iy, self.ix, next_t, limit, t, self.last_y, self.last_x,
                     self.mask)  # fmt: skip
