"""THE alignment rule of two legs (docs/semantics.md "Pair and backtest semantics", Alignment).

A pair steps on every interval in which at least one leg traded, once both legs have traded at
least once; a leg with no bar in that interval carries its last close forward, but only while its
last own bar is at most ``max_carry`` bars old (t - last own bar time <= max_carry * tf): on a
time where a leg's carried close is older, the pair does not step at all (the bar is dropped: no
z-score, no trade, not in any test). ``max_carry`` is ``analytics.max_carry`` ("auto":
``AUTO_MAX_CARRY`` of the timeframe), resolved to ms by ``max_carry_ms``. Two forms:

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

from engine.errors import ConfigError, DataError
from engine.schemas import TIMEFRAME_MS, as_bar_records

#: ``analytics.max_carry: auto`` in bars of each timeframe: about a minute of 1s bars, half an
#: hour to an hour of minute bars, a few bars of the coarse timeframes (a leg silent longer than
#: that is no longer priced by its last close)
AUTO_MAX_CARRY: dict[str, int] = {
    "1s": 60, "1m": 30, "3m": 20, "5m": 12, "15m": 4, "30m": 3, "1h": 3, "2h": 3, "4h": 3,
    "6h": 2, "8h": 2, "12h": 2, "1d": 2,
}  # fmt: skip

#: ``max_carry_ms`` of no limit (carried closes are used however old)
NO_CARRY_LIMIT = np.iinfo(np.int64).max


def max_carry_ms(max_carry: int | str, timeframe: str) -> int:
    """The carry limit in ms: ``max_carry`` bars (int >= 0, or "auto": ``AUTO_MAX_CARRY``) of
    ``timeframe``; capped at ``NO_CARRY_LIMIT``."""
    if timeframe not in TIMEFRAME_MS:
        raise DataError(f"timeframe {timeframe!r}: expected one of {list(TIMEFRAME_MS)}")
    if max_carry == "auto":
        max_carry = AUTO_MAX_CARRY[timeframe]
    if isinstance(max_carry, bool) or not isinstance(max_carry, (int, np.integer)) or max_carry < 0:
        raise ConfigError(f"analytics.max_carry: expected 'auto' or an int >= 0, got {max_carry!r}")
    return int(min(int(max_carry) * TIMEFRAME_MS[timeframe], NO_CARRY_LIMIT))


@dataclass(frozen=True)
class Aligned:
    """Two legs on the union of their bar times (ms), from the first time both have traded.

    A leg without a bar at ``ts`` carries its last close forward, which also stands in for its
    open; ``has_y``/``has_x`` say which leg really had a bar. Times where a leg's last own bar
    is older than the carry limit are left out: ``dropped`` counts them (``dropped_before[k]``:
    those between row k-1, or the start, and row k; the rest came after the last row);
    ``carried`` counts the rows kept where one leg carried its close.
    """

    ts: np.ndarray
    open_y: np.ndarray
    close_y: np.ndarray
    open_x: np.ndarray
    close_x: np.ndarray
    has_y: np.ndarray
    has_x: np.ndarray
    dropped_before: np.ndarray
    carried: int
    dropped: int


def _bars(name: str, bars: Any) -> np.ndarray:
    bars = as_bar_records(name, bars)
    ts = bars["ts"]
    if ts.size > 1 and not (np.diff(ts) > 0).all():
        raise DataError(f"{name}: bar times must be strictly increasing")
    for field in ("open", "close"):
        if not np.isfinite(bars[field]).all():
            raise DataError(f"{name}: {field} prices must be finite")
    return bars


def last_own(ts: np.ndarray, bar_ts: np.ndarray) -> np.ndarray:
    """Index of the last bar (times ``bar_ts``, increasing) at or before each of ``ts`` (each
    >= bar_ts[0])."""
    return np.searchsorted(bar_ts, ts, side="right") - 1


def fresh(ts: np.ndarray, own_ts: np.ndarray, limit_ms: int) -> np.ndarray:
    """THE carry test: True where a close last set at ``own_ts`` may stand in at ``ts``
    (ts - own_ts <= limit_ms, ms)."""
    return ts - own_ts <= limit_ms


def _leg_on(
    ts: np.ndarray, bars: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(open, close, has, own bar time) of one leg at times ``ts`` (each >= its first bar)."""
    idx = last_own(ts, bars["ts"])
    own = bars["ts"][idx]
    has = own == ts
    close = bars["close"][idx]
    return np.where(has, bars["open"][idx], close), close, has, own


