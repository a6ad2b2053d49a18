"""Warm start: the recent history of a timeframe, from the store first and REST for the rest.

Before a feed goes live, each of its symbols needs the last ``analytics.warmup_bars`` bars of
``analytics.timeframe`` (``AnalyticsConfig.warmup_bar_count``), so every pair's hedge and
z-score are defined at its first live bar. ``warm_up`` looks at what the store holds in that
window and fetches what it lacks over REST (``engine.binance.RestClient``): ``/fapi/v1/klines``
for 1m and 5m (at most 1,500 a request; the bar still open is never taken), ``/fapi/v1/aggTrades``
by time for 1s (windows under an hour, built into 1s bars by ``engine.bars``). Requests draw on a
``WeightBudget`` (Binance's 2,400 weight a minute) and 429/418 ``Retry-After`` is honoured by the
client. What was fetched is stored (ticks and 1s bars for aggTrades, bars for klines). A symbol
whose history cannot be had (REST error, endpoint missing) is reported not full; nothing raises.

What the store lacks: the part of the window before its first stored bar, and, when the store
holds no trades of the symbol, the part after its last stored bar (with stored trades the feed
resumes after the last one and refills that part itself: ``engine.ingest.FeedCore``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from engine.bars import build_bar_records
from engine.binance import (
    AGG_TRADES_MAX_SPAN_MS,
    AGG_TRADES_WEIGHT,
    KLINES_MAX_LIMIT,
    REST_WEIGHT_PER_MINUTE,
    BinanceError,
    RestClient,
    kline_bars,
    klines_weight,
)
from engine.errors import PairstackError
from engine.schemas import table_to_bars, table_to_ticks, timeframe_ms
from engine.store import Store

log = logging.getLogger(__name__)


class WeightBudget:
    """A token bucket of REST request weight: ``per_minute`` a minute, refilled continuously,
    shared by the symbols of one warm-up (await ``take(weight)`` before each request)."""

    def __init__(self, per_minute: int = REST_WEIGHT_PER_MINUTE):
        self.per_minute = float(per_minute)
        self._tokens = self.per_minute
        self._at = time.monotonic()

    async def take(self, weight: int) -> None:
        """Wait until ``weight`` is available, then spend it (one caller at a time)."""
        while True:
            now = time.monotonic()
            self._tokens = min(
                self.per_minute, self._tokens + (now - self._at) * self.per_minute / 60.0
            )
            self._at = now
            if self._tokens >= weight:
                self._tokens -= weight
                return
            await asyncio.sleep((weight - self._tokens) * 60.0 / self.per_minute)


@dataclass(frozen=True)
class WarmResult:
    """One symbol's warm-up: ``full`` when the store (with what was fetched) covers the window
    [``start_ms``, ``end_ms``) (bar open times, ms) from its start; ``fetched`` bars stored from
    REST; ``error`` the REST failure's text ("" when none)."""

    symbol: str
    full: bool
    start_ms: int
    end_ms: int
    fetched: int
    error: str = ""


def window(n_bars: int, timeframe: str, now_ms: float) -> tuple[int, int]:
    """[start, end) (ms) of the ``n_bars`` closed bars before the bar open at ``now_ms``."""
    tf = timeframe_ms(timeframe)
    end = int(now_ms) // tf * tf
    return end - n_bars * tf, end


def missing(stored_ts: np.ndarray, start: int, end: int, tf_ms: int,
            cover_tail: bool) -> list[tuple[int, int]]:  # fmt: skip
    """Ranges [a, b) (ms) of [start, end) to fetch given the stored bar open times in it: before
    the first stored bar, and after the last one when ``cover_tail``."""
    if len(stored_ts) == 0:
        return [(start, end)] if end > start else []
    out = []
    if int(stored_ts[0]) > start:
        out.append((start, int(stored_ts[0])))
    last = int(stored_ts[-1]) + tf_ms
    if cover_tail and last < end:
        out.append((last, end))
    return out


def recent_start(store: Store, timeframe: str, symbol: str, n_bars: int,
                 now_ms: float | None = None) -> int | None:  # fmt: skip
    """Where a replay of ``symbol``'s stored bars needs to start (ms): the window of the last
    ``n_bars`` bars before now when the store has bars there, else None (read them all: a
    store that ends earlier, e.g. one written by hand)."""
    now = time.time() * 1000.0 if now_ms is None else now_ms
    start = window(n_bars, timeframe, now)[0]
    recent = store.read_bars(timeframe, symbol, start=start)
    return start if recent.num_rows else None


