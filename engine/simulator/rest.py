"""The REST side of the simulator: ``/fapi/v1/...`` GETs answered like Binance.

History: the trades with ``history_start <= T < served`` (``span()``: the simulator's start
minus ``history_days``, or the symbol's listing when later; the end of the trades published on
the stream so far, so REST never runs ahead of the stream); klines and funding rates
are built from the same market, so they agree with the trades. Every response carries
``X-MBX-USED-WEIGHT-1M`` (request weight used over the last minute).
Errors are HTTP 4xx with ``{"code": <negative int>, "msg": "..."}``; 429 carries ``Retry-After``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import orjson

from engine.config import FaultsConfig
from engine.simulator.klines import INTERVALS, klines
from engine.simulator.market import (
    FUNDING_INTERVAL_MS,
    INTEREST_RATE,
    Market,
    next_funding_ms,
)
from engine.simulator.wire import rest_agg_trades

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class RestResponse:
    """Status, extra headers and JSON body of one REST answer."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ApiError(Exception):
    """A Binance error answer: HTTP status, negative code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _missing(name: str) -> ApiError:
    return ApiError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _bad(name: str) -> ApiError:
    return ApiError(400, -1130, f"Data sent for parameter '{name}' is not valid.")


def _int_param(params: dict[str, str], name: str, lo: int, hi: int) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw == "":
        raise _missing(name)
    if not raw.isdigit():
        raise _bad(name)
    value = int(raw)
    if not lo <= value <= hi:
        raise _bad(name)
    return value


class RestApi:
    """Answers REST requests from the market model; ``span()`` is (first ms of the history,
    end ms (exclusive) of the trades published so far)."""

    def __init__(
        self,
        market: Market,
        span: Callable[[], tuple[int, int]],
        faults: FaultsConfig,
        weight_limit: int | None,
        count_event: Callable[[str], None],
    ) -> None:
        self._market = market
        self._span = span
        self._faults = faults
        self._weight_limit = weight_limit
        self._count_event = count_event
        self._weights: collections.deque[tuple[int, int]] = collections.deque()
        self._requests = 0
        self._routes: dict[str, Callable[[dict[str, str], int], tuple[int, object]]] = {
            "/fapi/v1/ping": lambda p, now: (1, {}),
            "/fapi/v1/time": lambda p, now: (1, {"serverTime": now}),
            "/fapi/v1/exchangeInfo": self._exchange_info,
            "/fapi/v1/aggTrades": self._agg_trades,
            "/fapi/v1/klines": self._klines,
            "/fapi/v1/fundingRate": self._funding_rate,
            "/fapi/v1/ticker/24hr": self._ticker_24hr,
            "/fapi/v1/premiumIndex": self._premium_index,
        }

    def handle(self, target: str, now_ms: int) -> RestResponse:
        """Answer ``GET target`` (path and query string) at wall time ``now_ms``."""
        parts = urlsplit(target)
        route = self._routes.get(parts.path)
        if route is None:
            return self._answer(404, {"code": -1000, "msg": f"Unknown path {parts.path}."}, now_ms)
        self._requests += 1
        every = self._faults.rest_429_every
        if every and self._requests % every == 0:
            self._count_event("rest_429")
            return self._too_many(now_ms)
        try:
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            weight, payload = route(params, now_ms)
        except ApiError as exc:
            return self._answer(exc.status, {"code": exc.code, "msg": exc.msg}, now_ms)
        self._weights.append((now_ms, weight))
        if self._weight_limit is not None and self._used(now_ms) > self._weight_limit:
            return self._too_many(now_ms)
        return self._answer(200, payload, now_ms)

    def _used(self, now_ms: int) -> int:
        while self._weights and self._weights[0][0] <= now_ms - 60_000:
            self._weights.popleft()
        return sum(w for _, w in self._weights)

    def _too_many(self, now_ms: int) -> RestResponse:
        body = {"code": -1003, "msg": "Too many requests; please use the websocket for live "
                "updates or back off as told by Retry-After."}  # fmt: skip
        extra = (("Retry-After", str(self._faults.retry_after_s)),)
        return self._answer(429, body, now_ms, extra)

    def _answer(
        self, status: int, payload: object, now_ms: int, extra: tuple[tuple[str, str], ...] = ()
    ) -> RestResponse:
        headers = (("X-MBX-USED-WEIGHT-1M", str(self._used(now_ms))), *extra)
        return RestResponse(status, headers, orjson.dumps(payload))

    def _symbol(self, params: dict[str, str], *, required: bool) -> str | None:
        symbol = params.get("symbol")
        if symbol is None or symbol == "":
            if required:
                raise _missing("symbol")
            return None
        if symbol not in self._market.specs:
            raise ApiError(400, -1121, "Invalid symbol.")
        return symbol

    def lo_ms(self, symbol: str) -> int:
        """First ms of ``symbol``'s history: the history start or its listing, the later."""
        return max(self._span()[0], self._market.epochs[symbol])

    def _exchange_info(self, params: dict[str, str], now_ms: int) -> tuple[int, object]:
        symbols = []
        for sym in self._market.symbols:
            spec = self._market.specs[sym]
            symbols.append({
                "symbol": sym,
                "pair": sym,
                "contractType": "PERPETUAL",
                "status": "TRADING",
                "baseAsset": sym.removesuffix("USDT"),
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": spec.price_precision,
                "quantityPrecision": spec.quantity_precision,
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": spec.tick_size,
                     "minPrice": spec.tick_size, "maxPrice": "1000000"},
                    {"filterType": "LOT_SIZE", "stepSize": spec.step_size,
                     "minQty": spec.step_size, "maxQty": "100000000"},
                ],
            })  # fmt: skip
        rate_limits = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": self._weight_limit or 2400},
        ]  # fmt: skip
        body = {"timezone": "UTC", "serverTime": now_ms, "rateLimits": rate_limits,
                "symbols": symbols}  # fmt: skip
        return 1, body

    def _agg_trades(self, params: dict[str, str], now_ms: int) -> tuple[int, object]:
        symbol = self._symbol(params, required=True)
        limit = _int_param(params, "limit", 1, 1000) or 500
        from_id = _int_param(params, "fromId", 0, 2**63 - 1)
        start = _int_param(params, "startTime", 0, 2**63 - 1)
        end = _int_param(params, "endTime", 0, 2**63 - 1)
        market, lo, hi = self._market, self.lo_ms(symbol), self._span()[1]
        if from_id is not None:
            if start is not None or end is not None:
                raise ApiError(400, -1128, "Combination of optional parameters invalid.")
            from_id = max(from_id, market.first_id_at(symbol, lo))
            ticks = market.trades_from_id(symbol, from_id, limit, hi)
        else:
            if start is not None and end is not None:
                if end < start:
                    raise ApiError(400, -1128, "startTime must not be after endTime.")
                if end - start > HOUR_MS:
                    raise ApiError(400, -1127, "More than 1 hours between startTime and endTime.")
            if start is not None:
                end = start + HOUR_MS if end is None else end
                ticks = market.trades(symbol, max(lo, start), min(hi, end + 1))[:limit]
            else:
                end = hi - 1 if end is None else end
                ticks = market.trades(symbol, max(lo, end - HOUR_MS), min(hi, end + 1))[-limit:]
        return 20, rest_agg_trades(ticks, market.specs[symbol])

    def _klines(self, params: dict[str, str], now_ms: int) -> tuple[int, object]:
        symbol = self._symbol(params, required=True)
        interval = params.get("interval")
        if not interval:
            raise _missing("interval")
        tf = INTERVALS.get(interval)
        if tf is None:
            raise ApiError(400, -1120, "Invalid interval.")
        limit = _int_param(params, "limit", 1, 1500) or 500
        start = _int_param(params, "startTime", 0, 2**63 - 1)
        end = _int_param(params, "endTime", 0, 2**63 - 1)
        if start is not None and end is not None and end < start:
            raise ApiError(400, -1128, "startTime must not be after endTime.")
        lo, hi = self.lo_ms(symbol), self._span()[1]
        first_bar, last_bar = lo // tf * tf, (hi - 1) // tf * tf
        if end is not None:
            last_bar = min(last_bar, end // tf * tf)
        if start is not None:
            first_open = max(first_bar, -(-start // tf) * tf)
            last_open = min(last_bar, first_open + (limit - 1) * tf)
        else:
            last_open = last_bar
            first_open = max(first_bar, last_open - (limit - 1) * tf)
        rows = klines(self._market, symbol, tf, first_open, last_open, lo, hi)
        weight = 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        return weight, rows

    def _funding_rate(self, params: dict[str, str], now_ms: int) -> tuple[int, object]:
        symbol = self._symbol(params, required=True)
        limit = _int_param(params, "limit", 1, 1000) or 100
        start = _int_param(params, "startTime", 0, 2**63 - 1)
        end = _int_param(params, "endTime", 0, 2**63 - 1)
        step = FUNDING_INTERVAL_MS
        first = -(-max(self.lo_ms(symbol), start or 0) // step) * step
        last = min(now_ms, now_ms if end is None else end) // step * step
        times = range(first, last + 1, step)
        times = times[:limit] if start is not None else times[-limit:]
        return 1, [funding_row(self._market, symbol, t) for t in times]

    def _ticker_24hr(self, params: dict[str, str], now_ms: int) -> tuple[int, object]:
        symbol = self._symbol(params, required=False)
        if symbol is not None:
            return 1, self._ticker(symbol, now_ms)
        return 40, [self._ticker(s, now_ms) for s in self._market.symbols]

    def _ticker(self, symbol: str, now_ms: int) -> dict:
        spec = self._market.specs[symbol]
        pp, qp = spec.price_precision, spec.quantity_precision
        lo, hi = self.lo_ms(symbol), self._span()[1]
        ticks = self._market.trades(symbol, max(lo, now_ms - DAY_MS), hi)
        if len(ticks):
            price, qty = ticks["price"], ticks["qty"]
            first, last = ticks[0], ticks[-1]
            open_, last_price, last_qty = float(price[0]), float(price[-1]), float(qty[-1])
            high, low = float(price.max()), float(price.min())
            volume = float(qty.sum())
            quote = float(np.dot(price, qty))
            first_id, last_id = int(first["agg_id"]), int(last["agg_id"])
        else:
            open_ = last_price = high = low = self._market.mark_at(symbol, now_ms).index
            last_qty = volume = quote = 0.0
            first_id = last_id = -1
        change = last_price - open_
        return {
            "symbol": symbol,
            "priceChange": f"{change:.{pp}f}",
            "priceChangePercent": f"{100.0 * change / open_:.3f}",
            "weightedAvgPrice": f"{(quote / volume if volume else last_price):.{pp}f}",
            "lastPrice": f"{last_price:.{pp}f}",
            "lastQty": f"{last_qty:.{qp}f}",
            "openPrice": f"{open_:.{pp}f}",
            "highPrice": f"{high:.{pp}f}",
            "lowPrice": f"{low:.{pp}f}",
            "volume": f"{volume:.{qp}f}",
            "quoteVolume": f"{quote:.2f}",
            "openTime": now_ms - DAY_MS,
            "closeTime": now_ms,
            "firstId": first_id,
            "lastId": last_id,
            "count": len(ticks),
        }

    def _premium_index(self, params: dict[str, str], now_ms: int) -> tuple[int, object]:
        symbol = self._symbol(params, required=False)
        if symbol is not None:
            return 1, self._premium(symbol, now_ms)
        return 10, [self._premium(s, now_ms) for s in self._market.symbols]

    def _premium(self, symbol: str, now_ms: int) -> dict:
        spec = self._market.specs[symbol]
        quote = self._market.mark_at(symbol, now_ms)
        return {
            "symbol": symbol,
            "markPrice": f"{quote.mark:.{spec.price_precision}f}",
            "indexPrice": f"{quote.index:.8f}",
            "estimatedSettlePrice": f"{quote.settle:.8f}",
            "lastFundingRate": f"{quote.funding_rate:.8f}",
            "interestRate": f"{INTEREST_RATE:.8f}",
            "nextFundingTime": next_funding_ms(now_ms),
            "time": now_ms,
        }


def funding_row(market: Market, symbol: str, funding_ms: int) -> dict:
    """``GET /fapi/v1/fundingRate`` row: the rate and mark price at ``funding_ms``."""
    quote = market.mark_at(symbol, funding_ms)
    return {
        "symbol": symbol,
        "fundingTime": funding_ms,
        "fundingRate": f"{quote.funding_rate:.8f}",
        "markPrice": f"{quote.mark:.8f}",
    }
