"""The backtest against a plain-Python loop written from DESIGN.md, stats against pandas."""

from __future__ import annotations

import json
import math
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from funding_kit import mark_price_rows, settlements_loop
from kit import cointegrated_pair

from engine.backtest import Costs, _simulate, run
from engine.backtest_data import PairData
from engine.config import StrategyConfig
from engine.errors import ConfigError, DataError, NumericalError
from engine.pairstep import PairParams, run_pair
from strategies import make_strategy

T0 = 1_700_000_000_000
MINUTE = 60_000


def market(n, seed, missing=0.0, beta=1.5, raw=False):
    """Aligned bars: ts, open/close per leg, with bars missing on one leg (carried forward)."""
    rng = np.random.default_rng(seed)
    y, x = cointegrated_pair(n, beta=beta, seed=seed, half_life=15.0)
    has_y = rng.random(n) >= missing
    has_x = rng.random(n) >= missing
    has_y[0] = has_x[0] = True
    cols = []
    for close, has in ((y, has_y), (x, has_x)):
        close = close.copy()
        opened = close * np.exp(rng.normal(0.0, 3e-4, n))
        for i in range(1, n):
            if not has[i]:
                close[i] = opened[i] = close[i - 1]
        cols += [opened, close]
    ts = T0 + MINUTE * np.cumsum(rng.integers(1, 3, n))  # some intervals without any bar
    return ts, *cols


def hedge(close_y, close_x, mode, window=60):
    """Rolling OLS beta and rolling z of the spread (pandas), enough to drive the strategy."""
    py, px = (np.log(close_y), np.log(close_x)) if mode == "log" else (close_y, close_x)
    sy, sx = pd.Series(py), pd.Series(px)
    beta = (sy.rolling(window).cov(sx) / sx.rolling(window).var()).to_numpy()
    alpha = (sy.rolling(window).mean() - beta * sx.rolling(window).mean()).to_numpy()
    spread = pd.Series(py - beta * px - alpha)
    z = ((spread - spread.rolling(window).mean()) / spread.rolling(window).std()).to_numpy()
    return beta, z


def reference(ts, oy, cy, ox, cx, target, beta, costs, mode, funding_y=(), funding_x=()):
    """DESIGN.md "Timing", "Sides and sizing", "Costs", "Equity", "Funding", literally."""
    n = len(ts)
    slip, fee_rate = costs.slippage_bps / 1e4, costs.fee_bps / 1e4

    def fill(price, qty):
        return price * (1 + slip) if qty > 0 else price * (1 - slip) if qty < 0 else price

    cash, pos, qy, qx, trades, equity = costs.capital, 0, 0.0, 0.0, [], []
    for t in range(n):
        if t >= 1 and target[t - 1] != pos:  # decided at close t-1, filled at open t
            if pos != 0:
                tr = trades[-1]
                fy, fx = fill(oy[t], -qy), fill(ox[t], -qx)
                fee = fee_rate * abs(qy) * fy + fee_rate * abs(qx) * fx
                cash += qy * fy + qx * fx - fee
                tr.update(exit_bar=t, exit_fill_y=fy, exit_fill_x=fx, fees=tr["fees"] + fee)
                tr["pnl"] = qy * (fy - tr["entry_fill_y"]) + qx * (fx - tr["entry_fill_x"])
                pos, qy, qx = 0, 0.0, 0.0
            p = int(target[t - 1])
            if p != 0:
                b = beta[t - 1]
                fy = oy[t] * (1 + slip) if p > 0 else oy[t] * (1 - slip)
                qy = p * costs.notional / fy
                sign_x = -p * b
                fx = fill(ox[t], sign_x)
                qx = -p * b * costs.notional / fx if mode == "log" else -p * b * abs(qy)
                fee = fee_rate * abs(qy) * fy + fee_rate * abs(qx) * fx
                cash -= qy * fy + qx * fx + fee
                pos = p
                trades.append(
                    dict(
                        entry_bar=t,
                        exit_bar=-1,
                        side=p,
                        beta=b,
                        qty_y=qy,
                        qty_x=qx,
                        entry_fill_y=fy,
                        entry_fill_x=fx,
                        exit_fill_y=math.nan,
                        exit_fill_x=math.nan,
                        fees=fee,
                        funding=0.0,
                    )
                )
        if pos != 0 and t + 1 < n:  # funding times T with ts[t] < T <= ts[t + 1]
            for events, qty, close in ((funding_y, qy, cy[t]), (funding_x, qx, cx[t])):
                for when, rate in events:
                    if ts[t] < when <= ts[t + 1]:
                        cash -= qty * close * rate
                        trades[-1]["funding"] += qty * close * rate
        equity.append(cash + qy * cy[t] + qx * cx[t])
    if pos != 0:
        tr = trades[-1]
        tr["pnl"] = qy * (cy[-1] - tr["entry_fill_y"]) + qx * (cx[-1] - tr["entry_fill_x"])
    return np.array(equity), trades


