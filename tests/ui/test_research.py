"""The notebook API (``ui.research``) aligns every computation with the ``analytics.max_carry``
of the config it is given: a store where one leg misses 10 bars, a limit of 2 bars (the 1m
default, auto, is 30)."""

from __future__ import annotations

import pytest
from history_kit import X, Y, dropped_by, write_history

from ui.research import Research

HOLE = 10
CONFIG = """\
feed: {source: simulator}
symbols: [HISTAUSDT, HISTBUSDT]
pairs: [{y: HISTAUSDT, x: HISTBUSDT}]
analytics: {zscore_window: 30, max_carry: 2}
strategy: {entry: 1.5}
"""


@pytest.fixture(scope="module")
def research(tmp_path_factory) -> tuple[Research, str]:
    path = tmp_path_factory.mktemp("research-hole")
    write_history(path / "store", days=1, seed=5, hole=HOLE)
    config = path / "config.yaml"
    config.write_text(CONFIG)
    return Research(path / "store"), str(config)


def test_backtest_history_closes_and_screen_use_the_configs_max_carry(research):
    r, config = research
    pair, drop = f"{Y}/{X}", dropped_by(HOLE, 2)
    limited = r.backtest(pair, "1m", config=config)
    assert limited.stats["dropped_bars"] == drop > 0
    assert len(limited.equity) == len(r.backtest(pair, "1m", zscore_window=30).equity) - drop
    assert r.backtest(pair, "1m", zscore_window=30).stats["dropped_bars"] == 0
    h = r.history(pair, "1m", config=config)
    assert h.stats["dropped_bars"] == drop and h.n == len(limited.equity)
    assert len(r.closes([Y, X], "1m")) - len(r.closes([Y, X], "1m", config=config)) == drop
    rows = r.screen("1m", config=config)
    assert (r.screen("1m")["n"] - rows["n"]).tolist() == [drop]


@pytest.mark.ray
def test_sweep_uses_the_configs_max_carry(ray_cluster, research):
    r, config = research
    table = r.sweep(f"{Y}/{X}", {"entry": [1.5, 2.0]}, "1m", config=config)
    assert table["dropped_bars"].tolist() == [dropped_by(HOLE, 2)] * 2
