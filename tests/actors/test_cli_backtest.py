"""``pairstack backtest`` on a real store: JSON contract, numbers equal to the in-process
backtest (``engine.backtest.run``), sweeps written as CSV/Parquet, bad input exits 2 with its
reason."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from test_backtest_actor import MINUTE, PAIR, T0, X, Y, backtest, oracle_bars, write_pair_store

from engine.cli import main
from engine.config import AnalyticsConfig, StrategyConfig, load_config
from engine.pairstep import PairParams

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
feed: {source: simulator}
symbols: [ETHUSDT, BTCUSDT]
timeframes: [1m]
pairs: [{y: ETHUSDT, x: BTCUSDT}]
analytics: {timeframe: 1m, hedge: rolling_ols, ols_window: 120, zscore_window: 40}
strategy: {entry: 1.5, exit: 0.25, stop: 3.5, notional: 5000, fee_bps: 2.0}
"""


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-store")
    write_pair_store(path, n=2500, seed=5)
    return path


def backtest_argv(store_dir, *extra: str, pair: str = PAIR) -> list[str]:
    """``pairstack backtest`` on the 1m bars of ``pair`` in ``store_dir``, then ``extra``."""
    return ["backtest", "--store", str(store_dir), "--pair", pair, "--timeframe", "1m", *extra]


def expected(store_dir, params, cfg, start=None, end=None):
    by, bx = oracle_bars(store_dir, Y, start, end), oracle_bars(store_dir, X, start, end)
    return backtest(by, bx, params, cfg)