def funding_events(ts, every, seed):
    rng = np.random.default_rng(seed)
    times = np.arange(ts[0] - 7 * MINUTE, ts[-1] + 9 * MINUTE, every * MINUTE) + 17
    return list(zip(times.tolist(), rng.normal(1e-4, 3e-4, times.size).tolist(), strict=True))


def check_against_reference(bars, target, beta, costs, mode, fy=(), fx=()):
    ts = bars[0]
    funding = tuple(
        {"ts": np.array([e[0] for e in ev], dtype=np.int64), "rate": np.array([e[1] for e in ev])}
        if ev
        else None
        for ev in (fy, fx)
    )
    result = _simulate(*bars, target, beta, costs, mode, funding=funding)
    equity, trades = reference(*bars, target, beta, costs, mode, fy, fx)
    np.testing.assert_allclose(result.equity.equity, equity, rtol=1e-9)
    np.testing.assert_array_equal(result.equity.ts, ts)
    got = result.trades.to_pydict()
    assert len(trades) == result.trades.num_rows
    ts_ms = pa.array(ts, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC")).to_pylist()
    assert got["entry_ts"] == [ts_ms[tr["entry_bar"]] for tr in trades]
    assert got["exit_ts"] == [
        ts_ms[tr["exit_bar"]] if tr["exit_bar"] >= 0 else None for tr in trades
    ]
    assert got["side"] == [tr["side"] for tr in trades]
    for key in ("beta", "qty_y", "qty_x", "entry_fill_y", "entry_fill_x", "fees", "funding", "pnl"):
        np.testing.assert_allclose(got[key], [tr[key] for tr in trades], rtol=1e-9, atol=1e-9)
    for key in ("exit_fill_y", "exit_fill_x"):
        want = [None if math.isnan(tr[key]) else tr[key] for tr in trades]
        assert [g is None for g in got[key]] == [w is None for w in want]
        np.testing.assert_allclose(
            [g for g in got[key] if g is not None], [w for w in want if w is not None], rtol=1e-9
        )
    # accounting identity: final equity = capital + sum(pnl) - fees - funding paid
    stats = result.stats
    np.testing.assert_allclose(
        stats["final_equity"],
        costs.capital + sum(got["pnl"]) - stats["fees_paid"] - stats["funding_paid"],
        rtol=1e-9,
    )
    np.testing.assert_allclose(stats["fees_paid"], sum(got["fees"]), rtol=1e-9)
    np.testing.assert_allclose(stats["funding_paid"], sum(got["funding"]), rtol=1e-9, atol=1e-12)
    return result


def zscore_target(z, entry, exit_, stop, name="zscore"):
    config = StrategyConfig(name=name, entry=entry, exit=exit_, stop=stop)
    return make_strategy(config).run(z)


GRID = [
    (entry, exit_, stop, mode)
    for entry in (1.5, 2.0)
    for exit_ in (0.0, 0.5)
    for stop in (None, 3.0)
    for mode in ("log", "raw")
]


@pytest.mark.parametrize(("entry", "exit_", "stop", "mode"), GRID)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_on_cointegrated_data(entry, exit_, stop, mode, seed):
    bars = market(1500, seed, missing=0.1)
    beta, z = hedge(bars[2], bars[4], mode)
    target = zscore_target(z, entry, exit_, stop)
    costs = Costs(notional=10_000.0, capital=25_000.0, fee_bps=5.0, slippage_bps=2.0)
    result = check_against_reference(
        bars,
        target,
        beta,
        costs,
        mode,
        funding_events(bars[0], 480, seed),
        funding_events(bars[0], 240, seed + 1),
    )
    assert result.stats["closed_trades"] >= 5
    assert result.stats["funding_paid"] != 0.0


@pytest.mark.parametrize("mode", ["log", "raw"])
@pytest.mark.parametrize("seed", [2, 3])
def test_negative_beta_flips_and_random_targets(mode, seed):
    bars = market(400, seed, missing=0.3, beta=-0.8)
    rng = np.random.default_rng(seed)
    target = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=400, p=[0.3, 0.4, 0.3])
    beta = rng.normal(-0.8, 0.2, 400)  # negative: both legs bought (or sold) together
    costs = Costs(notional=5_000.0, capital=5_000.0, fee_bps=4.0, slippage_bps=1.0)
    result = check_against_reference(bars, target, beta, costs, mode)
    assert (
        np.sign(result.trades["qty_y"].to_numpy()) == np.sign(result.trades["qty_x"].to_numpy())
    ).all()


