"""ui.services and ui.bridge.health without a browser: oracles are pandas and statsmodels."""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import adfuller
from statsmodels.tsa.stattools import coint as sm_coint

from actors.backtest import backtest_bars
from engine.config import StrategyConfig, load_config
from engine.errors import DataError
from engine.pairstep import PairParams
from engine.schemas import BAR_DTYPE, as_bar_records
from engine.store import Store
from tests.funding_kit import mark_price_rows
from tests.kit import cointegrated_pair
from ui import services
from ui.bridge import ERROR_CHARS, STALE_S, Cache, health

T0 = 1_700_000_000_000
# statsmodels 0.15 warns unless result_object is given; 0.14 does not know it
ADF_KW = (
    {"result_object": False} if "result_object" in inspect.signature(adfuller).parameters else {}
)


def _bars(close: np.ndarray, ts: np.ndarray, qv: float = 10.0) -> np.ndarray:
    out = np.zeros(close.size, dtype=BAR_DTYPE)
    out["ts"] = ts
    out["open"] = out["high"] = out["low"] = out["close"] = close
    out["quote_volume"] = qv
    return out


def test_symbol_grid_is_the_screen_column_over_its_top_symbols():
    table = pd.DataFrame(
        {"pair": ["BBB/AAA", "CCC/AAA", "DDD/EEE", "CCC/BBB"], "eg_pvalue": [0.01, 0.2, 0.3, 0.4]}
    )
    symbols, grid = services.symbol_grid(table, "eg_pvalue", 3)
    assert symbols == ["BBB", "AAA", "CCC"]  # met going down the rows, at most 3
    value = grid.set_index(["a", "b"])["eg_pvalue"]
    assert len(grid) == 9 and np.isnan(value[("AAA", "AAA")])
    assert value[("AAA", "BBB")] == value[("BBB", "AAA")] == 0.01
    assert value[("BBB", "CCC")] == 0.4 and value[("CCC", "AAA")] == 0.2
    _, corr = services.symbol_grid(table, "eg_pvalue", 5, diagonal=1.0)
    both = corr.set_index(["a", "b"])["eg_pvalue"]
    assert both[("EEE", "EEE")] == 1.0 and np.isnan(both[("EEE", "AAA")])


@pytest.mark.parametrize("tf_ms", [1_000, 60_000])
def test_quote_volume_1m_matches_pandas(tf_ms):
    ts = T0 + tf_ms * np.arange(300)
    bars = _bars(np.full(300, 5.0), ts, qv=0.0)
    bars["quote_volume"] = np.arange(300, dtype=float)
    s = pd.Series(bars["quote_volume"], index=pd.to_datetime(ts, unit="ms"))
    end = pd.Timestamp(int(ts[-1]) + tf_ms, unit="ms")
    expected = s[s.index >= end - pd.Timedelta("60s")].sum()
    assert services.quote_volume_1m(bars, tf_ms) == expected
    assert services.quote_volume_1m(bars[:0], tf_ms) == 0.0


def test_liquid_pairs_filter():
    vols = {"A": 10.0, "B": 5.0, "C": 1.0}
    assert services.liquid_pairs(["A/B", "B/C", "A/C"], vols, 5.0) == ["A/B"]
    assert services.liquid_pairs(["A/B", "A/D"], vols, 0.0) == ["A/B", "A/D"]


@pytest.mark.parametrize("seed", [3, 4])
def test_drawdown_matches_pandas(seed):
    eq = 100 + np.cumsum(np.random.default_rng(seed).normal(0, 1, 500))
    s = pd.Series(eq)
    np.testing.assert_allclose(services.drawdown(eq), s / s.cummax() - 1, rtol=1e-12)


