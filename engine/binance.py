"""Everything Binance-specific: URLs, stream names, payload structs, REST client, public data.

Nothing outside this module (and ``engine.validate``/``engine.feed``, which speak the wire
protocol) should know a Binance URL, a payload key or a CSV column. It imports nothing else of
the feed: ``engine.validate`` builds on its payload structs, field kinds and ``check_fields``.
``check_symbol`` is the one symbol check (config, simulator, validator, stream names, REST).

Units: times are Unix milliseconds, prices and quantities raw (not log) floats once parsed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

import httpx
import msgspec
import numpy as np
import orjson

from engine.errors import DataError, FeedError, PairstackError
from engine.schemas import BAR_DTYPE, TICK_DTYPE, TIMEFRAME_MS

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# URLs and stream names

#: Routed websocket base for regular market data (aggTrade, markPrice, klines); since 2026.
BINANCE_WS_MARKET = "wss://fstream.binance.com/market"
#: REST base of USD-M futures.
BINANCE_REST = "https://fapi.binance.com"

AGG_TRADES_PATH = "/fapi/v1/aggTrades"
EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TICKER_24HR_PATH = "/fapi/v1/ticker/24hr"
PREMIUM_INDEX_PATH = "/fapi/v1/premiumIndex"
KLINES_PATH = "/fapi/v1/klines"
FUNDING_RATE_PATH = "/fapi/v1/fundingRate"
#: Host of the public-data archive (``archive_path`` gives the paths under it).
BINANCE_PUBLIC_DATA = "https://data.binance.vision"

#: Most klines one REST call returns.
KLINES_MAX_LIMIT = 1500
#: Most funding-rate rows one REST call returns.
FUNDING_RATE_MAX_LIMIT = 1000
#: Intervals of USD-M futures klines (REST and archive); futures have no 1s klines.
KLINE_INTERVALS: tuple[str, ...] = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
)  # fmt: skip

#: Most aggTrades one REST call returns.
AGG_TRADES_MAX_LIMIT = 1000
#: the most ``/fapi/v1/aggTrades`` allows between startTime and endTime (ms)
AGG_TRADES_MAX_SPAN_MS = 3_600_000
#: request weight of ``/fapi/v1/aggTrades``; weight Binance allows per minute and IP
AGG_TRADES_WEIGHT = 20
REST_WEIGHT_PER_MINUTE = 2_400
#: How far back REST aggTrades reach (ms); older gaps are open gaps (public data only).
REST_HISTORY_MS = 48 * 3600 * 1000
#: Incoming messages per second a connection accepts before Binance drops it.
WS_MAX_MESSAGES_PER_S = 10
#: Streams per connection.
WS_MAX_STREAMS = 1024
#: Hard lifetime of a connection (s).
WS_MAX_LIFETIME_S = 24 * 3600


#: An exchange symbol: uppercase letters and digits, 2 to 30 of them (``BTCUSDT``,
#: ``1000PEPEUSDT``); the config's ``Symbol`` type uses the same pattern.
SYMBOL_PATTERN = "^[A-Z0-9]{2,30}$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)


def check_symbol(symbol: object, error: type[PairstackError] = DataError) -> str:
    """``symbol`` when it is an exchange symbol (``SYMBOL_PATTERN``), else ``error`` (the
    caller's kind: ConfigError for settings, FeedError for the wire, DataError for data)."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise error(
            f"bad symbol {symbol!r}: expected uppercase alphanumeric (2 to 30 letters and "
            "digits) such as 'BTCUSDT'"
        )
    return symbol


def agg_trade_stream(symbol: str) -> str:
    """Stream name of a symbol's aggregate trades: ``BTCUSDT`` -> ``btcusdt@aggTrade``."""
    return f"{check_symbol(symbol, FeedError).lower()}@aggTrade"


def mark_price_stream(symbol: str) -> str:
    """Stream name of a symbol's 1-second mark price: ``btcusdt@markPrice@1s``."""
    return f"{check_symbol(symbol, FeedError).lower()}@markPrice@1s"


