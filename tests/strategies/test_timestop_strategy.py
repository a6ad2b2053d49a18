"""zscore_timestop: half-life against statsmodels on past data only, rules against a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from kit import cointegrated_pair

from engine.config import StrategyConfig
from engine.errors import ConfigError
from strategies import make_strategy
from strategies.timestop import TimeStopStrategy


def spread_and_z(n, seed, half_life):
    y, x = cointegrated_pair(n, seed=seed, half_life=half_life)
    spread = np.log(y) - 1.5 * np.log(x)
    spread[:5] = np.nan  # e.g. a hedge still warming up
    mean = np.array([np.nan] * 59 + [spread[i - 59 : i + 1].mean() for i in range(59, n)])
    std = np.array([np.nan] * 59 + [spread[i - 59 : i + 1].std(ddof=1) for i in range(59, n)])
    return spread, (spread - mean) / std


def ols_half_life(spread):
    """statsmodels OLS of diff on [1, lag] over the finite pairs: -ln 2 / ln(1 + slope)."""
    lag, cur = spread[:-1], spread[1:]
    ok = np.isfinite(lag) & np.isfinite(cur)
    if ok.sum() < 2:
        return math.inf
    fit = sm.OLS(cur[ok] - lag[ok], sm.add_constant(lag[ok])).fit()
    slope = fit.params[1]
    return -math.log(2.0) / math.log(1.0 + slope) if -1 < slope < 0 else math.inf


def reference_positions(z, spread, entry, exit_, stop, k):
    """zscore rules + time stop after k half-lives fitted at the entry bar on spread[: t + 1]."""
    pos, blocked, entry_bar, limit, out = 0, False, 0, math.inf, []
    for t, v in enumerate(z):
        if math.isnan(v):
            out.append(pos)
            continue
        if pos != 0:
            exit_rule = v >= -exit_ if pos == 1 else v <= exit_
            if exit_rule:
                pos = 0
            elif (stop is not None and abs(v) > stop) or t - entry_bar >= limit:
                pos, blocked = 0, True
        else:
            if blocked and abs(v) < entry:
                blocked = False
            if not blocked:
                if entry < v and (stop is None or v <= stop):
                    pos = -1
                elif v < -entry and (stop is None or v >= -stop):
                    pos = 1
                if pos != 0:
                    entry_bar, limit = t, k * ols_half_life(spread[: t + 1])
        out.append(pos)
    return np.array(out, dtype=np.int8)


def make(entry=2.0, exit_=0.0, stop=4.0, k=1.0):
    config = StrategyConfig(
        name="zscore_timestop", entry=entry, exit=exit_, stop=stop, max_hold_half_lives=k
    )
    return make_strategy(config)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_half_life_matches_statsmodels_on_past_data(seed):
    spread, z = spread_and_z(400, seed, half_life=15.0)
    strat = make()
    for t in range(spread.size):
        strat.step(z[t], spread[t])
        if t % 37 == 0 or t == spread.size - 1:
            expected = ols_half_life(spread[: t + 1])
            if math.isinf(expected):
                assert math.isinf(strat.half_life)
            else:
                np.testing.assert_allclose(strat.half_life, expected, rtol=1e-9)


def test_half_life_infinite_when_not_reverting():
    strat = make()
    trend = np.cumsum(np.linspace(0.1, 1.0, 50))  # explosive: slope of diff on level > 0
    strat.run(np.full(50, np.nan), trend)
    assert strat.half_life == math.inf


@pytest.mark.parametrize(
    ("k", "stop", "half_life"),
    [(0.5, 4.0, 30.0), (1.0, None, 30.0), (2.0, 3.0, 10.0), (0.25, None, 60.0)],
)
@pytest.mark.parametrize("seed", [0, 5])
def test_positions_match_reference_and_step(k, stop, half_life, seed):
    spread, z = spread_and_z(1500, seed, half_life)
    expected = reference_positions(z, spread, 1.5, 0.0, stop, k)
    strat = make(1.5, 0.0, stop, k)
    np.testing.assert_array_equal(strat.run(z, spread), expected)
    live = make(1.5, 0.0, stop, k)
    stepped = [live.step(a, b) for a, b in zip(z, spread, strict=True)]
    np.testing.assert_array_equal(stepped, expected)
    plain = make_strategy(StrategyConfig(name="zscore", entry=1.5, exit=0.0, stop=stop))
    if k <= 0.5:  # short holding limits must actually cut trades short
        assert np.count_nonzero(expected) < np.count_nonzero(plain.run(z))


def test_time_stop_blocks_re_entry_until_inside_entry():
    # the spread halves every bar: slope -0.5, half-life 1 bar, so 2.5 half-lives = 2.5 bars
    spread = 8.0 * 0.5 ** np.arange(11)
    z = np.array([np.nan] * 4 + [2.5, 2.5, 2.5, 1.0, 2.5, 1.0, 2.5])
    got = make(2.0, 0.0, None, 2.5).run(z, spread)
    np.testing.assert_array_equal(got, reference_positions(z, spread, 2.0, 0.0, None, 2.5))
    # entry at bar 4, time stop at bar 7 (held 3 >= 2.5), still blocked at 8, free at 9
    np.testing.assert_array_equal(got, [0, 0, 0, 0, -1, -1, -1, 0, 0, 0, -1])


@pytest.mark.parametrize("value", [0.0, math.inf, -1.0])
def test_bad_config(value):
    """The value is checked once, by StrategyConfig."""
    with pytest.raises(ValueError, match=r"max_hold_half_lives.*positive"):
        make(k=value)


def test_missing_max_hold_is_refused():
    with pytest.raises(ConfigError, match=r"max_hold_half_lives.*required"):
        make(k=None)


def test_reset():
    spread, z = spread_and_z(300, 1, 20.0)
    strat = make()
    first = strat.run(z, spread)
    strat.reset()
    assert isinstance(strat, TimeStopStrategy) and strat.position == 0
    np.testing.assert_array_equal(strat.run(z, spread), first)
