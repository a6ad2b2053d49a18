"""Klines of the simulated market, as Binance serves them (REST rows and archive CSV rows).

A kline covers [open_time, open_time + interval) and is built from the market's own trades, so
klines equal the bars of the trades the simulator serves. Unlike the store, Binance lists empty
intervals too: count 0, volumes 0, open = high = low = close = the previous close.
"""

from __future__ import annotations

import numpy as np

from engine.simulator.market import MINUTE_MS, Market
from engine.simulator.wire import fixed_decimals

#: Binance USD-M kline intervals (no 1s on futures) and their length in ms.
INTERVALS: dict[str, int] = {
    "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS, "2h": 120 * MINUTE_MS, "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS, "8h": 480 * MINUTE_MS, "12h": 720 * MINUTE_MS, "1d": 1440 * MINUTE_MS,
}  # fmt: skip


def klines(
    market: Market, symbol: str, interval_ms: int, first_open: int, last_open: int,
    lo_ms: int, hi_ms: int,
) -> list[list]:  # fmt: skip
    """Binance kline rows with ``first_open <= open_time <= last_open`` (both on the interval
    grid) from the trades with ``lo_ms <= T < hi_ms``; rows before the first trade are left out.

    Row: ``[open_time, "open", "high", "low", "close", "volume", close_time, "quote_volume",
    count, "taker_buy_volume", "taker_buy_quote_volume", "0"]`` (prices at the symbol's price
    precision, base volumes at its quantity precision, quote volumes at their sum).
    """
    if last_open < first_open:
        return []
    bars = market.minute_bars(symbol, max(lo_ms, first_open),
                              min(hi_ms, last_open + interval_ms))  # fmt: skip
    opens = bars["open_time"]
    if not len(opens):
        return []
    key = (opens - first_open) // interval_ms
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    ends = np.append(starts[1:], len(opens)) - 1
    n = int((last_open - first_open) // interval_ms) + 1
    slot = key[starts]
    agg = {
        "open": bars["open"][starts],
        "high": np.maximum.reduceat(bars["high"], starts),
        "low": np.minimum.reduceat(bars["low"], starts),
        "close": bars["close"][ends],
    }
    summed = ("volume", "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume")
    sums = {k: np.add.reduceat(bars[k], starts) for k in summed}
    # dense grid from the first traded interval on; empty ones repeat the previous close
    first = int(slot[0])
    filled = np.full(n, -1, dtype=np.int64)
    filled[slot] = np.arange(len(slot))
    traded = filled[first:] >= 0
    j = np.maximum.accumulate(filled)[first:]
    close = agg["close"][j]
    prices = [np.where(traded, agg[k][j], close) for k in ("open", "high", "low")] + [close]
    volumes = [np.where(traded, sums[k][j], 0) for k in summed]
    spec = market.specs[symbol]
    pp, qp = spec.price_precision, spec.quantity_precision
    vp = pp + qp
    open_time = first_open + np.arange(first, n, dtype=np.int64) * interval_ms
    columns = [
        open_time.tolist(),
        *(_strings(v, pp) for v in prices),
        _strings(volumes[0], qp),
        (open_time + (interval_ms - 1)).tolist(),
        _strings(volumes[1], vp),
        volumes[2].tolist(),
        _strings(volumes[3], qp),
        _strings(volumes[4], vp),
        ["0"] * len(open_time),
    ]
    return list(map(list, zip(*columns, strict=True)))


def _strings(values: np.ndarray, decimals: int) -> list[str]:
    return fixed_decimals(values, decimals).to_pylist()
