"""engine.warmup against the simulator's past: bars in the window equal pandas bars of the
exchange's own trades, the open kline is never stored, the store is read first, a missing
endpoint gives a cold symbol, and a PairBook fed the window has z defined and equal to a pandas
recomputation (oracles: ``Simulator.history`` resampled with pandas, ``run_pair`` on the
pandas-aligned closes)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest
from rest_proxy import NoEndpoint

from engine.config import SimulatorConfig, parse_config
from engine.errors import ConfigError
from engine.pairbook import PairBook
from engine.pairstep import PairParams, run_pair
from engine.schemas import table_to_bars, table_to_ticks, timeframe_ms
from engine.simulator import Simulator
from engine.store import Store
from engine.warmup import WeightBudget, missing, warm_up
from strategies import make_strategy

SYMBOLS = ("BTCUSDT", "ETHUSDT")
RULE = {"1s": "1s", "1m": "1min", "5m": "5min"}


@pytest.fixture(scope="module")
def sim():
    with Simulator(SimulatorConfig(seed=5, rate=4.0, history_days=1.0), SYMBOLS) as s:
        yield s


def pandas_bars(sim: Simulator, symbol: str, start: int, end: int, tf: str) -> pd.DataFrame:
    """OHLC, volume and trade count of the exchange's trades in [start, end), by pandas."""
    t = sim.history(symbol, start, end)
    idx = pd.to_datetime(t["ts"], unit="ms")
    price = pd.Series(t["price"], index=idx).resample(RULE[tf])
    out = price.ohlc()
    out["volume"] = pd.Series(t["qty"], index=idx).resample(RULE[tf]).sum()
    out["trades"] = price.count()
    out = out[out["trades"] > 0]
    out.index = out.index.as_unit("ms").asi8
    return out


@pytest.mark.parametrize(("tf", "n"), [("1m", 40), ("5m", 15), ("1s", 150)])
def test_window_from_rest_equals_the_exchange_trades(sim, tmp_path, tf, n):
    store = Store(tmp_path)
    before = time.time() * 1000.0
    res = warm_up(list(SYMBOLS), store, sim.url_rest, tf, n, lateness_ms=200)
    after = time.time() * 1000.0
    for sym in SYMBOLS:
        r = res[sym]
        assert r.full and r.error == "" and r.end_ms - r.start_ms == n * timeframe_ms(tf)
        assert before // timeframe_ms(tf) * timeframe_ms(tf) <= r.end_ms <= after
        got = table_to_bars(store.read_bars(tf, sym, start=r.start_ms))
        # the open kline is never stored: the last bar closed before warm-up ended
        last_end = int(got["ts"][-1]) + timeframe_ms(tf)
        assert last_end <= r.end_ms <= after
        if tf != "1s":  # klines reach the bar open; stored trades are continued by the feed
            assert last_end == r.end_ms
        want = pandas_bars(sim, sym, r.start_ms, last_end, tf)
        np.testing.assert_array_equal(got["ts"], want.index.to_numpy())
        for col in ("open", "high", "low", "close", "volume"):
            np.testing.assert_allclose(got[col], want[col].to_numpy(), rtol=1e-12)
        np.testing.assert_array_equal(got["trades"], want["trades"].to_numpy())
        assert r.fetched >= 1
        if tf == "1s":  # aggTrades by time: the trades are stored too
            ticks = table_to_ticks(store.read_ticks(sym, start=r.start_ms))
            hist = sim.history(sym, r.start_ms, last_end)
            np.testing.assert_array_equal(ticks["agg_id"], hist["agg_id"])


def test_store_first_rest_for_the_rest(sim, tmp_path):
    store = Store(tmp_path)
    tf, n = "1m", 30
    full = warm_up(["BTCUSDT"], Store(tmp_path / "all"), sim.url_rest, tf, n, lateness_ms=200)
    start, end = full["BTCUSDT"].start_ms, full["BTCUSDT"].end_ms
    have = table_to_bars(Store(tmp_path / "all").read_bars(tf, "BTCUSDT"))
    mid = start + 10 * 60_000
    store.write_bars(tf, "BTCUSDT", have[(have["ts"] >= mid) & (have["ts"] < mid + 600_000)])
    store.flush()
    stored_ts = table_to_bars(store.read_bars(tf, "BTCUSDT"))["ts"]
    assert missing(stored_ts, start, end, 60_000, cover_tail=True) == [
        (start, mid), (mid + 600_000, end)
    ]
    assert missing(stored_ts, start, end, 60_000, cover_tail=False) == [(start, mid)]
    from engine import warmup

    res = asyncio.run(warmup.warm_up_async(["BTCUSDT"], store, sim.url_rest, tf, n,
                                           now_ms=end + 300.0))  # fmt: skip
    assert res["BTCUSDT"].full and res["BTCUSDT"].fetched == 20
    got = table_to_bars(store.read_bars(tf, "BTCUSDT"))
    np.testing.assert_array_equal(got, have)


