"""The worked example of docs/strategies.md, run as a reader runs it: its package and config
copied from the page into a directory that is only on PYTHONPATH (nothing installed), then
``pairstack backtest`` from a fresh shell on a real store. The trades are checked against the
cooldown rule in plain Python; registered under its entry point (the page's pyproject.toml,
"installed" as a dist-info), the short name works in a sweep of ``params.cooldown_bars`` whose
Ray workers import the plug-in themselves."""

from __future__ import annotations

import itertools
import json
import subprocess
from datetime import datetime

import pandas as pd
import pytest
import yaml
from cli_env import pairstack, scrubbed_env
from history_kit import leg_bars
from kit import cointegrated_pair
from plugin_example import write_dist_info, write_example

from engine.store import Store

MINUTE = 60_000
PAIR = "ETHUSDT/BTCUSDT"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("docs-example-store")
    y, x = cointegrated_pair(3000, beta=1.3, half_life=12.0, noise=0.003, x0=60_000.0, seed=11)
    store = Store(path)
    store.write_bars("1m", "ETHUSDT", leg_bars(y, 1, noise=2e-4, wick=5e-4))
    store.write_bars("1m", "BTCUSDT", leg_bars(x, 2, noise=2e-4, wick=5e-4))
    store.flush()
    return path


def run_cli(root, *argv):
    """``pairstack ARGV`` from a fresh shell whose PYTHONPATH holds the example (only)."""
    proc = subprocess.run(
        pairstack(*argv),
        cwd=root,
        env={**scrubbed_env(root / "home"), "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def backtest_trades(root, store_dir, config_name):
    out = root / f"{config_name}.json"
    run_cli(
        root, "backtest", "--store", str(store_dir), "--pair", PAIR,
        "--config", config_name, "--json", str(out),
    )  # fmt: skip
    return json.loads(out.read_text())["trades"]


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def gaps_in_bars(trades) -> list[float]:
    """Bars from each exit fill to the next entry fill (1m bars, one every minute)."""
    return [
        (ms(b["entry_ts"]) - ms(a["exit_ts"])) / MINUTE for a, b in itertools.pairwise(trades)
    ]


def test_docs_example_backtest_obeys_the_cooldown(tmp_path, store_dir):
    files = write_example(tmp_path)
    assert {"my_strategies/__init__.py", "my_strategies/cooldown.py", "backtest.yaml"} <= set(files)
    config = yaml.safe_load(files["backtest.yaml"])
    assert config["strategy"]["name"] == "my_strategies.cooldown:Cooldown"
    cooldown_bars = config["strategy"]["params"]["cooldown_bars"]

    trades = backtest_trades(tmp_path, store_dir, "backtest.yaml")
    assert len(trades) >= 5
    # a close decided at bar t fills at t+1; the next entry is decided at t + cooldown + 1 at
    # the earliest and fills a bar later
    assert min(gaps_in_bars(trades)) >= cooldown_bars + 1

    # the same config with the built-in zscore re-enters sooner: the cooldown is what binds
    zscore = {**config, "strategy": {**config["strategy"], "name": "zscore"}}
    del zscore["strategy"]["params"]
    (tmp_path / "zscore.yaml").write_text(yaml.safe_dump(zscore))
    plain = backtest_trades(tmp_path, store_dir, "zscore.yaml")
    assert min(gaps_in_bars(plain)) < cooldown_bars + 1
    assert len(plain) > len(trades)

    # registered under its entry point, the short name sweeps params.cooldown_bars on Ray
    # workers, which import the plug-in themselves (PYTHONPATH is inherited)
    write_dist_info(tmp_path)
    short = {**config, "strategy": {**config["strategy"], "name": "cooldown"}}
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(short))
    out = tmp_path / "sweep.csv"
    run_cli(
        tmp_path, "backtest", "--store", str(store_dir), "--pair", PAIR, "--config", "short.yaml",
        "--sweep", f"params.cooldown_bars=1,{cooldown_bars},0", "--actors", "1",
        "--out", str(out),
    )  # fmt: skip
    table = pd.read_csv(out).set_index("params.cooldown_bars")
    assert table.loc[cooldown_bars, "trades"] == len(trades)
    assert table.loc[1, "trades"] > len(trades)
    assert table.loc[[1, cooldown_bars], "error"].isna().all()
    assert "strategy.params.cooldown_bars: expected int >= 1, got 0" in table.loc[0, "error"]
