"""Bars of any timeframe: coarser bars from finer ones, and the one store read of a timeframe.

``resample_bars(bars, timeframe, to)`` folds bars of ``timeframe`` into bars of ``to`` (any
multiple of it: 15m, 1h, 4h, 1d from 1m): open = first open, high = max, low = min, close =
last close, ``volume``, ``quote_volume`` and ``trades`` summed, labelled by the coarse
interval's open time. Intervals are aligned on the Unix epoch, so in UTC like Binance's klines
(1d starts at 00:00, 4h at 00:00, 04:00, 08:00, ...); only intervals with at least one fine bar
make a bar, as for bars built from trades.

Partial intervals are dropped, never flagged: a coarse interval whose fine bars may not all be
closed yet (it ends after ``complete_until``, by default the end of the last fine bar given)
is left out, so a resampled bar is final and equals the bar built from the same trades.

``read_timeframe(store, timeframe, symbol, start, end)`` is how every reader of a timeframe
gets bars from the store (backtests, screens, the dashboard): the coarse bars with
start <= ts < end, as stored where the store holds bars of ``timeframe`` (imported klines, the
live feed's), and before the first / after the last of those resampled from the source
timeframe (``source_timeframe``: 1m, else 1s, else the finest stored one that divides it).
Times in ms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from engine.errors import DataError
from engine.schemas import BAR_DTYPE, TIMEFRAME_MS, table_to_bars, timeframe_ms
from engine.store import DAY_MS, Store, to_ms

__all__ = [
    "TimeframeBars",
    "read_timeframe",
    "resample_bars",
    "source_timeframe",
    "symbols_for",
]

#: source timeframes in the order they are preferred: 1m (exact for every coarser Binance
#: interval, 60x fewer rows than 1s), then 1s, then the rest from fine to coarse
_SOURCE_ORDER: tuple[str, ...] = ("1m", "1s", *(t for t in TIMEFRAME_MS if t not in ("1m", "1s")))


def resample_bars(
    bars: np.ndarray, timeframe: str, to: str, complete_until: int | None = None
) -> np.ndarray:
    """Bars of ``to`` (BAR_DTYPE) from bars of ``timeframe`` (BAR_DTYPE, ascending ``ts``, each
    on the ``timeframe`` grid); ``to`` must be a multiple of ``timeframe``.

    A coarse interval ``[t, t + to)`` is kept only when ``t + to <= complete_until`` (ms;
    default: the end of the last fine bar, ``bars["ts"][-1] + timeframe``), so an interval whose
    later fine bars may still come is dropped. Sums are summed in time order.

    Oracle: pandas ``resample(to, label="left", closed="left").agg(open="first", high="max",
    low="min", close="last", volume="sum", quote_volume="sum", trades="sum")`` without the
    empty intervals.
    """
    fine, coarse = timeframe_ms(timeframe), timeframe_ms(to)
    if coarse % fine:
        raise DataError(
            f"cannot resample {timeframe} bars to {to}: {to} is not a multiple of {timeframe}; "
            f"choose a timeframe whose length divides it"
        )
    if not isinstance(bars, np.ndarray) or bars.dtype != BAR_DTYPE or bars.ndim != 1:
        raise DataError(
            f"{timeframe} bars: expected one-dimensional BAR_DTYPE records, got "
            f"{getattr(bars, 'dtype', type(bars).__name__)!r}"
        )
    ts = bars["ts"]
    if ts.size == 0:
        return np.empty(0, dtype=BAR_DTYPE)
    if (np.diff(ts) <= 0).any() or (ts % fine).any():
        raise DataError(
            f"{timeframe} bars: expected strictly ascending open times on the {timeframe} grid; "
            "read them from the store or sort and deduplicate them first"
        )
    if complete_until is None:
        complete_until = int(ts[-1]) + fine
    label = ts // coarse * coarse
    first = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
    last = np.r_[first[1:], ts.size] - 1
    out = np.empty(first.size, dtype=BAR_DTYPE)
    out["ts"] = label[first]
    out["open"] = bars["open"][first]
    out["high"] = np.maximum.reduceat(bars["high"], first)
    out["low"] = np.minimum.reduceat(bars["low"], first)
    out["close"] = bars["close"][last]
    for name in ("volume", "quote_volume", "trades"):
        out[name] = np.add.reduceat(bars[name], first)
    return out[out["ts"] + coarse <= complete_until]


def source_timeframe(store: Store, timeframe: str, symbol: str) -> str | None:
    """The stored timeframe of ``symbol`` that bars of ``timeframe`` are resampled from: 1m,
    else 1s, else the finest stored one whose length divides ``timeframe``'s; None if none."""
    tf = timeframe_ms(timeframe)
    for source in _SOURCE_ORDER:
        ms = TIMEFRAME_MS[source]
        if ms < tf and tf % ms == 0 and symbol in store.symbols(source):
            return source
    return None


