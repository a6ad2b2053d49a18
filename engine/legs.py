"""Per symbol, the bars a PairBook's pairs have not all stepped yet, and its watermark advances.

One row per symbol of 2-D arrays (bar open time ms, close; watermark ms, wall ms when it became
known) with per-row lengths, filled, searched and trimmed by small numba kernels, so a batch of
bars of many symbols costs a few calls, not a Python loop over symbols (engine/pairbook.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.bars import NO_WATERMARK

#: watermark advances kept per symbol at most (for pairs whose other leg never traded)
ADVANCES_KEPT = 10_000
#: a leg's consumed bars and advances are dropped once it holds this many
TRIM_AT = 256


@njit(cache=True)
def _append_rows(row_t, row_v, n, last, sym, t, v):
    """Append ``(t[i], v[i])`` to row ``sym[i]``, in order, when ``t[i] > last[sym[i]]`` (then
    ``last`` takes it): items not newer than every item seen by their row are dropped. The
    caller made room for every item. Oracle: per-row Python lists appended the same way."""
    for i in range(sym.shape[0]):
        k = sym[i]
        if t[i] > last[k]:
            j = n[k]
            row_t[k, j] = t[i]
            row_v[k, j] = v[i]
            n[k] = j + 1
            last[k] = t[i]


@njit(cache=True)
def _below(row_t, k, n, value, right):
    """How many of ``row_t[k, :n]`` (ascending) are below ``value`` (at or below it when
    ``right``): ``np.searchsorted(row, value, side)``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if row_t[k, mid] < value or (right and row_t[k, mid] == value):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _rank(row_t, n, bound):
    """Per row k: how many of ``row_t[k, :n[k]]`` (ascending) are below ``bound[k]``."""
    out = np.empty(n.shape[0], dtype=np.int64)
    for k in range(n.shape[0]):
        out[k] = _below(row_t, k, n[k], bound[k], False)
    return out


@njit(cache=True)
def _drop_front(row_t, row_v, n, drop):
    """Remove the first ``drop[k]`` items of each row k (the rest move to the front)."""
    for k in range(n.shape[0]):
        d = drop[k]
        if d > 0:
            m = n[k] - d
            for i in range(m):
                row_t[k, i] = row_t[k, i + d]
                row_v[k, i] = row_v[k, i + d]
            n[k] = m


@njit(cache=True)
def _times_between(row_t, n, lo, hi):
    """Sorted distinct values in [lo, hi] over all rows ``row_t[k, :n[k]]`` (ascending rows);
    oracle: ``np.unique`` of the rows' values in [lo, hi] concatenated."""
    starts = np.empty(n.shape[0], dtype=np.int64)
    total = 0
    for k in range(n.shape[0]):
        starts[k] = _below(row_t, k, n[k], lo, False)
        total += _below(row_t, k, n[k], hi, True) - starts[k]
    out = np.empty(total, dtype=np.int64)
    j = 0
    for k in range(n.shape[0]):
        i = starts[k]
        while i < n[k] and row_t[k, i] <= hi:
            out[j] = row_t[k, i]
            j += 1
            i += 1
    return np.unique(out)


@njit(cache=True)
def _closes_at(row_t, row_v, n, times):
    """``out[j, k]``: value of row k at time ``times[j]`` (sorted, distinct), NaN where the row
    has none. Oracle: a dict {time: value} per row."""
    out = np.full((times.shape[0], n.shape[0]), np.nan)
    if times.shape[0] == 0:
        return out
    first, last = times[0], times[-1]
    for k in range(n.shape[0]):
        i = _below(row_t, k, n[k], first, False)
        j = 0
        while i < n[k] and row_t[k, i] <= last:
            t = row_t[k, i]
            while times[j] < t:
                j += 1
            if times[j] == t:
                out[j, k] = row_v[k, i]
            i += 1
    return out


#: initial capacity (items per row) of the leg arrays; they double when full
_LEG_CAPACITY = 64