def test_signal_on_last_bar_is_not_filled():
    bars = market(50, 0)
    target = np.zeros(50, dtype=np.int8)
    target[-1] = 1
    result = _simulate(*bars, target, np.full(50, 1.5), Costs(1e4, 1e4, 5.0, 1.0), "log")
    assert result.trades.num_rows == 0
    np.testing.assert_allclose(result.equity.equity, 1e4, rtol=0)
    assert result.stats["trades"] == 0 and math.isnan(result.stats["win_rate"])


def test_open_position_at_the_end():
    bars = market(60, 1)
    target = np.zeros(60, dtype=np.int8)
    target[40:] = -1
    result = check_against_reference(
        bars, target, np.full(60, 1.2), Costs(1e4, 1e4, 5.0, 1.0), "log"
    )
    row = result.trades.to_pylist()[0]
    assert row["exit_ts"] is None and row["exit_fill_y"] is None
    assert row["entry_ts"] == datetime.fromtimestamp(bars[0][41] / 1e3, tz=row["entry_ts"].tzinfo)
    doc = result.to_json_dict()
    assert doc["trades"][0]["exit_ts"] is None
    assert result.stats["closed_trades"] == 0 and result.stats["trades"] == 1


def test_missing_bar_fills_at_last_close():
    bars = list(market(30, 4))
    for arr in (bars[1], bars[2]):  # y has no bar at 10: open and close carry close[9]
        arr[10] = bars[2][9]
    target = np.zeros(30, dtype=np.int8)
    target[9:20] = 1
    result = check_against_reference(
        tuple(bars), target, np.full(30, 1.5), Costs(1e4, 1e4, 0.0, 3.0), "log"
    )
    np.testing.assert_allclose(
        result.trades["entry_fill_y"].to_numpy(), [bars[2][9] * (1 + 3e-4)], rtol=1e-12
    )


def test_no_lookahead():
    n = 800
    bars = market(n, 5)
    beta, z = hedge(bars[2], bars[4], "log")
    target = zscore_target(z, 1.5, 0.0, 3.0)
    costs = Costs(1e4, 1e4, 5.0, 1.0)
    base = _simulate(*bars, target, beta, costs, "log")
    rng = np.random.default_rng(1)
    for t in (100, 400, 700):
        other = [a.copy() for a in bars]
        for arr in other[1:]:
            arr[t + 1 :] *= np.exp(rng.normal(0.0, 0.01, n - t - 1))
        beta2, z2 = hedge(other[2], other[4], "log")
        target2 = zscore_target(z2, 1.5, 0.0, 3.0)
        np.testing.assert_array_equal(target2[: t + 1], target[: t + 1])
        result = _simulate(*other, target2, beta2, costs, "log")
        np.testing.assert_array_equal(result.equity.equity[: t + 1], base.equity.equity[: t + 1])


