"""The simulator's market with a past: deterministic in (seed, wall time), served by REST and a
public-data archive like Binance's, continued by the live stream and across restarts.

Oracles: a second simulator with the same seed, pandas ``resample`` of the trades, hashlib,
zipfile and csv from the standard library, statsmodels (Engle-Granger, OLS), and a plain-Python
loop for the trade kernel.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
import time
import zipfile

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.tsa.stattools import coint
from websockets.sync.client import connect

from engine.config import SimulatorConfig
from engine.schemas import TICK_DTYPE
from engine.simulator import Simulator
from engine.simulator.market import (
    BURST_FACTOR,
    MEDIAN_NOTIONAL,
    SIZE_SIGMA,
    chunk_trades,
    funding_rate,
)

DAY_MS = 86_400_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
AGG_HEADER = ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
              "transact_time", "is_buyer_maker"]  # fmt: skip
KLINE_HEADER = ["open_time", "open", "high", "low", "close", "volume", "close_time",
                "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume",
                "ignore"]  # fmt: skip


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _get(sim: Simulator, path: str, **params) -> httpx.Response:
    return httpx.get(sim.url_rest + path, params=params, timeout=60.0)


def _trades_by_id(sim: Simulator, symbol: str, from_id: int, to_id: int) -> list[dict]:
    rows: list[dict] = []
    while from_id <= to_id:
        page = _get(sim, "/fapi/v1/aggTrades", symbol=symbol, fromId=from_id, limit=1000).json()
        assert page, f"no trades from id {from_id}"
        rows.extend(page)
        from_id = page[-1]["a"] + 1
    return [r for r in rows if r["a"] <= to_id]


def _stream(sim: Simulator, symbol: str, seconds: float) -> list[dict]:
    frames = []
    with connect(f"{sim.url_ws}/stream?streams={symbol.lower()}@aggTrade") as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frames.append(orjson.loads(ws.recv(timeout=0.2))["data"])
            except TimeoutError:
                continue
    return frames


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def _first_full_month(sim: Simulator) -> dt.datetime:
    """The first calendar month that starts inside the simulator's history."""
    first_day = -(-(sim.started_ms - 65 * DAY_MS) // DAY_MS) * DAY_MS
    month = dt.datetime.fromtimestamp(first_day / 1000, dt.UTC)
    if month.day == 1:
        return month
    return (month.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def _unzip(resp: httpx.Response, name: str) -> list[list[str]]:
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert zf.namelist() == [name]
        return list(csv.reader(io.StringIO(zf.read(name).decode())))


@pytest.fixture(scope="module")
def sim():
    """65 days of past (always one complete month), SOLUSDT listed 1.5 days before the start."""
    now = _now_ms()
    settings = SimulatorConfig(seed=9, rate=0.2, history_days=65.0,
                                 listings={"SOLUSDT": now - 36 * 3_600_000})  # fmt: skip
    with Simulator(settings, SYMBOLS) as s:
        time.sleep(0.5)
        yield s


# -- determinism and ids ------------------------------------------------------------------------


def test_two_simulators_started_apart_serve_the_same_trades():
    settings = SimulatorConfig(seed=4, rate=30.0, history_days=0.5)
    with Simulator(settings, SYMBOLS[:2]) as first:
        time.sleep(1.5)
        with Simulator(settings, SYMBOLS[:2]) as second:
            live = {s: _stream(second, s, 1.5) for s in SYMBOLS[:2]}
            for symbol in SYMBOLS[:2]:
                # the common span: second's history start .. now, from both servers' REST
                lo = _get(second, "/fapi/v1/aggTrades", symbol=symbol, fromId=0, limit=1).json()
                last = live[symbol][-1]["a"]
                ids = range(last - 3000, last + 1)
                a = _trades_by_id(first, symbol, ids[0], ids[-1])
                b = _trades_by_id(second, symbol, ids[0], ids[-1])
                assert [r["a"] for r in a] == list(ids) and a == b
                # ... and the live frames of the second equal the first's records
                by_id = {r["a"]: r for r in a}
                for frame in live[symbol]:
                    row = {k: frame[k] for k in ("a", "p", "q", "f", "l", "T", "m")}
                    assert by_id[frame["a"]] == row
                # the first trade of the second's history is also the first's at that id
                assert _trades_by_id(first, symbol, lo[0]["a"], lo[0]["a"]) == lo


def test_ids_run_consecutively_from_history_into_live():
    settings = SimulatorConfig(seed=5, rate=20.0, history_days=0.1)
    with Simulator(settings, ("ETHUSDT",)) as sim:
        frames = _stream(sim, "ETHUSDT", 1.5)
        first = _get(sim, "/fapi/v1/aggTrades", symbol="ETHUSDT", fromId=0, limit=1).json()[0]
        history_start = (sim.started_ms - DAY_MS // 10) // 10_000 * 10_000  # on the block grid
        assert history_start <= first["T"] < history_start + 10_000
        past = _trades_by_id(sim, "ETHUSDT", first["a"], frames[-1]["a"])
    ids = [r["a"] for r in past]
    assert ids == list(range(first["a"], frames[-1]["a"] + 1))
    times = [r["T"] for r in past]
    assert times == sorted(times) and times[0] < sim.started_ms < times[-1]
    live = [f["a"] for f in frames]
    assert live == list(range(live[0], live[-1] + 1)) and live[0] in ids


def test_a_restarted_simulator_continues_the_ids():
    settings = SimulatorConfig(seed=6, rate=40.0, history_days=0.1)
    with Simulator(settings, ("BTCUSDT",)) as sim:
        before = _stream(sim, "BTCUSDT", 1.0)
    time.sleep(0.3)
    with Simulator(settings, ("BTCUSDT",)) as again:
        after = _stream(again, "BTCUSDT", 1.0)
        # everything between: what the first served is a prefix of the second's history
        joined = _trades_by_id(again, "BTCUSDT", before[0]["a"], after[-1]["a"])
    assert after[0]["a"] > before[-1]["a"]
    assert [r["a"] for r in joined] == list(range(before[0]["a"], after[-1]["a"] + 1))
    by_id = {r["a"]: r for r in joined}
    for frame in before + after:
        assert by_id[frame["a"]] == {k: frame[k] for k in ("a", "p", "q", "f", "l", "T", "m")}


# -- REST klines, fundingRate ----------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "rule", "tf_ms"),
                         [("1m", "1min", 60_000), ("5m", "5min", 300_000),
                          ("1h", "1h", 3_600_000)])  # fmt: skip
def test_klines_equal_pandas_resample_of_the_trades(sim, interval, rule, tf_ms):
    start = (sim.started_ms - 10 * DAY_MS) // tf_ms * tf_ms
    rows = _get(sim, "/fapi/v1/klines", symbol="ETHUSDT", interval=interval, startTime=start,
                limit=120).json()  # fmt: skip
    assert len(rows) == 120 and rows[0][0] == start
    end = rows[-1][0] + tf_ms
    ticks = sim.history("ETHUSDT", start, end)
    frame = pd.DataFrame(
        {"price": ticks["price"], "qty": ticks["qty"], "quote": ticks["price"] * ticks["qty"],
         "buy": np.where(ticks["buyer_maker"], 0.0, ticks["qty"])},
        index=pd.to_datetime(ticks["ts"], unit="ms"),
    )  # fmt: skip
    want = frame.resample(rule, label="left", closed="left").agg(
        {"price": ["first", "max", "min", "last", "count"], "qty": "sum", "quote": "sum",
         "buy": "sum"}
    )  # fmt: skip
    assert len(want) == len(rows)
    got = np.array([[float(r[i]) for i in (1, 2, 3, 4, 8, 5, 7, 9)] for r in rows])
    np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-9)
    assert [r[0] for r in rows] == want.index.as_unit("ms").asi8.tolist()
    assert all(r[6] == r[0] + tf_ms - 1 and r[11] == "0" for r in rows)
    for r in rows:  # types as Binance sends them
        assert [type(v) for v in r] == [int, str, str, str, str, str, int, str, int, str, str, str]


def test_latest_klines_end_with_the_open_bar_and_bad_intervals_are_refused(sim):
    rows = _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=3).json()
    now = _now_ms()
    assert len(rows) == 3 and rows[-1][0] <= now <= rows[-1][6] + 1_000
    assert np.all(np.diff([r[0] for r in rows]) == 60_000)
    for bad in ("1s", "2m", "1w0"):
        resp = _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval=bad)
        assert resp.status_code == 400 and resp.json()["code"] == -1120
    resp = _get(sim, "/fapi/v1/klines", symbol="BTCUSDT")
    assert resp.status_code == 400 and resp.json()["code"] == -1102
    resp = _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1501)
    assert resp.status_code == 400