def _grown(a: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros((a.shape[0], capacity), dtype=a.dtype)
    keep = min(capacity, a.shape[1])
    out[:, :keep] = a[:, :keep]
    return out


class Legs:
    """Per symbol (one row each): the bars not yet stepped by every pair using it (open time ms,
    close) and its watermark advances seen live (watermark ms, wall ms when it became known).

    Rows of 2-D arrays with per-row lengths (``n``, ``adv_n``), grown by doubling and shrunk
    when trimmed well below capacity. ``last_ts``: open time of the newest bar a row ever took.
    """

    def __init__(self, n_sym: int, capacity: int | None = None):
        capacity = _LEG_CAPACITY if capacity is None else capacity
        self.ts = np.zeros((n_sym, capacity), dtype=np.int64)
        self.close = np.zeros((n_sym, capacity), dtype=np.float64)
        self.n = np.zeros(n_sym, dtype=np.int64)
        self.last_ts = np.full(n_sym, NO_WATERMARK, dtype=np.int64)
        self.adv_wm = np.zeros((n_sym, capacity), dtype=np.int64)
        self.adv_wall = np.zeros((n_sym, capacity), dtype=np.float64)
        self.adv_n = np.zeros(n_sym, dtype=np.int64)

    def add_bars(self, sym: np.ndarray, ts: np.ndarray, close: np.ndarray) -> None:
        """Bars (row ``sym[i]``, open time ``ts[i]`` ms, ``close[i]``) in arrival order: each is
        kept when newer than every bar its row took (repeats and corrections are dropped)."""
        if len(sym):
            need = int((self.n + np.bincount(sym, minlength=len(self.n))).max())
            if need > self.ts.shape[1]:
                cap = max(need, 2 * self.ts.shape[1])
                self.ts, self.close = _grown(self.ts, cap), _grown(self.close, cap)
            _append_rows(self.ts, self.close, self.n, self.last_ts, sym, ts, close)

    def add_advances(self, sym: np.ndarray, wm: np.ndarray, wall: np.ndarray) -> None:
        """Watermark advances (row ``sym[i]``, watermark ``wm[i]`` ms, wall ``wall[i]`` ms) in
        arrival order: each is kept when above the row's last kept one."""
        if len(sym):
            k = np.arange(len(self.adv_n))
            last = np.where(self.adv_n > 0, self.adv_wm[k, self.adv_n - 1], NO_WATERMARK)
            need = int((self.adv_n + np.bincount(sym, minlength=len(k))).max())
            if need > self.adv_wm.shape[1]:
                cap = max(need, 2 * self.adv_wm.shape[1])
                self.adv_wm, self.adv_wall = _grown(self.adv_wm, cap), _grown(self.adv_wall, cap)
            _append_rows(self.adv_wm, self.adv_wall, self.adv_n, last, sym, wm, wall)

    def times(self, lo: int, hi: int) -> np.ndarray:
        """Sorted distinct open times (ms) of the kept bars in [lo, hi]."""
        return _times_between(self.ts, self.n, np.int64(lo), np.int64(hi))

    def closes(self, times: np.ndarray) -> np.ndarray:
        """(len(times), symbols) closes of the bars at ``times`` (sorted, distinct), NaN where a
        symbol has no bar."""
        return _closes_at(self.ts, self.close, self.n, times)

    def final_walls(self, end_ms: int) -> np.ndarray:
        """Per symbol: wall time (ms) at which the interval ending at ``end_ms`` became final
        (the first advance to a watermark >= end_ms); NaN when it was not seen live."""
        i = _rank(self.adv_wm, self.adv_n, np.full(len(self.adv_n), end_ms, dtype=np.int64))
        seen = i < self.adv_n
        out = np.full(len(i), np.nan)
        out[seen] = self.adv_wall[np.flatnonzero(seen), i[seen]]
        return out

    def needs_trim(self) -> bool:
        return bool(self.n.max(initial=0) >= TRIM_AT or self.adv_n.max(initial=0) >= TRIM_AT)

    def trim(self, keep_from: np.ndarray, wm_floor: np.ndarray) -> None:
        """Per symbol: drop bars older than ``keep_from`` (ms), advances below ``wm_floor`` (ms)
        and all but the last ADVANCES_KEPT ones."""
        _drop_front(self.ts, self.close, self.n, _rank(self.ts, self.n, keep_from))
        cut = np.maximum(_rank(self.adv_wm, self.adv_n, wm_floor), self.adv_n - ADVANCES_KEPT)
        _drop_front(self.adv_wm, self.adv_wall, self.adv_n, cut)
        # give memory back after a long replay (capacity far above what is held)
        for a, b, n in (("ts", "close", self.n), ("adv_wm", "adv_wall", self.adv_n)):
            cap = getattr(self, a).shape[1]
            if cap > _LEG_CAPACITY and cap > 8 * int(n.max(initial=0)):
                new = max(_LEG_CAPACITY, 2 * int(n.max(initial=0)))
                setattr(self, a, _grown(getattr(self, a), new))
                setattr(self, b, _grown(getattr(self, b), new))

    def bars(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of symbol k's kept bars: open times (ms), closes."""
        return self.ts[k, : self.n[k]].copy(), self.close[k, : self.n[k]].copy()

    def advances(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of symbol k's kept advances: watermarks (ms), wall times (ms)."""
        return self.adv_wm[k, : self.adv_n[k]].copy(), self.adv_wall[k, : self.adv_n[k]].copy()
