"""Rolling z-score, mean/std and OLS against pandas, a two-pass NumPy loop and statsmodels."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from kit import cointegrated_pair
from numpy.lib.stride_tricks import sliding_window_view

from engine.errors import DataError
from engine.rolling import (
    RollingOLS,
    RollingZScore,
    rolling_mean_std,
    rolling_ols,
    rolling_zscore,
)

OFFSET = 1e5


def _spread(n: int, seed: int, offset: float) -> np.ndarray:
    """A mean-reverting spread (AR(1), unit scale) sitting on ``offset``."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, 1.0, n)
    out = np.empty(n)
    out[0] = shocks[0]
    for i in range(1, n):
        out[i] = 0.97 * out[i - 1] + shocks[i]
    return offset + out


def _pandas_z(s: np.ndarray, window: int) -> np.ndarray:
    ps = pd.Series(s)
    roll = ps.rolling(window)
    return ((ps - roll.mean()) / roll.std()).to_numpy()


def _two_pass_z(s: np.ndarray, window: int) -> np.ndarray:
    """Independent oracle: mean and ddof=1 std of every window computed from scratch."""
    views = sliding_window_view(s, window)
    out = np.full(s.size, np.nan)
    out[window - 1 :] = (s[window - 1 :] - views.mean(axis=1)) / views.std(axis=1, ddof=1)
    return out


# Tolerance. With an offset of 1e5 every input already carries a rounding error of up to
# eps * 1e5 ~ 1.5e-11 (absolute), which no algorithm can undo; the z of a unit-scale spread
# therefore has an honest absolute uncertainty of order 1e-11, and a relative one that grows
# as z nears 0. The oracle is run on s - OFFSET, which is exact for values within a factor 2
# of the offset (Sterbenz), so it sees the very same numbers without the offset; comparing
# with rtol 1e-9 plus atol 1e-9 (a hundred times the input rounding) is then tight yet honest.
RTOL = 1e-9
ATOL = 1e-9