def test_stats_against_pandas():
    bars = market(3000, 6, missing=0.05)
    beta, z = hedge(bars[2], bars[4], "log")
    target = zscore_target(z, 1.5, 0.0, 3.0)
    result = _simulate(*bars, target, beta, Costs(1e4, 2e4, 5.0, 1.0), "log", timeframe="1m")
    stats, equity = result.stats, pd.Series(result.equity.equity, index=result.equity.ts)
    returns = equity.pct_change().dropna()
    per_year = 365 * 24 * 60
    np.testing.assert_allclose(
        stats["sharpe"], returns.mean() / returns.std() * math.sqrt(per_year), rtol=1e-9
    )
    downside = math.sqrt((returns.clip(upper=0.0) ** 2).mean())
    np.testing.assert_allclose(
        stats["sortino"], returns.mean() / downside * math.sqrt(per_year), rtol=1e-9
    )
    np.testing.assert_allclose(stats["total_return"], equity.iloc[-1] / 2e4 - 1, rtol=1e-9)
    underwater = 1 - equity / equity.cummax()
    np.testing.assert_allclose(stats["max_drawdown"], underwater.max(), rtol=1e-9)
    trough = underwater.idxmax()
    peak_ts = equity[:trough][equity[:trough] == equity.cummax()[trough]].index[-1]
    back = equity[trough:][equity[trough:] >= equity.cummax()[trough]]
    end_ts = back.index[0] if len(back) else equity.index[-1]
    assert stats["max_drawdown_duration_ms"] == end_ts - peak_ts
    trades = result.trades.to_pandas()
    closed = trades.dropna(subset=["exit_ts"])
    net = closed.pnl - closed.fees - closed.funding
    np.testing.assert_allclose(stats["win_rate"], (net > 0).mean(), rtol=1e-12)
    holding = (closed.exit_ts - closed.entry_ts).dt.total_seconds() * 1e3
    np.testing.assert_allclose(stats["mean_holding_ms"], holding.mean(), rtol=1e-12)
    traded = (
        trades.qty_y.abs() * trades.entry_fill_y + trades.qty_x.abs() * trades.entry_fill_x
    ).sum() + (
        closed.qty_y.abs() * closed.exit_fill_y + closed.qty_x.abs() * closed.exit_fill_x
    ).sum()
    np.testing.assert_allclose(stats["turnover"], traded / 2e4, rtol=1e-9)
    np.testing.assert_allclose(stats["fees_paid"], traded * 5e-4, rtol=1e-9)
    assert stats["trades"] == len(trades) and stats["closed_trades"] == len(closed)


def test_json_dict():
    bars = market(400, 7)
    beta, z = hedge(bars[2], bars[4], "raw")
    result = _simulate(*bars, zscore_target(z, 1.5, 0.0, None), beta, Costs(1e4, 1e4), "raw")
    doc = json.loads(json.dumps(result.to_json_dict(), allow_nan=False))
    assert set(doc) == {"stats", "trades", "equity"} and set(doc["equity"]) == {"ts", "equity"}
    assert doc["stats"] == {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in result.stats.items()
    }
    stamps = [datetime.fromisoformat(s) for s in doc["equity"]["ts"]]
    assert [int(s.timestamp() * 1000) for s in stamps] == bars[0].tolist()
    assert all(s.utcoffset().total_seconds() == 0 for s in stamps)
    assert doc["equity"]["equity"] == result.equity.equity.tolist()
    assert len(doc["trades"]) == result.trades.num_rows > 0
    first = doc["trades"][0]
    assert set(first) == set(result.trades.column_names)
    assert datetime.fromisoformat(first["entry_ts"]) == result.trades["entry_ts"][0].as_py()


