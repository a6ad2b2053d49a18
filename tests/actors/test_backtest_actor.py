"""BacktestActor and sweeps: every parameter set equals ``engine.backtest.run`` in-process.

The bars are written to a real store from kit data; the oracle reads them back independently
with pyarrow.dataset and runs ``run`` per set on those tables (walk-forward parts: ``run`` over
the train bars, and a bar-by-bar ``PairStepper`` + fresh strategy + the simulation step for the
test part). The grammar and grid (``engine.sweep``) are tested here too.
"""

from __future__ import annotations

import math

import history_kit
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from funding_kit import mark_price_rows, settlements_loop
from kit import cointegrated_pair

from actors.backtest import BacktestActor, SweepPool, sweep
from engine.align import align_bars
from engine.backtest import Costs, _simulate, run
from engine.backtest_data import PairData
from engine.config import StrategyConfig
from engine.errors import ConfigError, DataError, NumericalError
from engine.funding import funding_events
from engine.pairstep import PairParams, PairStepper
from engine.schemas import BAR_SCHEMA, as_bar_records
from engine.store import Store
from engine.sweep import assign_chunks, expand_grid, parse_sweep, resolve_set
from strategies import make_strategy

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
MINUTE = 60_000
Y, X = "ETHUSDT", "BTCUSDT"
PAIR = f"{Y}/{X}"


def leg_bars(close: np.ndarray, keep: np.ndarray, seed: int) -> np.ndarray:
    """BAR_DTYPE 1m bars of one leg from closes, only where ``keep``."""
    return history_kit.leg_bars(close, seed, noise=2e-4, wick=5e-4)[keep]