@pytest.mark.parametrize("with_config", [False, True])
@pytest.mark.parametrize("window", [(None, None), (200, 2000)])
def test_single_backtest_json(store_dir, tmp_path, capsys, with_config, window):
    out = tmp_path / "bt.json"
    argv = backtest_argv(store_dir, "--json", str(out))
    start = end = None
    if window[0] is not None:
        start, end = T0 + window[0] * MINUTE, T0 + window[1] * MINUTE
        argv += ["--start", "2024-06-01T03:20:00Z", "--end", "2024-06-02T09:20:00Z"]
    if with_config:
        cfg_file = tmp_path / "c.yaml"
        cfg_file.write_text(CONFIG)
        argv += ["--config", str(cfg_file)]
        config = load_config(cfg_file)
        params, cfg = PairParams.from_config(config.analytics), config.strategy
    else:
        params, cfg = PairParams.from_config(AnalyticsConfig()), StrategyConfig()
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"stats", "trades", "equity", "config", "data", "version"}
    assert set(doc["equity"]) == {"ts", "equity"}
    want = expected(store_dir, params, cfg, start, end)
    assert {k: doc[k] for k in ("stats", "trades", "equity")} == json.loads(
        json.dumps(want.to_json_dict())
    )
    # what reproduces the run: the config as used, the data range, the code version
    assert doc["config"]["strategy"] == json.loads(json.dumps(msgspec.to_builtins(cfg)))
    assert doc["config"]["analytics"]["timeframe"] == "1m"
    assert (
        PairParams.from_config(msgspec.convert(doc["config"]["analytics"], AnalyticsConfig))
        == params
    )
    assert doc["config"]["costs"]["capital"] == cfg.capital
    assert doc["data"] == {
        "store": str(Path(store_dir).resolve()),
        "pair": PAIR,
        "timeframe": "1m",
        "first_bar": doc["equity"]["ts"][0],
        "last_bar": doc["equity"]["ts"][-1],
        "bars": len(doc["equity"]["ts"]),
    }
    assert doc["version"]["package"] and len(doc["version"]["commit"] or "x" * 40) == 40
    assert doc["stats"]["trades"] == want.stats["trades"] > 0
    assert doc["equity"]["ts"][0] == (
        "2024-06-01T03:20:00.000Z" if start else "2024-06-01T00:00:00.000Z"
    )
    printed = capsys.readouterr().out
    assert f"{PAIR} 1m: {len(doc['equity']['ts'])} bars" in printed
    assert "sharpe" in printed and "total_return" in printed


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("train_frac", [None, 0.7])
def test_sweep_cli(ray_cluster, store_dir, tmp_path, capsys, fmt, train_frac):
    out = tmp_path / f"sweep.{fmt}"
    argv = backtest_argv(
        store_dir,
        "--sweep",
        "entry=1.5,2",
        "--sweep",
        "exit=0,0.5",
        "--sweep",
        "zscore_window=30,60",
        "--actors",
        "2",
        "--out",
        str(out),
        "--quiet",
    )
    if train_frac is not None:
        argv += ["--train-frac", str(train_frac)]
    assert main(argv) == 0
    table = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(table) == 8
    assert list(table.columns[:3]) == ["zscore_window", "entry", "exit"]
    by, bx = oracle_bars(store_dir, Y), oracle_bars(store_dir, X)
    for row in table.to_dict("records"):
        params = PairParams(zscore_window=int(row["zscore_window"]))
        cfg = StrategyConfig(entry=row["entry"], exit=row["exit"])
        if train_frac is None:
            parts = {"": backtest(by, bx, params, cfg).stats}
        else:  # in-sample part = a backtest over the train bars (test part: actor tests)
            from engine.pairstep import align_bars

            a = align_bars(by, bx)
            split = int(a.ts[int(np.floor(train_frac * a.ts.size))])
            train = backtest(
                oracle_bars(store_dir, Y, end=split),
                oracle_bars(store_dir, X, end=split),
                params,
                cfg,
            )
            parts = {"is_": train.stats}
            assert {f"oos_{k}" for k in train.stats} <= set(table.columns)
        for prefix, stats in parts.items():
            for key, value in stats.items():
                got = row[prefix + key]
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    assert got is None or math.isnan(got), key  # missing in a table: NaN
                else:  # CSV and Parquet both round-trip float64 exactly
                    assert got == value, key
    printed = capsys.readouterr().out
    assert f"{PAIR} 1m:" in printed and "8 parameter sets" in printed
    assert ("oos_sharpe" if train_frac else "sharpe") in printed


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pair", "SOLUSDT/BTCUSDT"], "unknown symbol 'SOLUSDT'"),
        (["--pair", "ETHUSDT-BTCUSDT"], "expected 'Y/X'"),
        (["--start", "2030-01-01"], "no 1m bars of ETHUSDT in the range"),
        (["--start", "2024-06-02", "--end", "2024-06-01"], "empty range"),
        (["--start", "soon"], "not an ISO-8601 time"),
        (["--end", "2024-06-01T00:50:00Z"], r"too few bars: \d+ aligned bars.*at least 61"),
        (["--sweep", "entry"], "expected KEY=V1,V2"),
        (["--sweep", "entri=1,2"], "unknown key 'entri'"),
        (["--sweep", "entry=1,two"], "comma-separated numbers"),
        (["--sweep", "entry=1.5", "--sweep", "exit=2"], "expected < entry"),
        (["--sweep", "entry=1.5", "--json", "x.json"], "with --sweep use --out"),
        (["--sweep", "entry=1.5", "--out", "x.xlsx"], "expected a file ending in"),
        (["--sweep", "entry=1.5", "--actors", "0"], "--actors 0"),
        (["--sweep", "entry=1.5", "--train-frac", "1"], "--train-frac 1.0"),
        (["--train-frac", "0.5"], "only apply to a sweep"),
        (["--config", "missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_input_exits_2(store_dir, capsys, extra, message):
    argv = backtest_argv(store_dir, *extra)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pairstack backtest: error: ")
    assert re.search(message, err), err


def test_bad_input_exits_2_as_a_process(store_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            *backtest_argv(store_dir, pair="ETHUSDT/DOGEUSDT"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown symbol 'DOGEUSDT'" in proc.stderr
    assert "Traceback" not in proc.stderr
