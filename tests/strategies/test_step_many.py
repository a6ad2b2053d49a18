"""Strategy.step_many (many pairs per call, live) against one Strategy per pair fed bar by bar."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import StrategyConfig
from engine.errors import DataError
from strategies import make_strategy

CONFIGS = [
    StrategyConfig(name="zscore", entry=1.0, exit=0.0, stop=2.5),
    StrategyConfig(name="zscore", entry=1.5, exit=0.2, stop=None),
    StrategyConfig(name="zscore_timestop", entry=1.0, exit=0.0, stop=3.0, max_hold_half_lives=1.5),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.name}-{c.entry}")
@pytest.mark.parametrize("seed", [0, 3])
def test_step_many_equals_one_strategy_per_pair(config, seed):
    rng = np.random.default_rng(seed)
    n_pairs, n_bars = 7, 400
    spread = np.cumsum(rng.normal(size=(n_bars, n_pairs)), axis=0) * 0.1
    spread -= 0.05 * np.cumsum(spread, axis=0) / np.arange(1, n_bars + 1)[:, None]
    z = rng.normal(scale=1.6, size=(n_bars, n_pairs))
    z[rng.random(z.shape) < 0.05] = np.nan
    masks = rng.random((n_bars, n_pairs)) < 0.8
    bank = make_strategy(config)
    states = bank.new_states(n_pairs)
    singles = [make_strategy(config) for _ in range(n_pairs)]
    got = np.empty((n_bars, n_pairs), dtype=np.int8)
    want = np.empty_like(got)
    for t in range(n_bars):
        got[t] = bank.step_many(states, z[t], spread[t], masks[t])
        for i, s in enumerate(singles):
            want[t, i] = s.step(z[t, i], spread[t, i]) if masks[t, i] else s.position
    np.testing.assert_array_equal(got, want)
    assert np.any(want != 0)
    for i, s in enumerate(singles):
        np.testing.assert_array_equal(states[i], s._state)


def test_step_many_bad_inputs():
    strat = make_strategy(CONFIGS[0])
    states = strat.new_states(3)
    z = np.zeros(3)
    ok = np.ones(3, dtype=bool)
    with pytest.raises(DataError, match="states"):
        strat.step_many(np.zeros((3, 5)), z, z, ok)
    with pytest.raises(DataError, match="states"):
        strat.step_many(states.T.copy()[:, :3], z, z, ok)
    with pytest.raises(DataError, match="z has 3"):
        strat.step_many(states, z, np.zeros(4), ok)
    with pytest.raises(DataError, match="mask"):
        strat.step_many(states, z, z, np.ones(3))
    with pytest.raises(DataError, match="mask"):
        strat.step_many(states, z, z, np.ones(2, dtype=bool))
