"""A pair's backtest data: both legs' bars, aligned once, and their funding settlements.

``PairData.from_store`` reads the two legs' bars of one timeframe (start <= ts < end; stored, or
resampled from finer stored bars: ``engine.resample.read_timeframe``) and, where
the store holds funding rows for a leg, that leg's funding rows over the same range
(``stored_funding``); ``PairData.from_tables`` takes bars given as tables (uploaded, imported or
the dashboard's recent bars) and optionally their funding rows. Either way the bars are aligned
by ``engine.align.align_bars`` with the carry limit ``max_carry`` (bars, or "auto": the
timeframe's default; ``engine.align.max_carry_ms``) and the funding rows become settlement events
(``engine.funding.funding_events``) here, once, so every backtest of the data
(``engine.backtest.run``) charges the same funding.

The first stored bar of a symbol can be partial: a live recording starts at its first trade,
inside an interval (the last, still open bar of a session is never stored: the feed rebuilds it
from the ticks when it resumes). So ``from_store`` drops a leg's first bar when it is the
symbol's first stored bar and the store holds ticks of that symbol inside it (bars imported
without ticks, e.g. klines, are whole and kept); ``PairData.dropped`` names the legs. A
``start`` inside an interval starts at the next whole bar (bars are read by open time,
start <= ts), so it never makes a partial bar.

``warmup_bars``/``check_bars`` say whether a number of aligned bars is enough for a set of pair
parameters (in full, or in the train part of a train/test split, ``split_index``).
Times in ms.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.align import Aligned, align_bars, max_carry_ms
from engine.errors import ConfigError, DataError, NumericalError
from engine.funding import FundingEvents, funding_events
from engine.pairstep import PairParams
from engine.resample import TimeframeBars, read_timeframe, symbols_for
from engine.schemas import TIMEFRAME_MS, as_bar_records
from engine.store import Store, to_ms

#: per leg (y, x): funding settlement events, or None where the leg has none stored
FundingPair = tuple[FundingEvents | None, FundingEvents | None]


def _check_legs(y: str, x: str, timeframe: str) -> None:
    if y == x:
        raise ConfigError(f"pair {y}/{x}: expected two different symbols")
    if timeframe not in TIMEFRAME_MS:
        raise DataError(f"timeframe {timeframe!r}: expected one of {list(TIMEFRAME_MS)}")


def stored_funding(
    store: Store | str | os.PathLike, y: str, x: str, start: Any = None, end: Any = None
) -> tuple[Any, Any] | None:
    """Both legs' stored funding rows (``Store.read_funding``) with start <= ts < end, or None
    when neither leg has funding stored. ``start``/``end``: ms, datetime, ISO or None."""
    store = store if isinstance(store, Store) else Store(store)
    if not set(store.symbols("funding")) & {y, x}:
        return None
    return tuple(store.read_funding(s, start, end) for s in (y, x))


@dataclass(frozen=True)
class PairData:
    """One pair's bars (BAR_DTYPE), aligned once, and its funding events per leg (or None)."""

    y: str
    x: str
    timeframe: str
    bars_y: np.ndarray
    bars_x: np.ndarray
    aligned: Aligned
    funding: FundingPair | None = None
    #: legs whose first bar was dropped as partial (the start of the symbol's recording)
    dropped: tuple[str, ...] = ()

    @property
    def pair(self) -> str:
        """ "Y/X"."""
        return f"{self.y}/{self.x}"

    @property
    def n(self) -> int:
        """Number of aligned bars."""
        return int(self.aligned.ts.shape[0])

    def carry_counts(self, lo: int = 0, hi: int | None = None) -> dict[str, int]:
        """``carried_bars``: aligned bars [lo, hi) on which a leg carried its last close;
        ``dropped_bars``: bar times left out (a leg's close older than the carry limit) since
        the aligned bar before each of the part's bars, and after its last bar when it ends at
        the last aligned bar (so the counts of a train/test split add up to the whole)."""
        a = self.aligned
        end = self.n if hi is None else min(hi, self.n)
        carried = int(np.count_nonzero(~(a.has_y[lo:end] & a.has_x[lo:end])))
        d = a.dropped_before
        dropped = int(d[lo:end].sum())
        if end == self.n:
            dropped += a.dropped - int(d.sum())
        return {"carried_bars": carried, "dropped_bars": dropped}

    @classmethod
    def from_tables(
        cls,
        bars_y: Any,
        bars_x: Any,
        *,
        y: str = "Y",
        x: str = "X",
        timeframe: str = "1m",
        funding: tuple[Any, Any] | None = None,
        max_carry: int | str = "auto",
    ) -> PairData:
        """From two legs' bars (BAR_SCHEMA tables or BAR_DTYPE records) of ``timeframe``;
        ``funding`` (rows_y, rows_x): each leg's stored funding rows (``Store.read_funding``) or
        None, turned into settlement events here, once; ``max_carry``: bars a leg's last close
        may be carried (``analytics.max_carry``)."""
        _check_legs(y, x, timeframe)
        by, bx = as_bar_records(f"{y} bars", bars_y), as_bar_records(f"{x} bars", bars_x)
        for symbol, bars in ((y, by), (x, bx)):
            if bars.size == 0:
                raise DataError(f"no {timeframe} bars for {symbol}")
        aligned = align_bars(by, bx, max_carry_ms(max_carry, timeframe))
        if aligned.ts.shape[0] < 2:
            raise DataError(
                f"{y}/{x}: {aligned.ts.shape[0]} aligned {timeframe} bar(s); a backtest needs 2"
                + (f" ({aligned.dropped} dropped: a leg's last close was more than max_carry "
                   f"{max_carry} bars old; raise analytics.max_carry or pick overlapping data)"
                   if aligned.dropped else "")
            )  # fmt: skip
        events = None
        if funding is not None:
            events = tuple(None if rows is None else funding_events(rows) for rows in funding)
        return cls(y, x, timeframe, by, bx, aligned, events)

    @classmethod
    def from_store(
        cls,
        path: str | os.PathLike,
        y: str,
        x: str,
        timeframe: str,
        start: Any = None,
        end: Any = None,
        *,
        funding: bool = True,
        max_carry: int | str = "auto",
    ) -> PairData:
        """Read both legs' bars with start <= ts < end and, with ``funding``, their stored
        funding rows over the same range (``stored_funding``); ``max_carry`` as in
        ``from_tables``."""
        _check_legs(y, x, timeframe)
        start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise DataError(f"empty range: end {end!r} is not after start {start!r}")
        store = Store(path)
        stored = symbols_for(store, timeframe)
        legs = []
        dropped = []
        for symbol in (y, x):
            if symbol not in stored:
                raise DataError(
                    f"unknown symbol {symbol!r}: no {timeframe} bars (nor finer ones to build "
                    f"them from) stored in {path} (symbols with {timeframe} bars: {stored})"
                )
            read = read_timeframe(store, timeframe, symbol, start_ms, end_ms)
            bars = read.bars
            if bars.size and _recording_starts_in(store, read, symbol):
                bars = bars[1:]
                dropped.append(symbol)
            if bars.size == 0:
                raise DataError(
                    f"no {timeframe} bars of {symbol} in the range start={start!r} end={end!r}"
                )
            legs.append(bars)
        rows = stored_funding(store, y, x, start_ms, end_ms) if funding else None
        data = cls.from_tables(legs[0], legs[1], y=y, x=x, timeframe=timeframe, funding=rows,
                               max_carry=max_carry)  # fmt: skip
        return dataclasses.replace(data, dropped=tuple(dropped))