def align_bars(bars_y: Any, bars_x: Any, limit_ms: int = NO_CARRY_LIMIT) -> Aligned:
    """Align two legs' bars (BAR_DTYPE arrays or BAR_SCHEMA tables) as docs/semantics.md says;
    ``limit_ms``: the carry limit (``max_carry_ms``; default: none)."""
    by = _bars("bars_y", bars_y)
    bx = _bars("bars_x", bars_x)
    if by.size == 0 or bx.size == 0:
        ts = np.empty(0, dtype=np.int64)
        empty = np.empty(0)
        none = np.empty(0, dtype=bool)
        return Aligned(ts, empty, empty.copy(), empty.copy(), empty.copy(), none, none.copy(),
                       ts.copy(), 0, 0)  # fmt: skip
    ts = np.union1d(by["ts"], bx["ts"])
    ts = ts[ts >= max(by["ts"][0], bx["ts"][0])]
    open_y, close_y, has_y, own_y = _leg_on(ts, by)
    open_x, close_x, has_x, own_x = _leg_on(ts, bx)
    keep = fresh(ts, own_y, limit_ms) & fresh(ts, own_x, limit_ms)
    cols = [c[keep] for c in (ts, open_y, close_y, open_x, close_x, has_y, has_x)]
    carried = int(np.count_nonzero(~(cols[5] & cols[6])))
    dropped_before = np.diff(np.cumsum(~keep)[keep], prepend=0)
    return Aligned(*cols, dropped_before, carried, int(ts.size - cols[0].size))


# ---------------------------------------------------------------- streaming


@njit(cache=True)
def _pick(col, iy, ix, next_t, limit, t, carry, last_y, last_x, ty, tx, mask):
    """Pairs stepping at bar time ``t``: ``mask[i]`` when t is in [next_t[i], limit[i]], a leg
    has a bar at t (``col[leg]`` not NaN: ``last_y``/``last_x`` take it, ``ty``/``tx`` its
    time), both legs have a close by now and neither close is older than ``carry`` ms
    (t - ty <= carry). Returns whether any pair steps. Oracle: ``align_bars`` (the test feeds
    it bar by bar and compares the rows)."""
    some = False
    for i in range(mask.shape[0]):
        m = False
        if next_t[i] <= t and t <= limit[i]:
            cy, cx = col[iy[i]], col[ix[i]]
            has_y, has_x = not np.isnan(cy), not np.isnan(cx)
            if has_y:
                last_y[i] = cy
                ty[i] = t
            if has_x:
                last_x[i] = cx
                tx[i] = t
            m = (has_y or has_x) and not np.isnan(last_y[i]) and not np.isnan(last_x[i])
            m = m and t - ty[i] <= carry and t - tx[i] <= carry
        mask[i] = m
        some |= m
    return some


class LiveAlign:
    """Streaming alignment of many pairs over a shared list of symbols.

    ``iy[i]``/``ix[i]``: the symbol indices of pair i's legs. ``last_y``/``last_x``: each pair's
    last close of each leg (raw price, NaN until the leg's first bar), carried forward;
    ``last_ty``/``last_tx``: the open time (ms) of that leg's last own bar; ``limit_ms``: the
    carry limit (``max_carry_ms``).
    """

    def __init__(self, iy: np.ndarray, ix: np.ndarray, limit_ms: int = NO_CARRY_LIMIT):
        self.iy = np.ascontiguousarray(iy, dtype=np.intp)
        self.ix = np.ascontiguousarray(ix, dtype=np.intp)
        if self.iy.shape != self.ix.shape or self.iy.ndim != 1:
            raise DataError(f"iy and ix must be 1-D of one length, got {iy.shape} and {ix.shape}")
        n = self.iy.shape[0]
        self.last_y = np.full(n, np.nan)
        self.last_x = np.full(n, np.nan)
        self.last_ty = np.zeros(n, dtype=np.int64)
        self.last_tx = np.zeros(n, dtype=np.int64)
        self.limit_ms = int(limit_ms)
        self.mask = np.zeros(n, dtype=bool)

    def step(self, t: int, closes: np.ndarray, next_t: np.ndarray, limit: np.ndarray) -> bool:
        """Bar time ``t`` (ms) with ``closes[k]`` the close of symbol k's bar at t (NaN: none).

        Only pairs with t in [next_t[i], limit[i]] (int64 ms) look at it. Sets ``mask`` to the
        pairs that step at t (their ``last_y``/``last_x`` are then the aligned closes) and
        returns whether any does. Times must come in increasing order per pair.
        """
        return _pick(closes, self.iy, self.ix, next_t, limit, t, self.limit_ms, self.last_y,
                     self.last_x, self.last_ty, self.last_tx, self.mask)  # fmt: skip
