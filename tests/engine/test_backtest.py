"""The backtest against a plain-Python loop written from docs/semantics.md, stats against pandas."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
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


def reference(
    ts, oy, cy, ox, cx, target, beta, costs, mode, fund_y=(), fund_x=(), spread=None, window=60
):
    """docs/semantics.md "Timing", "Sides and sizing", "Costs", "Equity", "Funding", literally, plus
    the ruin rule (equity at a close <= ruin_equity*capital: close at the next open, stop),
    vol sizing (notional = vol_target / std of the last ``window`` spread changes) and the
    gross cap (both legs scaled down to max_gross). Returns (equity, trades, ruin bar or -1)."""
    n = len(ts)
    slip, fee_rate = costs.slippage_bps / 1e4, costs.fee_bps / 1e4
    floor = costs.ruin_equity * costs.capital

    def fill(price, qty):
        return price * (1 + slip) if qty > 0 else price * (1 - slip) if qty < 0 else price

    def size(t):
        if costs.sizing == "fixed":
            return costs.notional
        if spread is None or t < window:
            return math.nan
        changes = [spread[i] - spread[i - 1] for i in range(t - window + 1, t + 1)]
        mean = sum(changes) / window
        sd = math.sqrt(sum((c - mean) ** 2 for c in changes) / (window - 1))
        return costs.vol_target / sd if sd > 0 else math.nan

    cash, pos, qy, qx, trades, equity, ruin = costs.capital, 0, 0.0, 0.0, [], [], -1
    for t in range(n):
        if ruin >= 0:
            decided, act = 0, pos != 0
        else:
            decided = int(target[t - 1]) if t >= 1 else 0
            act = t >= 1 and decided != (int(target[t - 2]) if t >= 2 else 0)
        if act:  # decided at close t-1, filled at open t
            if pos != 0:
                tr = trades[-1]
                fy, fx = fill(oy[t], -qy), fill(ox[t], -qx)
                fee = fee_rate * abs(qy) * fy + fee_rate * abs(qx) * fx
                cash += qy * fy + qx * fx - fee
                tr.update(exit_bar=t, exit_fill_y=fy, exit_fill_x=fx, fees=tr["fees"] + fee)
                tr["pnl"] = qy * (fy - tr["entry_fill_y"]) + qx * (fx - tr["entry_fill_x"])
                pos, qy, qx = 0, 0.0, 0.0
            p = decided
            s = size(t - 1)
            if p != 0 and math.isfinite(s) and s > 0:
                b = beta[t - 1]
                fy = oy[t] * (1 + slip) if p > 0 else oy[t] * (1 - slip)
                vol_raw = costs.sizing == "vol" and mode == "raw"
                qy = p * s if vol_raw else p * s / fy
                sign_x = -p * b
                fx = fill(ox[t], sign_x)
                qx = -p * b * s / fx if mode == "log" else -p * b * abs(qy)
                gross = abs(qy) * fy + abs(qx) * fx
                if costs.max_gross is not None and gross > costs.max_gross:
                    qy, qx = qy * costs.max_gross / gross, qx * costs.max_gross / gross
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
            for events, qty, close in ((fund_y, qy, cy[t]), (fund_x, qx, cx[t])):
                for when, rate in events:
                    if ts[t] < when <= ts[t + 1]:
                        cash -= qty * close * rate
                        trades[-1]["funding"] += qty * close * rate
        equity.append(cash + qy * cy[t] + qx * cx[t])
        if ruin < 0 and equity[-1] <= floor:
            ruin = t
    if pos != 0:
        tr = trades[-1]
        tr["pnl"] = qy * (cy[-1] - tr["entry_fill_y"]) + qx * (cx[-1] - tr["entry_fill_x"])
    return np.array(equity), trades, ruin


def funding_events(ts, every, seed):
    rng = np.random.default_rng(seed)
    times = np.arange(ts[0] - 7 * MINUTE, ts[-1] + 9 * MINUTE, every * MINUTE) + 17
    return list(zip(times.tolist(), rng.normal(1e-4, 3e-4, times.size).tolist(), strict=True))


def check_against_reference(bars, target, beta, costs, mode, fy=(), fx=(), spread=None, window=60):
    ts = bars[0]
    funding = tuple(
        {"ts": np.array([e[0] for e in ev], dtype=np.int64), "rate": np.array([e[1] for e in ev])}
        if ev
        else None
        for ev in (fy, fx)
    )
    result = _simulate(
        *bars, target, beta, costs, mode, funding=funding, spread=spread, vol_window=window
    )
    equity, trades, ruin = reference(*bars, target, beta, costs, mode, fy, fx, spread, window)
    assert result.stats["ruined"] == (ruin >= 0)
    ruined_at = datetime.fromtimestamp(ts[ruin] / 1e3, tz=UTC) if ruin >= 0 else None
    got_at = result.stats["ruined_at"]
    assert (None if got_at is None else datetime.fromisoformat(got_at)) == ruined_at
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


def pandas_align(by, bx, limit_ms=None):
    """Independent alignment: outer join on ts from the first bar of the later leg, carry;
    rows where a leg's own bar is older than ``limit_ms`` are dropped (None: no limit).
    Returns (times, frame, carried rows, dropped rows)."""
    fy = pd.DataFrame({"oy": by["open"], "cy": by["close"], "ty": by["ts"]}, index=by["ts"])
    fx = pd.DataFrame({"ox": bx["open"], "cx": bx["close"], "tx": bx["ts"]}, index=bx["ts"])
    frame = fy.join(fx, how="outer")
    frame = frame[frame.index >= max(by["ts"][0], bx["ts"][0])]
    carried = frame["ty"].isna() | frame["tx"].isna()
    for o, c, t in (("oy", "cy", "ty"), ("ox", "cx", "tx")):
        frame[o] = frame[o].fillna(frame[c].ffill())  # no bar: the last close stands in
        frame[c] = frame[c].ffill()
        frame[t] = frame[t].ffill()
    keep = pd.Series(True, index=frame.index)
    if limit_ms is not None:
        age = np.maximum(frame.index - frame["ty"], frame.index - frame["tx"])
        keep = age <= limit_ms
    frame = frame[keep]
    return tuple(frame.index.to_numpy()), frame, int(carried[keep].sum()), int((~keep).sum())


@pytest.mark.parametrize("hedge", ["kalman", "rolling_ols"])
@pytest.mark.parametrize("mode", ["log", "raw"])
@pytest.mark.parametrize("name", ["zscore", "zscore_timestop"])
@pytest.mark.parametrize("max_carry", [None, 4])
def test_backtest_pipeline_matches_reference(hedge, mode, name, max_carry):
    n = 1200
    rng = np.random.default_rng(11)
    y, x = cointegrated_pair(n, seed=11, half_life=10.0)
    ts = T0 + MINUTE * np.arange(n)
    by = leg_bars(ts, y, rng, np.r_[False, rng.random(n - 1) > 0.1])
    has_x = rng.random(n) > 0.1
    if max_carry is not None:  # x falls silent for stretches of 3 to 40 bars
        for start in rng.choice(np.arange(100, n - 50), 12, replace=False):
            has_x[start : start + int(rng.integers(3, 41))] = False
    bx = leg_bars(ts, x, rng, has_x)
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
    limit = 10**9 if max_carry is None else max_carry
    data = PairData.from_tables(
        by, bx, timeframe="1m", funding=(rows_y, rows_x), max_carry=limit
    )
    result = backtest(data, params, config)
    aligned_ts, frame, carried, dropped = pandas_align(by, bx, limit * MINUTE)
    assert result.stats["carried_bars"] == carried > 100
    assert result.stats["dropped_bars"] == dropped
    assert (dropped > 50) == (max_carry is not None)
    k = data.n // 3
    parts = data.carry_counts(0, k), data.carry_counts(k, None)
    assert {key: parts[0][key] + parts[1][key] for key in parts[0]} == data.carry_counts()
    series = run_pair(frame.cy.to_numpy(), frame.cx.to_numpy(), params)
    target = make_strategy(config).run(series.z, series.spread)
    bars = (np.array(aligned_ts), *(frame[c].to_numpy() for c in ("oy", "cy", "ox", "cx")))
    events_y, events_x = settlements_loop(rows_y), settlements_loop(rows_x)
    equity, trades, _ = reference(
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


def random_scenario(seed):
    """Seeded random bars, targets, betas and costs, leveraged enough that some runs ruin."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(80, 400))
    bars = market(n, seed, missing=float(rng.uniform(0.0, 0.3)), beta=float(rng.uniform(0.5, 2)))
    bars = (bars[0], *(a * np.exp(np.cumsum(rng.normal(0, 0.01, n))) for a in bars[1:3]), *bars[3:])
    target = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=n, p=[0.2, 0.6, 0.2])
    target = np.repeat(target[::4], 4)[:n]  # held a few bars
    beta = rng.normal(1.0, 0.3, n)
    capital = float(rng.uniform(1_000.0, 10_000.0))
    costs = Costs(
        notional=float(rng.uniform(2e3, 3e4)),
        capital=capital,
        fee_bps=float(rng.uniform(0.0, 20.0)),
        slippage_bps=float(rng.uniform(0.0, 5.0)),
        ruin_equity=float(rng.choice([0.0, 0.0, 0.3, 0.8])),
    )
    return bars, target, beta, costs


