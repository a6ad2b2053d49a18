"""Binance wire formats on the exchange side: payloads, stream names, decimal strings.

Prices, quantities and rates are decimal strings; ids and times (ms) integers; ``m`` a bool
(../shared/BINANCE.md).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

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
