"""The History computations: ``engine.history.pair_history`` through the ResearchActor (plain
and on Ray) and the dashboard's HistoryJobs equal the pair step and the backtest recomputed
here from the stored bars read back independently (pyarrow.dataset, ``align_bars``,
``run_pair``, ``engine.backtest.run``)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow.dataset as ds
import pytest
from history_kit import X, Y, write_history

from actors.research import ResearchActor
from engine.align import align_bars
from engine.backtest import Costs, run
from engine.backtest_data import PairData
from engine.config import StrategyConfig
from engine.pairstep import PairParams, run_pair
from engine.schemas import BAR_DTYPE
from strategies import make_strategy
from ui.history_jobs import HistoryJobs

PAIR = f"{Y}/{X}"
STRATEGY = StrategyConfig(entry=1.5, exit=0.0, stop=4.0, notional=10_000.0)


def stored_bars(path, symbol: str, tf: str = "1m") -> np.ndarray:
    """One symbol's bars read back with pyarrow.dataset (not the Store), as BAR_DTYPE."""
    table = ds.dataset(path / "bars", partitioning="hive").to_table(
        filter=(ds.field("timeframe") == tf) & (ds.field("symbol") == symbol)
    )
    table = table.sort_by("ts")
    out = np.empty(table.num_rows, dtype=BAR_DTYPE)
    for name in BAR_DTYPE.names:
        col = table.column(name)
        out[name] = col.cast("int64").to_numpy() if name == "ts" else col.to_numpy()
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("history-store")
    write_history(path, days=3, missing=0.05, seed=11)
    return path


@pytest.mark.parametrize("hedge", ["kalman", "rolling_ols"])
def test_history_equals_pair_step_and_backtest_of_stored_bars(store, hedge):
    params = PairParams(hedge=hedge, ols_window=120, zscore_window=60)
    h = ResearchActor(store).history(PAIR, "1m", params, STRATEGY)
    a = align_bars(stored_bars(store, Y), stored_bars(store, X))
    assert h.n == a.ts.shape[0] > 4000  # 3 days of 1m bars, a few missing on each leg
    assert (a.has_y & a.has_x).sum() < h.n  # the carry of a missing bar is exercised
    np.testing.assert_array_equal(h.ts, a.ts)
    np.testing.assert_array_equal(h.close_y, a.close_y)
    np.testing.assert_array_equal(h.close_x, a.close_x)
    series = run_pair(a.close_y, a.close_x, params)
    for name in ("beta", "alpha", "spread", "z"):
        np.testing.assert_array_equal(getattr(h, name), getattr(series, name), err_msg=name)
    data = PairData.from_tables(
        stored_bars(store, Y), stored_bars(store, X), y=Y, x=X, timeframe="1m"
    )
    res = run(data, params, make_strategy(STRATEGY), Costs.from_config(STRATEGY))
    np.testing.assert_array_equal(h.equity, res.equity.equity)
    np.testing.assert_array_equal(h.position, res.equity.position)
    assert h.stats["trades"] == res.stats["trades"] > 0
    assert set(np.unique(h.position)) <= {-1, 0, 1}


def test_range_and_catalog(store):
    actor = ResearchActor(store)
    assert actor.catalog() == {"1m": sorted([X, Y])}
    a = align_bars(stored_bars(store, Y), stored_bars(store, X))
    start, end = int(a.ts[1000]), int(a.ts[3000])
    h = actor.history(PAIR, "1m", PairParams(zscore_window=30), STRATEGY, start, end)
    np.testing.assert_array_equal(h.ts, a.ts[(a.ts >= start) & (a.ts < end)])


@pytest.mark.ray
def test_history_jobs_run_in_the_actor(store, ray_cluster):
    params = PairParams(zscore_window=30)
    jobs = HistoryJobs(str(store))
    try:
        good = jobs.submit("history", PAIR, "1m", params, STRATEGY)
        bad = jobs.submit("history", f"{Y}/NOPEUSDT", "1m", params, STRATEGY)
        cat = jobs.submit("catalog")
        deadline = time.monotonic() + 120
        while not (good.done and bad.done and cat.done) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        jobs.stop()
    assert good.error is None and cat.error is None
    assert cat.value == {"1m": sorted([X, Y])}
    local = ResearchActor(store).history(PAIR, "1m", params, STRATEGY)
    np.testing.assert_array_equal(good.value.z, local.z)
    np.testing.assert_array_equal(good.value.equity, local.equity)
    assert bad.done and bad.value is None and "NOPEUSDT" in bad.error


HOLE = 10  # bars X misses: longer than a configured max_carry of 2, shorter than auto (30 of 1m)


@pytest.mark.ray
def test_history_honours_max_carry(ray_cluster, tmp_path):
    """The ResearchActor, and the dashboard's HistoryJobs that start it on Ray, align with the
    max_carry of the served config: the bars of the hole past the limit are not stepped."""
    from history_kit import dropped_by

    write_history(tmp_path, days=1, seed=5, hole=HOLE)
    params = PairParams(zscore_window=30)
    auto = ResearchActor(tmp_path).history(PAIR, "1m", params, STRATEGY)
    two = ResearchActor(tmp_path, max_carry=2).history(PAIR, "1m", params, STRATEGY)
    assert auto.stats["dropped_bars"] == 0
    assert two.stats["dropped_bars"] == dropped_by(HOLE, 2) > 0
    assert two.n == auto.n - dropped_by(HOLE, 2)
    assert set(two.ts) < set(auto.ts)
    jobs = HistoryJobs(str(tmp_path), 2)
    try:
        job = jobs.submit("history", PAIR, "1m", params, STRATEGY)
        deadline = time.monotonic() + 120
        while not job.done and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.done and job.error is None, job.error
        np.testing.assert_array_equal(job.value.ts, two.ts)
        assert job.value.stats["dropped_bars"] == dropped_by(HOLE, 2)
    finally:
        jobs.stop()