def pair_bars(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cointegrated 1m bars of Y and X with about 5% of each leg's bars missing."""
    y, x = cointegrated_pair(n, beta=1.3, half_life=12.0, noise=0.003, x0=60_000.0, seed=seed)
    rng = np.random.default_rng(seed + 100)
    keep_y, keep_x = rng.random(n) > 0.05, rng.random(n) > 0.05
    keep_y[0] = keep_x[0] = True
    return leg_bars(y, keep_y, seed + 1), leg_bars(x, keep_x, seed + 2)


def write_pair_store(path, n: int = 3000, seed: int = 0, funding: str | None = None) -> None:
    """A real store with 1m bars of Y and X and, when asked, mark-price funding rows:
    ``"grid"`` rows every 15 min without a funding time (old rows: the 8 h grid applies),
    ``"T"`` rows every minute announcing Y's 4-hourly and X's 8-hourly funding times."""
    store = Store(path)
    by, bx = pair_bars(n, seed)
    store.write_bars("1m", Y, by)
    store.write_bars("1m", X, bx)
    if funding == "grid":
        rng = np.random.default_rng(seed + 7)
        for symbol in (Y, X):
            ts = np.arange(T0, T0 + n * MINUTE, 15 * MINUTE)
            store.write_funding(
                symbol,
                {
                    "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
                    "mark_price": rng.uniform(100, 200, ts.size),
                    "funding_rate": rng.normal(1e-4, 3e-4, ts.size),
                },
            )
    elif funding == "T":
        for symbol, hours in ((Y, 4), (X, 8)):
            rows = mark_price_rows(T0, T0 + n * MINUTE, interval_h=hours, seed=seed + hours)
            store.write_funding(symbol, rows)
    store.flush()


def oracle_bars(path, symbol: str, start=None, end=None) -> pa.Table:
    """The stored bars of a symbol, read with pyarrow.dataset (not through Store)."""
    table = ds.dataset(
        f"{path}/bars/timeframe=1m/symbol={symbol}", format="parquet", partitioning="hive"
    ).to_table(columns=BAR_SCHEMA.names)
    table = table.cast(BAR_SCHEMA).sort_by("ts")
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    keep = np.ones(ts.size, bool)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts < end
    return table.filter(pa.array(keep))


def backtest(bars_y, bars_x, params, cfg, funding=None):
    """The one entry in-process on bars read by the oracle: 1m bars of Y and X."""
    data = PairData.from_tables(bars_y, bars_x, y=Y, x=X, timeframe="1m", funding=funding)
    return run(data, params, make_strategy(cfg), Costs.from_config(cfg))


def assert_stats_equal(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            assert ours[key] is None or math.isnan(ours[key]), key  # missing in a table: NaN
        else:
            assert ours[key] == value, key


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bt-store")
    write_pair_store(path)
    return path


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "specs, grid",
    [
        (["entry=1.5,2,2.5"], {"entry": [1.5, 2.0, 2.5]}),
        (
            ["zscore_window=30,60", "delta=1e-5,1e-4"],
            {"zscore_window": [30, 60], "delta": [1e-5, 1e-4]},
        ),
        (
            ["stop=none,3.5", "hedge=kalman,rolling_ols"],
            {"stop": [None, 3.5], "hedge": ["kalman", "rolling_ols"]},
        ),
        ([" exit = 0, 0.5 "], {"exit": [0.0, 0.5]}),
    ],
)
def test_parse_sweep(specs, grid):
    assert parse_sweep(specs) == grid


@pytest.mark.parametrize(
    "specs, message",
    [
        (["entry"], "expected KEY=V1,V2"),
        (["=1,2"], "expected KEY=V1,V2"),
        (["bogus=1"], "unknown key 'bogus'"),
        (["entry=1,x"], "entry takes comma-separated numbers"),
        (["entry=1,,2"], "entry takes comma-separated numbers"),
        (["zscore_window=30.5"], "zscore_window takes comma-separated integers"),
        (["entry=nan"], "not a finite number"),
        (["entry=1", "entry=2"], "swept twice"),
        (["entry=1,1"], "listed twice"),
        ([], "no parameters"),
    ],
)
def test_parse_sweep_refuses(specs, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(specs)


def test_expand_grid_is_the_cartesian_product_analytics_outermost():
    grid = {"entry": [1.5, 2.0], "zscore_window": [30, 60, 90], "exit": [0.0, 0.5]}
    sets = expand_grid(grid)
    assert len(sets) == 12
    assert [s["zscore_window"] for s in sets] == [30] * 4 + [60] * 4 + [90] * 4
    assert {tuple(sorted(s.items())) for s in sets} == {
        (("entry", e), ("exit", x), ("zscore_window", w))
        for e in grid["entry"]
        for w in grid["zscore_window"]
        for x in grid["exit"]
    }


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"exit": 2.5}, r"parameter set \(exit=2.5\): strategy.exit: expected < entry"),
        ({"entry": -1.0}, "parameter set"),
        ({"stop": 1.0}, "stop"),
        ({"zscore_window": 1}, "zscore_window: expected an integer >= 2"),
        ({"hedge": "magic"}, "analytics.hedge"),
        ({"delta": 2.0}, "analytics.kalman"),
        ({"colour": 1}, "unknown parameter"),
    ],
)
def test_resolve_set_refuses(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_set(overrides, PairParams(), StrategyConfig())


@pytest.mark.parametrize("values", [[], "1.5", 2.0, None])
def test_expand_grid_refuses_bad_value_lists(values):
    with pytest.raises(ConfigError, match="sweep entry: expected a non-empty list"):
        expand_grid({"entry": values})


# ----------------------------------------------------------------------------- the actor


SETS = [
    ({}, {}),
    ({"hedge": "rolling_ols", "ols_window": 120, "zscore_window": 30}, {"entry": 1.5}),
    ({"hedge": "static_ols", "ols_window": 200}, {"entry": 1.5, "exit": 0.5, "stop": None}),
    ({"zscore": "innovation", "delta": 1e-4}, {"entry": 1.0, "exit": 0.2}),
    ({"price": "raw", "zscore_window": 45}, {"entry": 1.8, "fee_bps": 2.0}),
    ({"zscore_window": 30}, {"name": "zscore_timestop", "max_hold_half_lives": 2.0}),
]


@pytest.mark.parametrize("analytics, strat", SETS)
@pytest.mark.parametrize("source", ["store", "tables"])
def test_actor_result_equals_backtest(store_dir, analytics, strat, source):
    params, cfg = resolve_set({**analytics, **strat}, PairParams(), StrategyConfig())
    by, bx = oracle_bars(store_dir, Y), oracle_bars(store_dir, X)
    if source == "store":
        actor = BacktestActor(str(store_dir), PAIR, "1m")
    else:
        actor = BacktestActor(PairData.from_tables(by, bx, y=Y, x=X, timeframe="1m"))
    ours = actor.result(params, cfg)
    theirs = backtest(by, bx, params, cfg)
    assert theirs.stats["trades"] > 0
    assert_stats_equal(ours.stats, theirs.stats)
    assert_stats_equal(actor.stats(params, cfg), theirs.stats)
    assert ours.trades.equals(theirs.trades)
    np.testing.assert_array_equal(ours.equity.equity, theirs.equity.equity)
    np.testing.assert_array_equal(ours.equity.ts, theirs.equity.ts)


@pytest.mark.parametrize("start_min, end_min", [(100, 2500), (0, 1000), (1200, None)])
def test_actor_reads_the_range(store_dir, start_min, end_min):
    start = T0 + start_min * MINUTE
    end = None if end_min is None else T0 + end_min * MINUTE
    iso = np.datetime_as_string(np.datetime64(start, "ms"), unit="s") + "Z"
    actor = BacktestActor(str(store_dir), PAIR, "1m", iso, end)
    by, bx = oracle_bars(store_dir, Y, start, end), oracle_bars(store_dir, X, start, end)
    params, cfg = PairParams(zscore_window=30), StrategyConfig(entry=1.5)
    want = backtest(by, bx, params, cfg)
    assert_stats_equal(actor.stats(params, cfg), want.stats)
    assert actor.info()["bars"] == align_bars(by, bx).ts.size


@pytest.mark.parametrize("train_frac", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("analytics, strat", SETS[:4])
def test_walk_forward_parts(store_dir, train_frac, analytics, strat):
    params, cfg = resolve_set({**analytics, **strat}, PairParams(), StrategyConfig())
    by, bx = oracle_bars(store_dir, Y), oracle_bars(store_dir, X)
    a = align_bars(by, bx)
    k = int(np.floor(train_frac * a.ts.size))
    actor = BacktestActor(str(store_dir), PAIR, "1m")
    got = actor.stats(params, cfg, train_frac)
    # in-sample: a plain backtest over the bars before the split time
    split_ts = int(a.ts[k])
    train = backtest(
        oracle_bars(store_dir, Y, end=split_ts),
        oracle_bars(store_dir, X, end=split_ts),
        params,
        cfg,
    )
    assert_stats_equal({k_[3:]: v for k_, v in got.items() if k_.startswith("is_")}, train.stats)
    # out-of-sample: pair state stepped bar by bar from the start, fresh strategy at the split
    stepper = PairStepper(params)
    points = [stepper.step(cy, cx) for cy, cx in zip(a.close_y, a.close_x, strict=True)]
    z = np.array([p.z for p in points[k:]])
    spread = np.array([p.spread for p in points[k:]])
    beta = np.array([p.beta for p in points[k:]])
    target = make_strategy(cfg).run(z, spread)
    test = _simulate(
        a.ts[k:],
        a.open_y[k:],
        a.close_y[k:],
        a.open_x[k:],
        a.close_x[k:],
        target,
        beta,
        Costs.from_config(cfg),
        params.price,
        timeframe="1m",
    )
    test.stats.update(actor.data.carry_counts(k, a.ts.size))  # the one entry adds them
    assert_stats_equal({k_[4:]: v for k_, v in got.items() if k_.startswith("oos_")}, test.stats)


@pytest.mark.parametrize("funding", ["grid", "T"])
def test_actor_with_stored_funding(tmp_path, funding):
    write_pair_store(tmp_path, n=2000, seed=3, funding=funding)
    actor = BacktestActor(str(tmp_path), PAIR, "1m")
    params, cfg = PairParams(zscore_window=30), StrategyConfig(entry=1.2, stop=None)
    rows = tuple(Store(tmp_path).read_funding(s) for s in (Y, X))
    events = [funding_events(r) for r in rows]
    if funding == "grid":
        # rows every 15 min over 2000 min from midnight: settlements at 0, 8, 16, 24 and 32 h
        np.testing.assert_array_equal(events[0].ts, T0 + 480 * MINUTE * np.arange(5))
    else:  # announced: Y every 4 h, X every 8 h, up to the one the last row announces
        for ev, leg_rows, hours in ((events[0], rows[0], 4), (events[1], rows[1], 8)):
            np.testing.assert_array_equal(ev.ts, [e[0] for e in settlements_loop(leg_rows)])
            np.testing.assert_array_equal(np.diff(ev.ts), hours * 60 * MINUTE)
            assert ev.ts[-1] >= T0 + 2000 * MINUTE
    theirs = backtest(
        oracle_bars(tmp_path, Y),
        oracle_bars(tmp_path, X),
        params,
        cfg,
        funding=rows,
    )
    assert theirs.stats["funding_paid"] != 0.0
    inside = sum(
        int(np.count_nonzero((e.ts > T0) & (e.ts <= actor.info()["last_ts"]))) for e in events
    )
    assert theirs.stats["funding_events"] == inside
    assert theirs.stats["funding_assumed"] == (inside if funding == "grid" else 0)
    assert_stats_equal(actor.result(params, cfg).stats, theirs.stats)
    # the CLI's call: the one entry on the actor's data, no cached pair step
    cli = run(actor.data, params, make_strategy(cfg), Costs.from_config(cfg))
    assert_stats_equal(cli.stats, theirs.stats)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "pair, start, end, error, message",
    [
        ("SOLUSDT/BTCUSDT", None, None, DataError, "unknown symbol 'SOLUSDT'"),
        ("ETHUSDT/XRPUSDT", None, None, DataError, "unknown symbol 'XRPUSDT'"),
        ("ETHUSDT", None, None, ConfigError, "expected 'Y/X'"),
        (PAIR, "2030-01-01", None, DataError, "no 1m bars of ETHUSDT in the range"),
        (PAIR, "2024-06-02T00:00:00Z", "2024-06-01T00:00:00Z", DataError, "empty range"),
        (PAIR, "yesterday", None, DataError, "not an ISO-8601 time"),
        (PAIR, T0, T0 + MINUTE, DataError, "a backtest needs 2"),
    ],
)
def test_actor_refuses_bad_data(store_dir, pair, start, end, error, message):
    with pytest.raises(error, match=message):
        BacktestActor(str(store_dir), pair, "1m", start, end)


@pytest.mark.parametrize(
    "params, train_frac, message",
    [
        (PairParams(zscore_window=500), None, r"too few bars: 299 aligned bars.*at least 501"),
        (
            PairParams(hedge="static_ols", ols_window=250, zscore_window=60),
            None,
            "and ols_window 250 needs at least 310",
        ),
        (PairParams(zscore_window=100), 0.3, "89 aligned bars in the train part"),
        (PairParams(zscore_window=10), 0.999, "test part has 1 bar"),
    ],
)
def test_actor_refuses_too_few_bars(store_dir, params, train_frac, message):
    actor = BacktestActor(str(store_dir), PAIR, "1m", end=T0 + 300 * MINUTE)
    assert actor.info()["bars"] == 299  # both legs miss one same minute of the first 300
    with pytest.raises(NumericalError, match=message):
        actor.stats(params, StrategyConfig(), train_frac)


def test_from_tables_refuses_bad_tables():
    by, bx = pair_bars(50)
    with pytest.raises(DataError, match="no 1m bars for BTCUSDT"):
        PairData.from_tables(by, bx[:0], y=Y, x=X)
    with pytest.raises(DataError, match="expected BAR_DTYPE records"):
        PairData.from_tables(by, {"ts": [1]}, y=Y, x=X)
    with pytest.raises(DataError, match="timeframe '2m'"):
        PairData.from_tables(by, bx, y=Y, x=X, timeframe="2m")


# ----------------------------------------------------------------------------- sweep over Ray


@pytest.mark.parametrize("n_actors, chunk_size", [(1, None), (2, 3), (3, 1)])
def test_sweep_equals_backtest_per_set(ray_cluster, store_dir, n_actors, chunk_size):
    grid = {
        "entry": [1.5, 2.0],
        "exit": [0.0, 0.5],
        "zscore_window": [30, 60],
        "delta": [1e-5, 1e-4],
    }
    table = sweep(str(store_dir), PAIR, grid, n_actors, timeframe="1m", chunk_size=chunk_size)
    assert len(table) == 16
    assert list(table.columns[:4]) == ["zscore_window", "delta", "entry", "exit"]
    by, bx = oracle_bars(store_dir, Y), oracle_bars(store_dir, X)
    for row in table.to_dict("records"):
        params = PairParams(zscore_window=row["zscore_window"], delta=row["delta"])
        cfg = StrategyConfig(entry=row["entry"], exit=row["exit"])
        want = backtest(by, bx, params, cfg).stats
        assert_stats_equal({k: row[k] for k in want}, want)


@pytest.mark.parametrize("n_actors", [1, 2, 3])
@pytest.mark.parametrize("chunk_size", [None, 1, 4, 100])
@pytest.mark.parametrize(
    "grid",
    [
        {"zscore_window": [30, 60, 120], "delta": [1e-5, 1e-4], "entry": [1.5, 2.0, 2.5]},
        {"entry": [1.5, 2.0], "zscore_window": [30, 60], "exit": [0.0, 0.5, 1.0]},
        {"entry": [1.5, 2.0, 2.5, 3.0, 3.5]},
    ],
)
def test_assign_chunks_groups_pair_steps_per_actor(grid, n_actors, chunk_size):
    sets = [resolve_set(o, PairParams(), StrategyConfig()) for o in expand_grid(grid)]
    queues = assign_chunks(sets, n_actors, chunk_size)
    assert len(queues) == n_actors
    flat = [j for queue in queues for chunk in queue for j in chunk]
    assert sorted(flat) == list(range(len(sets)))  # every set exactly once
    shares = [len([j for chunk in q for j in chunk]) for q in queues]
    assert max(shares) - min(shares) <= 1
    for queue in queues:
        assert all(0 < len(chunk) <= (chunk_size or 32) for chunk in queue)
        params = [sets[j][0] for chunk in queue for j in chunk]
        runs = [p for k, p in enumerate(params) if k == 0 or p != params[k - 1]]
        assert len(runs) == len(set(runs))  # each pair step met in one consecutive run
    distinct = len({p for p, _ in sets})
    met = sum(len({sets[j][0] for chunk in q for j in chunk}) for q in queues)
    assert met <= distinct + n_actors - 1  # a pair step is split only where shares meet


def test_sweep_pool_runs_several_grids_and_refuses_before_start(ray_cluster, store_dir):
    data = PairData.from_store(str(store_dir), Y, X, "1m")
    pool = SweepPool(data, 2)
    sets = [resolve_set(o, PairParams(), StrategyConfig()) for o in expand_grid(GRID_POOL)]
    with pytest.raises(ConfigError, match="start\\(\\) the pool first"):
        pool.run_sets(sets)
    with pool:
        assert len(pool.actors) == 2
        first = pool.run_sets(sets, chunk_size=1, max_in_flight=1)
        again = pool.run_sets(sets[::-1])
    assert pool.actors == []
    actor = BacktestActor(data)
    for (p, s), got, back in zip(sets, first, again[::-1], strict=True):
        want = actor.stats(p, s)
        assert_stats_equal(got, want)
        assert_stats_equal(back, want)


@pytest.mark.parametrize("n_actors", [0, -1, 1.5, True])
def test_sweep_pool_refuses_bad_actor_counts(store_dir, n_actors):
    data = PairData.from_store(str(store_dir), Y, X, "1m")
    with pytest.raises(ConfigError, match="actors: expected a positive integer"):
        SweepPool(data, n_actors)


GRID_POOL = {"zscore_window": [30, 60], "entry": [1.5, 2.5], "exit": [0.0, 0.5]}


def test_sweep_walk_forward_over_tables(ray_cluster, store_dir):
    by, bx = oracle_bars(store_dir, Y), oracle_bars(store_dir, X)
    data = PairData.from_tables(by, bx, y=Y, x=X)
    grid = {"hedge": ["kalman", "rolling_ols"], "entry": [1.5, 2.5]}
    table = sweep(data, None, grid, 2, train_frac=0.6, params=PairParams(ols_window=100))
    actor = BacktestActor(data)
    for row in table.to_dict("records"):
        params = PairParams(hedge=row["hedge"], ols_window=100)
        want = actor.stats(params, StrategyConfig(entry=row["entry"]), 0.6)
        assert_stats_equal({k: row[k] for k in want}, want)
    assert {c for c in table.columns if c.startswith("oos_")} >= {"oos_sharpe", "oos_trades"}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"n_actors": 0}, ConfigError, "actors: expected a positive integer"),
        ({"grid": {"entry": [1.0], "exit": [1.5]}}, ConfigError, "expected < entry"),
        (
            {"grid": {"name": ["nope"]}},
            ConfigError,
            r"parameter set \(name=nope\): strategy.name: unknown strategy 'nope'; expected a "
            r"built-in one \['zscore', 'zscore_timestop'\]",
        ),
        (
            {"grid": {"name": ["zscore_timestop"]}},
            ConfigError,
            r"parameter set \(name=zscore_timestop\): strategy.max_hold_half_lives: required",
        ),
        ({"grid": {"zscore_window": [5000]}}, NumericalError, "too few bars"),
        ({"train_frac": 1.5}, ConfigError, "train_frac"),
        ({"pair": "ADAUSDT/BTCUSDT"}, DataError, "unknown symbol 'ADAUSDT'"),
    ],
)
def test_sweep_refuses(ray_cluster, store_dir, kwargs, error, message):
    args = {"pair": PAIR, "grid": {"entry": [1.5]}, "n_actors": 1, **kwargs}
    with pytest.raises(error, match=message):
        sweep(
            str(store_dir),
            args.pop("pair"),
            args.pop("grid"),
            args.pop("n_actors"),
            timeframe="1m",
            **args,
        )


