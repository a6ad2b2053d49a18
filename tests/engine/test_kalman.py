"""Kalman hedge against pykalman's KalmanFilter.filter on the same model."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from kit import cointegrated_pair
from pykalman import KalmanFilter

from engine.errors import DataError
from engine.kalman import KalmanHedge, kalman_hedge

RTOL = 1e-9


def _innovation_atol(y: np.ndarray) -> float:
    """The innovation is y_t minus a prediction of the same size, so it can be tiny while both
    terms are of order |y|: its rounding error is absolute, about eps * |y|. Allow 64 of those.
    """
    return 64 * np.finfo(float).eps * float(np.max(np.abs(y)))


def _pykalman(y, x, delta, obs_var, init_var):
    """Oracle: filtered means, plus e_t and S_t from pykalman's own one-step predictions.

    pykalman's predicted state at t is the filtered state at t-1 (identity transition) with
    covariance P_{t-1|t-1} + Q, and the initial state itself at t = 0.
    """
    n = y.size
    q = delta / (1.0 - delta)
    kf = KalmanFilter(
        transition_matrices=np.eye(2),
        observation_matrices=np.stack([x, np.ones(n)], axis=1)[:, None, :],
        transition_covariance=q * np.eye(2),
        observation_covariance=np.array([[obs_var]]),
        initial_state_mean=np.zeros(2),
        initial_state_covariance=init_var * np.eye(2),
    )
    means, covs = kf.filter(y[:, None])
    pred_mean = np.vstack([np.zeros((1, 2)), means[:-1]])
    pred_cov = np.concatenate([init_var * np.eye(2)[None], covs[:-1] + q * np.eye(2)])
    h = np.stack([x, np.ones(n)], axis=1)
    e = y - np.einsum("ti,ti->t", h, pred_mean)
    s = np.einsum("ti,tij,tj->t", h, pred_cov, h) + obs_var
    return means[:, 0], means[:, 1], e, s


@pytest.mark.parametrize("delta", [1e-6, 1e-5, 1e-4, 1e-3])
@pytest.mark.parametrize("obs_var", [1e-4, 1e-3, 1e-2, 1e-1])
def test_matches_pykalman(delta: float, obs_var: float) -> None:
    y, x = cointegrated_pair(400, seed=int(-np.log10(delta) * 10 - np.log10(obs_var)))
    y, x = np.log(y), np.log(x)
    res = kalman_hedge(y, x, delta=delta, obs_var=obs_var, init_var=1.0)
    beta, alpha, e, s = _pykalman(y, x, delta, obs_var, 1.0)
    np.testing.assert_allclose(res.beta, beta, rtol=RTOL)
    np.testing.assert_allclose(res.alpha, alpha, rtol=RTOL)
    np.testing.assert_allclose(res.innovation, e, rtol=RTOL, atol=_innovation_atol(y))
    np.testing.assert_allclose(res.innovation_var, s, rtol=RTOL)


@pytest.mark.parametrize("init_var", [1e-2, 1.0, 10.0])
def test_matches_pykalman_raw_prices(init_var: float) -> None:
    y, x = cointegrated_pair(300, seed=5, x0=50.0)
    res = kalman_hedge(y, x, delta=1e-4, obs_var=1e-2, init_var=init_var)
    beta, alpha, e, s = _pykalman(y, x, 1e-4, 1e-2, init_var)
    np.testing.assert_allclose(res.beta, beta, rtol=RTOL)
    np.testing.assert_allclose(res.alpha, alpha, rtol=RTOL)
    np.testing.assert_allclose(res.innovation, e, rtol=RTOL, atol=_innovation_atol(y))
    np.testing.assert_allclose(res.innovation_var, s, rtol=RTOL)


def test_first_bar_updates_the_initial_state_directly() -> None:
    # With P0 = v*I and no Q before the first bar: S = v*(x^2 + 1) + r, K = v*[x, 1]/S.
    y, x, v, r = 3.0, 2.0, 0.5, 0.1
    res = kalman_hedge([y], [x], delta=1e-3, obs_var=r, init_var=v)
    s = v * (x * x + 1.0) + r
    np.testing.assert_allclose(res.innovation_var, [s], rtol=1e-15)
    np.testing.assert_allclose(res.beta, [v * x * y / s], rtol=1e-15)
    np.testing.assert_allclose(res.alpha, [v * y / s], rtol=1e-15)


@pytest.mark.parametrize("delta", [1e-6, 1e-3])
def test_incremental_is_bit_identical(delta: float) -> None:
    y, x = cointegrated_pair(500, seed=9)
    y, x = np.log(y), np.log(x)
    batch = kalman_hedge(y, x, delta=delta, obs_var=1e-3)
    live = KalmanHedge(delta=delta, obs_var=1e-3)
    steps = np.array([live.update(a, b) for a, b in zip(y, x, strict=True)])
    np.testing.assert_array_equal(steps[:, 0], batch.beta)
    np.testing.assert_array_equal(steps[:, 1], batch.alpha)
    np.testing.assert_array_equal(steps[:, 2], batch.innovation)
    np.testing.assert_array_equal(steps[:, 3], batch.innovation_var)
    assert live.beta == batch.beta[-1] and live.alpha == batch.alpha[-1]


def test_pickled_copy_continues_identically_and_reset_restarts() -> None:
    y, x = cointegrated_pair(200, seed=2)
    live = KalmanHedge()
    for a, b in zip(y[:100], x[:100], strict=True):
        live.update(a, b)
    clone = pickle.loads(pickle.dumps(live))
    for a, b in zip(y[100:], x[100:], strict=True):
        assert clone.update(a, b) == live.update(a, b)
    live.reset()
    first = kalman_hedge(y[:1], x[:1])
    assert live.update(y[0], x[0])[:2] == (first.beta[0], first.alpha[0])


def test_empty_input_gives_empty_result() -> None:
    res = kalman_hedge([], [])
    assert res.beta.shape == res.alpha.shape == res.innovation.shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"y": [1.0, 2.0], "x": [1.0]}, "same length"),
        ({"y": [1.0, np.nan], "x": [1.0, 2.0]}, "non-finite"),
        ({"y": [1.0, 2.0], "x": [np.inf, 2.0]}, "non-finite"),
        ({"y": [[1.0]], "x": [[1.0]]}, "1-D"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta": np.nan}, "delta"),
        ({"obs_var": 0.0}, "obs_var"),
        ({"obs_var": -1.0}, "obs_var"),
        ({"init_var": 0.0}, "init_var"),
        ({"init_var": np.inf}, "init_var"),
    ],
)
def test_bad_input_raises_data_error(kwargs: dict, match: str) -> None:
    args = {"y": [1.0, 2.0], "x": [1.0, 2.0], **kwargs}
    with pytest.raises(DataError, match=match):
        kalman_hedge(**args)


def test_bad_incremental_input_raises_data_error() -> None:
    with pytest.raises(DataError, match="delta"):
        KalmanHedge(delta=2.0)
    with pytest.raises(DataError, match="finite"):
        KalmanHedge().update(np.nan, 1.0)