def combined_stream_url(ws_base: str, streams: Sequence[str]) -> str:
    """Combined-stream URL ``{ws_base}/stream?streams=a/b/c`` (``ws_base`` is the routed base)."""
    if not streams:
        raise FeedError("combined_stream_url needs at least one stream name")
    if len(streams) > WS_MAX_STREAMS:
        raise FeedError(
            f"{len(streams)} streams on one connection; Binance allows {WS_MAX_STREAMS}"
        )
    return f"{ws_base.rstrip('/')}/stream?streams={'/'.join(streams)}"


#: Name used in docs/internals.md for the same function.
stream_url = combined_stream_url


def stream_symbol(stream: str) -> str:
    """Symbol (uppercase) of a stream name: ``btcusdt@aggTrade`` -> ``BTCUSDT``."""
    return stream.split("@", 1)[0].upper()


def control_message(method: str, params: Sequence[str] | None, msg_id: int | str) -> bytes:
    """JSON text of a live control message (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS)."""
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"):
        raise FeedError(f"unknown control method {method!r}")
    body: dict = {"method": method, "id": msg_id}
    if params is not None:
        body["params"] = list(params)
    return msgspec.json.encode(body)


# --------------------------------------------------------------------------------------------
# Payload structs (decode tolerantly: unknown keys are ignored; types are strict)

#: A positive-looking decimal string as Binance sends it ("97012.40"); at most 20+20 digits.
DECIMAL_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,20})?$"
#: A signed decimal string (funding rates may be negative).
SIGNED_DECIMAL_PATTERN = r"^-?[0-9]{1,20}(\.[0-9]{1,20})?$"
DECIMAL_RE = re.compile(DECIMAL_PATTERN)
SIGNED_DECIMAL_RE = re.compile(SIGNED_DECIMAL_PATTERN)

Decimal = Annotated[str, msgspec.Meta(pattern=DECIMAL_PATTERN)]
SignedDecimal = Annotated[str, msgspec.Meta(pattern=SIGNED_DECIMAL_PATTERN)]
Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class AggTrade(msgspec.Struct, tag_field="e", tag="aggTrade", frozen=True):
    """``<sym>@aggTrade`` payload. ``E``/``T`` ms, ``a`` aggregate id, ``p``/``q`` decimals."""

    E: Id
    s: str
    a: Id
    p: Decimal
    q: Decimal
    f: Id
    l: Id  # noqa: E741 (Binance's key)
    T: Id
    m: bool


class MarkPriceUpdate(msgspec.Struct, tag_field="e", tag="markPriceUpdate", frozen=True):
    """``<sym>@markPrice@1s`` payload: mark ``p``, funding rate ``r``, next funding ``T`` (ms)."""

    E: Id
    s: str
    p: Decimal
    r: SignedDecimal
    T: Id
    i: Decimal | None = None
    P: Decimal | None = None


class CombinedFrame(msgspec.Struct, frozen=True):
    """Combined-stream envelope ``{"stream": name, "data": payload}``."""

    stream: str
    data: AggTrade | MarkPriceUpdate


class RestAggTrade(msgspec.Struct, frozen=True):
    """One row of ``GET /fapi/v1/aggTrades`` (the stream fields minus ``e``, ``E``, ``s``)."""

    a: Id
    p: Decimal
    q: Decimal
    f: Id
    l: Id  # noqa: E741
    T: Id
    m: bool


class ControlError(msgspec.Struct, frozen=True):
    code: int
    msg: str


class ControlReply(msgspec.Struct, frozen=True):
    """Reply to a control message: ``{"result": ..., "id": id}`` or ``{"error": ..., "id": id}``."""

    id: int | str
    result: list[str] | None = None
    error: ControlError | None = None


class ApiError(msgspec.Struct):
    code: int
    msg: str


#: Field -> kind of the aggTrade keys validated strictly ("int", "str", "decimal", "bool").
AGG_TRADE_FIELDS: dict[str, str] = {
    "E": "int", "s": "str", "a": "int", "p": "decimal", "q": "decimal",
    "f": "int", "l": "int", "T": "int", "m": "bool",
}  # fmt: skip
REST_AGG_TRADE_FIELDS: dict[str, str] = {
    k: v for k, v in AGG_TRADE_FIELDS.items() if k not in ("E", "s")
}
MARK_PRICE_FIELDS: dict[str, str] = {
    "E": "int", "s": "str", "p": "decimal", "r": "signed", "T": "int",
}  # fmt: skip