def _recording_starts_in(store: Store, read: TimeframeBars, symbol: str) -> bool:
    """True when the first bar read is in the symbol's first stored interval (no bar of the
    timeframes it was read from is stored before it) and stored ticks fall in it: the
    recording began inside that interval, so the bar may be partial."""
    first = int(read.bars["ts"][0])
    if any(store.read_bars(tf, symbol, None, first).num_rows for tf in read.sources):
        return False
    end = first + TIMEFRAME_MS[read.timeframe]
    return store.read_ticks(symbol, None, end).num_rows > 0


def warmup_bars(params: PairParams) -> int:
    """Bars until the first finite z-score (its bar included)."""
    warm = params.zscore_window if params.zscore == "rolling" else 1
    if params.hedge != "kalman":
        warm += params.ols_window - 1
    return warm


def split_index(n: int, train_frac: float | None) -> int | None:
    """First bar of the test part of a train/test split: floor(train_frac * n); None without
    a split."""
    if train_frac is None:
        return None
    if not (isinstance(train_frac, (int, float)) and 0.0 < train_frac < 1.0):
        raise ConfigError(
            f"train_frac: expected a fraction strictly between 0 and 1, got {train_frac!r}"
        )
    return math.floor(train_frac * n)


def check_bars(n: int, params: PairParams, train_frac: float | None = None) -> None:
    """NumericalError unless ``n`` aligned bars give the z-score time to warm up and trade
    (in the train part, with a train/test split; the test part needs 2 bars)."""
    need = warmup_bars(params) + 1
    k = split_index(n, train_frac)
    have, where = (n, "") if k is None else (k, f" in the train part (train_frac {train_frac})")
    if have < need:
        raise NumericalError(
            f"too few bars: {have} aligned bars{where}, but hedge {params.hedge!r} with "
            f"zscore_window {params.zscore_window}"
            + (f" and ols_window {params.ols_window}" if params.hedge != "kalman" else "")
            + f" needs at least {need} (the z-score warms up on {need - 1}); widen the range "
            "or shorten the windows"
        )
    if k is not None and n - k < 2:
        raise NumericalError(
            f"too few bars: the test part has {n - k} bar(s) of {n} (train_frac {train_frac}); "
            "it needs at least 2"
        )