@pytest.mark.parametrize("mode", ["log", "raw"])
def test_ruin_matches_reference_on_random_scenarios(mode):
    ruined = 0
    for seed in range(40):
        bars, target, beta, costs = random_scenario(seed)
        result = check_against_reference(bars, target, beta, costs, mode)
        stats = result.stats
        if stats["ruined"]:
            ruined += 1
            at = np.datetime64(stats["ruined_at"].removesuffix("Z"), "ms").astype(np.int64)
            ruin = int(np.searchsorted(bars[0], at))
            # no trading after the ruin bar's next open; flat, equity constant
            assert not result.equity.position[ruin + 2 :].any()
            assert np.all(result.equity.equity[ruin + 1 :] == result.equity.equity[-1])
            assert math.isnan(stats["sharpe"]) and math.isnan(stats["sortino"])
        else:
            assert np.all(result.equity.equity > costs.ruin_equity * costs.capital)
    assert 5 <= ruined <= 35  # both kinds of run are covered


def test_ruined_run_has_no_sharpe_and_sorts_last():
    """entry 2 with fees: equity far below zero must not read as a good Sharpe."""
    n = 300
    bars = market(n, 21)
    target = np.zeros(n, dtype=np.int8)
    target[50:] = np.tile(np.array([1, 1, -1, -1], dtype=np.int8), (n - 50) // 4 + 1)[: n - 50]
    costs = Costs(notional=1e6, capital=1e3, fee_bps=5.0, slippage_bps=1.0)
    result = check_against_reference(bars, target, np.full(n, 1.5), costs, "log")
    stats = result.stats
    assert stats["ruined"] and stats["total_return"] < -1.0
    assert math.isnan(stats["sharpe"]) and math.isnan(stats["sortino"])
    doc = json.loads(json.dumps(result.to_json_dict(), allow_nan=False))
    assert doc["stats"]["ruined"] is True and doc["stats"]["sharpe"] is None
    assert doc["stats"]["ruined_at"].endswith("Z")
    fine = _simulate(*bars, target, np.full(n, 1.5), Costs(1e3, 1e6, 0.0, 0.0), "log").stats
    table = pd.DataFrame([stats, fine]).sort_values("sharpe", ascending=False)
    assert table["ruined"].tolist() == [False, True]


@pytest.mark.parametrize("mode", ["log", "raw"])
@pytest.mark.parametrize("max_gross", [None, 15_000.0, 4_000.0])
@pytest.mark.parametrize("sizing", ["fixed", "vol"])
def test_sizing_and_gross_cap_match_reference(mode, max_gross, sizing):
    bars = market(900, 13, missing=0.1)
    beta, z = hedge(bars[2], bars[4], mode)
    spread = pd.Series(np.log(bars[2]) - beta * np.log(bars[4])).to_numpy()
    target = zscore_target(z, 1.5, 0.0, 3.0)
    vol_target = 5.0 if mode == "log" else 2.0
    costs = Costs(
        notional=1e4,
        capital=2e4,
        fee_bps=4.0,
        slippage_bps=1.0,
        sizing=sizing,
        vol_target=vol_target if sizing == "vol" else None,
        max_gross=max_gross,
    )
    result = check_against_reference(bars, target, beta, costs, mode, spread=spread, window=40)
    trades = result.trades.to_pandas()
    assert len(trades) >= 3
    gross = trades.qty_y.abs() * trades.entry_fill_y + trades.qty_x.abs() * trades.entry_fill_x
    if max_gross is not None:
        assert (gross <= max_gross * (1 + 1e-12)).all()
    if sizing == "vol" and mode == "log":  # notional = vol_target / sd of past spread changes
        change = pd.Series(spread).diff()
        sd = change.rolling(40).std().to_numpy()
        entry_ms = result.trades["entry_ts"].cast(pa.int64()).to_numpy()
        want = vol_target / sd[np.searchsorted(bars[0], entry_ms) - 1]  # decided the bar before
        y_usdt = trades.qty_y.abs() * trades.entry_fill_y
        if max_gross is None:
            np.testing.assert_allclose(y_usdt, want, rtol=1e-9)


def test_vol_sizing_uses_past_spread_only():
    n = 600
    bars = market(n, 14)
    beta, z = hedge(bars[2], bars[4], "log")
    spread = np.log(bars[2]) - beta * np.log(bars[4])
    target = zscore_target(z, 1.5, 0.0, 3.0)
    costs = Costs(1e4, 2e4, sizing="vol", vol_target=5.0)
    base = _simulate(*bars, target, beta, costs, "log", spread=spread, vol_window=30)
    later = spread.copy()
    later[400:] *= 3.0
    other = _simulate(*bars, target, beta, costs, "log", spread=later, vol_window=30)
    np.testing.assert_array_equal(other.equity.equity[:401], base.equity.equity[:401])


def test_small_sample_warning():
    bars = market(120, 15)
    target = np.zeros(120, dtype=np.int8)
    short = _simulate(*bars, target, np.ones(120), Costs(1e4, 1e4), "log", timeframe="1s").stats
    assert short["bars"] == 120 and short["returns"] == 119
    assert "small sample: 119 returns" in short["warning"]
    long_bars = market(1600, 15)
    ok = _simulate(
        *long_bars,
        np.zeros(1600, dtype=np.int8),
        np.ones(1600),
        Costs(1e4, 1e4),
        "log",
        timeframe="1m",
    ).stats
    assert ok["warning"] is None and not ok["ruined"] and ok["ruined_at"] is None


def test_sizing_config_is_validated():
    with pytest.raises(ValueError, match="vol_target"):
        StrategyConfig(sizing="vol")
    with pytest.raises(ValueError, match="ruin_equity"):
        StrategyConfig(ruin_equity=1.0)
    with pytest.raises(ConfigError, match=r"strategy\.sizing"):
        Costs(1e4, 1e4, sizing="kelly")
    config = StrategyConfig(sizing="vol", vol_target=3.0, max_gross=5e4, ruin_equity=0.5)
    assert Costs.from_config(config) == Costs(
        1e4, 1e4, 5.0, 1.0, sizing="vol", vol_target=3.0, max_gross=5e4, ruin_equity=0.5
    )


def portfolio_legs(n=900, seeds=(31, 32, 33), max_carry="auto"):
    """Three pairs of 1m bars with different, partly overlapping time ranges, each leg missing
    about 10% of its bars (aligned with ``max_carry``)."""
    rng = np.random.default_rng(30)
    legs = []
    for k, seed in enumerate(seeds):
        y, x = cointegrated_pair(n, seed=seed, half_life=10.0, beta=1.0 + 0.2 * k)
        ts = T0 + MINUTE * (np.arange(n) + 37 * k)  # pairs start at different times
        by = leg_bars(ts, y, rng, np.r_[True, rng.random(n - 1) > 0.1])
        bx = leg_bars(ts, x, rng, np.r_[True, rng.random(n - 1) > 0.1])
        legs.append(
            PairData.from_tables(
                by, bx, y=f"Y{k}USDT", x=f"X{k}USDT", timeframe="1m", max_carry=max_carry
            )
        )
    return legs


def carried_sum(curves, capital):
    """Plain Python: union of times, each pair's last equity at or before t, PnLs summed."""
    times = sorted({t for ts, _ in curves for t in ts.tolist()})
    out = []
    for t in times:
        total = capital
        for ts, equity in curves:
            last = None
            for when, value in zip(ts.tolist(), equity.tolist(), strict=True):
                if when <= t:
                    last = value
            total += 0.0 if last is None else last - capital
        out.append(total)
    return np.array(times), np.array(out)


def test_portfolio_is_the_sum_of_single_pair_runs():
    from engine.backtest_portfolio import portfolio_json, run_portfolio

    legs = portfolio_legs()
    params = PairParams(hedge="kalman", zscore_window=40)
    config = StrategyConfig(entry=1.5, exit=0.0, stop=3.5, notional=1e4, capital=1e5)
    costs = Costs.from_config(config)
    folio = run_portfolio([(d, make_strategy(config)) for d in legs], params, costs)
    alone = [backtest(d, params, config) for d in legs]
    ts, want = carried_sum([(r.equity.ts, r.equity.equity) for r in alone], 1e5)
    np.testing.assert_array_equal(folio.equity.ts, ts)
    np.testing.assert_allclose(folio.equity.equity, want, rtol=1e-12)
    stats = folio.stats
    assert not stats["ruined"] and stats["pairs"] == 3
    for key in ("fees_paid", "funding_paid", "trades", "closed_trades"):
        np.testing.assert_allclose(stats[key], sum(r.stats[key] for r in alone), rtol=1e-12)
    pnl = sum(sum(r.trades["pnl"].to_pylist()) for r in alone)
    np.testing.assert_allclose(
        stats["final_equity"], 1e5 + pnl - stats["fees_paid"] - stats["funding_paid"], rtol=1e-9
    )
    for data, r in zip(legs, alone, strict=True):  # per-pair stats: the pair alone
        assert folio.pairs[data.pair].stats == r.stats
    # correlation of per-bar PnL changes on the union time line (pandas as the oracle)
    pnl_of = {d.pair: r.equity for d, r in zip(legs, alone, strict=True)}
    frame = pd.DataFrame({p: pd.Series(e.equity - 1e5, index=e.ts) for p, e in pnl_of.items()})
    frame = frame.reindex(ts).ffill().fillna(0.0)
    np.testing.assert_allclose(folio.correlation, frame.diff().iloc[1:].corr(), rtol=1e-9)
    doc = json.loads(json.dumps(portfolio_json(folio), allow_nan=False))
    assert doc["correlation"]["pairs"] == [d.pair for d in legs]
    assert {t["pair"] for t in doc["trades"]} == {d.pair for d in legs}
    assert len(doc["trades"]) == stats["trades"]


def test_portfolio_ruin_stops_every_pair():
    from engine.backtest_portfolio import run_portfolio

    legs = portfolio_legs(seeds=(34, 35))
    params = PairParams(hedge="kalman", zscore_window=40)
    config = StrategyConfig(
        entry=0.5, exit=0.0, stop=None, notional=2e5, capital=2e3, fee_bps=10.0, ruin_equity=0.5
    )
    folio = run_portfolio(
        [(d, make_strategy(config)) for d in legs], params, Costs.from_config(config)
    )
    stats = folio.stats
    assert stats["ruined"] and math.isnan(stats["sharpe"])
    at = np.datetime64(stats["ruined_at"].removesuffix("Z"), "ms").astype(np.int64)
    bar = int(np.searchsorted(folio.equity.ts, at))
    assert folio.equity.equity[bar] <= 1e3 < folio.equity.equity[:bar].min()
    for r in folio.pairs.values():  # flat from the second bar after the ruin on
        later = r.equity.ts > at
        assert not r.equity.position[later][1:].any()
    assert np.all(folio.equity.equity[bar + 2 :] == folio.equity.equity[-1])


def test_portfolio_carry_counts_are_the_sums_of_the_pairs():
    """Total carried/dropped bars: the sums of the single-pair runs; per-pair rows their own."""
    from engine.backtest_portfolio import run_portfolio

    legs = portfolio_legs(max_carry=1)  # two bars in a row missing on a leg: dropped
    params = PairParams(hedge="kalman", zscore_window=40)
    config = StrategyConfig(entry=1.5, exit=0.0, stop=3.5, notional=1e4, capital=1e5)
    folio = run_portfolio(
        [(d, make_strategy(config)) for d in legs], params, Costs.from_config(config)
    )
    alone = [backtest(d, params, config) for d in legs]
    for key in ("carried_bars", "dropped_bars"):
        assert folio.stats[key] == sum(r.stats[key] for r in alone)
        assert [folio.pairs[d.pair].stats[key] for d in legs] == [r.stats[key] for r in alone]
    assert folio.stats["dropped_bars"] > 0 and folio.stats["carried_bars"] > 0
    assert folio.stats["dropped_bars"] == sum(d.aligned.dropped for d in legs)


def portfolio_gross_reference(legs, params, config, max_gross):
    """Plain Python, docs/semantics.md "Portfolio": the pairs on the union of their bar times;
    at each time every pair's exit first, then the entries in the listed order, each entry's
    gross |qty_y|*fill_y + |qty_x|*fill_x capped at max_gross minus the entry gross the other
    pairs hold (skipped when less than a billionth of max_gross is left: rounding). Log
    prices, fixed sizing, no funding, no ruin. Returns per pair (equity per bar, [(entry ms,
    qty_y, qty_x)]) and the most gross held."""
    slip, fee = config.slippage_bps / 1e4, config.fee_bps / 1e4

    def fill(price, qty):
        return price * (1 + slip) if qty > 0 else price * (1 - slip)

    book = []
    for d in legs:
        a = d.aligned
        s = run_pair(a.close_y, a.close_x, params)
        book.append(
            dict(
                at={int(t): i for i, t in enumerate(a.ts)},
                oy=a.open_y.tolist(), cy=a.close_y.tolist(), ox=a.open_x.tolist(),
                cx=a.close_x.tolist(), beta=s.beta.tolist(),
                target=make_strategy(config).run(s.z, s.spread).tolist(),
                cash=config.capital, pos=0, qy=0.0, qx=0.0, gross=0.0, equity=[], trades=[],
            )
        )  # fmt: skip
    most = 0.0
    for when in sorted({t for b in book for t in b["at"]}):
        here = [(b, b["at"][when]) for b in book if when in b["at"]]
        for b, t in here:  # exits
            b["want"] = b["target"][t - 1] if t >= 1 else 0
            b["act"] = t >= 1 and b["want"] != (b["target"][t - 2] if t >= 2 else 0)
            if b["act"] and b["pos"] != 0:
                fy, fx = fill(b["oy"][t], -b["qy"]), fill(b["ox"][t], -b["qx"])
                cost = fee * (abs(b["qy"]) * fy + abs(b["qx"]) * fx)
                b["cash"] += b["qy"] * fy + b["qx"] * fx - cost
                b.update(pos=0, qy=0.0, qx=0.0, gross=0.0)
        for b, t in here:  # entries, in the listed order
            p = b["want"]
            left = max_gross - sum(o["gross"] for o in book if o is not b)
            if b["act"] and p != 0 and left > 1e-9 * max_gross:
                beta = b["beta"][t - 1]
                fy, fx = fill(b["oy"][t], p), fill(b["ox"][t], -p * beta)
                qy, qx = p * config.notional / fy, -p * beta * config.notional / fx
                gross = abs(qy) * fy + abs(qx) * fx
                if gross > left:
                    qy, qx = qy * left / gross, qx * left / gross
                gross = abs(qy) * fy + abs(qx) * fx
                b["cash"] -= qy * fy + qx * fx + fee * gross
                b.update(pos=p, qy=qy, qx=qx, gross=gross)
                b["trades"].append((when, qy, qx))
        most = max(most, sum(b["gross"] for b in book))
        for b, t in here:
            b["equity"].append(b["cash"] + b["qy"] * b["cy"][t] + b["qx"] * b["cx"][t])
    return [(b["equity"], b["trades"]) for b in book], most


@pytest.mark.parametrize("max_gross", [30_000.0, 45_000.0, 1e9])
def test_portfolio_gross_cap_bounds_the_sum_of_open_positions(max_gross):
    from engine.backtest_portfolio import run_portfolio

    legs = portfolio_legs()
    params = PairParams(hedge="kalman", zscore_window=40)
    config = StrategyConfig(
        entry=1.0, exit=0.0, stop=None, notional=1e4, capital=1e5, fee_bps=4.0,
        slippage_bps=1.0, max_gross=max_gross,
    )  # fmt: skip
    folio = run_portfolio(
        [(d, make_strategy(config)) for d in legs], params, Costs.from_config(config)
    )
    want, most = portfolio_gross_reference(legs, params, config, max_gross)
    assert most <= max_gross * (1 + 1e-12)
    for d, (equity, trades) in zip(legs, want, strict=True):
        got = folio.pairs[d.pair]
        np.testing.assert_allclose(got.equity.equity, equity, rtol=1e-9)
        t = got.trades
        assert t["entry_ts"].cast("int64").to_pylist() == [e for e, _, _ in trades]
        np.testing.assert_allclose(t["qty_y"].to_numpy(), [q for _, q, _ in trades], rtol=1e-9)
        np.testing.assert_allclose(t["qty_x"].to_numpy(), [q for _, _, q in trades], rtol=1e-9)
    alone = [backtest(d, params, config) for d in legs]
    if max_gross == 1e9:  # a cap never reached: each pair as alone
        assert all(folio.pairs[d.pair].stats == r.stats for d, r in zip(legs, alone, strict=True))
    else:  # the cap binds: less gross entered than the pairs alone enter
        assert sum(entry_gross(r.trades).sum() for r in folio.pairs.values()) < sum(
            entry_gross(r.trades).sum() for r in alone
        )


def entry_gross(trades):
    """|qty_y|*entry_fill_y + |qty_x|*entry_fill_x per trade (USDT)."""
    t = trades.to_pandas()
    return t.qty_y.abs() * t.entry_fill_y + t.qty_x.abs() * t.entry_fill_x
