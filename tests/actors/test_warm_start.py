"""Warm start on the real wire: a fresh store, the engine started on the simulator (in this
process, with a day of past) on 1m bars. Every pair's z is defined at its first live bar and
equals a pandas recomputation over the exchange's own trades (``Simulator.history`` resampled,
``run_pair`` on the pandas-aligned closes); status says ``"warm": true`` and counts the bars.
An exchange without ``/fapi/v1/klines`` starts cold (``"warm": false``) and runs on."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pandas as pd
import pytest
from rest_proxy import NoEndpoint

from actors.cli.status import format_status
from actors.engine import start_engine
from engine.config import SimulatorConfig, parse_config
from engine.pairbook import parse_pair
from engine.pairstep import PairParams, run_pair
from engine.schemas import table_to_bars
from engine.simulator import Simulator
from engine.store import Store

pytestmark = pytest.mark.ray

SYMBOLS = ["ETHUSDT", "BTCUSDT", "SOLUSDT"]
PAIRS = ["ETHUSDT/BTCUSDT", "SOLUSDT/BTCUSDT"]
NAMESPACE = "pairstack-test"
MINUTE = 60_000


def config(store_path, ws_url: str, rest_url: str) -> object:
    return parse_config({
        "feed": {"source": "simulator", "ws_url": ws_url, "rest_url": rest_url,
                 "lateness_ms": 300, "funding": False},
        "symbols": SYMBOLS,
        "timeframes": ["1s", "1m"],
        "pairs": [{"y": y, "x": x} for y, x in map(parse_pair, PAIRS)],
        "analytics": {"timeframe": "1m", "ols_window": 6, "zscore_window": 5},
        "store": {"path": str(store_path)},
        "ray": {"pairs_per_actor": 2},
    })  # fmt: skip


def wait_for(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def sim():
    cfg = SimulatorConfig(seed=13, rate=4.0, history_days=1.0)
    with Simulator(cfg, SYMBOLS) as s:
        yield s


def test_warm_start_on_1m_has_z_of_pandas_at_the_first_live_bar(ray_cluster, sim, tmp_path):
    ray = ray_cluster
    cfg = config(tmp_path, sim.url_ws, sim.url_rest)
    n = cfg.analytics.warmup_bar_count
    started = time.time() * 1000.0
    handle = start_engine(cfg, hub_name=f"hub-{uuid.uuid4().hex[:8]}", namespace=NAMESPACE)
    try:
        # the first live bar closes at the next minute: at most a minute and the lateness
        st = wait_for(
            lambda: (s := handle.status()) and all(p["bars"] > n for p in s["pairs"]) and s,
            timeout_s=120.0, what="every pair's first live step",
        )  # fmt: skip
        assert all(p["warm"] is True for p in st["pairs"])
        actor = next(iter(handle.pair_actors.values()))
        snaps = {p: ray.get(actor.snapshot.remote(p)) for p in PAIRS}
    finally:
        handle.stop()
    store = Store(tmp_path)
    for pair, snap in snaps.items():
        y, x = parse_pair(pair)
        ts = snap["ts"]
        # the window came from REST before going live: n closed bars before the live ones
        assert int(ts[n - 1]) + MINUTE <= started + 2 * MINUTE
        first_live = int(ts[n])
        assert first_live + MINUTE > started
        assert np.isfinite(snap["z"][n]) and np.isfinite(snap["beta"][n])
        closes = {}
        for sym in (y, x):
            t = sim.history(sym, int(ts[0]), first_live + MINUTE)
            closes[sym] = pd.Series(t["price"], index=t["ts"] // MINUTE * MINUTE).groupby(
                level=0).last()  # fmt: skip
        both = pd.DataFrame(closes).sort_index().ffill().dropna()
        np.testing.assert_array_equal(both.index.to_numpy(), ts[: n + 1])
        series = run_pair(both[y].to_numpy(), both[x].to_numpy(),
                          PairParams.from_config(cfg.analytics))  # fmt: skip
        np.testing.assert_allclose(snap["z"][: n + 1], series.z, rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(snap["z"][n], series.z[-1], rtol=1e-9)
        # the stored window ends with closed bars only (no open kline): all before the live bar
        stored = table_to_bars(store.read_bars("1m", y, end=first_live))
        assert int(stored["ts"][-1]) + MINUTE <= first_live


def test_exchange_without_klines_starts_cold_and_runs_on(ray_cluster, sim, tmp_path):
    with NoEndpoint(sim.url_rest, {"/fapi/v1/klines"}) as proxy:
        cfg = config(tmp_path, sim.url_ws, proxy.url)
        handle = start_engine(cfg, hub_name=f"hub-{uuid.uuid4().hex[:8]}", namespace=NAMESPACE)
        try:
            st = wait_for(
                lambda: (s := handle.status()) and len(s["feeds"]) and all(
                    f["connected"] and f["ticks"] > 0 for f in s["feeds"]) and s,
                timeout_s=60.0, what="the feeds to run",
            )  # fmt: skip
            assert any("/fapi/v1/klines" in r for r in proxy.requests)
            assert sorted(p["pair"] for p in st["pairs"]) == sorted(PAIRS)
            assert all(p["warm"] is False for p in st["pairs"])
            assert all(w is False for f in st["feeds"] for w in f["warm_symbols"].values())
            # everything else runs: live trades become stored 1s bars
            wait_for(lambda: all(Store(tmp_path).read_bars("1s", s).num_rows > 2
                                 for s in SYMBOLS), 30.0, "1s bars in the store")  # fmt: skip
        finally:
            handle.stop()


def test_status_text_says_cold():
    pair = {"last_bar": None, "beta": None, "z": None, "position": 0, "bars": 0}
    status = {
        "feeds": [],
        "pairs": [{"pair": "A/B", "warm": False, **pair}, {"pair": "B/A", "warm": True, **pair}],
        "latency_ms": {"p50": None, "p99": None, "max": None},
    }
    lines = format_status(status).splitlines()
    assert lines[0].endswith("position +0  cold") and lines[1].endswith("position +0")