@pytest.mark.parametrize("hedge", ["kalman", "rolling_ols", "static_ols"])
def test_recompute_and_spread_tests_match_statsmodels(hedge):
    y, x = cointegrated_pair(600, seed=5)
    ts = T0 + 1000 * np.arange(600)
    live = PairParams(delta=1e-4, ols_window=50, zscore_window=30)
    params = services.params_for(live, hedge, 30)
    frame = services.recompute(
        "Y/X", "1s", _bars(y, ts), _bars(x, ts), params, StrategyConfig(name="zscore")
    )
    assert len(frame) == 600
    if hedge == "rolling_ols":
        np.testing.assert_array_equal(frame.cols["beta"], frame.cols["beta_ols"])
    if hedge == "kalman":
        np.testing.assert_array_equal(frame.cols["beta"], frame.cols["beta_kalman"])
    t = services.spread_tests(frame, "log")
    spread = frame.cols["spread"][np.isfinite(frame.cols["spread"])]
    a = adfuller(spread, **ADF_KW)
    np.testing.assert_allclose([t.adf_stat, t.adf_pvalue], a[:2], rtol=1e-9)
    eg = sm_coint(np.log(y)[-spread.size :], np.log(x)[-spread.size :])
    np.testing.assert_allclose([t.eg_stat, t.eg_pvalue], eg[:2], rtol=1e-9)
    assert "level" in t.verdict and t.nobs == spread.size


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(fmt):
    y, x = cointegrated_pair(50, seed=6)
    ts = T0 + 1000 * np.arange(50)
    frame = services.recompute(
        "Y/X",
        "1s",
        _bars(y, ts),
        _bars(x, ts),
        PairParams(ols_window=10, zscore_window=10),
        StrategyConfig(name="zscore"),
    )
    buf = services.export_bytes(frame, fmt)
    df = pd.read_csv(buf) if fmt == "csv" else pd.read_parquet(io.BytesIO(buf.getvalue()))
    got_ts = (pd.to_datetime(df["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
    np.testing.assert_array_equal(got_ts.to_numpy(), ts)
    for col in ("close_y", "close_x", "beta", "spread", "z", "position"):
        np.testing.assert_allclose(df[col], frame.cols[col], rtol=0, atol=0, equal_nan=True)
    with pytest.raises(DataError, match="export format 'xlsx'"):
        services.export_bytes(frame, "xlsx")


def _status(connected: bool, last_bar: str | None) -> dict:
    return {
        "feeds": [{"symbols": ["A", "B"], "connected": connected, "reconnects": 3}],
        "pairs": [{"pair": "A/B", "last_bar": last_bar}],
        "latency_ms": {},
    }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


@pytest.mark.parametrize(
    ("case", "state"),
    [
        ("never", "unreachable"),
        ("failing", "unreachable"),
        ("down", "feed-down"),
        ("old", "stale"),
        ("ok", "live"),
        ("brief-failure", "live"),
    ],
)
def test_health_never_calls_old_numbers_live(case, state):
    now = time.time()
    cache = {
        "never": Cache(),
        "failing": Cache(
            polled_at=now - 20,
            failing_since=now - 10,
            error="RayError: x",
            status=_status(True, _iso(now - 20)),
        ),
        "down": Cache(polled_at=now, status=_status(False, _iso(now - 1))),
        "old": Cache(polled_at=now, status=_status(True, _iso(now - STALE_S - 5))),
        "ok": Cache(polled_at=now, status=_status(True, _iso(now - 1))),
        "brief-failure": Cache(
            polled_at=now - 1, failing_since=now - 1, error="x", status=_status(True, _iso(now - 2))
        ),
    }[case]
    h = health(cache, now, 1000)
    assert h.state == state
    assert h.live == (state == "live")
    if state != "live":
        assert "NOT live" in h.message or "Connecting" in h.message
    if case == "down":
        assert "Feed down" in h.message and "reconnecting (3 reconnects" in h.message
        assert "failed connection attempts" not in h.message
    assert math.isfinite(now)


@pytest.mark.parametrize(
    ("rows", "want"),
    [
        ([(False, 4, "ConnectionRefusedError: [Errno 111] <refused>")],
         "retrying: 4 failed connection attempts, last error: "
         "ConnectionRefusedError: [Errno 111] &lt;refused&gt;"),
        ([(False, 2, ""), (False, 5, "TimeoutError: slow")],
         "retrying: 7 failed connection attempts, last error: TimeoutError: slow"),
        ([(True, 9, "old"), (False, 1, "OSError: x")],
         "retrying: 1 failed connection attempts, last error: OSError: x"),
        ([(False, 3, "E" * (ERROR_CHARS + 50))],
         f"retrying: 3 failed connection attempts, last error: {'E' * (ERROR_CHARS - 1)}…)"),
    ],
)  # fmt: skip
def test_feed_down_banner_counts_failed_connects(rows, want):
    now = time.time()
    feeds = [
        {"symbols": [f"S{k}"], "connected": c, "reconnects": 0, "connect_failures": n,
         "last_error": e}
        for k, (c, n, e) in enumerate(rows)
    ]  # fmt: skip
    status = {"feeds": feeds, "pairs": [{"pair": "S0/S1", "last_bar": _iso(now - 1)}]}
    h = health(Cache(polled_at=now, status=status), now, 1000)
    assert h.state == "feed-down" and "NOT live" in h.message
    assert "reconnecting (0 reconnects so far; " + want in h.message


# ----------------------------------------------------------------------------- backtest

BT_CONFIG = """\
feed: {source: simulator}
symbols: [ETHUSDT, BTCUSDT]
pairs: [{y: ETHUSDT, x: BTCUSDT}]
analytics: {timeframe: 1m, hedge: kalman, zscore_window: 40}
strategy: {entry: 1.5, exit: 0.25, stop: 3.5, notional: 5000, fee_bps: 2.0}
"""
BT_T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
MINUTE = 60_000
HOUR = 60 * MINUTE


def _stored_pair_with_funding(path, n: int) -> None:
    """1m bars of ETHUSDT and BTCUSDT (a few bars missing) and mark-price funding rows of both
    legs (announced 4 h and 8 h funding times), starting 8 h before the bars, ending after."""
    store = Store(path)
    y, x = cointegrated_pair(n, beta=1.2, half_life=12.0, noise=0.003, x0=60_000.0, seed=21)
    rng = np.random.default_rng(21)
    for symbol, close in (("ETHUSDT", y), ("BTCUSDT", x)):
        ts = BT_T0 + MINUTE * np.arange(n)
        bars = _bars(close, ts)
        bars["open"] = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0, 2e-4, n))
        bars["high"] = np.maximum(bars["open"], close)
        bars["low"] = np.minimum(bars["open"], close)
        bars["volume"], bars["trades"] = 1.0, 1
        keep = rng.random(n) > 0.05
        keep[0] = True
        store.write_bars("1m", symbol, bars[keep])
    for symbol, hours, seed in (("ETHUSDT", 4, 1), ("BTCUSDT", 8, 2)):
        rows = mark_price_rows(
            BT_T0 - 8 * HOUR, BT_T0 + n * MINUTE + 8 * HOUR, interval_h=hours, seed=seed
        )
        store.write_funding(symbol, rows)
    store.flush()


def test_dashboard_backtest_charges_funding_exactly_as_the_cli(tmp_path):
    """The CLI (``pairstack backtest --json``, a fresh shell's environment) and the dashboard's
    ``actors.backtest.backtest_bars`` (its Ray task) on the same stored bars, funding and
    settings: the same result."""
    store_dir, home, out = tmp_path / "store", tmp_path / "home", tmp_path / "bt.json"
    home.mkdir()
    _stored_pair_with_funding(store_dir, n=2000)
    config_file = tmp_path / "bt.yaml"
    config_file.write_text(BT_CONFIG)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "pairstack"), "backtest", "--store", str(store_dir),
         "--pair", "ETHUSDT/BTCUSDT", "--config", str(config_file), "--json", str(out)],
        env={"PATH": os.environ["PATH"], "HOME": str(home)},  # numba caches under HOME
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(out.read_text())

    config = load_config(config_file)
    store = Store(store_dir)
    legs = [as_bar_records(s, store.read_bars("1m", s)) for s in ("ETHUSDT", "BTCUSDT")]
    ui = backtest_bars(
        legs[0],
        legs[1],
        PairParams.from_config(config.analytics),
        config.strategy,
        "1m",
        legs=("ETHUSDT", "BTCUSDT"),
        store=str(store_dir),
    )
    assert ui.stats["funding_paid"] != 0.0 and ui.stats["funding_events"] >= 8
    assert ui.stats["trades"] >= 3
    # the JSON document both would write, through JSON (floats round-trip exactly)
    doc = json.loads(json.dumps(ui.to_json_dict()))
    assert doc["stats"] == cli["stats"]
    assert doc["trades"] == cli["trades"]
    assert doc["equity"] == cli["equity"]
    np.testing.assert_array_equal(
        ui.trades["funding"].to_numpy(), [t["funding"] for t in cli["trades"]]
    )
    # without the store (no funding) the numbers differ: the test above can fail
    bare = backtest_bars(
        legs[0], legs[1], PairParams.from_config(config.analytics), config.strategy, "1m"
    )
    assert bare.stats["funding_paid"] == 0.0
    assert bare.stats["final_equity"] != cli["stats"]["final_equity"]


def test_recompute_honours_max_carry():
    """The dashboard's recompute aligns as the engine does: a leg silent for 10 bars is carried
    at most max_carry bars; the bar times past it are not stepped."""
    y, x = cointegrated_pair(300, seed=7)
    ts = T0 + 1000 * np.arange(300)
    keep = np.ones(300, dtype=bool)
    keep[150:160] = False  # x misses 10 bars
    by, bx = _bars(y, ts), _bars(x[keep], ts[keep])
    params, strat = PairParams(ols_window=20, zscore_window=20), StrategyConfig(name="zscore")
    auto = services.recompute("Y/X", "1s", by, bx, params, strat)  # auto: 60 bars of 1s
    two = services.recompute("Y/X", "1s", by, bx, params, strat, 2)
    assert len(auto) == 300 and len(two) == 300 - (10 - 2)
    np.testing.assert_array_equal(
        two.cols["ts"], np.concatenate([ts[:152], ts[160:]])
    )
