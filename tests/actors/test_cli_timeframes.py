"""Timeframes beyond the stored ones: ``pairstack backtest`` and ``screen`` on a store holding
only 1m bars, run as users do (subprocess, PATH and HOME only), equal the same computations on
bars resampled by pandas from the 1m bars read with pyarrow.dataset."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from cli_env import pairstack, scrubbed_env
from kit import cointegrated_pair, pandas_resample
from test_backtest_actor import MINUTE, PAIR, X, Y, leg_bars, write_pair_store

from engine.backtest import Costs, run
from engine.backtest_data import PairData
from engine.config import load_config
from engine.pairstep import PairParams
from engine.schemas import BAR_SCHEMA, TIMEFRAME_MS, table_to_bars
from engine.screen import screen_bars
from engine.store import Store
from strategies import make_strategy

CONFIG = """\
feed: {source: simulator}
symbols: [ETHUSDT, BTCUSDT]
timeframes: [1m, 1h]
pairs: [{y: ETHUSDT, x: BTCUSDT}]
analytics: {timeframe: 1h, hedge: kalman, zscore_window: 20}
strategy: {entry: 1.0, exit: 0.0, stop: 3.5, notional: 5000, fee_bps: 2.0}
"""
def pandas_bars(store_dir, symbol: str, timeframe: str) -> np.ndarray:
    """Oracle: the symbol's stored 1m bars (pyarrow.dataset) resampled by pandas, left-labelled
    and left-closed, empty intervals dropped, and the last interval dropped unless its last
    minute is stored (it may still be open)."""
    table = ds.dataset(f"{store_dir}/bars/timeframe=1m/symbol={symbol}", format="parquet",
                       partitioning="hive").to_table(columns=BAR_SCHEMA.names)
    bars = table_to_bars(table.cast(BAR_SCHEMA))
    bars = bars[np.argsort(bars["ts"], kind="stable")]
    out = pandas_resample(bars, timeframe)
    if out["ts"][-1] + TIMEFRAME_MS[timeframe] > int(bars["ts"][-1]) + MINUTE:
        out = out[:-1]
    return out


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(pairstack(*argv), env=scrubbed_env(), capture_output=True, text=True,
                          timeout=300)


def test_backtest_1h_from_1m_store_equals_pandas_resampled(tmp_path):
    store_dir = tmp_path / "store"
    write_pair_store(store_dir, n=6000, seed=3)  # 1m bars only, 100 hours
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(CONFIG)
    config = load_config(cfg_file)  # analytics.timeframe 1h is a valid config
    assert config.analytics.timeframe == "1h" and config.timeframes == ("1m", "1h")
    assert Store(store_dir).symbols("1h") == []

    proc = cli("backtest", "--store", str(store_dir), "--pair", PAIR, "--config", str(cfg_file),
               "--json", "-")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["config"]["analytics"]["timeframe"] == "1h"

    by, bx = pandas_bars(store_dir, Y, "1h"), pandas_bars(store_dir, X, "1h")
    data = PairData.from_tables(by, bx, y=Y, x=X, timeframe="1h")
    want = run(data, PairParams.from_config(config.analytics), make_strategy(config.strategy),
               Costs.from_config(config.strategy))
    assert {k: doc[k] for k in ("stats", "trades", "equity")} == json.loads(
        json.dumps(want.to_json_dict()))
    assert doc["stats"]["trades"] > 0

    # annualised with sqrt(bars per 365 days) of 1h bars
    stats = doc["stats"]
    assert stats["bars_per_year"] == 365 * 24
    equity = np.asarray(doc["equity"]["equity"])
    returns = equity[1:] / equity[:-1] - 1.0
    sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(365 * 24)
    np.testing.assert_allclose(stats["sharpe"], sharpe, rtol=1e-9)

    # --timeframe overrides the config: the same run
    again = cli("backtest", "--store", str(store_dir), "--pair", PAIR, "--config", str(cfg_file),
                "--timeframe", "1h", "--json", "-")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["stats"] == doc["stats"]


def test_screen_4h_from_1m_store_equals_pandas_resampled(tmp_path):
    store_dir = tmp_path / "store"
    n = 30 * 24 * 60  # 30 days of 1m bars: 180 bars of 4h
    store = Store(store_dir)
    rng = np.random.default_rng(9)
    y, x = cointegrated_pair(n, beta=1.2, half_life=3000.0, noise=0.004, x0=3000.0, seed=9)
    walk = 20.0 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    for seed, (symbol, close) in enumerate((("ETHUSDT", y), ("BTCUSDT", x), ("SOLUSDT", walk))):
        store.write_bars("1m", symbol, leg_bars(close, rng.random(n) > 0.02, seed))
    store.flush()

    rows = tmp_path / "rows.parquet"
    proc = cli("screen", "--store", str(store_dir), "--timeframe", "4h", "--out", str(rows))
    assert proc.returncode == 0, proc.stderr
    assert "3 symbols, 3 pairs" in proc.stdout

    bars = {s: pandas_bars(store_dir, s, "4h") for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    want = screen_bars(bars, "4h").table.to_pandas()
    got = pq.read_table(rows).to_pandas()
    pd.testing.assert_frame_equal(got, want)
    assert len(got) == 3 and got["n"].between(179, 180).all()
