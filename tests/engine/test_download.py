"""``engine.download`` against the real simulator (its REST and public-data archive on loopback).

A small HTTP proxy in front of the simulator counts the archive downloads and can corrupt a
file or answer 429 first. Oracles: the simulator's REST klines and fundingRate, its trades
(``Simulator.history``) resampled by pandas, and the plan's calendar arithmetic by hand.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from engine.config import SimulatorConfig
from engine.download import MANIFEST, Downloader, Manifest, date_range, download, plan
from engine.errors import DataError
from engine.funding import funding_events
from engine.schemas import table_to_bars, table_to_ticks
from engine.simulator import Simulator
from engine.store import Store

DAY_MS = 86_400_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


class Proxy:
    """HTTP proxy to ``upstream``: records (monotonic s, path) of every GET; ``corrupt``: a file
    name whose body gets one byte flipped; ``throttle``: names answered 429 (``Retry-After: 1``)
    on their first request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[float, str]] = []
        self.corrupt: str | None = None
        self.throttle: set[str] = set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with proxy._lock:
                    proxy.requests.append((time.monotonic(), self.path))
                    name = self.path.rsplit("/", 1)[-1]
                    throttled = name in proxy.throttle
                    proxy.throttle.discard(name)
                if throttled:
                    self._answer(429, b'{"code":-1003,"msg":"Too many requests"}',
                                 {"Retry-After": "1"})
                    return
                resp = httpx.get(proxy.upstream + self.path, timeout=120.0)
                body = resp.content
                if name == proxy.corrupt and resp.status_code == 200:
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self._answer(resp.status_code, body, {})

            def _answer(self, status: int, body: bytes, extra: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def zips(self, since: int = 0) -> list[str]:
        """Archive zips requested (after the first ``since`` requests)."""
        return [p for _, p in self.requests[since:] if p.endswith(".zip")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def sim():
    """70 days of past (so one complete month with days around it); SOLUSDT listed ten days
    into that month."""
    now = time.time_ns() // 1_000_000
    first_day = _day(now - 67 * DAY_MS)
    month = first_day if first_day.day == 1 else (first_day.replace(day=28)
                                                   + dt.timedelta(days=4)).replace(day=1)
    listing = _ms(month) + 10 * DAY_MS + 3 * 3_600_000
    config = SimulatorConfig(seed=11, rate=0.2, history_days=70.0, listings={"SOLUSDT": listing})
    with Simulator(config, SYMBOLS) as s:
        s.full_month = month  # the first complete month of its past
        yield s


@pytest.fixture
def proxy(sim):
    p = Proxy(sim.url_rest)
    yield p
    p.close()


def _range(sim) -> tuple[dt.date, dt.date]:
    """Two days before the complete month to two days after it."""
    month = sim.full_month
    end = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1) + dt.timedelta(days=1)
    return month - dt.timedelta(days=2), end


def _rest_klines(sim, symbol: str, interval: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    rows: list[list] = []
    cursor = start_ms
    while cursor < end_ms:
        page = httpx.get(f"{sim.url_rest}/fapi/v1/klines", timeout=60.0, params={
            "symbol": symbol, "interval": interval, "startTime": cursor, "endTime": end_ms - 1,
            "limit": 1500}).json()  # fmt: skip
        if not page:
            break
        rows += page
        cursor = page[-1][0] + 1
    frame = pd.DataFrame(rows).iloc[:, :9]
    frame.columns = ["ts", "open", "high", "low", "close", "volume", "close_time",
                     "quote_volume", "trades"]  # fmt: skip
    frame = frame[frame["trades"] > 0].astype({c: float for c in
                                               ("open", "high", "low", "close", "volume",
                                                "quote_volume")})  # fmt: skip
    return frame.drop(columns="close_time").reset_index(drop=True)


def _assert_bars_equal(stored, expected: pd.DataFrame) -> None:
    got = table_to_bars(stored)
    np.testing.assert_array_equal(got["ts"], expected["ts"].to_numpy())
    for name in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[name], expected[name].to_numpy(), err_msg=name)
    for name in ("volume", "quote_volume"):
        np.testing.assert_allclose(got[name], expected[name].to_numpy(), rtol=1e-9, err_msg=name)
    np.testing.assert_array_equal(got["trades"], expected["trades"].to_numpy())


def _store_state(root: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*.parquet"))}


# ----------------------------------------------------------------------------- plan


def test_plan_takes_complete_months_from_the_monthly_archive():
    now = _ms(dt.date(2024, 7, 3)) + 5 * 3_600_000  # 2024-07-03 05:00 UTC
    got = plan(["BTCUSDT"], ["klines", "funding", "trades"], ["1m"], dt.date(2024, 4, 29),
               dt.date(2024, 7, 3), now)
    names = [f.name for f in got.files]
    assert names == [
        "BTCUSDT-1m-2024-04-29.zip", "BTCUSDT-1m-2024-04-30.zip", "BTCUSDT-1m-2024-05.zip",
        "BTCUSDT-1m-2024-06.zip", "BTCUSDT-1m-2024-07-01.zip", "BTCUSDT-1m-2024-07-02.zip",
        "BTCUSDT-fundingRate-2024-04.zip", "BTCUSDT-fundingRate-2024-05.zip",
        "BTCUSDT-fundingRate-2024-06.zip",
        "BTCUSDT-aggTrades-2024-04-29.zip", "BTCUSDT-aggTrades-2024-04-30.zip",
        "BTCUSDT-aggTrades-2024-05.zip", "BTCUSDT-aggTrades-2024-06.zip",
        "BTCUSDT-aggTrades-2024-07-01.zip", "BTCUSDT-aggTrades-2024-07-02.zip",
    ]  # fmt: skip
    paths = {f.name: f.path for f in got.files}
    assert paths["BTCUSDT-1m-2024-05.zip"] == (
        "/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-05.zip")
    assert paths["BTCUSDT-aggTrades-2024-04-29.zip"] == (
        "/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-04-29.zip")
    assert paths["BTCUSDT-fundingRate-2024-06.zip"] == (
        "/data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-06.zip")
    today = _ms(dt.date(2024, 7, 3))
    assert [(p.data, p.kind, p.start_ms, p.end_ms) for p in got.rest] == [
        ("klines", "1m", today, now),  # today's klines from REST
        ("funding", "fundingRate", _ms(dt.date(2024, 7, 1)), now),  # the month not over
    ]
    # a past range ending mid-month: days, no REST
    past = plan(["ETHUSDT"], ["klines"], ["5m", "1h"], dt.date(2024, 6, 1), dt.date(2024, 6, 2),
                now)
    assert [f.name for f in past.files] == [
        "ETHUSDT-5m-2024-06-01.zip", "ETHUSDT-5m-2024-06-02.zip",
        "ETHUSDT-1h-2024-06-01.zip", "ETHUSDT-1h-2024-06-02.zip"] and past.rest == ()
    with pytest.raises(DataError, match="after end"):
        plan(["BTCUSDT"], ["klines"], ["1m"], dt.date(2024, 6, 2), dt.date(2024, 6, 1), now)
    with pytest.raises(DataError, match="1s"):
        plan(["BTCUSDT"], ["klines"], ["1s"], dt.date(2024, 6, 1), dt.date(2024, 6, 1), now)
    with pytest.raises(DataError, match="ticks"):
        plan(["BTCUSDT"], ["ticks"], ["1m"], dt.date(2024, 6, 1), dt.date(2024, 6, 1), now)
    assert date_range(3, None, None, now) == (dt.date(2024, 6, 30), dt.date(2024, 7, 3))


# ----------------------------------------------------------------------------- simulator


def test_download_month_and_days_then_nothing_on_a_second_run(sim, proxy, tmp_path):
    first, last = _range(sim)
    store_dir = tmp_path / "store"
    report = download(Store(store_dir), SYMBOLS, None, first, last, base_url=proxy.url,
                      rest_url=sim.url_rest, jobs=3, progress=False)
    zips = proxy.zips()
    assert any("/monthly/klines/" in p for p in zips) and any("/daily/klines/" in p for p in zips)
    assert any("/monthly/fundingRate/" in p for p in zips)
    assert report.failed == []
    start_ms, end_ms = _ms(first), _ms(last) + DAY_MS
    store = Store(store_dir)
    for symbol in SYMBOLS:
        for tf in ("1m", "5m"):
            expected = _rest_klines(sim, symbol, tf, start_ms, end_ms)
            _assert_bars_equal(store.read_bars(tf, symbol, start_ms, end_ms), expected)
    # SOLUSDT: nothing before its listing; the days before it are named as not published
    listing = sim.config.listings["SOLUSDT"]
    assert table_to_bars(store.read_bars("1m", "SOLUSDT"))["ts"][0] >= listing // 60_000 * 60_000
    assert f"SOLUSDT-1m-{first.isoformat()}.zip: not published" in "\n".join(report.skipped)
    assert report.tally("SOLUSDT", "klines").skipped == 4  # two days x two timeframes
    assert report.tally("BTCUSDT", "klines").skipped == 0
    # funding: the settlements the simulator's REST lists, paid at their times
    rest = httpx.get(f"{sim.url_rest}/fapi/v1/fundingRate", timeout=60.0, params={
        "symbol": "ETHUSDT", "startTime": _ms(sim.full_month), "endTime": end_ms - 1,
        "limit": 1000}).json()  # fmt: skip
    # (a settlement at T is stored as the update at T - 1 ms announcing it)
    events = funding_events(store.read_funding("ETHUSDT", _ms(sim.full_month) - 1, end_ms - 1))
    np.testing.assert_array_equal(events.ts, [r["fundingTime"] for r in rest])
    np.testing.assert_allclose(events.rate, [float(r["fundingRate"]) for r in rest], rtol=0,
                               atol=1e-12)
    table = report.table()
    assert table.splitlines()[0].split() == ["symbol", "data", "fetched", "stored", "skipped",
                                             "failed", "rows"]  # fmt: skip
    # a second run fetches nothing and changes nothing
    state = _store_state(store_dir)
    seen = len(proxy.requests)
    again = download(Store(store_dir), SYMBOLS, None, first, last, base_url=proxy.url,
                     rest_url=sim.url_rest, jobs=3, progress=False)
    assert proxy.zips(seen) == [] and again.fetched == 0
    assert again.tally("BTCUSDT", "klines").stored == report.tally("BTCUSDT", "klines").fetched
    assert _store_state(store_dir) == state
    manifest = Manifest(store_dir)
    assert (store_dir / MANIFEST).exists() and len(manifest.files) == report.fetched


def test_checksum_mismatch_is_refused_and_named_the_rest_imports(sim, proxy, tmp_path):
    first, _ = _range(sim)
    days = (first, first + dt.timedelta(days=1))
    bad = f"BTCUSDT-1m-{days[1].isoformat()}.zip"
    proxy.corrupt = bad
    store_dir = tmp_path / "store"
    report = download(Store(store_dir), ["BTCUSDT"], None, *days, data=("klines",),
                      timeframes=("1m",), base_url=proxy.url, rest_url=sim.url_rest,
                      progress=False)  # fmt: skip
    assert len(report.failed) == 1 and report.failed[0].startswith(f"{bad}: checksum mismatch")
    assert f"refused {bad}: checksum mismatch" in report.table()
    assert report.tally("BTCUSDT", "klines").fetched == 1
    got = table_to_bars(Store(store_dir).read_bars("1m", "BTCUSDT"))
    assert _day(int(got["ts"][0])) == days[0] and _day(int(got["ts"][-1])) == days[0]
    proxy.corrupt = None  # the next run fetches only the refused file
    seen = len(proxy.requests)
    again = download(Store(store_dir), ["BTCUSDT"], None, *days, data=("klines",),
                     timeframes=("1m",), base_url=proxy.url, rest_url=sim.url_rest,
                     progress=False)  # fmt: skip
    assert [p.rsplit("/", 1)[1] for p in proxy.zips(seen)] == [bad] and again.failed == []
    expected = _rest_klines(sim, "BTCUSDT", "1m", _ms(days[0]), _ms(days[1]) + DAY_MS)
    _assert_bars_equal(Store(store_dir).read_bars("1m", "BTCUSDT"), expected)


def test_trades_of_a_day_become_ticks_and_the_bars_pandas_resamples(sim, proxy, tmp_path):
    day = sim.full_month + dt.timedelta(days=3)
    report = download(Store(tmp_path / "store"), ["ETHUSDT"], None, day, day,
                      data=("trades",), base_url=proxy.url, rest_url=sim.url_rest,
                      progress=False)  # fmt: skip
    trades = sim.history("ETHUSDT", _ms(day), _ms(day) + DAY_MS)
    assert report.tally("ETHUSDT", "trades").rows == len(trades) > 10_000
    store = Store(tmp_path / "store")
    ticks = table_to_ticks(store.read_ticks("ETHUSDT"))
    for name in ("ts", "agg_id", "first_id", "last_id", "buyer_maker"):
        np.testing.assert_array_equal(ticks[name], trades[name], err_msg=name)
    np.testing.assert_allclose(ticks["price"], trades["price"], rtol=1e-12)
    frame = pd.DataFrame({"price": ticks["price"], "qty": ticks["qty"]},
                         index=pd.to_datetime(ticks["ts"], unit="ms"))
    frame["pq"] = frame["price"] * frame["qty"]
    for tf, rule in (("1m", "1min"), ("5m", "5min")):
        grouped = frame.resample(rule)
        oracle = grouped["price"].ohlc().assign(
            volume=grouped["qty"].sum(), quote_volume=grouped["pq"].sum(),
            trades=grouped["price"].count())
        oracle = oracle[oracle["trades"] > 0]
        oracle.insert(0, "ts", oracle.index.as_unit("ms").asi8)
        _assert_bars_equal(store.read_bars(tf, "ETHUSDT"), oracle.reset_index(drop=True))


def test_429_retry_after_is_honoured(sim, proxy, tmp_path):
    first, _ = _range(sim)
    names = [f"ETHUSDT-5m-{(first + dt.timedelta(days=k)).isoformat()}.zip" for k in range(2)]
    proxy.throttle = set(names)
    report = download(Store(tmp_path / "store"), ["ETHUSDT"], None, first,
                      first + dt.timedelta(days=1), data=("klines",), timeframes=("5m",),
                      base_url=proxy.url, rest_url=sim.url_rest, progress=False)  # fmt: skip
    assert report.failed == [] and report.tally("ETHUSDT", "klines").fetched == 2
    for name in names:
        times = [t for t, p in proxy.requests if p.endswith(name)]
        assert len(times) == 2 and times[1] - times[0] >= 1.0  # waited Retry-After: 1


def test_top_symbols_by_quote_volume(sim):
    tickers = httpx.get(f"{sim.url_rest}/fapi/v1/ticker/24hr", timeout=60.0).json()
    ranked = [t["symbol"] for t in sorted(tickers, key=lambda t: -float(t["quoteVolume"]))]
    loader = Downloader(Store("/nonexistent-store-unused"), rest_url=sim.url_rest)
    assert loader.top_symbols(2) == ranked[:2]
    assert loader.top_symbols(10) == ranked


def test_days_zero_takes_today_from_rest_without_the_open_bar(sim, proxy, tmp_path):
    before = time.time_ns() // 1_000_000
    first, last = date_range(0, None, None, before)
    assert first == last == _day(before)
    report = download(Store(tmp_path / "store"), ["BTCUSDT"], None, first, last,
                      base_url=proxy.url, rest_url=sim.url_rest, progress=False, now_ms=before)
    after = time.time_ns() // 1_000_000
    assert proxy.zips() == [] and report.fetched == 0  # nothing of today is archived yet
    store = Store(tmp_path / "store")
    for tf, ms in (("1m", 60_000), ("5m", 300_000)):
        bars = table_to_bars(store.read_bars(tf, "BTCUSDT"))
        assert bars["ts"][-1] + ms <= after  # closed bars only, never the open one
        expected = _rest_klines(sim, "BTCUSDT", tf, _ms(first), int(bars["ts"][-1]) + 1)
        _assert_bars_equal(store.read_bars(tf, "BTCUSDT"), expected)
    assert report.tally("BTCUSDT", "klines").rows == sum(
        store.read_bars(tf, "BTCUSDT").num_rows for tf in ("1m", "5m"))
    funding = funding_events(store.read_funding("BTCUSDT"))  # today's, from REST
    rest = httpx.get(f"{sim.url_rest}/fapi/v1/fundingRate", timeout=60.0, params={
        "symbol": "BTCUSDT", "startTime": _ms(first), "limit": 1000}).json()
    np.testing.assert_array_equal(funding.ts, [r["fundingTime"] for r in rest])
    assert store.read_funding("BTCUSDT").column("mark_price").null_count == 0