#: Why a frame is rejected, one reason per frame, checked in this order (the status JSON's
#: ``rejected`` keys; the simulator injects each of them).
REJECT_REASONS: tuple[str, ...] = (
    "not_json", "bad_frame", "missing_field", "bad_type",
    "bad_price", "bad_qty", "unknown_symbol", "duplicate",
)  # fmt: skip


class Reject(Exception):
    """A payload fails a strict check; ``reason`` is one of ``REJECT_REASONS``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_DECIMAL_REASON = {"p": "bad_price", "q": "bad_qty"}


def check_fields(payload: dict, fields: Mapping[str, str]) -> None:
    """Raise Reject(missing_field | bad_type | bad_price | bad_qty) for the first problem."""
    for key in fields:
        if key not in payload:
            raise Reject("missing_field")
    for key, kind in fields.items():
        value = payload[key]
        if kind == "int":
            ok = type(value) is int and 0 <= value < 2**63
        elif kind == "bool":
            ok = type(value) is bool
        else:
            ok = type(value) is str
        if not ok:
            raise Reject("bad_type")
    for key, kind in fields.items():
        if kind == "decimal" and not DECIMAL_RE.match(payload[key]):
            raise Reject(_DECIMAL_REASON.get(key, "bad_price"))
        if kind == "signed" and not SIGNED_DECIMAL_RE.match(payload[key]):
            raise Reject("bad_type")



_REST_ROWS = msgspec.json.Decoder(list[RestAggTrade])


def parse_rest_agg_trades(body: bytes | str) -> tuple[np.ndarray, dict[str, int]]:
    """Body of ``GET /fapi/v1/aggTrades`` -> (valid rows as TICK_DTYPE in id order, rejects).

    Same strict rules as the stream (reasons ``missing_field``, ``bad_type``, ``bad_price``,
    ``bad_qty``; a body that is not a JSON array is ``not_json``/``bad_frame``).
    """
    try:
        trades = _REST_ROWS.decode(body)
        rows = [(t.T, t.a, float(t.p), float(t.q), t.f, t.l, t.m) for t in trades]
        rejects: dict[str, int] = {}
    except msgspec.MsgspecError:
        rows, rejects = _slow_rest_rows(body)
    ticks = np.array(rows, dtype=TICK_DTYPE)
    keep = (ticks["price"] > 0) & (ticks["qty"] > 0)
    if not keep.all():
        n_price = int((~(ticks["price"] > 0)).sum())
        if n_price:
            rejects["bad_price"] = rejects.get("bad_price", 0) + n_price
        n_qty = int(((ticks["price"] > 0) & ~(ticks["qty"] > 0)).sum())
        if n_qty:
            rejects["bad_qty"] = rejects.get("bad_qty", 0) + n_qty
        ticks = ticks[keep]
    if ticks.size > 1 and not (np.diff(ticks["agg_id"]) > 0).all():
        ticks = ticks[np.argsort(ticks["agg_id"], kind="stable")]
        ticks = ticks[np.concatenate(([True], np.diff(ticks["agg_id"]) > 0))]
    return ticks, rejects


def _slow_rest_rows(body: bytes | str) -> tuple[list[tuple], dict[str, int]]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [], {"not_json": 1}
    if not isinstance(items, list):
        return [], {"bad_frame": 1}
    rows, rejects = [], {}
    for item in items:
        try:
            if not isinstance(item, dict):
                raise Reject("bad_frame")
            check_fields(item, REST_AGG_TRADE_FIELDS)
        except Reject as rej:
            rejects[rej.reason] = rejects.get(rej.reason, 0) + 1
            continue
        rows.append((item["T"], item["a"], float(item["p"]), float(item["q"]),
                     item["f"], item["l"], item["m"]))  # fmt: skip
    return rows, rejects


# --------------------------------------------------------------------------------------------
# REST client


class BinanceError(FeedError):
    """Binance answered with an error: HTTP ``status`` and Binance's ``code`` and ``msg``."""

    def __init__(self, status: int, code: int | None, msg: str, path: str):
        super().__init__(f"Binance {path} failed: HTTP {status}, code {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.path = path


class RestClient:
    """Async REST client for the public USD-M endpoints pairstack uses.

    Honours 429/418 with ``Retry-After`` (seconds): sleeps that long and retries, at most
    ``max_retries`` times in a row, never hammering. ``used_weight`` is the last
    ``X-MBX-USED-WEIGHT-1M`` seen; ``backoffs`` counts the sleeps. Use as an async context
    manager or call ``aclose()``.
    """

    def __init__(
        self,
        base_url: str = BINANCE_REST,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 8,
        default_retry_after_s: float = 1.0,
    ):
        if max_retries < 0:
            raise FeedError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.default_retry_after_s = default_retry_after_s
        self.used_weight: int | None = None
        self.backoffs = 0
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: dict | None = None) -> bytes:
        """GET ``path``; returns the body; raises BinanceError on an error answer."""
        attempt = 0
        while True:
            try:
                resp = await self._http.get(path, params=params)
            except httpx.HTTPError as exc:
                raise FeedError(f"GET {self.base_url}{path} failed: {exc!r}") from exc
            weight = resp.headers.get("X-MBX-USED-WEIGHT-1M")
            if weight is not None and weight.isdigit():
                self.used_weight = int(weight)
            if resp.status_code in (418, 429):
                if attempt >= self.max_retries:
                    raise _api_error(resp, path)
                delay = retry_after_s(resp, self.default_retry_after_s)
                log.warning(
                    "GET %s: HTTP %d, backing off %.2f s (Retry-After)",
                    path, resp.status_code, delay,
                )  # fmt: skip
                self.backoffs += 1
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if resp.status_code >= 400:
                raise _api_error(resp, path)
            return resp.content

    async def agg_trades_raw(self, symbol: str, from_id: int, limit: int = 1000) -> bytes:
        """Raw JSON body of ``GET /fapi/v1/aggTrades?symbol=&fromId=&limit=`` (fromId inclusive)."""
        if not 1 <= limit <= AGG_TRADES_MAX_LIMIT:
            raise FeedError(f"limit must be in 1..{AGG_TRADES_MAX_LIMIT}, got {limit}")
        if from_id < 0:
            raise FeedError(f"from_id must be >= 0, got {from_id}")
        params = {"symbol": check_symbol(symbol, FeedError), "fromId": from_id, "limit": limit}
        return await self.get(AGG_TRADES_PATH, params)

    async def agg_trades(self, symbol: str, from_id: int, limit: int = 1000) -> np.ndarray:
        """Up to ``limit`` aggregate trades from ``from_id`` on, as TICK_DTYPE.

        Rows are checked as strictly as the stream; malformed rows are dropped and logged
        (their ids are then missing, which the caller sees).
        """
        ticks, rejects = parse_rest_agg_trades(await self.agg_trades_raw(symbol, from_id, limit))
        if rejects:
            log.warning("aggTrades %s from %d: dropped malformed rows %s", symbol, from_id, rejects)
        return ticks

    async def fetch_agg_trades_range(self, symbol: str, from_id: int, to_id: int) -> np.ndarray:
        """Aggregate trades with ``from_id <= a <= to_id``, paging 1000 at a time.

        Stops early when REST has nothing more (the caller sees which ids are missing).
        """
        if to_id < from_id:
            raise FeedError(f"empty id range {from_id}..{to_id}")
        parts: list[np.ndarray] = []
        nxt = from_id
        while nxt <= to_id:
            limit = min(AGG_TRADES_MAX_LIMIT, to_id - nxt + 1)
            page = await self.agg_trades(symbol, nxt, limit)
            page = page[(page["agg_id"] >= nxt) & (page["agg_id"] <= to_id)]
            if page.size == 0:
                break
            parts.append(page)
            nxt = int(page["agg_id"][-1]) + 1
        if not parts:
            return np.empty(0, dtype=TICK_DTYPE)
        return np.concatenate(parts)

    async def agg_trades_by_time(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        """Aggregate trades with ``start_ms <= T < end_ms`` (TICK_DTYPE, id order): the first
        page by time (``startTime``/``endTime``, under 1 hour apart as Binance requires), the
        rest by id. Weight 20 a request."""
        if not 0 <= end_ms - start_ms <= AGG_TRADES_MAX_SPAN_MS:
            raise FeedError(
                f"aggTrades by time: expected 0 <= end - start <= {AGG_TRADES_MAX_SPAN_MS} ms,"
                f" got {start_ms}..{end_ms}"
            )
        if end_ms == start_ms:
            return np.empty(0, dtype=TICK_DTYPE)
        params = {"symbol": check_symbol(symbol, FeedError), "startTime": start_ms,
                  "endTime": end_ms - 1, "limit": AGG_TRADES_MAX_LIMIT}  # fmt: skip
        page, rejects = parse_rest_agg_trades(await self.get(AGG_TRADES_PATH, params))
        if rejects:
            log.warning("aggTrades %s from %d ms: dropped malformed rows %s", symbol, start_ms,
                        rejects)  # fmt: skip
        parts = [page]
        while len(page) == AGG_TRADES_MAX_LIMIT and page["ts"][-1] < end_ms:
            page = await self.agg_trades(symbol, int(page["agg_id"][-1]) + 1)
            parts.append(page)
        ticks = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return ticks[(ticks["ts"] >= start_ms) & (ticks["ts"] < end_ms)]

    async def exchange_info(self) -> dict:
        """``GET /fapi/v1/exchangeInfo`` decoded."""
        return msgspec.json.decode(await self.get(EXCHANGE_INFO_PATH))

    async def ticker_24hr(self, symbol: str) -> dict:
        """``GET /fapi/v1/ticker/24hr?symbol=`` decoded (``quoteVolume``, ``lastPrice``, ...)."""
        return msgspec.json.decode(
            await self.get(TICKER_24HR_PATH, {"symbol": check_symbol(symbol, FeedError)})
        )

    async def ticker_24hr_all(self) -> list[dict]:
        """``GET /fapi/v1/ticker/24hr`` of every symbol (weight 40), decoded."""
        return msgspec.json.decode(await self.get(TICKER_24HR_PATH))

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int,
                     limit: int = KLINES_MAX_LIMIT) -> list[list]:
        """``GET /fapi/v1/klines``: Binance's array rows with ``start_ms <= open_time <=
        end_ms``, at most ``limit``; the last row may be the bar still open."""
        if interval not in KLINE_INTERVALS:
            raise FeedError(f"kline interval {interval!r}: expected one of {KLINE_INTERVALS}")
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            raise FeedError(f"limit must be in 1..{KLINES_MAX_LIMIT}, got {limit}")
        params = {"symbol": check_symbol(symbol, FeedError), "interval": interval,
                  "startTime": start_ms, "endTime": end_ms, "limit": limit}  # fmt: skip
        return msgspec.json.decode(await self.get(KLINES_PATH, params))

    async def funding_rates(self, symbol: str, start_ms: int, end_ms: int,
                            limit: int = FUNDING_RATE_MAX_LIMIT) -> list[dict]:
        """``GET /fapi/v1/fundingRate``: settlements (``fundingTime`` ms, ``fundingRate``,
        ``markPrice``) with ``start_ms <= fundingTime <= end_ms``, oldest first, at most
        ``limit``."""
        if not 1 <= limit <= FUNDING_RATE_MAX_LIMIT:
            raise FeedError(f"limit must be in 1..{FUNDING_RATE_MAX_LIMIT}, got {limit}")
        params = {"symbol": check_symbol(symbol, FeedError), "startTime": start_ms,
                  "endTime": end_ms, "limit": limit}  # fmt: skip
        return msgspec.json.decode(await self.get(FUNDING_RATE_PATH, params))

    async def premium_index(self, symbol: str) -> dict:
        """``GET /fapi/v1/premiumIndex?symbol=`` (``markPrice``, ``lastFundingRate``, ...)."""
        return msgspec.json.decode(
            await self.get(PREMIUM_INDEX_PATH, {"symbol": check_symbol(symbol, FeedError)})
        )


