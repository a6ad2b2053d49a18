"""engine.screen over a generated store: oracles are pandas (alignment, daily volume),
statsmodels (coint per pair, fdr_bh q-values) and engine.stats (hedge, half-life)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from statsmodels.stats.multitest import multipletests
from statsmodels.tsa.stattools import coint as sm_coint

from engine import screen
from engine.align import max_carry_ms
from engine.config import load_config, parse_config
from engine.errors import DataError
from engine.schemas import BAR_DTYPE
from engine.stats import half_life, log_return_corr, ols_hedge
from engine.store import Store
from tests.kit import cointegrated_pair

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TF = 300_000  # 5m
N = 1_500  # bars per symbol (about 5.2 days)


def make_bars(close: np.ndarray, ts: np.ndarray, qv: float) -> np.ndarray:
    out = np.zeros(close.size, dtype=BAR_DTYPE)
    out["ts"] = ts
    out["open"] = out["high"] = out["low"] = out["close"] = close
    out["volume"] = qv / close
    out["quote_volume"] = qv
    out["trades"] = 1
    return out


def generated_bars(seed: int = 0) -> dict[str, np.ndarray]:
    """Two cointegrated groups, a lone random walk, bars missing at random, and three symbols
    the universe rule must leave out: listed late, too short, illiquid."""
    rng = np.random.default_rng(seed + 100)  # not the kit's stream: the walk must be its own
    ts = T0 + TF * np.arange(N)
    ay, ax = cointegrated_pair(N, beta=1.4, half_life=15.0, noise=5e-4, seed=seed)
    by, bx = cointegrated_pair(N, beta=0.7, half_life=40.0, noise=5e-4, x0=30.0, seed=seed + 1)
    walk = 5.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, N)))
    closes = {
        "AAAUSDT": ay,
        "BBBUSDT": ax,
        "CCCUSDT": by,
        "DDDUSDT": bx,
        "EEEUSDT": walk,
        "LATEUSDT": walk * 2.0,
        "THINUSDT": walk * 3.0,
        "SHORTUSDT": walk * 4.0,
    }
    bars = {}
    for i, (sym, close) in enumerate(closes.items()):
        keep = rng.random(N) > 0.1  # ~10% of the intervals without a trade
        keep[: i + 1] = sym == "AAAUSDT"  # symbols start at different bars
        if sym == "LATEUSDT":
            keep[: N // 2] = False
        if sym == "SHORTUSDT":
            keep[50:] = False
        qv = 10.0 if sym == "THINUSDT" else 1_000.0 * (i + 1)
        bars[sym] = make_bars(close[keep], ts[keep], qv)
    return bars


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("screen") / "store"
    st = Store(path, durable=False)
    for sym, b in generated_bars().items():
        st.write_bars("5m", sym, b)
    st.flush()
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_carry", [None, 0, 2, 8])
def test_align_closes_matches_pandas_reindex_ffill(seed, max_carry):
    rng = np.random.default_rng(seed)
    bars = {}
    for k in range(6):
        ts = np.unique(rng.choice(np.arange(400), size=rng.integers(5, 300), replace=False))
        bars[f"S{k}USDT"] = make_bars(100 + rng.random(ts.size), T0 + TF * ts, 1.0)
    if max_carry is None:
        got = screen.align_closes(bars)
    else:
        got = screen.align_closes(bars, max_carry_ms(max_carry, "5m"))
    union = np.unique(np.concatenate([b["ts"] for b in bars.values()]))
    frame = pd.DataFrame(
        {s: pd.Series(b["close"], index=b["ts"]).reindex(union).ffill() for s, b in bars.items()}
    ).dropna()
    own = pd.DataFrame(
        {s: pd.Series(b["ts"], index=b["ts"]).reindex(union).ffill() for s, b in bars.items()}
    ).loc[frame.index]
    age = own.rsub(frame.index.to_numpy(), axis=0)
    keep = (age.max(axis=1) <= (np.inf if max_carry is None else max_carry * TF)).to_numpy()
    carried = int((age[keep].max(axis=1) > 0).sum())
    assert (got.carried, got.dropped) == (carried, int((~keep).sum()))
    assert got.dropped > 0 or max_carry is None
    frame = frame[keep]
    np.testing.assert_array_equal(got.ts, frame.index.to_numpy())
    assert got.symbols == tuple(bars)
    np.testing.assert_array_equal(got.values, frame.to_numpy())
    with pytest.raises(DataError, match="no bars for"):
        screen.align_closes({**bars, "NONEUSDT": bars["S0USDT"][:0]})


def test_daily_quote_volume_matches_pandas():
    rng = np.random.default_rng(3)
    ts = T0 + np.sort(rng.choice(np.arange(5_000), 900, replace=False)) * TF
    bars = make_bars(np.ones(ts.size), ts, 1.0)
    bars["quote_volume"] = rng.random(ts.size) * 100
    days = pd.Series(bars["quote_volume"], index=pd.to_datetime(ts, unit="ms", utc=True))
    expected = days.groupby(days.index.floor("D")).sum().median()
    assert screen.daily_quote_volume(bars) == pytest.approx(expected, rel=1e-12)


def test_universe_leaves_out_late_short_illiquid_and_ranks_top():
    bars = generated_bars()
    uni = screen.choose_universe(bars, "5m", min_quote_volume=10_000.0)
    assert uni.kept == ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT")
    assert set(uni.excluded) == {"LATEUSDT", "THINUSDT", "SHORTUSDT"}
    assert "listed late" in uni.excluded["LATEUSDT"]
    assert "(< 100)" in uni.excluded["SHORTUSDT"]
    assert "median daily quote volume" in uni.excluded["THINUSDT"]
    top = screen.choose_universe(bars, "5m", min_quote_volume=10_000.0, top=3)
    # volumes grow with the symbol's position: the last three kept are the top 3
    assert top.kept == ("CCCUSDT", "DDDUSDT", "EEEUSDT")
    assert "rank 4" in top.excluded["BBBUSDT"] and "rank 5" in top.excluded["AAAUSDT"]
    # the late symbol kept (no coverage rule) starts the window at its first bar
    lax = screen.choose_universe(bars, "5m", min_coverage=0.0)
    closes = screen.align_closes({s: bars[s] for s in lax.kept})
    assert closes.ts[0] >= bars["LATEUSDT"]["ts"][0]


@pytest.mark.parametrize(("n_pairs", "workers"), [(1, 2), (7, 2), (124_750, 2), (45, 1), (10, 3)])
def test_plan_chunks_balanced_and_covering(n_pairs, workers):
    chunks = screen.plan_chunks(n_pairs, workers)
    sizes = [hi - lo for lo, hi in chunks]
    assert chunks[0][0] == 0 and chunks[-1][1] == n_pairs
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert max(sizes) <= screen.MAX_CHUNK
    assert len(chunks) == min(n_pairs, max(workers * 8, -(-n_pairs // screen.MAX_CHUNK)))
    assert screen.plan_chunks(0, 2) == []


def test_hedge_and_half_life_equal_engine_stats():
    bars = generated_bars(4)
    closes = screen.align_closes({s: bars[s] for s in ("AAAUSDT", "BBBUSDT", "EEEUSDT")})
    data = screen.ScreenData.from_series(screen.screen_series(closes))
    y, x = np.array([0, 1, 0, 2, 1]), np.array([1, 0, 2, 0, 2])
    beta, hl = screen.hedge_half_life(data, y, x)
    for k in range(y.size):
        b, a = ols_hedge(data.series[y[k]], data.series[x[k]])
        h = half_life(data.series[y[k]] - b * data.series[x[k]] - a)
        np.testing.assert_allclose(beta[k], b, rtol=1e-10)
        np.testing.assert_allclose(hl[k], h, rtol=1e-8)


def test_screen_rows_equal_statsmodels_coint(store):
    bars = screen.load_bars(store, "5m")
    result = screen.screen_bars(bars, "5m", min_quote_volume=10_000.0)
    table = result.table.to_pandas()
    kept = result.universe.kept
    assert len(table) == len(kept) * (len(kept) - 1) // 2
    assert list(table.columns) == list(screen.COLUMNS)
    assert (np.diff(table["pvalue"]) >= 0).all()
    closes = screen.align_closes({s: bars[s] for s in kept})
    log = {s: np.log(closes.values[:, j]) for j, s in enumerate(kept)}
    assert (table["n"] == closes.ts.size).all()
    # the two cointegrated pairs lead
    assert {frozenset(r) for r in table[["y", "x"]].head(2).to_numpy()} == {
        frozenset({"AAAUSDT", "BBBUSDT"}),
        frozenset({"CCCUSDT", "DDDUSDT"}),
    }
    names, corr = log_return_corr(closes.values, kept)
    for row in table.itertuples():
        y, x = log[row.y], log[row.x]
        fwd = sm_coint(y, x)
        back = sm_coint(x, y)
        assert fwd[1] <= back[1]  # the lower p-value's order is kept
        np.testing.assert_allclose(row.stat, fwd[0], rtol=1e-8)
        np.testing.assert_allclose(row.pvalue, fwd[1], rtol=0, atol=1e-6)
        b, a = ols_hedge(y, x)
        np.testing.assert_allclose(row.beta, b, rtol=1e-10)
        np.testing.assert_allclose(row.half_life, half_life(y - b * x - a), rtol=1e-8)
        np.testing.assert_allclose(row.corr, corr[names.index(row.y), names.index(row.x)])
    # q-values: statsmodels' Benjamini-Hochberg over the same p-values
    np.testing.assert_allclose(
        table["qvalue"], multipletests(table["pvalue"], method="fdr_bh")[1], rtol=1e-12
    )


def test_bh_qvalues_with_ties_and_nan():
    rng = np.random.default_rng(5)
    p = np.round(rng.random(200), 2)  # ties
    p[[3, 50]] = np.nan
    q = screen.bh_qvalues(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], multipletests(p[ok], method="fdr_bh")[1], rtol=1e-12)
    assert np.isnan(q[~ok]).all()


def test_screen_chunks_any_cut_give_the_same_table(store):
    bars = screen.load_bars(store, "5m")
    one = screen.screen_bars(bars, "5m").table
    many = screen.screen_bars(bars, "5m", runner=lambda n: (5, screen.run_in_process)).table
    assert one.equals(many)


def test_screen_refuses_too_few_symbols(store):
    bars = screen.load_bars(store, "5m", ["AAAUSDT", "SHORTUSDT"])
    with pytest.raises(
        DataError, match=r"at least 2 symbols, 1 kept.*SHORTUSDT: \d+ bars \(< 100\)"
    ):
        screen.screen_bars(bars, "5m")


def test_screen_reports_carried_and_dropped_bars():
    """A symbol silent for 100 bars: with the 5m default (12 bars) the 88 bars after its first
    12 carried ones are dropped for every pair and the params say so."""
    bars = {s: b for s, b in generated_bars().items() if s in ("AAAUSDT", "BBBUSDT", "EEEUSDT")}
    b = bars["EEEUSDT"]
    silent = (b["ts"] >= T0 + 600 * TF) & (b["ts"] < T0 + 700 * TF)
    bars["EEEUSDT"] = b[~silent]
    free = screen.screen_bars(bars, "5m", max_carry=10**6).params
    auto = screen.screen_bars(bars, "5m").params
    assert free["dropped_bars"] == 0 and free["carried_bars"] > 100
    # the two other symbols trade on ~90% of the 88 bars past the 12 carried ones
    assert auto["max_carry"] == "auto" and auto["dropped_bars"] >= 70
    assert auto["bars"] + auto["dropped_bars"] == free["bars"]
    assert auto["carried_bars"] < free["carried_bars"]


def test_config_for_is_accepted_by_the_loader(store, tmp_path):
    result = screen.screen_bars(screen.load_bars(store, "5m"), "5m")
    text = screen.config_for(result.table, 2, timeframe="5m", store=store)
    config = parse_config(yaml.safe_load(text))
    assert config.feed.source == "binance"
    assert config.analytics.timeframe == "5m" and str(config.store.path) == str(store)
    best = result.table.slice(0, 2).to_pylist()
    assert [(p.y, p.x) for p in config.pairs] == [(r["y"], r["x"]) for r in best]
    base = tmp_path / "base.yaml"
    base.write_text(
        "feed: {source: simulator}\nsymbols: [ETHUSDT, BTCUSDT]\n"
        "pairs: [{y: ETHUSDT, x: BTCUSDT}]\nalerts: [{pair: ETHUSDT/BTCUSDT, above: 2.0}]\n"
        "simulator: {groups: [[ETHUSDT, BTCUSDT]]}\n"
        f"strategy: {{entry: 1.5}}\nstore: {{path: {tmp_path / 'other'}}}\n"
    )
    out = tmp_path / "out.yaml"
    out.write_text(screen.config_for(result.table, 3, load_config(base), timeframe="5m"))
    config = load_config(out)
    assert config.feed.source == "simulator" and config.strategy.entry == 1.5
    assert len(config.pairs) == 3 and config.alerts == () and config.simulator.groups is None
    assert str(config.store.path) == str(tmp_path / "other")
    assert "5m" in config.timeframes and config.analytics.timeframe == "5m"


def test_saved_screen_keeps_rows_and_parameters(store, tmp_path):
    result = screen.screen_bars(screen.load_bars(store, "5m"), "5m", top=4)
    assert screen.latest_screen(tmp_path) is None
    path = screen.save_screen(tmp_path, result)
    assert path.parent == tmp_path / "screens" and not list(path.parent.glob(".*"))
    table, params = screen.latest_screen(tmp_path)
    assert table.equals(result.table)
    assert params == json.loads(json.dumps(result.params)) and params["top"] == 4
    assert json.loads(pq.read_schema(path).metadata[screen.META_KEY])["symbols"] == list(
        result.universe.kept
    )