def test_sweep_reports_invalid_points_in_their_rows(ray_cluster, store_dir):
    """An invalid point is not fatal: its row carries the error, the others their stats."""
    grid = {"zscore_window": [30, 5000], "name": ["zscore", "nope"], "entry": [1.5, 2.5]}
    table = sweep(str(store_dir), PAIR, grid, 2, timeframe="1m")
    assert len(table) == 8 and table.columns[-1] == "error"
    actor = BacktestActor(str(store_dir), PAIR, "1m")
    for row in table.to_dict("records"):
        if row["name"] == "nope":  # refused when the set is resolved, before any run
            assert "strategy.name: unknown strategy 'nope'; expected a built-in" in row["error"]
        elif row["zscore_window"] == 5000:
            assert "too few bars" in row["error"] and math.isnan(row["sharpe"])
        else:
            assert not isinstance(row["error"], str)  # None or NaN: no error
            want = actor.stats(PairParams(zscore_window=30), StrategyConfig(entry=row["entry"]))
            assert_stats_equal({k: row[k] for k in want}, want)


def test_first_bar_of_a_recording_is_dropped_as_partial(tmp_path):
    """A recording that starts mid-interval: the symbol's first bar is partial and dropped;
    a later start, or bars stored without ticks, keep every bar."""
    from kit import random_ticks

    from engine.bars import build_bars

    store = Store(tmp_path)
    for k, symbol in enumerate((Y, X)):
        ticks = random_ticks(4000, start_ms=T0 + 25_000 + 7_000 * k, mean_gap_ms=900, seed=k)
        store.write_ticks(symbol, ticks)
        store.write_bars("1m", symbol, build_bars(ticks["ts"], ticks["price"], ticks["qty"], "1m"))
    store.flush()
    whole = {s: oracle_bars(tmp_path, s) for s in (Y, X)}
    data = PairData.from_store(str(tmp_path), Y, X, "1m")
    assert data.dropped == (Y, X)
    assert data.aligned.ts[0] == T0 + MINUTE  # the 00:00 bars began at 00:25 and 00:32
    assert data.bars_y.shape[0] == whole[Y].num_rows - 1
    later = PairData.from_store(str(tmp_path), Y, X, "1m", start=T0 + 5 * MINUTE)
    assert later.dropped == () and later.aligned.ts[0] == T0 + 5 * MINUTE
    plain = tmp_path / "klines"
    other = Store(plain)
    for symbol in (Y, X):
        other.write_bars("1m", symbol, whole[symbol])
    other.flush()
    kept = PairData.from_store(str(plain), Y, X, "1m")
    assert kept.dropped == () and kept.aligned.ts[0] == T0


