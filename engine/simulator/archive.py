"""The public-data archive of the simulated market, laid out like data.binance.vision.

``/data/futures/um/{daily|monthly}/aggTrades/<SYM>/<SYM>-aggTrades-<date>.zip``,
``/data/futures/um/{daily|monthly}/klines/<SYM>/<interval>/<SYM>-<interval>-<date>.zip`` and
``/data/futures/um/monthly/fundingRate/<SYM>/<SYM>-fundingRate-<YYYY-MM>.zip``; each zip holds one
CSV of the same name with a header row, and ``<file>.CHECKSUM`` holds ``<sha256>  <file>``.

A daily file exists for a UTC day that starts at or after the history start and ends at or
before the start of today; a monthly file for a month that starts at or after the history start
and is over. A symbol has files from its listing day on (the listing day's file holds the
trades after the listing). Anything else is HTTP 404. Zips are built on request and cached;
they are byte-for-byte reproducible (fixed member time), so checksums agree across runs.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import io
import re
import zipfile
from collections.abc import Callable

import pyarrow as pa
import pyarrow.csv as pacsv

from engine.simulator.klines import INTERVALS, klines
from engine.simulator.market import DAY_MS, FUNDING_INTERVAL_MS, LruCache, Market
from engine.simulator.rest import RestResponse
from engine.simulator.wire import fixed_decimals

AGG_TRADE_COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                     "transact_time", "is_buyer_maker")  # fmt: skip
KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time",
                 "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume",
                 "ignore")  # fmt: skip
FUNDING_COLUMNS = ("calc_time", "funding_interval_hours", "last_funding_rate")

_PATH = re.compile(
    r"^/data/futures/um/(?P<period>daily|monthly)/(?P<kind>aggTrades|klines|fundingRate)/"
    r"(?P<sym>[A-Z0-9]+)/(?:(?P<interval>[0-9]+[mhd])/)?(?P<name>[^/]+?)(?P<check>\.CHECKSUM)?$"
)


_NOT_FOUND = RestResponse(404, (("Content-Type", "text/plain"),), b"Not Found\n")


def _period(period: str, date: str) -> tuple[int, int] | None:
    """[start, end) ms of a daily ``YYYY-MM-DD`` or monthly ``YYYY-MM`` date, None if malformed."""
    try:
        if period == "daily":
            day = dt.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            start = int(day.timestamp() * 1000)
            return start, start + DAY_MS
        month = dt.datetime.strptime(date, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    days = calendar.monthrange(month.year, month.month)[1]
    start = int(month.timestamp() * 1000)
    return start, start + days * DAY_MS


def _csv(table: pa.Table) -> bytes:
    """CSV with a bare header row (pyarrow would quote the names) and unquoted values."""
    sink = io.BytesIO()
    sink.write(",".join(table.column_names).encode() + b"\n")
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


class Archive:
    """Builds and serves the archive files of a market; ``history_start()`` and the symbol's
    listing bound what exists."""

    def __init__(self, market: Market, history_start: Callable[[], int]) -> None:
        self._market = market
        self._history_start = history_start
        self._files = LruCache(16)

    def handle(self, path: str, now_ms: int) -> RestResponse:
        """The file at ``path`` (a zip or its CHECKSUM) as of wall time ``now_ms``, or 404."""
        m = _PATH.match(path)
        if m is None:
            return _NOT_FOUND
        period, kind, sym, interval = m["period"], m["kind"], m["sym"], m["interval"]
        if sym not in self._market.specs or (kind == "klines") != (interval is not None):
            return _NOT_FOUND
        if interval is not None and interval not in INTERVALS:
            return _NOT_FOUND
        if kind == "fundingRate" and period != "monthly":
            return _NOT_FOUND
        label = interval if kind == "klines" else kind
        prefix, suffix = f"{sym}-{label}-", ".zip"
        name = m["name"]
        if not (name.startswith(prefix) and name.endswith(suffix)):
            return _NOT_FOUND
        span = _period(period, name[len(prefix) : -len(suffix)])
        if span is None or not self._published(sym, period, span, now_ms):
            return _NOT_FOUND
        key = path.removesuffix(".CHECKSUM")
        zipped, digest = self._files.get(key, lambda: self._build(kind, sym, interval, name, span))
        if m["check"]:
            return RestResponse(
                200, (("Content-Type", "text/plain"),), f"{digest}  {name}\n".encode()
            )
        return RestResponse(200, (("Content-Type", "application/zip"),), zipped)

    def _published(self, sym: str, period: str, span: tuple[int, int], now_ms: int) -> bool:
        start, end = span
        over = now_ms // DAY_MS * DAY_MS if period == "daily" else now_ms
        return start >= self._history_start() and end <= over and end > self._market.epochs[sym]

    def _build(self, kind: str, sym: str, interval: str | None, name: str,
               span: tuple[int, int]) -> tuple[bytes, str]:  # fmt: skip
        start, end = span
        if kind == "aggTrades":
            body = self._agg_trades_csv(sym, start, end)
        elif kind == "klines":
            tf = INTERVALS[interval]
            rows = klines(self._market, sym, tf, start, end - tf, start, end)
            body = (
                ",".join(KLINE_COLUMNS).encode()
                + b"\n"
                + "".join(",".join(str(v) for v in row) + "\n" for row in rows).encode()
            )
        else:
            body = self._funding_csv(sym, start, end)
        sink = io.BytesIO()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo(name.removesuffix(".zip") + ".csv", (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, body)
        zipped = sink.getvalue()
        return zipped, hashlib.sha256(zipped).hexdigest()

    def _agg_trades_csv(self, sym: str, start: int, end: int) -> bytes:
        spec = self._market.specs[sym]
        ticks = self._market.trades(sym, start, end)
        table = pa.table({
            "agg_trade_id": ticks["agg_id"],
            "price": fixed_decimals(ticks["price"], spec.price_precision),
            "quantity": fixed_decimals(ticks["qty"], spec.quantity_precision),
            "first_trade_id": ticks["first_id"],
            "last_trade_id": ticks["last_id"],
            "transact_time": ticks["ts"],
            "is_buyer_maker": ticks["buyer_maker"],
        })  # fmt: skip
        return _csv(table)

    def _funding_csv(self, sym: str, start: int, end: int) -> bytes:
        step = FUNDING_INTERVAL_MS
        first = max(start, -(-self._market.epochs[sym] // step) * step)
        lines = [",".join(FUNDING_COLUMNS)]
        hours = FUNDING_INTERVAL_MS // 3_600_000
        for t in range(first, end, FUNDING_INTERVAL_MS):
            rate = self._market.mark_at(sym, t).funding_rate
            lines.append(f"{t},{hours},{rate:.8f}")
        return ("\n".join(lines) + "\n").encode()