def good_inputs(n=20):
    bars = market(n, 8)
    return [*bars, np.zeros(n, dtype=np.int8), np.full(n, 1.0)]


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, np.arange(5), "at least 2 bars"),  # handled below with all arrays cut
        (0, np.full(20, T0), "strictly increasing"),
        (2, np.ones(19), "close_y must be a 1-D array of 20"),
        (3, np.full(20, np.nan), "open_x must be finite positive"),
        (4, -np.ones(20), "close_x must be finite positive"),
        (5, np.full(20, 2), "-1, 0 or \\+1"),
        (5, np.zeros(21), "target must be a 1-D array of 20"),
        (6, np.ones(3), "beta must be a 1-D array of 20"),
    ],
)
def test_bad_input(index, value, match):
    args = good_inputs()
    if match == "at least 2 bars":
        args = [a[:1] for a in args]
    else:
        args[index] = value
    with pytest.raises(DataError, match=match):
        _simulate(*args, Costs(1e4, 1e4), "log")


def test_bad_beta_mode_funding_and_costs():
    args = good_inputs()
    args[5][3] = 1
    args[6][3] = np.nan
    with pytest.raises(DataError, match="beta is not finite at decision bar 3"):
        _simulate(*args, Costs(1e4, 1e4), "log")
    args = good_inputs()
    with pytest.raises(ConfigError, match=r"analytics\.price"):
        _simulate(*args, Costs(1e4, 1e4), "pct")
    with pytest.raises(DataError, match="funding must have columns"):
        _simulate(*args, Costs(1e4, 1e4), "log", funding=({"time": [1]}, None))
    with pytest.raises(DataError, match="lengths differ"):
        _simulate(*args, Costs(1e4, 1e4), "log", funding=({"ts": [1, 2], "rate": [0.1]}, None))
    with pytest.raises(DataError, match="unknown timeframe"):
        _simulate(*args, Costs(1e4, 1e4), "log", timeframe="7m")
    for bad in (
        dict(notional=0.0),
        dict(capital=-1.0),
        dict(fee_bps=-1.0),
        dict(slippage_bps=math.nan),
    ):
        with pytest.raises(ConfigError, match="strategy\\."):
            Costs(**{"notional": 1e4, "capital": 1e4, **bad})


def test_costs_from_config():
    config = SimpleNamespace(notional=500.0, capital=None, fee_bps=2.0, slippage_bps=0.5)
    assert Costs.from_config(config) == Costs(500.0, 500.0, 2.0, 0.5)


def leg_bars(ts, close, rng, keep):
    """BAR_DTYPE records of one leg: only the bars in ``keep`` (sparse legs)."""
    from engine.schemas import BAR_DTYPE

    out = np.zeros(int(keep.sum()), dtype=BAR_DTYPE)
    out["ts"] = ts[keep]
    out["close"] = close[keep]
    out["open"] = close[keep] * np.exp(rng.normal(0.0, 3e-4, out.size))
    out["high"] = np.maximum(out["open"], out["close"])
    out["low"] = np.minimum(out["open"], out["close"])
    out["volume"] = 1.0
    out["trades"] = 1
    return out


def pandas_align(by, bx):
    """Independent alignment: outer join on ts from the first bar of the later leg, carry."""
    fy = pd.DataFrame({"oy": by["open"], "cy": by["close"]}, index=by["ts"])
    fx = pd.DataFrame({"ox": bx["open"], "cx": bx["close"]}, index=bx["ts"])
    frame = fy.join(fx, how="outer")
    frame = frame[frame.index >= max(by["ts"][0], bx["ts"][0])]
    for o, c in (("oy", "cy"), ("ox", "cx")):
        frame[o] = frame[o].fillna(frame[c].ffill())  # no bar: the last close stands in
        frame[c] = frame[c].ffill()
    return tuple(frame.index.to_numpy()), frame