@pytest.mark.parametrize("window", [2, 5, 60, 500, 10_000])
@pytest.mark.parametrize("offset", [0.0, OFFSET])
def test_zscore_matches_pandas(window: int, offset: float) -> None:
    s = _spread(30_000, seed=window, offset=offset)
    z = rolling_zscore(s, window)
    expected = _pandas_z(s - offset, window)
    assert np.isnan(z[: window - 1]).all()
    assert np.isfinite(z[window - 1 :]).all()
    np.testing.assert_allclose(z, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("window", [2, 60, 10_000])
def test_zscore_random_walk_matches_two_pass(window: int) -> None:
    # A random walk around 1e5: the sliding algorithm must stay exact as the level drifts far
    # from where its sums were last recomputed. pandas' own online algorithm loses digits here
    # (its windows inherit rounding from much larger earlier variances), so the oracle is the
    # two-pass mean/std of every window, computed on the exactly de-offset series.
    rng = np.random.default_rng(window)
    s = OFFSET + np.cumsum(rng.normal(0.0, 1.0, 20_000))
    np.testing.assert_allclose(
        rolling_zscore(s, window), _two_pass_z(s - OFFSET, window), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("window", [3, 60, 1000])
def test_mean_std_match_pandas(window: int) -> None:
    s = _spread(5_000, seed=7, offset=OFFSET)
    mean, std = rolling_mean_std(s, window)
    ps = pd.Series(s - OFFSET)
    # the mean itself carries the offset: compare it after removing it again (exactly)
    np.testing.assert_allclose(
        mean - OFFSET, ps.rolling(window).mean().to_numpy(), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(std, ps.rolling(window).std().to_numpy(), rtol=RTOL)


def test_zero_std_gives_nan_z() -> None:
    s = np.r_[np.arange(10.0), np.full(10, 3.0), np.arange(5.0)]
    z = rolling_zscore(s, 4)
    # windows made only of the constant 3.0 end at indices 13..19
    assert np.isnan(z[13:20]).all()
    assert np.isfinite(z[3:13]).all() and np.isfinite(z[20:]).all()
    _, std = rolling_mean_std(s, 4)
    np.testing.assert_array_equal(std[13:20], 0.0)


@pytest.mark.parametrize("window", [2, 7, 60])
def test_incremental_zscore_is_bit_identical(window: int) -> None:
    s = _spread(2_000, seed=3, offset=OFFSET)
    live = RollingZScore(window)
    stepped = np.array([live.update(v) for v in s])
    np.testing.assert_array_equal(stepped, rolling_zscore(s, window))
    # state is plain arrays: a pickled copy continues identically
    clone = pickle.loads(pickle.dumps(live))
    assert clone.update(s[0]) == live.update(s[0])
    live.reset()
    np.testing.assert_array_equal(
        [live.update(v) for v in s[:100]], rolling_zscore(s[:100], window)
    )


def test_incremental_zscore_nan_blocks_its_window() -> None:
    s = _spread(200, seed=4, offset=0.0)
    with_nan = s.copy()
    with_nan[50] = np.nan
    live = RollingZScore(10)
    z = np.array([live.update(v) for v in with_nan])
    expected = _pandas_z(with_nan, 10)  # NaN while the NaN is inside the window
    np.testing.assert_array_equal(np.isnan(z), np.isnan(expected))
    np.testing.assert_allclose(z, expected, rtol=RTOL, atol=ATOL)


def _window_ols(y: np.ndarray, x: np.ndarray, end: int, window: int) -> np.ndarray:
    sl = slice(end - window + 1, end + 1)
    return sm.OLS(y[sl], sm.add_constant(x[sl])).fit().params  # [alpha, beta]


@pytest.mark.parametrize("window", [5, 30, 300])
@pytest.mark.parametrize("log", [True, False])
def test_rolling_ols_matches_statsmodels(window: int, log: bool) -> None:
    y, x = cointegrated_pair(2_000, seed=window)
    if log:
        y, x = np.log(y), np.log(x)
    beta, alpha = rolling_ols(y, x, window)
    assert np.isnan(beta[: window - 1]).all() and np.isnan(alpha[: window - 1]).all()
    ends = np.unique(np.r_[window - 1, np.arange(window - 1, y.size, 41), y.size - 1])
    expected = np.array([_window_ols(y, x, t, window) for t in ends])
    np.testing.assert_allclose(beta[ends], expected[:, 1], rtol=RTOL)
    np.testing.assert_allclose(alpha[ends], expected[:, 0], rtol=RTOL)


def test_rolling_ols_constant_x_is_nan() -> None:
    x = np.r_[np.arange(1.0, 6.0), np.full(6, 2.5), np.arange(3.0, 8.0)]
    y = 2.0 * x + 1.0
    beta, alpha = rolling_ols(y, x, 4)
    # windows made only of the constant 2.5 end at indices 8..10
    assert np.isnan(beta[8:11]).all() and np.isnan(alpha[8:11]).all()
    np.testing.assert_allclose(beta[11:], 2.0, rtol=RTOL)
    np.testing.assert_allclose(beta[3:8], 2.0, rtol=RTOL)


@pytest.mark.parametrize("window", [2, 25])
def test_incremental_ols_is_bit_identical(window: int) -> None:
    y, x = cointegrated_pair(600, seed=11)
    live = RollingOLS(window)
    stepped = np.array([live.update(a, b) for a, b in zip(y, x, strict=True)])
    beta, alpha = rolling_ols(y, x, window)
    np.testing.assert_array_equal(stepped[:, 0], beta)
    np.testing.assert_array_equal(stepped[:, 1], alpha)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rolling_zscore([1.0, np.nan, 2.0, 3.0], 2), "non-finite"),
        (lambda: rolling_zscore([1.0, np.inf, 2.0], 2), "non-finite"),
        (lambda: rolling_zscore([1.0, 2.0, 3.0], 4), "larger than the data"),
        (lambda: rolling_zscore([1.0, 2.0, 3.0], 1), "at least 2"),
        (lambda: rolling_zscore([1.0, 2.0, 3.0], 2.5), "integer"),
        (lambda: rolling_zscore(np.ones((3, 2)), 2), "1-D"),
        (lambda: rolling_mean_std([1.0, 2.0], 3), "larger than the data"),
        (lambda: rolling_ols([1.0, 2.0, 3.0], [1.0, 2.0], 2), "same length"),
        (lambda: rolling_ols([1.0, 2.0, 3.0], [1.0, np.nan, 2.0], 2), "non-finite"),
        (lambda: rolling_ols([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], 5), "larger than the data"),
        (lambda: RollingZScore(0), "at least 2"),
        (lambda: RollingOLS(3).update(np.nan, 1.0), "finite"),
    ],
)
def test_bad_input_raises_data_error(call, match: str) -> None:
    with pytest.raises(DataError, match=match):
        call()
