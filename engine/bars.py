"""OHLCV bars from trades: the batch builder and the incremental, per-symbol ``BarBuilder``.

A bar covers the interval ``[ts, ts + tf)`` (ms) and is labelled by its open time ``ts``; only
intervals with at least one trade make a bar. ``volume`` is the sum of base quantities,
``quote_volume`` the sum of ``price * qty`` (USDT), ``trades`` the number of aggregate trades.

Both builders fold ticks with the same numba kernel, ``_fold``, so live bars equal bars rebuilt
offline from the same trades. Inside a bar, trades are ordered by (trade time, key), where the
key is the aggregate id live and the row position offline: for trades that arrive in aggregate-id
order with non-decreasing times (what Binance sends) this is simply arrival order, and a late
trade refilled from REST lands where it belongs instead of becoming the close.

Bar state while folding is two rows: floats ``open, high, low, close, volume, quote_volume`` and
ints ``ts, trades, open_ts, open_key, close_ts, close_key`` (the ``_F_*`` / ``_I_*`` columns).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numba import njit

from engine.errors import DataError
from engine.schemas import BAR_DTYPE, TICK_DTYPE, bars_to_table, timeframe_ms

__all__ = [
    "NO_WATERMARK",
    "BarBuilder",
    "BarUpdate",
    "SortedBars",
    "build_bar_records",
    "build_bars",
]

log = logging.getLogger(__name__)

#: Watermark of a builder that has seen neither a trade nor a clock (ms): before every bar.
NO_WATERMARK: int = int(np.iinfo(np.int64).min)

#: Recent bars (or pair steps) kept in memory per series, live: the feed's recent bars, the
#: pair actors' ring buffers and the dashboard's charts all hold this many.
RECENT_BARS: int = 3_600

_F_OPEN, _F_HIGH, _F_LOW, _F_CLOSE, _F_VOLUME, _F_QUOTE = range(6)
_I_TS, _I_TRADES, _I_OPEN_TS, _I_OPEN_KEY, _I_CLOSE_TS, _I_CLOSE_KEY = range(6)
_NF = _NI = 6


@njit(cache=True, inline="always")
def _store2(f, i, row, o, h, lo, c, v, qv, bar_ts, n):
    """Write one bar into row ``row`` of ``f`` and of ``i`` (``_I_TS``, ``_I_TRADES``)."""
    f[row, _F_OPEN] = o
    f[row, _F_HIGH] = h
    f[row, _F_LOW] = lo
    f[row, _F_CLOSE] = c
    f[row, _F_VOLUME] = v
    f[row, _F_QUOTE] = qv
    i[row, _I_TS] = bar_ts
    i[row, _I_TRADES] = n


@njit(cache=True)
def _store(f, i, row, o, h, lo, c, v, qv, bar_ts, n, open_ts, open_key, close_ts, close_key):
    """Write one bar's state into row ``row`` of ``f``/``i``: the bar, then which trades
    opened and closed it."""
    _store2(f, i, row, o, h, lo, c, v, qv, bar_ts, n)
    i[row, _I_OPEN_TS] = open_ts
    i[row, _I_OPEN_KEY] = open_key
    i[row, _I_CLOSE_TS] = close_ts
    i[row, _I_CLOSE_KEY] = close_key


@njit(cache=True, nogil=True)
def _fold(ts, keys, price, qty, tf, watermark, has_open, f, i, late):
    """Fold trades (ts ms, keys, price, qty) into bars of ``tf`` ms, in arrival order.

    Row 0 of ``f``/``i`` holds the open bar on entry when ``has_open``. A trade whose interval
    starts before ``watermark`` (ms) is late: its index goes to ``late`` and it is not folded.
    A trade of a later interval closes the open bar and opens the next row. Within a bar, open
    and close follow (time, key) order; ``keys`` may be empty, then the row position is the key.
    ``f``/``i`` need ``len(ts) + 1`` rows (or the number of intervals spanned, for sorted input)
    and ``late`` ``len(ts)`` entries (or 0 when nothing can be late: sorted input, lowest
    watermark).

    Returns ``(k, n_late, watermark, has_open)``: rows ``[0, k)`` are closed bars, row ``k`` is
    the open bar when ``has_open``. Oracle: pandas ``resample(tf, label="left",
    closed="left").agg(first, max, min, last, sum, count)`` without empty intervals.
    """
    k = 0
    n_late = 0
    use_keys = keys.shape[0] > 0
    o, h, lo, c, v, qv = f[0, 0], f[0, 1], f[0, 2], f[0, 3], f[0, 4], f[0, 5]
    bar_ts, n, open_ts, open_key, close_ts, close_key = (
        i[0, 0],
        i[0, 1],
        i[0, 2],
        i[0, 3],
        i[0, 4],
        i[0, 5],
    )
    for j in range(ts.shape[0]):
        t = ts[j]
        p = price[j]
        q = qty[j]
        key = keys[j] if use_keys else j
        if has_open and bar_ts <= t and t - bar_ts < tf:  # the open bar is never late
            if p > h:
                h = p
            if p < lo:
                lo = p
            if t < open_ts or (t == open_ts and key < open_key):
                o, open_ts, open_key = p, t, key
            if t > close_ts or (t == close_ts and key >= close_key):
                c, close_ts, close_key = p, t, key
            v += q
            qv += p * q
            n += 1
            continue
        t_bar = (t // tf) * tf
        if t_bar < watermark:
            late[n_late] = j
            n_late += 1
            continue
        if has_open:
            _store(f, i, k, o, h, lo, c, v, qv, bar_ts, n, open_ts, open_key, close_ts, close_key)
            k += 1
        o, h, lo, c, v, qv = p, p, p, p, q, p * q
        bar_ts, n, open_ts, open_key, close_ts, close_key = t_bar, 1, t, key, t, key
        has_open = True
        watermark = t_bar
    if has_open:
        _store(f, i, k, o, h, lo, c, v, qv, bar_ts, n, open_ts, open_key, close_ts, close_key)
    return k, n_late, watermark, has_open


@njit(cache=True, nogil=True)
def _scan(ts, price, qty):
    """First offending rows of trades: ``(first_unsorted, first_bad_price, first_bad_qty)``.

    -1 where none; a price or quantity is bad unless finite and > 0; a time is unsorted when
    smaller than the one before. Oracle: ``np.flatnonzero`` on the same conditions.
    """
    first_unsorted = -1
    first_bad_price = -1
    first_bad_qty = -1
    inf = np.inf
    for j in range(ts.shape[0]):
        p = price[j]
        q = qty[j]
        if first_bad_price < 0 and not (p > 0.0 and p < inf):
            first_bad_price = j
        if first_bad_qty < 0 and not (q > 0.0 and q < inf):
            first_bad_qty = j
        if first_unsorted < 0 and j > 0 and ts[j] < ts[j - 1]:
            first_unsorted = j
    return first_unsorted, first_bad_price, first_bad_qty


@njit(cache=True, nogil=True)
def _fold_ticks(ticks, tf, watermark, has_open, f, i, late):
    """``_scan`` then ``_fold`` of TICK_DTYPE records (keys: ``agg_id``), in one call.

    Nothing is folded when a price or quantity is bad (not finite and > 0): then ``f``, ``i``
    and ``late`` are untouched and ``k = n_late = 0``. Returns ``(bad_price, bad_qty, k,
    n_late, watermark, has_open)``: the first bad rows (-1 where none), then what ``_fold``
    returns. Oracle: ``_scan`` and ``_fold`` on the record fields.
    """
    ts, price, qty = ticks.ts, ticks.price, ticks.qty
    _, bad_price, bad_qty = _scan(ts, price, qty)
    if bad_price >= 0 or bad_qty >= 0:
        return bad_price, bad_qty, 0, 0, watermark, has_open
    k, n_late, watermark, has_open = _fold(
        ts, ticks.agg_id, price, qty, tf, watermark, has_open, f, i, late
    )
    return bad_price, bad_qty, k, n_late, watermark, has_open


@njit(cache=True, nogil=True)
def _fold_sorted(ts, price, qty, tfs, f, i, k, has_open, last_ts):
    """Fold trades sorted by time (ts ms, price, qty) into bars of every timeframe ``tfs[m]``
    (ms): the trades are checked in one pass, then folded in one pass per timeframe (over a
    block still in cache, each timeframe's state in registers).

    For timeframe ``m``, row ``k[m]`` of ``f[m]``/``i[m]`` (bar state columns; ``i`` needs only
    ``_I_TS`` and ``_I_TRADES``) holds its open bar on entry when ``has_open[m]``; on return
    rows ``[0, k[m])`` are the bars the trades closed and row ``k[m]`` the open bar (``k`` and
    ``has_open`` updated). ``f``/``i`` need ``min(len(ts), intervals of tfs.min() spanned) + 1``
    rows past ``k.max()``. ``last_ts``: the time of the trade before these (ms; any time at
    or below ``ts[0]`` when none).

    Returns ``(first_unsorted, first_bad_price, first_bad_qty)`` for the first bad row (-1
    where none; a price or quantity is bad unless finite and > 0); then nothing is folded.
    Per timeframe this is ``_fold``'s arithmetic in ``_fold``'s order for sorted trades (the
    open is the first trade of its interval, the close the last), so the bars are bit for bit
    ``_fold``'s. Oracle: ``_fold`` of each timeframe, and pandas ``resample``
    (tests/engine/test_bars.py).
    """
    inf = np.inf
    for j in range(ts.shape[0]):
        t = ts[j]
        p = price[j]
        q = qty[j]
        if t < last_ts:
            return j, -1, -1
        if not (p > 0.0 and p < inf):
            return -1, j, -1
        if not (q > 0.0 and q < inf):
            return -1, -1, j
        last_ts = t
    for m in range(tfs.shape[0]):  # one timeframe at a time: its state stays in registers
        tf = tfs[m]
        row = k[m]
        is_open = has_open[m]
        o, h, lo, c, v, qv = f[m, row, 0], f[m, row, 1], f[m, row, 2], f[m, row, 3], \
            f[m, row, 4], f[m, row, 5]  # fmt: skip
        bar_ts, n = i[m, row, _I_TS], i[m, row, _I_TRADES]
        for j in range(ts.shape[0]):
            t = ts[j]
            p = price[j]
            q = qty[j]
            if is_open and t - bar_ts < tf:
                if p > h:
                    h = p
                if p < lo:
                    lo = p
                c = p
                v += q
                qv += p * q
                n += 1
                continue
            if is_open:
                _store2(f[m], i[m], row, o, h, lo, c, v, qv, bar_ts, n)
                row += 1
            is_open = True
            o, h, lo, c, v, qv = p, p, p, p, q, p * q
            bar_ts, n = (t // tf) * tf, 1
        if is_open:
            _store2(f[m], i[m], row, o, h, lo, c, v, qv, bar_ts, n)
        k[m] = row
        has_open[m] = is_open
    return -1, -1, -1


@njit(cache=True, nogil=True)
def _write_records(f, i, out):
    """Bar state rows -> BAR_DTYPE records in ``out``. Oracle: field-by-field NumPy copy."""
    for k in range(f.shape[0]):
        bar = out[k]
        bar.ts = i[k, _I_TS]
        bar.open = f[k, _F_OPEN]
        bar.high = f[k, _F_HIGH]
        bar.low = f[k, _F_LOW]
        bar.close = f[k, _F_CLOSE]
        bar.volume = f[k, _F_VOLUME]
        bar.quote_volume = f[k, _F_QUOTE]
        bar.trades = i[k, _I_TRADES]


def _records(f: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Bar state rows -> BAR_DTYPE records."""
    out = np.empty(f.shape[0], dtype=BAR_DTYPE)
    _write_records(f, i, out)
    return out


def _as_1d(name: str, values: object, *, times: bool) -> np.ndarray:
    """A contiguous 1-D int64 (times, Unix ms) or float64 array; DataError otherwise."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not times:
        if arr.dtype.kind not in "iuf":
            raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.float64)
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise DataError(
                f"{name}[{int(np.argmax(np.isnat(arr)))}] is NaT: every trade needs a time"
            )
        arr = arr.astype("datetime64[ms]").view(np.int64)
    elif arr.dtype.kind not in "iu" and arr.size:
        raise DataError(f"{name} must hold integer Unix milliseconds, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check(ts: np.ndarray, price: np.ndarray, qty: np.ndarray, *, sorted_: bool) -> None:
    """Validate trades: equal lengths, finite positive prices and quantities, sorted times."""
    _same_lengths(ts, price, qty)
    unsorted, bad_price, bad_qty = _scan(ts, price, qty)
    _refuse(ts, price, qty, unsorted if sorted_ else -1, bad_price, bad_qty)


def _same_lengths(ts: np.ndarray, price: np.ndarray, qty: np.ndarray) -> None:
    if not (ts.shape[0] == price.shape[0] == qty.shape[0]):
        raise DataError(
            f"ts, price and qty must have the same length, got {ts.shape[0]}, "
            f"{price.shape[0]} and {qty.shape[0]}"
        )


def _refuse(ts: np.ndarray, price: np.ndarray, qty: np.ndarray, unsorted: int, bad_price: int,
            bad_qty: int, before: int | None = None) -> None:  # fmt: skip
    """DataError for the first bad price, else quantity, else unsorted time (-1: none);
    ``before``: the time before ``ts[0]`` (ms), when ``ts[0]`` is the unsorted one."""
    if bad_price >= 0:
        raise DataError(
            f"price[{bad_price}] = {float(price[bad_price])}: prices must be finite and > 0"
        )
    if bad_qty >= 0:
        raise DataError(
            f"qty[{bad_qty}] = {float(qty[bad_qty])}: quantities must be finite and > 0"
        )
    if unsorted >= 0:
        previous = f"ts[{unsorted - 1}] = {ts[unsorted - 1]}" if unsorted else \
            f"the previous trade's {before}"  # fmt: skip
        raise DataError(
            f"trades are not sorted by time: ts[{unsorted}] = {ts[unsorted]} comes after "
            f"{previous}; sort by time (then aggregate id) first"
        )


def _timeframe(timeframe: object) -> int:
    if not isinstance(timeframe, str):
        raise DataError(f"timeframe must be a string such as '1s', got {timeframe!r}")
    return timeframe_ms(timeframe)


def build_bar_records(
    ts_ms: np.ndarray, price: np.ndarray, qty: np.ndarray, timeframe: str
) -> np.ndarray:
    """Bars of ``timeframe`` ("1s", "1m", "5m") from trades sorted by time, as BAR_DTYPE records.

    ``ts_ms``: trade times, Unix ms (integers or datetime64); ``price`` raw price; ``qty`` base
    quantity. Equal times keep their order. Raises DataError on unsorted times, non-finite or
    non-positive prices/quantities, mismatched lengths or an unknown timeframe.
    """
    bars = SortedBars((timeframe,))
    ts = _as_1d("ts_ms", ts_ms, times=True)
    p = _as_1d("price", price, times=False)
    q = _as_1d("qty", qty, times=False)
    _check(ts, p, q, sorted_=True)
    if ts.size == 0:
        return np.empty(0, dtype=BAR_DTYPE)
    return bars.add(ts, p, q, last=True)[0]


def build_bars(ts_ms: np.ndarray, price: np.ndarray, qty: np.ndarray, timeframe: str) -> pa.Table:
    """Bars of ``timeframe`` from trades sorted by time, as an Arrow table with BAR_SCHEMA.

    Same arguments and errors as :func:`build_bar_records` (DataError is a ValueError).
    """
    return bars_to_table(build_bar_records(ts_ms, price, qty, timeframe))


class SortedBars:
    """Bars of several timeframes from trades sorted by time, given in consecutive blocks (an
    import, a whole series at once), folded block by block (``_fold_sorted``): the bars equal
    ``build_bar_records`` of all the trades at once, bit for bit.

    ``add`` returns the bars each block closed (a later trade started the next interval);
    ``add(..., last=True)`` or ``finish()`` also the bars still open, and starts afresh.
    """

    def __init__(self, timeframes: tuple[str, ...]) -> None:
        self.timeframes = tuple(timeframes)
        self._tfs = np.array([_timeframe(tf) for tf in self.timeframes], dtype=np.int64)
        self._step = int(self._tfs.min())
        self._reset()

    def _reset(self) -> None:
        n = len(self.timeframes)
        self._f = np.empty((n, 1, _NF), dtype=np.float64)  # row 0: the open bars
        self._i = np.empty((n, 1, 2), dtype=np.int64)
        self._open = np.zeros(n, dtype=np.bool_)
        self._last_ts = NO_WATERMARK

    def add(self, ts_ms: np.ndarray, price: np.ndarray, qty: np.ndarray, *,
            last: bool = False) -> list[np.ndarray]:  # fmt: skip
        """BAR_DTYPE records of the bars these trades (ms, raw price, base qty; sorted by time,
        after the trades of the blocks before) closed, one array per timeframe; ``last``: and
        of the bars still open (then the builder starts afresh). DataError (as
        ``build_bar_records``) on unsorted times, bad prices or quantities, mismatched lengths.
        """
        ts = _as_1d("ts_ms", ts_ms, times=True)
        p = _as_1d("price", price, times=False)
        q = _as_1d("qty", qty, times=False)
        _same_lengths(ts, p, q)
        n_tf = len(self.timeframes)
        k = np.zeros(n_tf, dtype=np.int64)
        if ts.size:
            rows = min(ts.size, int(ts[-1] // self._step - ts[0] // self._step) + 1) + 1
            f = np.empty((n_tf, rows, _NF), dtype=np.float64)
            i = np.empty((n_tf, rows, 2), dtype=np.int64)
            f[:, 0], i[:, 0] = self._f[:, 0], self._i[:, 0]
            bad = _fold_sorted(ts, p, q, self._tfs, f, i, k, self._open, self._last_ts)
            _refuse(ts, p, q, *bad, before=self._last_ts)
            self._last_ts = int(ts[-1])
            self._f[:, 0], self._i[:, 0] = f[np.arange(n_tf), k], i[np.arange(n_tf), k]
        else:
            f, i = self._f, self._i
        if last:
            k += self._open
            self._reset()
        return [_records(f[m, : k[m]], i[m, : k[m]]) for m in range(n_tf)]

    def finish(self) -> list[np.ndarray]:
        """The bars still open, one array per timeframe (a bar or none); starts afresh."""
        return self.add(np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), last=True)


@dataclass(frozen=True, eq=False)
class BarUpdate:
    """What one ``BarBuilder.add``/``advance`` call produced.

    ``closed``: bars that became final (BAR_DTYPE, ascending ts); ``corrected``: bars emitted
    earlier (or never, for an interval that had no trade) that late trades changed, with their
    full corrected values, to be upserted; ``late``: number of late trades in the call.
    """

    closed: np.ndarray
    corrected: np.ndarray
    late: int


class _RecentBars:
    """The last closed bars (state rows sorted by ts), kept so late trades correct them exactly.

    At least ``keep`` bars are kept; ``horizon`` (ms) is the open time of the newest bar let go,
    so an interval at or before it may have had a bar that is no longer known.
    """

    def __init__(self, keep: int):
        self.keep = keep
        self.f = np.empty((2 * keep, _NF), dtype=np.float64)
        self.i = np.empty((2 * keep, _NI), dtype=np.int64)
        self.n = 0
        self.horizon = NO_WATERMARK

    def make_room(self, extra: int, keep_old: int) -> None:
        """Room for ``extra`` more bars, letting go of all but the newest ``keep_old`` kept."""
        if self.n + extra <= self.f.shape[0]:
            return
        drop = max(0, self.n - keep_old)
        if drop:
            self.horizon = max(self.horizon, int(self.i[drop - 1, _I_TS]))
        kept = self.n - drop
        size = max(2 * self.keep, kept + extra)
        f = np.empty((size, _NF), dtype=np.float64)
        i = np.empty((size, _NI), dtype=np.int64)
        f[:kept] = self.f[drop : self.n]
        i[:kept] = self.i[drop : self.n]
        self.f, self.i, self.n = f, i, kept

    def append(self, f: np.ndarray, i: np.ndarray) -> None:
        """Add bars newer than every kept bar."""
        k = f.shape[0]
        self.make_room(k, keep_old=max(self.keep - k, 0))
        self.f[self.n : self.n + k] = f
        self.i[self.n : self.n + k] = i
        self.n += k

    def positions(self, bar_ts: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.i[: self.n, _I_TS], bar_ts)

    def add_late(self, tf: int, t: int, key: int, p: float, q: float) -> bool:
        """Fold a late trade into its bar (made when the interval had none); False if unknown."""
        bar_ts = (t // tf) * tf
        pos = int(self.positions(np.int64(bar_ts)))
        known = pos < self.n and self.i[pos, _I_TS] == bar_ts
        if not known and bar_ts <= self.horizon:
            return False
        f = np.zeros((2, _NF), dtype=np.float64)
        i = np.zeros((2, _NI), dtype=np.int64)
        if known:
            f[0], i[0] = self.f[pos], self.i[pos]
        one = np.ones(1)
        no_late = np.empty(0, dtype=np.int64)
        _fold(
            np.array([t]), np.array([key]), p * one, q * one, tf, NO_WATERMARK, known, f, i, no_late
        )
        if not known:
            self.make_room(1, keep_old=self.keep)
            pos = int(self.positions(np.int64(bar_ts)))
            self.f[pos + 1 : self.n + 1] = self.f[pos : self.n]
            self.i[pos + 1 : self.n + 1] = self.i[pos : self.n]
            self.n += 1
        self.f[pos], self.i[pos] = f[0], i[0]
        return True

    def records(self, bar_ts: np.ndarray) -> np.ndarray:
        pos = self.positions(bar_ts)
        return _records(self.f[pos], self.i[pos])

    def last(self, n: int) -> np.ndarray:
        """The newest ``n`` kept bars (at most ``keep``) as BAR_DTYPE records, oldest first."""
        n = min(max(n, 0), self.keep, self.n)
        return _records(self.f[self.n - n : self.n], self.i[self.n - n : self.n])


_EMPTY_BARS = np.empty(0, dtype=BAR_DTYPE)
_EMPTY_BARS.flags.writeable = False
#: rows of a builder's work arrays at first; they grow to the largest batch, up to _SCRATCH_MAX
_SCRATCH_MIN = 64
_SCRATCH_MAX = 1 << 12
_kernels_loaded = False


def _load_kernels() -> None:
    """Load (or compile) every kernel ``BarBuilder`` calls, with the types it calls them with,
    so the first batch of trades is not delayed by it (about 0.4 s in a fresh process)."""
    global _kernels_loaded
    if _kernels_loaded:
        return
    f = np.zeros((2, _NF), dtype=np.float64)
    i = np.zeros((2, _NI), dtype=np.int64)
    late = np.empty(1, dtype=np.int64)
    ticks = np.zeros(2, dtype=TICK_DTYPE)
    ticks["price"] = ticks["qty"] = 1.0
    _fold_ticks(ticks[:1], 1000, NO_WATERMARK, False, f, i, late)
    _fold_ticks(ticks[::-1], 1000, NO_WATERMARK, False, f, i, late)  # a strided batch
    one, zero = np.ones(1), np.zeros(1, dtype=np.int64)
    _fold(zero, zero, one, one, 1000, NO_WATERMARK, True, f, i, late[:0])  # late trades
    _records(f[:1], i[:1])
    _kernels_loaded = True


class BarBuilder:
    """Incremental bars of one symbol and timeframe, equal to ``build_bars`` on the same trades.

    A bar closes when a trade of a later interval arrives or when ``advance(now_ms)`` sees
    ``now_ms >= bar_end + lateness_ms``. ``watermark`` (ms) is the max of the open time of the
    latest trade's interval and ``floor((now_ms - lateness_ms) / tf) * tf`` over the clock
    calls: every interval ending at or before it is final. A trade of an interval that starts
    before the watermark is late: it is counted and its bar, corrected exactly from the last
    ``keep`` closed bars, is returned in ``corrected``. A late trade older than every kept bar
    cannot be corrected: it is logged and counted in ``uncorrected``.

    ``next_close_ms`` (ms) is the smallest ``now_ms`` at which ``advance`` does anything (closes
    the open bar or moves the watermark): ``(watermark // tf + 1) * tf + lateness_ms``, the
    first clock reading whose ``now_ms - lateness_ms`` reaches the end of the watermark's
    interval. While a bar is open the watermark is that bar's open time, so this is also when
    the clock closes it. Any ``now_ms`` below it leaves the builder unchanged, so a caller with
    many builders may skip those calls. Before any trade or clock reading it lies far in the
    past (below every real time), so the first clock reading always counts.

    The kept closed bars are also the series' recent bars (``recent``): at least ``keep``
    (``RECENT_BARS`` by default) of them, late corrections included; ``seed`` puts bars known
    from elsewhere (the store, after a restart) in front of them.

    The first builder made in a process loads the numba kernels (about 0.4 s; compiling them
    when the cache is cold takes seconds), so the first batch of trades is not delayed by it.
    """

    def __init__(self, timeframe: str, lateness_ms: int, keep: int = RECENT_BARS):
        self.timeframe = timeframe
        self.tf_ms = _timeframe(timeframe)
        if isinstance(lateness_ms, bool) or not isinstance(lateness_ms, (int, np.integer)):
            raise DataError(f"lateness_ms must be an integer number of ms, got {lateness_ms!r}")
        if lateness_ms < 0:
            raise DataError(f"lateness_ms must be >= 0, got {lateness_ms}")
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 1:
            raise DataError(f"keep must be a positive integer number of bars, got {keep!r}")
        self.lateness_ms = int(lateness_ms)
        self.keep = int(keep)
        _load_kernels()
        self.reset()

    def reset(self) -> None:
        """Forget every trade, bar and clock reading."""
        # work arrays of add(): row 0 holds the open bar between calls
        self._f = np.empty((_SCRATCH_MIN, _NF), dtype=np.float64)
        self._i = np.empty((_SCRATCH_MIN, _NI), dtype=np.int64)
        self._late = np.empty(_SCRATCH_MIN, dtype=np.int64)
        self._has_open = False
        self._set_watermark(NO_WATERMARK)
        self._recent = _RecentBars(self.keep)
        self.uncorrected = 0

    def _set_watermark(self, watermark: int) -> None:
        self._watermark = watermark
        self._next_close = (watermark // self.tf_ms + 1) * self.tf_ms + self.lateness_ms

    @property
    def watermark(self) -> int:
        """Every interval ending at or before this time (ms) is final; NO_WATERMARK at first."""
        return self._watermark

    @property
    def next_close_ms(self) -> int:
        """Smallest ``now_ms`` (ms) at which ``advance`` closes the open bar or moves the
        watermark: ``(watermark // tf + 1) * tf + lateness_ms`` (see the class docstring)."""
        return self._next_close

    @property
    def open_bar(self) -> np.void | None:
        """The bar still being built (a BAR_DTYPE record), or None."""
        return _records(self._f[:1], self._i[:1])[0] if self._has_open else None

    def recent(self, n: int | None = None) -> np.ndarray:
        """The newest ``n`` closed bars (at most ``keep``; all kept when None), oldest first:
        BAR_DTYPE, a copy, with every late correction applied."""
        return self._recent.last(self.keep if n is None else n)

    def seed(self, bars: np.ndarray) -> None:
        """Closed bars known from elsewhere (BAR_DTYPE, ascending ``ts``; the store's, after a
        restart), before any trade or clock reading: kept as recent bars and for late
        corrections, and the watermark moves past the newest. A late trade corrects a seeded
        bar's high, low, volume and trades; its open and close stay (their trade order is
        not known)."""
        if self._has_open or self._recent.n or self._watermark != NO_WATERMARK:
            raise DataError("seed needs a fresh builder: it already has trades or a clock")
        bars = np.asarray(bars)
        if bars.dtype != BAR_DTYPE or bars.ndim != 1:
            raise DataError(f"bars must be a one-dimensional BAR_DTYPE array, got {bars.dtype!r}")
        if len(bars) == 0:
            return
        ts = bars["ts"].astype(np.int64)
        if (np.diff(ts) <= 0).any() or (ts % self.tf_ms).any():
            raise DataError(f"seeded bars must have ascending {self.timeframe} open times")
        f = np.column_stack([bars[c] for c in
                             ("open", "high", "low", "close", "volume", "quote_volume")])
        i = np.empty((len(bars), _NI), dtype=np.int64)
        i[:, _I_TS], i[:, _I_TRADES] = ts, bars["trades"]
        i[:, _I_OPEN_TS], i[:, _I_OPEN_KEY] = ts, np.iinfo(np.int64).min  # no trade goes first
        i[:, _I_CLOSE_TS], i[:, _I_CLOSE_KEY] = ts + self.tf_ms - 1, np.iinfo(np.int64).max
        self._recent.append(np.ascontiguousarray(f, dtype=np.float64), i)
        self._set_watermark(int(ts[-1]) + self.tf_ms)

    def _work(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Work arrays for a batch of ``n`` ticks (``n + 1`` rows), row 0 the open bar: this
        builder's own, grown up to ``_SCRATCH_MAX`` rows, or for a larger batch, new ones."""
        rows = 1 << n.bit_length()  # > n
        f = np.empty((rows, _NF), dtype=np.float64)
        i = np.empty((rows, _NI), dtype=np.int64)
        late = np.empty(rows, dtype=np.int64)
        f[0], i[0] = self._f[0], self._i[0]
        if rows <= _SCRATCH_MAX:
            self._f, self._i, self._late = f, i, late
        return f, i, late

    def add(self, ticks: np.ndarray) -> BarUpdate:
        """Fold a batch of this symbol's ticks (TICK_DTYPE, arrival order) into bars."""
        if (
            type(ticks) is not np.ndarray
            or ticks.ndim != 1
            or (ticks.dtype is not TICK_DTYPE and ticks.dtype != TICK_DTYPE)
        ):
            if not isinstance(ticks, np.ndarray) or ticks.dtype != TICK_DTYPE or ticks.ndim != 1:
                raise DataError(
                    "ticks must be a one-dimensional TICK_DTYPE array, got "
                    f"{getattr(ticks, 'dtype', type(ticks).__name__)!r}"
                )
            ticks = np.asarray(ticks)  # a subclass (np.recarray, np.memmap): a plain view
        n = ticks.shape[0]
        if n == 0:
            return _NO_UPDATE
        f, i, late = self._f, self._i, self._late
        if n >= f.shape[0]:
            f, i, late = self._work(n)
        bad_price, bad_qty, k, n_late, watermark, has_open = _fold_ticks(
            ticks, self.tf_ms, self._watermark, self._has_open, f, i, late
        )
        if bad_price >= 0:
            raise DataError(
                f"price[{bad_price}] = {float(ticks['price'][bad_price])}: prices must be finite "
                "and > 0"
            )
        if bad_qty >= 0:
            raise DataError(
                f"qty[{bad_qty}] = {float(ticks['qty'][bad_qty])}: quantities must be finite "
                "and > 0"
            )
        if watermark != self._watermark:
            self._set_watermark(watermark)
        self._has_open = has_open
        if k:
            self._recent.append(f[:k], i[:k])
        if not n_late:
            closed = _records(f[:k], i[:k]) if k else None  # before row 0 is overwritten
        else:
            closed_ts = i[:k, _I_TS].copy()
        if has_open and (k or f is not self._f):
            self._f[0], self._i[0] = f[k], i[k]  # the open bar back to row 0
        if not n_late:
            return _NO_UPDATE if closed is None else BarUpdate(closed, _EMPTY_BARS, 0)
        self._recent.make_room(n_late, keep_old=max(self.keep, k))
        touched = self._fold_late(ticks, late[:n_late])
        closed = self._recent.records(closed_ts) if k else _EMPTY_BARS
        corrected_ts = np.setdiff1d(touched, closed_ts)
        corrected = self._recent.records(corrected_ts) if corrected_ts.size else _EMPTY_BARS
        return BarUpdate(closed, corrected, int(n_late))

    def _fold_late(self, ticks: np.ndarray, late: np.ndarray) -> np.ndarray:
        """Fold late ticks into the kept bars; return the open times of the bars changed."""
        touched = set()
        for j in late.tolist():
            t, key = int(ticks["ts"][j]), int(ticks["agg_id"][j])
            p, q = float(ticks["price"][j]), float(ticks["qty"][j])
            if self._recent.add_late(self.tf_ms, t, key, p, q):
                touched.add((t // self.tf_ms) * self.tf_ms)
            else:
                self.uncorrected += 1
                log.warning(
                    "late trade agg_id=%d at %d ms is older than the %d kept %s bars: "
                    "its bar cannot be corrected here; rebuild it from the stored ticks",
                    key,
                    t,
                    self.keep,
                    self.timeframe,
                )
        return np.array(sorted(touched), dtype=np.int64)

    def advance(self, now_ms: int) -> BarUpdate:
        """Clock reading (ms): close the open bar once ``now_ms >= bar_end + lateness_ms``."""
        if type(now_ms) is not int:
            if isinstance(now_ms, bool) or not isinstance(now_ms, (int, np.integer)):
                raise DataError(f"now_ms must be an integer number of ms, got {now_ms!r}")
            now_ms = int(now_ms)
        if now_ms < self._next_close:
            return _NO_UPDATE
        cutoff = now_ms - self.lateness_ms
        closed = None
        if self._has_open and cutoff >= int(self._i[0, _I_TS]) + self.tf_ms:
            self._recent.append(self._f[:1], self._i[:1])
            closed = _records(self._f[:1], self._i[:1])
            self._has_open = False
        self._set_watermark(max(self._watermark, (cutoff // self.tf_ms) * self.tf_ms))
        return _NO_UPDATE if closed is None else BarUpdate(closed, _EMPTY_BARS, 0)


#: the update of a call that changed nothing (shared: its arrays are read-only)
_NO_UPDATE = BarUpdate(_EMPTY_BARS, _EMPTY_BARS, 0)