def symbols_for(store: Store, timeframe: str) -> list[str]:
    """Symbols with bars of ``timeframe`` in the store, stored or resampled from a finer one."""
    tf = timeframe_ms(timeframe)
    found = set(store.symbols(timeframe))
    for source, ms in TIMEFRAME_MS.items():
        if ms < tf and tf % ms == 0:
            found.update(store.symbols(source))
    return sorted(found)


@dataclass(frozen=True)
class TimeframeBars:
    """Bars of ``timeframe`` (BAR_DTYPE, ascending ts) and the stored timeframes they came from
    (``timeframe`` itself and/or the resampling source)."""

    timeframe: str
    bars: np.ndarray
    sources: tuple[str, ...]


def _ceil(t: int | None, step: int) -> int | None:
    return None if t is None else -(-t // step) * step


def _read(
    store: Store, timeframe: str, symbol: str, start: int | None, end: int | None
) -> np.ndarray:
    """Stored bars (BAR_DTYPE) with start <= ts < end; empty for an empty range."""
    if start is not None and end is not None and end <= start:
        return np.empty(0, dtype=BAR_DTYPE)
    return table_to_bars(store.read_bars(timeframe, symbol, start, end))


def read_timeframe(
    store: Store | str | os.PathLike,
    timeframe: str,
    symbol: str,
    start: object = None,
    end: object = None,
) -> TimeframeBars:
    """Bars of ``timeframe`` of ``symbol`` with start <= ts < end (ms, datetime, ISO or None).

    Where the store holds bars of ``timeframe`` (from the first to the last of them in the
    range) those are returned as stored; the intervals before and after them are resampled
    from ``source_timeframe`` (``resample_bars``), reading the fine bars of the coarse
    intervals that open in the range. The last resampled interval is kept only when it is
    complete: a fine bar of its last fine interval, or of a later time (up to a day after the
    range), is stored. Empty when the store has neither.
    """
    store = store if isinstance(store, Store) else Store(store)
    tf = timeframe_ms(timeframe)
    start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
    stored = _read(store, timeframe, symbol, start_ms, end_ms)
    source = source_timeframe(store, timeframe, symbol)
    if source is None:
        return TimeframeBars(timeframe, stored, (timeframe,) if stored.size else ())
    lo, hi = _ceil(start_ms, tf), _ceil(end_ms, tf)
    parts, used = [], set()
    if stored.size:
        first, after = int(stored["ts"][0]), int(stored["ts"][-1]) + tf
        before = _read(store, source, symbol, lo, first)
        parts.append(resample_bars(before, source, timeframe, complete_until=first))
        parts.append(stored)
        used.update({timeframe, source} if before.size else {timeframe})
        lo = after
    tail = _read(store, source, symbol, lo, hi)
    if tail.size:
        until = int(tail["ts"][-1]) + TIMEFRAME_MS[source]
        if hi is not None and until < hi and _read(store, source, symbol, hi, hi + DAY_MS).size:
            until = hi
        parts.append(resample_bars(tail, source, timeframe, complete_until=until))
        used.add(source)
    bars = np.concatenate(parts) if parts else np.empty(0, dtype=BAR_DTYPE)
    return TimeframeBars(timeframe, bars, tuple(t for t in (timeframe, source) if t in used))
