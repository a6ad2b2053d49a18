"""The zscore strategy against a plain-Python loop written from docs/semantics.md, live == batch."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from engine.config import StrategyConfig
from engine.errors import ConfigError, DataError
from strategies import REGISTRY, make_strategy
from strategies.zscore import ZScoreStrategy


def reference_positions(z, entry, exit_, stop):
    """docs/semantics.md "Strategy zscore", read literally, one bar at a time."""
    pos, blocked, out = 0, False, []
    for v in z:
        if math.isnan(v):  # no signal while z is NaN
            out.append(pos)
            continue
        if pos != 0:
            exit_rule = v >= -exit_ if pos == 1 else v <= exit_
            stop_rule = stop is not None and abs(v) > stop
            if exit_rule:  # exit and stop on the same bar: an exit, blocks nothing
                pos = 0
            elif stop_rule:
                pos, blocked = 0, True
        else:  # flat (a bar that exited does not come here: one action per bar)
            if blocked and abs(v) < entry:
                blocked = False
            if not blocked:
                if entry < v and (stop is None or v <= stop):
                    pos = -1
                elif v < -entry and (stop is None or v >= -stop):
                    pos = 1
        out.append(pos)
    return np.array(out, dtype=np.int8)


def z_series(n, seed, nan_every=0):
    rng = np.random.default_rng(seed)
    z = np.empty(n)
    z[0] = 0.0
    for i in range(1, n):
        z[i] = 0.9 * z[i - 1] + rng.normal(0.0, 1.2)
    z[:30] = np.nan  # warm-up
    if nan_every:
        z[30::nan_every] = np.nan
    return z


def strategy(entry, exit_, stop):
    return make_strategy(StrategyConfig(name="zscore", entry=entry, exit=exit_, stop=stop))


GRID = [
    (entry, exit_, stop)
    for entry in (1.0, 2.0)
    for exit_ in (0.0, 0.5, -0.5)
    for stop in (None, 2.5, 3.5)
    if stop is None or stop > entry
]


@pytest.mark.parametrize(("entry", "exit_", "stop"), GRID)
@pytest.mark.parametrize("seed", [0, 1])
def test_run_matches_reference_and_step(entry, exit_, stop, seed):
    z = z_series(3000, seed, nan_every=97 if seed else 0)
    expected = reference_positions(z, entry, exit_, stop)
    batch = strategy(entry, exit_, stop).run(z)
    assert batch.dtype == np.int8
    np.testing.assert_array_equal(batch, expected)
    live = strategy(entry, exit_, stop)
    stepped = np.array([live.step(v) for v in z], dtype=np.int8)
    np.testing.assert_array_equal(stepped, expected)
    assert live.position == expected[-1]
    assert np.count_nonzero(np.diff(expected)) > 10  # the grid exercises real trading


@pytest.mark.parametrize("cut", [1, 500, 1777])
def test_chunked_run_equals_one_run(cut):
    z = z_series(2500, 3)
    strat = strategy(2.0, 0.0, 3.0)
    chunked = np.concatenate([strat.run(z[:cut]), strat.run(z[cut:])])
    np.testing.assert_array_equal(chunked, strategy(2.0, 0.0, 3.0).run(z))
    strat.reset()
    np.testing.assert_array_equal(strat.run(z), strategy(2.0, 0.0, 3.0).run(z))


@pytest.mark.parametrize(
    ("z", "expected"),
    [
        # stop closes a long, blocks re-entry until |z| < entry, then re-entry is allowed
        ([-2.5, -4.5, -3.0, -2.5, -1.9, -2.5], [1, 0, 0, 0, 0, 1]),
        # a short stopped out stays blocked through NaN and on |z| == entry (strict <)
        ([2.5, 4.1, math.nan, 2.0, -2.0, 1.0, 3.0], [-1, 0, 0, 0, 0, 0, -1]),
        # long: z jumps above the stop: exit and stop hold together -> exit, not blocked
        ([-2.5, 4.5, 2.5], [1, 0, -1]),
        # short: z drops below -stop: exit, not blocked; no entry on the exit bar itself
        ([2.5, -4.5, -4.5, -2.5], [-1, 0, 0, 1]),
        # beyond the stop no entry, and no block either
        ([4.5, 3.0, -4.5, -3.0], [0, -1, 0, 1]),
        # thresholds are strict for entry and inclusive for exit and the stop band
        ([2.0, 4.0, 0.0, -2.0, -4.0, -0.5, 0.0], [0, -1, 0, 0, 1, 1, 0]),
        # NaN: no signal, the position is held
        ([math.nan, -2.5, math.nan, 0.5], [0, 1, 1, 0]),
    ],
)
def test_edge_cases(z, expected):
    z = np.array(z)
    np.testing.assert_array_equal(strategy(2.0, 0.0, 4.0).run(z), expected)
    np.testing.assert_array_equal(reference_positions(z, 2.0, 0.0, 4.0), expected)


def test_no_lookahead():
    z = z_series(1500, 4)
    base = strategy(2.0, 0.0, 3.0).run(z)
    rng = np.random.default_rng(9)
    for t in (100, 700, 1400):
        other = z.copy()
        other[t + 1 :] = rng.normal(0.0, 3.0, other.size - t - 1)
        np.testing.assert_array_equal(strategy(2.0, 0.0, 3.0).run(other)[: t + 1], base[: t + 1])


def test_registry_and_config():
    assert {"zscore", "zscore_timestop"} <= set(REGISTRY)
    config = StrategyConfig(name="zscore", entry=1.5, exit=0.2, stop=None)
    strat = make_strategy(config)
    assert isinstance(strat, ZScoreStrategy)
    assert strat.config is config


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"name": "momentum"}, "unknown strategy 'momentum'"),
        # the empty name is refused by StrategyConfig itself (tests/engine/test_config.py)
        ({"name": "nosuch"}, r"unknown strategy .nosuch.; expected a built-in one"),
    ],
)
def test_bad_name(fields, match):
    config = StrategyConfig(**{"name": "zscore", "entry": 2.0, "exit": 0.0, "stop": 4.0, **fields})
    with pytest.raises(ConfigError, match=match):
        make_strategy(config)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"entry": 0.0}, "entry: expected a positive"),
        ({"entry": math.nan}, "entry: expected a positive"),
        ({"entry": math.inf}, "entry: expected a positive"),
        ({"exit": 2.0}, "exit: expected < entry"),
        ({"exit": math.nan}, "exit: expected < entry"),
        ({"stop": 1.5}, "stop: expected > entry"),
        ({"stop": math.inf}, "stop: expected > entry"),
    ],
)
def test_bad_thresholds_are_refused_by_the_config(fields, match):
    """entry/exit/stop are checked once, by StrategyConfig; the strategy trusts them."""
    with pytest.raises(ValueError, match=match):
        StrategyConfig(**{"name": "zscore", "entry": 2.0, "exit": 0.0, "stop": 4.0, **fields})


def test_only_a_strategy_config_is_taken():
    with pytest.raises(TypeError, match=r"expected an engine\.config\.StrategyConfig"):
        make_strategy(SimpleNamespace(name="zscore", entry=-1.0, exit=0.0, stop=None))


def test_bad_input():
    strat = strategy(2.0, 0.0, None)
    with pytest.raises(DataError, match="1-D"):
        strat.run(np.zeros((3, 2)))
    with pytest.raises(DataError, match="lengths must match"):
        strat.run(np.zeros(5), np.zeros(4))
