"""``pairstack backtest`` on a real store: JSON contract, numbers equal to the in-process
backtest (``engine.backtest.run``), sweeps written as CSV/Parquet, bad input exits 2 with its
reason."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from cli_env import pairstack, scrubbed_env
from test_backtest_actor import MINUTE, PAIR, T0, X, Y, backtest, oracle_bars, write_pair_store

from actors.cli.main import main
from engine.config import AnalyticsConfig, StrategyConfig, load_config
from engine.pairstep import PairParams

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
        "dropped_partial_first_bar": [],  # bars without ticks: whole
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
            from engine.align import align_bars

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
        (["--walk-forward", "600:300"], "only apply to a sweep"),
        (["--sweep", "entry=1.5", "--walk-forward", "600"], "TRAIN_BARS:TEST_BARS"),
        (["--sweep", "entry=1.5", "--walk-forward", "600:300", "--train-frac", "0.5"], "one of"),
        (["--sweep", "entry=1.5", "--pair", "BTCUSDT/ETHUSDT"], "--sweep runs one pair"),
        (["--pair", "ETHUSDT/BTCUSDT"], "a pair is given twice"),
        (["--config", "missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_input_exits_2(store_dir, capsys, extra, message):
    argv = backtest_argv(store_dir, *extra)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pairstack backtest: error: ")
    assert re.search(message, err), err


def test_bad_input_exits_2_as_a_process(store_dir, tmp_path):
    proc = subprocess.run(
        pairstack(*backtest_argv(store_dir, pair="ETHUSDT/DOGEUSDT")),
        cwd=tmp_path,
        env=scrubbed_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown symbol 'DOGEUSDT'" in proc.stderr
    assert "Traceback" not in proc.stderr


def scrubbed_run(argv, **kwargs):
    """``pairstack ARGV`` as a user runs it from a fresh shell (PATH and HOME only)."""
    return subprocess.run(
        pairstack(*argv), env=scrubbed_env(), capture_output=True, text=True, timeout=300,
        **kwargs,
    )  # fmt: skip


def test_json_to_stdout_and_store_from_config(store_dir, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(CONFIG + f"store: {{path: {store_dir}}}\n")
    argv = ["backtest", "--config", str(cfg_file), "--pair", PAIR, "--json", "-"]
    proc = scrubbed_run(argv)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # nothing but the document on stdout
    assert f"{PAIR} 1m:" in proc.stderr and "sharpe" in proc.stderr
    config = load_config(cfg_file)
    want = expected(store_dir, PairParams.from_config(config.analytics), config.strategy)
    assert doc["stats"] == json.loads(json.dumps(want.to_json_dict()))["stats"]
    assert doc["data"]["store"] == str(Path(store_dir).resolve())
    missing = scrubbed_run(["backtest", "--pair", PAIR])
    assert missing.returncode == 2
    assert "no store: expected --store DIR, or --config FILE" in missing.stderr


def test_sweep_shows_ruin_errors_sorted_and_no_carriage_returns(store_dir, tmp_path):
    """A leveraged sweep where fees ruin some sets: ruined rows have no Sharpe and sort after
    every other; an invalid set is a row with its error; no progress bar in a log (no \\r)."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        CONFIG.replace("notional: 5000, fee_bps: 2.0", "notional: 50000, capital: 10000")
    )
    out = tmp_path / "sweep.csv"
    argv = backtest_argv(
        store_dir,
        "--config",
        str(cfg_file),
        "--sweep",
        "entry=0.2,0.5,2",
        "--sweep",
        "fee_bps=0,20",
        "--sort",
        "sharpe",
        "--actors",
        "1",
        "--out",
        str(out),
    )
    proc = scrubbed_run(argv)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    table = pd.read_csv(out)
    valid = table[table["error"].isna()]
    assert len(valid) == 4 and table[table["entry"] == 0.2]["error"].str.contains("exit").all()
    assert valid[valid["fee_bps"] == 20]["ruined"].all()
    assert not valid[valid["fee_bps"] == 0]["ruined"].any()
    assert valid[valid["ruined"]]["sharpe"].isna().all()
    lines = proc.stdout.splitlines()
    header = lines[1].split()
    assert header[-2:] == ["ruined", "error"]
    rows = [line.split() for line in lines[2:8]]
    ruined = [r[header.index("ruined")] for r in rows]
    assert ruined[:2] == ["False", "False"] and "True" in ruined[2:4]
    sharpes = [float(r[header.index("sharpe")]) for r in rows[:2]]
    assert sharpes == sorted(sharpes, reverse=True)
    assert all("exit" in " ".join(r) for r in rows[4:])  # invalid sets last


def test_portfolio_cli(store_dir, tmp_path, capsys):
    out = tmp_path / "folio.json"
    reverse = f"{X}/{Y}"
    argv = backtest_argv(store_dir, "--pair", reverse, "--json", str(out))
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    params, cfg = PairParams.from_config(AnalyticsConfig()), StrategyConfig()
    by, bx = oracle_bars(store_dir, Y), oracle_bars(store_dir, X)
    alone = [backtest(by, bx, params, cfg), backtest(bx, by, params, cfg)]
    assert doc["correlation"]["pairs"] == [PAIR, reverse]
    assert set(doc["pairs"]) == {PAIR, reverse}
    total = cfg.capital + sum(r.stats["final_equity"] - cfg.capital for r in alone)
    np.testing.assert_allclose(doc["stats"]["final_equity"], total, rtol=1e-9)
    np.testing.assert_allclose(
        doc["stats"]["fees_paid"], sum(r.stats["fees_paid"] for r in alone), rtol=1e-12
    )
    printed = capsys.readouterr().out
    assert "portfolio of 2 pairs" in printed and "correlation of per-bar PnL" in printed


def test_small_sample_warning_beside_the_ratios(store_dir, tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        CONFIG.replace("ols_window: 120, zscore_window: 40", "ols_window: 10, zscore_window: 5")
    )
    argv = backtest_argv(store_dir, "--config", str(cfg_file), "--end", "2024-06-01T00:40:00Z")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    sharpe = next(line for line in printed.splitlines() if line.startswith("sharpe"))
    assert "small sample:" in sharpe and "returns over" in sharpe


def test_walk_forward_cli(ray_cluster, store_dir, tmp_path, capsys):
    out = tmp_path / "wf.csv"
    argv = backtest_argv(
        store_dir, "--sweep", "entry=1.5,2.5", "--walk-forward", "800:500", "--out", str(out)
    )
    assert main([*argv, "--quiet"]) == 0
    table = pd.read_csv(out)
    assert list(table["window"]) == list(range(len(table))) and len(table) >= 3
    assert set(table["entry"].dropna()) <= {1.5, 2.5}
    printed = capsys.readouterr().out
    assert "walk-forward 800:500" in printed and "oos_compounded_return" in printed