def test_walk_windows_and_spec():
    from engine.sweep import parse_walk_forward, walk_windows

    assert parse_walk_forward("100:30") == (100, 30)
    for bad in ("100", "100:1", "a:b", "0:10"):
        with pytest.raises(ConfigError, match="TRAIN_BARS:TEST_BARS"):
            parse_walk_forward(bad)
    assert walk_windows(200, 100, 30) == [
        (0, 100, 130),
        (30, 130, 160),
        (60, 160, 190),
        (90, 190, 200),
    ]
    assert walk_windows(191, 100, 30)[-1] == (60, 160, 190)  # a 1-bar test part is dropped
    with pytest.raises(ConfigError, match="hold no window"):
        walk_windows(101, 100, 30)


def test_walk_forward_picks_the_best_train_set(ray_cluster, store_dir):
    """Oracle: every set traded in-process on every train part; the best Sharpe (not ruined)
    chosen by a plain loop; its test-part stats must be the row's."""
    from actors.backtest import walk_forward

    data = PairData.from_store(str(store_dir), Y, X, "1m")
    params = PairParams(hedge="rolling_ols", ols_window=100, zscore_window=30)
    grid = {"entry": [1.0, 1.5, 2.5], "exit": [0.0, 0.5]}
    table, summary = walk_forward(data, grid, 700, 400, 2, params=params)
    assert len(table) == summary["windows"] == len(range(0, data.n - 701, 400)) >= 4
    growth = 1.0
    for row in table.to_dict("records"):
        lo = int(np.searchsorted(data.aligned.ts, _ms(row["test_first"]))) - 700
        mid, hi = lo + 700, min(lo + 1100, data.n)
        best, best_sharpe = None, -math.inf
        for entry in grid["entry"]:
            for exit_ in grid["exit"]:
                cfg = StrategyConfig(entry=entry, exit=exit_)
                s = run(data, params, make_strategy(cfg), Costs.from_config(cfg), lo=lo, hi=mid)
                s = s.stats
                if not s["ruined"] and math.isfinite(s["sharpe"]) and s["sharpe"] > best_sharpe:
                    best, best_sharpe = cfg, s["sharpe"]
        assert (row["entry"], row["exit"]) == (best.entry, best.exit)
        assert row["is_sharpe"] == best_sharpe
        oos = run(data, params, make_strategy(best), Costs.from_config(best), lo=mid, hi=hi).stats
        assert_stats_equal({k: row["oos_" + k] for k in oos}, oos)
        growth *= 1 + oos["total_return"]
    np.testing.assert_allclose(summary["oos_compounded_return"], growth - 1, rtol=1e-12)


