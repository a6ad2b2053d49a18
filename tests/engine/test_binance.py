"""Binance adapter: stream names, URLs, REST client (real HTTP over loopback), CSV layouts."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from engine import binance
from engine.errors import DataError, FeedError
from engine.importer import import_files
from engine.schemas import table_to_bars, table_to_ticks
from engine.store import Store
from tests.kit import random_ticks


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"])
def test_stream_names_and_url(symbol: str) -> None:
    low = symbol.lower()
    assert binance.agg_trade_stream(symbol) == f"{low}@aggTrade"
    assert binance.mark_price_stream(symbol) == f"{low}@markPrice@1s"
    assert binance.stream_symbol(f"{low}@markPrice@1s") == symbol
    streams = [binance.agg_trade_stream(symbol), binance.mark_price_stream(symbol)]
    url = binance.combined_stream_url(binance.BINANCE_WS_MARKET + "/", streams)
    assert url == f"wss://fstream.binance.com/market/stream?streams={low}@aggTrade/{low}@markPrice@1s"
    assert binance.stream_url is binance.combined_stream_url


def test_bad_names_and_control_messages() -> None:
    with pytest.raises(FeedError, match="alphanumeric"):
        binance.agg_trade_stream("BTC/USDT")
    with pytest.raises(FeedError, match="at least one stream"):
        binance.combined_stream_url("ws://x", [])
    with pytest.raises(FeedError, match="1024"):
        binance.combined_stream_url("ws://x", ["a"] * 1025)
    with pytest.raises(FeedError, match="unknown control method"):
        binance.control_message("PING", None, 1)
    msg = json.loads(binance.control_message("SUBSCRIBE", ["btcusdt@aggTrade"], "u-1"))
    assert msg == {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": "u-1"}


class _Exchange(BaseHTTPRequestHandler):
    """A tiny REST exchange: aggTrades from a fixed history, 429 every N-th call, errors."""

    ticks = random_ticks(2500, first_id=100, seed=3)
    calls: ClassVar[list[dict]] = []
    every_429 = 0

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: object, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-MBX-USED-WEIGHT-1M", str(20 * len(self.calls)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).calls.append({"path": url.path, **q})
        n = len(self.calls)
        if self.every_429 and n % self.every_429 == 0:
            return self._send(429, {"code": -1003, "msg": "Too many requests"},
                              {"Retry-After": "0"})  # fmt: skip
        if url.path == binance.AGG_TRADES_PATH:
            if q.get("symbol") != "BTCUSDT":
                return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
            if "fromId" not in q:
                return self._send(400, {"code": -1102, "msg": "Mandatory parameter missing."})
            t = self.ticks
            sel = t[t["agg_id"] >= int(q["fromId"])][: int(q.get("limit", 500))]
            rows = [{"a": int(r["agg_id"]), "p": f"{r['price']:.2f}", "q": f"{r['qty']:.3f}",
                     "f": int(r["first_id"]), "l": int(r["last_id"]), "T": int(r["ts"]),
                     "m": bool(r["buyer_maker"])} for r in sel]  # fmt: skip
            return self._send(200, rows)
        if url.path == binance.PREMIUM_INDEX_PATH:
            return self._send(200, {"symbol": q["symbol"], "markPrice": "1.5",
                                    "lastFundingRate": "0.0001", "nextFundingTime": 1})  # fmt: skip
        return self._send(404, "not json at all")


@pytest.fixture
def exchange():
    _Exchange.calls = []
    _Exchange.every_429 = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exchange)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _Exchange, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("from_id", "to_id"), [(100, 100), (150, 1149), (900, 2599), (2590, 2700)])
@pytest.mark.parametrize("every_429", [0, 2])
def test_fetch_range_pages_and_backs_off(exchange, from_id: int, to_id: int, every_429: int):
    handler, url = exchange
    handler.every_429 = every_429

    async def go():
        async with binance.RestClient(url) as rest:
            got = await rest.fetch_agg_trades_range("BTCUSDT", from_id, to_id)
            return got, rest.backoffs, rest.used_weight

    got, backoffs, weight = asyncio.run(go())
    t = handler.ticks
    want = t[(t["agg_id"] >= from_id) & (t["agg_id"] <= to_id)]
    np.testing.assert_array_equal(got["agg_id"], want["agg_id"])
    np.testing.assert_allclose(got["price"], np.round(want["price"], 2), rtol=1e-12)
    np.testing.assert_array_equal(got["ts"], want["ts"])
    np.testing.assert_array_equal(got["buyer_maker"], want["buyer_maker"])
    calls = [c for c in handler.calls if c["path"] == binance.AGG_TRADES_PATH]
    assert all(int(c["limit"]) <= 1000 for c in calls)
    assert backoffs == (len(calls) // 2 if every_429 else 0)
    assert weight == 20 * len(calls)


def test_rest_errors(exchange):
    handler, url = exchange

    async def go():
        async with binance.RestClient(url, max_retries=2) as rest:
            with pytest.raises(binance.BinanceError) as info:
                await rest.agg_trades("ETHUSDT", 1)
            assert (info.value.status, info.value.code) == (400, -1121)
            assert "Invalid symbol" in str(info.value)
            with pytest.raises(binance.BinanceError, match="HTTP 404"):
                await rest.get("/nope")
            with pytest.raises(binance.BinanceError, match="-1102"):
                await rest.get(binance.AGG_TRADES_PATH, {"symbol": "BTCUSDT"})
            with pytest.raises(FeedError, match="limit"):
                await rest.agg_trades("BTCUSDT", 1, limit=1001)
            with pytest.raises(FeedError, match="empty id range"):
                await rest.fetch_agg_trades_range("BTCUSDT", 5, 4)
            assert (await rest.premium_index("BTCUSDT"))["markPrice"] == "1.5"
            handler.every_429 = 1  # every call 429: gives up after max_retries
            with pytest.raises(binance.BinanceError, match="HTTP 429"):
                await rest.agg_trades("BTCUSDT", 100)
            assert rest.backoffs == 2
        async with binance.RestClient("http://127.0.0.1:1") as dead:
            with pytest.raises(FeedError, match="failed"):
                await dead.agg_trades("BTCUSDT", 1)

    asyncio.run(go())


AGG_ROWS = [(26129, "0.01", "0.5", 1, 3, 1_600_000_000_000, "true"),
            (26130, "0.02", "1.5", 4, 4, 1_600_000_000_500, "False")]  # fmt: skip


def _import_text(tmp_path, name: str, data: bytes):
    """Import one public-data file with these bytes; (report, store)."""
    path = tmp_path / name
    path.write_bytes(data)
    store = Store(tmp_path / "store", durable=False)
    return import_files([path], store), store


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("micro", [False, True])
def test_agg_trades_csv(header: bool, micro: bool, tmp_path) -> None:
    lines = [",".join(binance.AGG_TRADES_CSV_COLUMNS)] if header else []
    for r in AGG_ROWS:
        ts = r[5] * 1000 if micro else r[5]
        lines.append(",".join(map(str, (*r[:5], ts, r[6]))))
    report, store = _import_text(tmp_path, "BTCUSDT-aggTrades-2020-09-13.csv",
                                 "\n".join(lines).encode())
    assert report.microseconds is micro
    ticks = table_to_ticks(store.read_ticks("BTCUSDT"))
    assert ticks["agg_id"].tolist() == [26129, 26130]
    assert ticks["ts"].tolist() == [1_600_000_000_000, 1_600_000_000_500]
    np.testing.assert_allclose(ticks["price"], [0.01, 0.02], rtol=1e-15)
    assert ticks["buyer_maker"].tolist() == [True, False]


@pytest.mark.parametrize("header", [True, False])
def test_klines_csv(header: bool, tmp_path) -> None:
    row = "1599999960000,1.0,2.0,0.5,1.5,10.0,1600000019999,15.0,7,5.0,7.5,0"
    text = (",".join(binance.KLINES_CSV_COLUMNS) + "\n" if header else "") + row + "\n"
    path = tmp_path / "BTCUSDT-1m-2020-09-13.csv"
    path.write_text(text)
    report = import_files([path], Store(tmp_path / "store", durable=False))
    assert not report.microseconds and report.empty_klines == 0
    bars = table_to_bars(Store(tmp_path / "store").read_bars("1m", "BTCUSDT"))
    assert bars[0]["ts"] == 1_599_999_960_000 and bars[0]["trades"] == 7
    np.testing.assert_allclose([bars[0][k] for k in ("open", "high", "low", "close", "volume",
                                "quote_volume")], [1.0, 2.0, 0.5, 1.5, 10.0, 15.0], rtol=1e-15)
    assert binance.parse_public_file_name(str(path)) == ("BTCUSDT", "1m", "2020-09-13")


def test_public_data_errors(tmp_path) -> None:
    assert binance.parse_public_file_name("ETHUSDT-aggTrades-2024-06-01.zip") == (
        "ETHUSDT", "aggTrades", "2024-06-01")
    with pytest.raises(DataError, match="not a Binance public-data file name"):
        binance.parse_public_file_name("trades.csv")
    name = "BTCUSDT-aggTrades-2020-09-13.csv"
    with pytest.raises(DataError, match="header has 2 columns"):
        _import_text(tmp_path, name, b"hello,world\n")
    bad = b"1,0.01,0.5,1,3,1600000000000,maybe\n"
    with pytest.raises(DataError, match="expected true or false"):
        _import_text(tmp_path, name, bad)
    with pytest.raises(DataError, match="expected a number"):
        _import_text(tmp_path, name, b"1,abc,0.5,1,3,1600000000000,true\n")
    with pytest.raises(DataError, match="empty file"):
        _import_text(tmp_path, name, b"")