@pytest.mark.parametrize("hedge", ["kalman", "rolling_ols"])
@pytest.mark.parametrize("mode", ["log", "raw"])
@pytest.mark.parametrize("name", ["zscore", "zscore_timestop"])
def test_backtest_pipeline_matches_reference(hedge, mode, name):
    n = 1200
    rng = np.random.default_rng(11)
    y, x = cointegrated_pair(n, seed=11, half_life=10.0)
    ts = T0 + MINUTE * np.arange(n)
    by = leg_bars(ts, y, rng, np.r_[False, rng.random(n - 1) > 0.1])
    bx = leg_bars(ts, x, rng, rng.random(n) > 0.1)
    params = PairParams(price=mode, hedge=hedge, ols_window=100, zscore_window=50)
    config = StrategyConfig(
        name=name,
        entry=1.5,
        exit=0.0,
        stop=3.5,
        notional=1e4,
        fee_bps=4.0,
        slippage_bps=1.0,
        max_hold_half_lives=2.0 if name == "zscore_timestop" else None,
    )
    # Y settles every 4 h at the announced T, X's rows carry no T (the 8 h grid is assumed)
    rows_y = mark_price_rows(T0, int(ts[-1]), every_ms=7 * MINUTE, interval_h=4, seed=1)
    rows_x = mark_price_rows(T0, int(ts[-1]), every_ms=5 * MINUTE, with_t="none", seed=2)
    data = PairData.from_tables(by, bx, timeframe="1m", funding=(rows_y, rows_x))
    result = backtest(data, params, config)
    aligned_ts, frame = pandas_align(by, bx)
    series = run_pair(frame.cy.to_numpy(), frame.cx.to_numpy(), params)
    target = make_strategy(config).run(series.z, series.spread)
    bars = (np.array(aligned_ts), *(frame[c].to_numpy() for c in ("oy", "cy", "ox", "cx")))
    events_y, events_x = settlements_loop(rows_y), settlements_loop(rows_x)
    equity, trades = reference(
        *bars,
        target,
        series.beta,
        Costs.from_config(config),
        mode,
        [(t, rate) for t, rate, _ in events_y],
        [(t, rate) for t, rate, _ in events_x],
    )
    np.testing.assert_array_equal(result.equity.ts, bars[0])
    np.testing.assert_allclose(result.equity.equity, equity, rtol=1e-9)
    np.testing.assert_allclose(
        result.trades["pnl"].to_numpy(), [t["pnl"] for t in trades], rtol=1e-9
    )
    assert result.stats["closed_trades"] >= 3
    inside = [e for e in events_y + events_x if bars[0][0] < e[0] <= bars[0][-1]]
    assert sum(not e[2] for e in events_y) >= 4 and sum(e[2] for e in events_x) >= 2
    assert result.stats["funding_events"] == len(inside)
    assert result.stats["funding_assumed"] == sum(e[2] for e in inside)


def test_backtest_pipeline_no_lookahead_and_errors():
    n = 600
    rng = np.random.default_rng(12)
    y, x = cointegrated_pair(n, seed=12, half_life=10.0)
    ts = T0 + MINUTE * np.arange(n)
    by, bx = leg_bars(ts, y, rng, np.ones(n, bool)), leg_bars(ts, x, rng, np.ones(n, bool))
    params = PairParams(price="log", hedge="kalman", zscore_window=40)
    config = StrategyConfig(entry=1.5, exit=0.0, stop=3.5)
    base = backtest(PairData.from_tables(by, bx), params, config)
    for t in (150, 450):
        other = by.copy()
        for field in ("open", "close"):
            other[field][t + 1 :] *= 1.05
        changed = backtest(PairData.from_tables(other, bx), params, config)
        np.testing.assert_array_equal(changed.equity.equity[: t + 1], base.equity.equity[: t + 1])
        np.testing.assert_array_equal(
            changed.equity.position[: t + 2], base.equity.position[: t + 2]
        )
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        make_strategy(StrategyConfig(name="nope"))
    with pytest.raises(DataError, match="a backtest needs 2"):
        PairData.from_tables(by[:1], bx[:1])
    with pytest.raises(NumericalError, match="too few bars: 30 aligned bars"):
        backtest(PairData.from_tables(by[:30], bx[:30]), params, config)


def backtest(data, params, config):
    """The one entry as its callers use it: a strategy built from the config, its costs."""
    return run(data, params, make_strategy(config), Costs.from_config(config))
