"""Binance wire formats on the exchange side: payloads, stream names, decimal strings.

Prices, quantities and rates are decimal strings; ids and times (ms) integers; ``m`` a bool,
as Binance's USD-M futures API documents them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
from numba import njit

from engine.simulator.market import MarkQuote, SymbolSpec

#: Stream kinds the simulator produces, and how often markPrice kinds are pushed (ms).
AGG_TRADE = "aggTrade"
MARK_PERIOD_MS: dict[str, int] = {"markPrice@1s": 1_000, "markPrice": 3_000}
STREAM_KINDS: frozenset[str] = frozenset({AGG_TRADE, *MARK_PERIOD_MS})


class StreamName(NamedTuple):
    """A stream name as subscribed (``name``), its symbol (uppercase) and kind."""

    name: str
    symbol: str
    kind: str


def parse_stream(name: str) -> StreamName | None:
    """``btcusdt@aggTrade`` -> StreamName; None when the name is not ``<symbol>@<kind>``."""
    symbol, sep, kind = name.partition("@")
    if not sep or not symbol or not kind or not symbol.isalnum():
        return None
    return StreamName(name, symbol.upper(), kind)


def agg_trade_payloads(symbol: str, ticks: np.ndarray, spec: SymbolSpec, event_ms: int) -> list:
    """Stream payloads (dicts, Binance key order) of TICK_DTYPE trades of one symbol."""
    return [
        {"e": "aggTrade", "E": event_ms, "s": symbol, **row} for row in rest_agg_trades(ticks, spec)
    ]


def rest_agg_trades(ticks: np.ndarray, spec: SymbolSpec) -> list[dict]:
    """``GET /fapi/v1/aggTrades`` rows: the stream fields minus e, E, s."""
    pp, qp = spec.price_precision, spec.quantity_precision
    return [
        {
            "a": int(a),
            "p": f"{p:.{pp}f}",
            "q": f"{q:.{qp}f}",
            "f": int(f),
            "l": int(last),
            "T": int(t),
            "m": bool(m),
        }
        for t, a, p, q, f, last, m in ticks.tolist()
    ]


def mark_payload(
    symbol: str, quote: MarkQuote, spec: SymbolSpec, event_ms: int, next_funding: int
) -> dict:
    """``<sym>@markPrice`` payload: mark at the symbol's precision, index/settle at 8 decimals."""
    return {
        "e": "markPriceUpdate",
        "E": event_ms,
        "s": symbol,
        "p": f"{quote.mark:.{spec.price_precision}f}",
        "i": f"{quote.index:.8f}",
        "P": f"{quote.settle:.8f}",
        "r": f"{quote.funding_rate:.8f}",
        "T": next_funding,
    }


def fixed_decimals(values: np.ndarray, decimals: int) -> pa.Array:
    """Non-negative floats as decimal strings with ``decimals`` places, equal to Python's
    ``f"{v:.{decimals}f}"``: written from integers by ``decimal_ascii`` when every scaled value is
    below 2^50 and within 0.25 of an integer (then both round to that integer), else by
    ``format``."""
    scaled = values * 10.0**decimals
    whole = np.rint(scaled)
    if len(values) and not (whole.max() < 2.0**50 and np.abs(scaled - whole).max() < 0.25):
        return pa.array(list(map(f"{{:.{decimals}f}}".format, values.tolist())), pa.string())
    offsets, data = decimal_ascii(whole.astype(np.int64), decimals)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


@njit(cache=True)
def decimal_ascii(ints: np.ndarray, decimals: int) -> tuple:
    """Non-negative integers k as the ASCII decimals of k / 10^decimals with ``decimals``
    places ("0.05" for k = 5, 2 places; no point when 0 places), concatenated: returns
    (int32 offsets of length n + 1, uint8 bytes), Arrow's string layout.
    Oracle: Python's ``f"{k / 10**decimals:.{decimals}f}"`` (tests/engine/test_sim_bars.py).
    """
    n = ints.shape[0]
    offsets = np.empty(n + 1, np.int32)
    data = np.empty(n * (21 + decimals), np.uint8)
    digits = np.empty(20, np.uint8)
    pos = 0
    offsets[0] = 0
    for i in range(n):
        k = ints[i]
        count = 0
        while count <= decimals or k > 0:  # at least one digit before the point
            digits[count] = 48 + k % 10
            k //= 10
            count += 1
        for d in range(count - 1, -1, -1):
            if d == decimals - 1:
                data[pos] = 46  # "."
                pos += 1
            data[pos] = digits[d]
            pos += 1
        offsets[i + 1] = pos
    return offsets, data[:pos]