def test_no_klines_endpoint_starts_cold(sim, tmp_path):
    store = Store(tmp_path)
    with NoEndpoint(sim.url_rest, {"/fapi/v1/klines"}) as proxy:
        res = warm_up(list(SYMBOLS), store, proxy.url, "1m", 20)
    for sym in SYMBOLS:
        assert not res[sym].full and "404" in res[sym].error
        assert table_to_bars(store.read_bars("1m", sym)).size == 0


def test_unreachable_exchange_leaves_every_symbol_cold_at_once(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    res = warm_up(list(SYMBOLS), Store(tmp_path), url, "1m", 20)
    assert [r.full for r in res.values()] == [False, False]
    assert res["BTCUSDT"].error == res["ETHUSDT"].error != ""


def test_no_warm_up_asked():
    assert warm_up(list(SYMBOLS), None, "http://127.0.0.1:9", "1m", 0) == {}


def test_weight_budget_waits_for_its_refill():
    budget = WeightBudget(per_minute=600)  # 10 a second

    async def spend() -> float:
        await budget.take(600)
        t0 = time.monotonic()
        await budget.take(5)
        return time.monotonic() - t0

    assert asyncio.run(spend()) >= 0.45


@pytest.mark.parametrize("tf", ["1m", "5m"])
def test_book_fed_the_window_has_z_of_pandas(sim, tmp_path, tf):
    """A PairBook replaying the warm window (as a PairActor does) has z defined at the last
    warm bar, equal to run_pair over the pandas-aligned closes."""
    cfg = parse_config({
        "feed": {"source": "simulator"}, "symbols": list(SYMBOLS),
        "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
        "analytics": {"timeframe": tf, "ols_window": 6, "zscore_window": 5},
        "store": {"path": str(tmp_path)},
    })  # fmt: skip
    n = cfg.analytics.warmup_bar_count
    assert n == 18
    store = Store(tmp_path)
    res = warm_up(list(SYMBOLS), store, sim.url_rest, tf, n, lateness_ms=200)
    start, end = res["BTCUSDT"].start_ms, res["BTCUSDT"].end_ms
    book = PairBook(cfg.analytics, make_strategy(cfg.strategy), ["ETHUSDT/BTCUSDT"])
    book.feed([{"symbol": s, "wm": end, "bars": table_to_bars(store.read_bars(tf, s)),
                "advances": []} for s in SYMBOLS], live=False)  # fmt: skip
    assert book.rows()[0]["bars"] == n
    closes = pd.DataFrame({s: pandas_bars(sim, s, start, end, tf)["close"] for s in SYMBOLS})
    closes = closes.sort_index().ffill().dropna()
    series = run_pair(closes["ETHUSDT"].to_numpy(), closes["BTCUSDT"].to_numpy(),
                      PairParams.from_config(cfg.analytics))  # fmt: skip
    assert np.isfinite(book.z[0])
    np.testing.assert_allclose(book.z[0], series.z[-1], rtol=1e-9)
    np.testing.assert_allclose(book.snapshot("ETHUSDT/BTCUSDT")["z"], series.z, rtol=1e-9,
                               equal_nan=True)  # fmt: skip


@pytest.mark.parametrize(
    ("analytics", "n"),
    [({}, 900), ({"zscore_window": 500}, 1500), ({"warmup_bars": 7}, 7),
     ({"warmup_bars": 0}, 0), ({"ols_window": 1_000_000}, 1_000_000)],
)  # fmt: skip
def test_warmup_bar_count(analytics, n):
    cfg = parse_config({"feed": {"source": "simulator"}, "symbols": list(SYMBOLS),
                        "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
                        "analytics": analytics})  # fmt: skip
    assert cfg.analytics.warmup_bar_count == n


@pytest.mark.parametrize("bad", [-1, 1_000_001, "many", 2.5])
def test_warmup_bars_out_of_range_is_refused(bad):
    with pytest.raises(ConfigError, match="warmup_bars"):
        parse_config({"feed": {"source": "simulator"}, "symbols": list(SYMBOLS),
                      "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
                      "analytics": {"warmup_bars": bad}})  # fmt: skip