def test_funding_rates_follow_the_mark_price(sim):
    rows = _get(sim, "/fapi/v1/fundingRate", symbol="BTCUSDT",
                startTime=sim.started_ms - 10 * DAY_MS, limit=30).json()  # fmt: skip
    assert len(rows) == 30
    assert set(rows[0]) == {"symbol", "fundingTime", "fundingRate", "markPrice"}
    times = [r["fundingTime"] for r in rows]
    assert all(t % (8 * 3_600_000) == 0 for t in times) and np.all(np.diff(times) == 8 * 3_600_000)
    for r in rows:
        assert isinstance(r["fundingRate"], str) and isinstance(r["markPrice"], str)
        index = sim.market.mark_at("BTCUSDT", r["fundingTime"]).index
        premium = float(r["markPrice"]) / index - 1.0
        assert abs(premium) < 5e-3
        np.testing.assert_allclose(float(r["fundingRate"]), funding_rate(premium), atol=1e-8)
        kline = _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m",
                     startTime=r["fundingTime"], limit=1).json()[0]  # fmt: skip
        assert abs(float(r["markPrice"]) / float(kline[1]) - 1.0) < 5e-3


def test_a_day_of_1m_closes_of_a_group_pair_is_cointegrated_with_the_true_beta(sim):
    start = (sim.started_ms - 5 * DAY_MS) // DAY_MS * DAY_MS
    closes = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = _get(sim, "/fapi/v1/klines", symbol=symbol, interval="1m", startTime=start,
                    limit=1440).json()  # fmt: skip
        closes[symbol] = np.log([float(r[4]) for r in rows])
    ly, lx = closes["ETHUSDT"], closes["BTCUSDT"]
    assert coint(ly, lx)[1] < 0.01
    beta = sm.OLS(ly, sm.add_constant(lx)).fit().params[1]
    np.testing.assert_allclose(beta, sim.market.truth("ETHUSDT").beta, rtol=0.1)