async def _fetch_klines(rest: RestClient, budget: WeightBudget, symbol: str, timeframe: str,
                        a: int, b: int, now_ms: float) -> np.ndarray:  # fmt: skip
    """Closed klines with open time in [a, b) as BAR_DTYPE."""
    tf = timeframe_ms(timeframe)
    parts, cursor = [], a
    while cursor < b:
        limit = min(KLINES_MAX_LIMIT, -(-(b - cursor) // tf))
        await budget.take(klines_weight(limit))
        rows = await rest.klines(symbol, timeframe, cursor, b - 1, limit)
        if not rows:
            break
        parts.append(kline_bars(rows, timeframe, min(b, int(now_ms))))
        cursor = int(rows[-1][0]) + tf
        if len(rows) < limit:
            break
    bars = np.concatenate(parts) if parts else kline_bars([], timeframe, 0)
    return bars[(bars["ts"] >= a) & (bars["ts"] < b)]


async def _fetch_trades(rest: RestClient, budget: WeightBudget, symbol: str,
                        a: int, b: int) -> np.ndarray:  # fmt: skip
    """Aggregate trades with time in [a, b), in windows under an hour (TICK_DTYPE)."""
    parts = []
    span = AGG_TRADES_MAX_SPAN_MS - 1
    for lo in range(a, b, span):
        await budget.take(AGG_TRADES_WEIGHT)
        parts.append(await rest.agg_trades_by_time(symbol, lo, min(b, lo + span)))
    ticks = np.concatenate(parts) if len(parts) > 1 else parts[0]
    _, first = np.unique(ticks["agg_id"], return_index=True)  # pages may overlap at an id
    return ticks[np.sort(first)]


async def warm_symbol(rest: RestClient, store: Store, symbol: str, timeframe: str, n_bars: int,
                      budget: WeightBudget, now_ms: float) -> WarmResult:  # fmt: skip
    """Fill ``symbol``'s window of ``n_bars`` bars of ``timeframe`` before ``now_ms`` (see the
    module docstring); the caller flushes the store. REST failures raise (``BinanceError``: the
    exchange answered with an error; ``FeedError``: it could not be reached)."""
    tf = timeframe_ms(timeframe)
    start, end = window(n_bars, timeframe, now_ms)
    stored = table_to_bars(store.read_bars(timeframe, symbol, start=start, end=end))["ts"]
    has_trades = store.last_agg_id(symbol) is not None
    if has_trades:  # the feed refills after the last stored trade: fetch only before the first
        ticks = table_to_ticks(store.read_ticks(symbol, start=start, end=end))
        cover_end = int(ticks["ts"][0]) // tf * tf if len(ticks) else start
        if len(stored):
            cover_end = min(cover_end, int(stored[0]))
        todo = [(start, cover_end)] if cover_end > start else []
        first = min([cover_end] + ([int(stored[0])] if len(stored) else []))
    else:
        todo = missing(stored, start, end, tf, cover_tail=True)
        first = int(stored[0]) if len(stored) else end
    fetched = 0
    for a, b in todo:
        if timeframe == "1s":
            ticks = await _fetch_trades(rest, budget, symbol, a, b)
            bars = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], "1s")
            if len(ticks):
                store.write_ticks(symbol, ticks)
        else:
            bars = await _fetch_klines(rest, budget, symbol, timeframe, a, b, now_ms)
        if len(bars):
            store.write_bars(timeframe, symbol, bars)
            fetched += len(bars)
            first = min(first, int(bars["ts"][0]))
    # quiet intervals have no bar: the window is full when history reaches its first minute
    full = first < start + max(tf, 60_000)
    log.info("%s: warm-up of %d %s bars: %d fetched, %s", symbol, n_bars, timeframe, fetched,
             "full" if full else "not full")  # fmt: skip
    return WarmResult(symbol, full, start, end, fetched)


async def warm_up_async(symbols: Sequence[str], store: Store, rest_url: str, timeframe: str,
                        n_bars: int, *, budget: WeightBudget | None = None,
                        now_ms: float | None = None) -> dict[str, WarmResult]:  # fmt: skip
    """``warm_symbol`` for each symbol (in turn, sharing ``budget``), the store flushed. A
    symbol the exchange answers with an error for starts cold; when it cannot be reached, every
    symbol left starts cold (no waiting on each one in turn)."""
    budget = WeightBudget() if budget is None else budget
    now = time.time() * 1000.0 if now_ms is None else now_ms
    start, end = window(n_bars, timeframe, now)
    out = {}
    async with RestClient(rest_url) as rest:
        for i, sym in enumerate(symbols):
            try:
                out[sym] = await warm_symbol(rest, store, sym, timeframe, n_bars, budget, now)
            except BinanceError as exc:
                out[sym] = _cold(sym, timeframe, start, end, exc)
            except (PairstackError, OSError) as exc:
                out.update({s: _cold(s, timeframe, start, end, exc) for s in symbols[i:]})
                break
    store.flush()
    return out


def _cold(symbol: str, timeframe: str, start: int, end: int, exc: Exception) -> WarmResult:
    log.warning("%s: no %s history before going live (%s): it starts cold", symbol, timeframe,
                exc)  # fmt: skip
    return WarmResult(symbol, False, start, end, 0, str(exc))


def warm_up(symbols: Sequence[str], store: Store, rest_url: str, timeframe: str, n_bars: int,
            *, lateness_ms: int = 0) -> dict[str, WarmResult]:  # fmt: skip
    """Warm every symbol up to the bar open now (blocking; see the module docstring).

    A bar is final once the clock is ``lateness_ms`` past its end: just after a bar boundary
    this waits that long first. When a bar boundary passes while the symbols are warmed, the
    new bars are fetched too (a second pass), so the window reaches the bar open when the feed
    goes live."""
    if n_bars <= 0:
        return {}
    tf = timeframe_ms(timeframe)
    budget = WeightBudget()
    results: dict[str, WarmResult] = {}
    for _ in range(2):
        now = time.time() * 1000.0
        into_bar = now % tf
        if into_bar < lateness_ms:
            time.sleep((lateness_ms - into_bar) / 1000.0)
            now = time.time() * 1000.0
        passed = asyncio.run(
            warm_up_async(symbols, store, rest_url, timeframe, n_bars, budget=budget, now_ms=now)
        )
        results = {  # the latest window; bars fetched counted over both passes
            s: replace(r, fetched=r.fetched + (results[s].fetched if s in results else 0))
            for s, r in passed.items()
        }
        if int(time.time() * 1000.0) // tf * tf == window(n_bars, timeframe, now)[1]:
            break
    return results