def _ms(iso: str) -> int:
    return int(np.datetime64(iso.removesuffix("Z"), "ms").astype(np.int64))


# ----------------------------------------------------------------------------- analytics.max_carry

HOLE = 10  # bars X misses: longer than a configured max_carry of 2, shorter than auto (30 of 1m)


@pytest.fixture(scope="module")
def hole_store(tmp_path_factory):
    from history_kit import write_history

    path = tmp_path_factory.mktemp("hole-store")
    write_history(path, days=1, seed=5, hole=HOLE)
    return path


@pytest.mark.ray
def test_store_paths_honour_max_carry(ray_cluster, hole_store):
    """The actor on a store, a sweep over a store and the dashboard's backtest (a Ray task of
    ``backtest_bars``, as the bridge submits it) align with the max_carry they are given."""
    import ray
    from history_kit import X as HX
    from history_kit import Y as HY
    from history_kit import dropped_by

    from actors.backtest import backtest_bars

    pair, params, strat = f"{HY}/{HX}", PairParams(zscore_window=30), StrategyConfig(entry=1.5)
    auto = BacktestActor(str(hole_store), pair, "1m")
    two = BacktestActor(str(hole_store), pair, "1m", max_carry=2)
    assert auto.result(params, strat).stats["dropped_bars"] == 0
    assert two.result(params, strat).stats["dropped_bars"] == dropped_by(HOLE, 2) > 0
    assert two.info()["bars"] == auto.info()["bars"] - dropped_by(HOLE, 2)
    table = sweep(
        str(hole_store), pair, {"entry": [1.5, 2.0]}, 2, timeframe="1m", params=params,
        strategy=strat, max_carry=2,
    )  # fmt: skip
    assert table["dropped_bars"].tolist() == [dropped_by(HOLE, 2)] * 2
    store = Store(hole_store)
    legs = [as_bar_records(s, store.read_bars("1m", s)) for s in (HY, HX)]
    task = ray.remote(backtest_bars)
    kw = {"legs": (HY, HX), "store": str(hole_store)}
    got = ray.get(task.remote(*legs, params, strat, "1m", max_carry=2, **kw))
    assert got.stats["dropped_bars"] == dropped_by(HOLE, 2)
    assert ray.get(task.remote(*legs, params, strat, "1m", **kw)).stats["dropped_bars"] == 0