def test_rest_history_stops_at_the_listing(sim):
    listing = sim.config.listings["SOLUSDT"]
    first = _get(sim, "/fapi/v1/aggTrades", symbol="SOLUSDT", fromId=0, limit=3).json()
    assert [r["a"] for r in first] == [0, 1, 2] and first[0]["T"] >= listing
    rows = _get(sim, "/fapi/v1/klines", symbol="SOLUSDT", interval="1h",
                startTime=listing - 5 * DAY_MS, limit=10).json()  # fmt: skip
    assert rows[0][0] == listing // 3_600_000 * 3_600_000
    early = _get(sim, "/fapi/v1/aggTrades", symbol="SOLUSDT", startTime=listing - 7_200_000,
                 endTime=listing - 3_600_001).json()  # fmt: skip
    assert early == []


# -- public-data archive -----------------------------------------------------------------------


def _path(period: str, kind: str, symbol: str, date: str, interval: str | None = None) -> str:
    label = interval or kind
    sub = f"{symbol}/{interval}" if interval else symbol
    return f"/data/futures/um/{period}/{kind}/{sub}/{symbol}-{label}-{date}.zip"


def test_daily_agg_trades_file_with_checksum_holds_the_days_trades(sim):
    day_start = (sim.started_ms // DAY_MS - 2) * DAY_MS
    path = _path("daily", "aggTrades", "ETHUSDT", _day(day_start))
    resp = _get(sim, path)
    assert resp.status_code == 200
    check = _get(sim, path + ".CHECKSUM")
    name = path.rsplit("/", 1)[1]
    assert check.text == f"{hashlib.sha256(resp.content).hexdigest()}  {name}\n"
    rows = _unzip(resp, name.replace(".zip", ".csv"))
    assert rows[0] == AGG_HEADER
    ticks = sim.history("ETHUSDT", day_start, day_start + DAY_MS)
    assert len(rows) - 1 == len(ticks) == 2 * 8640
    spec = sim.market.specs["ETHUSDT"]
    for i in range(0, len(ticks), 997):
        t = ticks[i]
        assert rows[1 + i] == [str(t["agg_id"]), f"{t['price']:.{spec.price_precision}f}",
                               f"{t['qty']:.{spec.quantity_precision}f}", str(t["first_id"]),
                               str(t["last_id"]), str(t["ts"]),
                               "true" if t["buyer_maker"] else "false"]  # fmt: skip
    assert _get(sim, path).content == resp.content  # cached and byte-stable


def test_daily_klines_file_equals_rest_klines(sim):
    day_start = (sim.started_ms // DAY_MS - 3) * DAY_MS
    path = _path("daily", "klines", "BTCUSDT", _day(day_start), "5m")
    resp = _get(sim, path)
    rows = _unzip(resp, path.rsplit("/", 1)[1].replace(".zip", ".csv"))
    assert rows[0] == KLINE_HEADER and len(rows) == 1 + 288
    rest = _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="5m", startTime=day_start,
                limit=288).json()  # fmt: skip
    assert rows[1:] == [[str(v) for v in r] for r in rest]


def test_archive_has_files_only_for_days_and_months_fully_in_the_history(sim):
    start, today = sim.started_ms, sim.started_ms // DAY_MS * DAY_MS
    history_start = start - 65 * DAY_MS
    first_day = -(-history_start // DAY_MS) * DAY_MS
    assert _get(sim, _path("daily", "aggTrades", "BTCUSDT", _day(first_day))).status_code == 200
    for ms in (first_day - DAY_MS, today, today + DAY_MS):
        for kind, interval in (("aggTrades", None), ("klines", "1m")):
            resp = _get(sim, _path("daily", kind, "BTCUSDT", _day(ms), interval))
            assert resp.status_code == 404, (kind, _day(ms))
            assert _get(sim, _path("daily", kind, "BTCUSDT", _day(ms), interval)
                        + ".CHECKSUM").status_code == 404  # fmt: skip
    # the first month that starts inside the history is complete and over; the current is not
    month = _first_full_month(sim)
    full = month.strftime("%Y-%m")
    current = dt.datetime.fromtimestamp(start / 1000, dt.UTC).strftime("%Y-%m")
    before = (month - dt.timedelta(days=1)).strftime("%Y-%m")
    monthly = _get(sim, _path("monthly", "klines", "BTCUSDT", full, "1d"))
    assert monthly.status_code == 200
    days = _unzip(monthly, f"BTCUSDT-1d-{full}.csv")[1:]
    assert len(days) in (28, 29, 30, 31) and days[0][0] == str(int(month.timestamp() * 1000))
    for date in (current, before):
        assert _get(sim, _path("monthly", "klines", "BTCUSDT", date, "1d")).status_code == 404
        assert _get(sim, _path("monthly", "aggTrades", "BTCUSDT", date)).status_code == 404
    trades = _get(sim, _path("monthly", "aggTrades", "BTCUSDT", full))
    check = _get(sim, _path("monthly", "aggTrades", "BTCUSDT", full) + ".CHECKSUM").text
    assert check.split("  ") == [hashlib.sha256(trades.content).hexdigest(),
                                 f"BTCUSDT-aggTrades-{full}.zip\n"]  # fmt: skip
    rows = _unzip(trades, f"BTCUSDT-aggTrades-{full}.csv")
    assert rows[0] == AGG_HEADER and len(rows) - 1 == len(days) * 8640 * 2
    ids = [int(rows[1][0]), int(rows[-1][0])]
    assert ids[1] - ids[0] == len(rows) - 2  # consecutive over the month
    day = _day(first_day)
    good = _path("daily", "aggTrades", "BTCUSDT", day)
    for bad in (_path("daily", "aggTrades", "NOPEUSDT", day),
                _path("daily", "klines", "BTCUSDT", day, "1s"),
                _path("daily", "fundingRate", "BTCUSDT", day),
                _path("daily", "aggTrades", "BTCUSDT", day[:5] + "13" + day[7:]),
                good.replace("-aggTrades-", "-trades-")):  # fmt: skip
        assert _get(sim, bad).status_code == 404, bad


def test_monthly_funding_file_equals_rest_funding_rates(sim):
    month = _first_full_month(sim)
    name = f"ETHUSDT-fundingRate-{month:%Y-%m}"
    resp = _get(sim, f"/data/futures/um/monthly/fundingRate/ETHUSDT/{name}.zip")
    rows = _unzip(resp, f"{name}.csv")
    assert rows[0] == ["calc_time", "funding_interval_hours", "last_funding_rate"]
    start = int(month.timestamp() * 1000)
    rest = _get(sim, "/fapi/v1/fundingRate", symbol="ETHUSDT", startTime=start,
                limit=1000).json()  # fmt: skip
    rest = rest[: len(rows) - 1]
    assert len(rest) == len(rows) - 1 in (84, 87, 90, 93)
    assert rows[1:] == [[str(r["fundingTime"]), "8", r["fundingRate"]] for r in rest]


def test_a_symbol_has_no_files_before_its_listing_day(sim):
    listing = sim.config.listings["SOLUSDT"]
    listing_day = listing // DAY_MS * DAY_MS
    before = _get(sim, _path("daily", "aggTrades", "SOLUSDT", _day(listing_day - DAY_MS)))
    assert before.status_code == 404
    if listing_day + DAY_MS <= sim.started_ms // DAY_MS * DAY_MS:  # the listing day is over
        resp = _get(sim, _path("daily", "aggTrades", "SOLUSDT", _day(listing_day)))
        rows = _unzip(resp, f"SOLUSDT-aggTrades-{_day(listing_day)}.csv")
        assert rows[1][0] == "0" and int(rows[1][5]) >= listing


# -- the trade kernel against a plain-Python loop ------------------------------------------------


def _chunk_trades_loop(gaps, cuts, b_start, b_len, side_u, size_z, log_mid, chunk_ms, skip,
                       agg_id0, trade_id0, tick, lot, price_dec, qty_dec):  # fmt: skip
    """Reference: one trade at a time, written from the kernel's docstring."""
    rows, trade_id = [], trade_id0
    nb, c = gaps.shape[0], gaps.shape[1] - 1
    for i in range(nb):
        u = np.cumsum(gaps[i])[:c] / gaps[i].sum()
        marks = [0] + [math.floor(v) for v in np.cumsum(cuts[i])[1:c] / cuts[i].sum() * 2 * c]
        marks.append(2 * c)
        for k in range(c):
            j = i * c + k
            mass = 10_000 + (BURST_FACTOR - 1) * b_len[i]  # the burst's density is BURST_FACTOR
            x = u[k] * mass
            if x < b_start[i]:
                off = x
            elif x < b_start[i] + BURST_FACTOR * b_len[i]:
                off = b_start[i] + (x - b_start[i]) / BURST_FACTOR
            else:
                off = x - (BURST_FACTOR - 1) * b_len[i]
            t = chunk_ms + (skip + i) * 10_000 + min(math.floor(off), 9_999)
            bid = math.floor(math.exp(log_mid[(t - chunk_ms) // 1000]) / tick)
            maker = bool(side_u[j] < 0.5)
            p = np.rint(max(bid if maker else bid + 1.0, 1.0) * tick * 10.0**price_dec)
            p /= 10.0**price_dec
            lots = max(np.rint(MEDIAN_NOTIONAL * math.exp(SIZE_SIGMA * size_z[j]) / p / lot), 1.0)
            fills = 1 + marks[k + 1] - marks[k]
            q = np.rint(lots * lot * 10.0**qty_dec) / 10.0**qty_dec
            rows.append((t, agg_id0 + j, p, q, trade_id,
                         trade_id + fills - 1, maker))  # fmt: skip
            trade_id += fills
    return rows


@pytest.mark.parametrize(("c", "tick", "lot", "decimals"),
                         [(1, 0.1, 0.001, (1, 3)), (7, 0.0001, 1.0, (4, 0)),
                          (30, 0.01, 0.01, (2, 2))])  # fmt: skip
def test_chunk_trades_kernel_equals_a_python_loop(c, tick, lot, decimals):
    rng = np.random.default_rng(c)
    nb = 12
    b_start = rng.random(nb) * 10_000
    b_len = np.where(rng.random(nb) < 0.5, np.minimum(rng.exponential(3_000, nb),
                                                       10_000 - b_start), 0.0)  # fmt: skip
    args = (rng.exponential(size=(nb, c + 1)), rng.exponential(size=(nb, c + 1)), b_start, b_len,
            rng.random(nb * c), rng.standard_normal(nb * c),
            np.log(100.0) + np.cumsum(rng.standard_normal(3600)) * 1e-3,
            1_764_547_200_000, 5, 1_000 * c, 3_000 * c, tick, lot, *decimals)  # fmt: skip
    got = np.empty(nb * c, dtype=TICK_DTYPE)
    for name, col in zip(TICK_DTYPE.names, chunk_trades(*args), strict=True):
        got[name] = col
    want = np.array(_chunk_trades_loop(*args), dtype=TICK_DTYPE)
    np.testing.assert_array_equal(got, want)
    assert np.all(np.diff(got["ts"]) >= 0)
    np.testing.assert_array_equal(got["first_id"][1:], got["last_id"][:-1] + 1)