def kline_bars(rows: list, interval: str, closed_before_ms: int) -> np.ndarray:
    """REST kline rows -> BAR_DTYPE of the closed bars with trades: a row whose close time is
    not before ``closed_before_ms`` (Unix ms; the bar still open) is left out."""
    tf = TIMEFRAME_MS[interval]
    try:
        keep = [r for r in rows if int(r[6]) < closed_before_ms and int(r[8]) > 0]
        out = np.empty(len(keep), dtype=BAR_DTYPE)
        for i, r in enumerate(keep):
            if int(r[0]) % tf or int(r[6]) != int(r[0]) + tf - 1:
                raise ValueError(f"row {r[:1]} is not a {interval} kline")
            out[i] = (int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]),
                      float(r[5]), float(r[7]), int(r[8]))  # fmt: skip
    except (ValueError, TypeError, IndexError) as exc:
        raise FeedError(f"/fapi/v1/klines {interval}: unexpected row ({exc})") from None
    return out


def klines_weight(limit: int) -> int:
    """Request weight of ``GET /fapi/v1/klines`` with ``limit`` rows (Binance's table)."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def retry_after_s(resp: httpx.Response, default: float) -> float:
    """Seconds an HTTP 429/418 answer asks to wait (``Retry-After``), else ``default``."""
    value = resp.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _api_error(resp: httpx.Response, path: str) -> BinanceError:
    try:
        err = msgspec.json.decode(resp.content, type=ApiError)
        return BinanceError(resp.status_code, err.code, err.msg, path)
    except msgspec.MsgspecError:
        return BinanceError(resp.status_code, None, resp.text[:200], path)


# --------------------------------------------------------------------------------------------
# Public data files (data.binance.vision): CSV layouts and file names (``engine.importer``
# decodes the files)

#: Columns of ``<SYM>-aggTrades-<date>.csv``.
AGG_TRADES_CSV_COLUMNS: tuple[str, ...] = (
    "agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
    "transact_time", "is_buyer_maker",
)  # fmt: skip
#: Columns of ``<SYM>-<interval>-<date>.csv`` (klines).
KLINES_CSV_COLUMNS: tuple[str, ...] = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
#: Columns of ``<SYM>-fundingRate-<YYYY-MM>.csv`` (ms, hours, fraction per interval).
FUNDING_CSV_COLUMNS: tuple[str, ...] = (
    "calc_time", "funding_interval_hours", "last_funding_rate",
)  # fmt: skip
#: A timestamp at or above this is in microseconds, not milliseconds.
MICROSECONDS_FROM = 10**15
#: A timestamp below this is in seconds: as ms it would be before March 1973.
SECONDS_BELOW = 10**11

_FILE_RE = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<kind>aggTrades|fundingRate|\d+[smhdwM])-(?P<date>[\d-]+)"
)


def archive_path(period: str, kind: str, symbol: str, date: str) -> str:
    """Path of a public-data zip under the archive host (``BINANCE_PUBLIC_DATA``).

    ``period`` "daily" (``date`` YYYY-MM-DD) or "monthly" (YYYY-MM); ``kind`` "aggTrades",
    "fundingRate" (monthly only) or a kline interval (``KLINE_INTERVALS``):
    ``/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-06-01.zip``. The checksum is
    the same path + ``.CHECKSUM``.
    """
    if period not in ("daily", "monthly"):
        raise DataError(f"archive period {period!r}: expected 'daily' or 'monthly'")
    if kind == "fundingRate" and period != "monthly":
        raise DataError("funding-rate archive files are monthly only")
    if kind not in ("aggTrades", "fundingRate") and kind not in KLINE_INTERVALS:
        raise DataError(
            f"archive kind {kind!r}: expected aggTrades, fundingRate or one of {KLINE_INTERVALS}"
        )
    sym = check_symbol(symbol)
    folder = f"klines/{sym}/{kind}" if kind in KLINE_INTERVALS else f"{kind}/{sym}"
    return f"/data/futures/um/{period}/{folder}/{sym}-{kind}-{date}.zip"


def parse_public_file_name(name: str) -> tuple[str, str, str]:
    """``BTCUSDT-aggTrades-2024-06-01.zip`` -> (``BTCUSDT``, ``aggTrades``, ``2024-06-01``).

    For klines the kind is the interval (``1m``); funding-rate files are ``fundingRate``.
    DataError when the name does not fit.
    """
    match = _FILE_RE.match(Path(name).name)
    if match is None:
        raise DataError(
            f"{name!r} is not a Binance public-data file name "
            "(expected SYMBOL-aggTrades-DATE, SYMBOL-fundingRate-MONTH or SYMBOL-INTERVAL-DATE)"
        )
    return check_symbol(match["symbol"]), match["kind"], match["date"].rstrip("-")
