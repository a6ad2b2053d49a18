"""Pair step: hedges against pykalman/statsmodels, z against pandas, live == batch."""

from __future__ import annotations

import dataclasses
import pickle

import msgspec
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from kit import cointegrated_pair

from engine.errors import ConfigError, DataError
from engine.kalman import kalman_hedge
from engine.pairstep import (
    HEDGES,
    PairBank,
    PairParams,
    PairStepper,
    run_pair,
)
from engine.rolling import rolling_ols

RTOL = 1e-9
COMBOS = [
    (h, z) for h in HEDGES for z in ("rolling", "innovation") if z == "rolling" or h == "kalman"
]


def _params(hedge: str, zscore: str, price: str = "log", **kw) -> PairParams:
    return PairParams(
        price=price,
        hedge=hedge,
        zscore=zscore,
        ols_window=kw.get("ols", 40),
        zscore_window=kw.get("zw", 25),
        delta=1e-4,
        obs_var=1e-3,
    )


def _closes(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cointegrated_pair(n, seed=seed, x0=60.0)


def _pandas_z(spread: np.ndarray, window: int) -> np.ndarray:
    s = pd.Series(spread)
    return ((s - s.rolling(window).mean()) / s.rolling(window).std()).to_numpy()


# ---------------------------------------------------------------- hedges, spread and z


@pytest.mark.parametrize("price", ["log", "raw"])
@pytest.mark.parametrize(("hedge", "zscore"), COMBOS)
def test_run_pair_matches_oracles(price: str, hedge: str, zscore: str) -> None:
    cy, cx = _closes()
    params = _params(hedge, zscore, price)
    out = run_pair(cy, cx, params)
    py, px = (np.log(cy), np.log(cx)) if price == "log" else (cy, cx)
    np.testing.assert_array_equal(out.py, py)
    np.testing.assert_array_equal(out.px, px)
    w = params.ols_window
    if hedge == "kalman":
        ref = kalman_hedge(py, px, delta=1e-4, obs_var=1e-3)  # itself checked against pykalman
        np.testing.assert_array_equal(out.beta, ref.beta)
        np.testing.assert_array_equal(out.innovation, ref.innovation)
        np.testing.assert_array_equal(out.innovation_var, ref.innovation_var)
    elif hedge == "rolling_ols":
        beta, alpha = rolling_ols(py, px, w)
        np.testing.assert_array_equal(out.beta, beta)
        np.testing.assert_array_equal(out.alpha, alpha)
        assert out.innovation is None
    else:
        fit = sm.OLS(py[:w], sm.add_constant(px[:w])).fit().params
        assert np.isnan(out.beta[: w - 1]).all()
        np.testing.assert_allclose(out.beta[w - 1 :], fit[1], rtol=RTOL)
        np.testing.assert_allclose(out.alpha[w - 1 :], fit[0], rtol=RTOL)
    # spread from the hedge known at t (plain NumPy), z from pandas or e/sqrt(S)
    spread = py - out.beta * px - out.alpha
    np.testing.assert_allclose(out.spread, spread, rtol=RTOL, atol=1e-12 * np.abs(py).max())
    if zscore == "innovation":
        np.testing.assert_allclose(out.z, out.innovation / np.sqrt(out.innovation_var), rtol=RTOL)
    else:
        expected = _pandas_z(out.spread, params.zscore_window)
        np.testing.assert_array_equal(np.isnan(out.z), np.isnan(expected))
        np.testing.assert_allclose(out.z, expected, rtol=RTOL, atol=1e-9)


def test_static_ols_has_no_look_ahead() -> None:
    cy, cx = _closes(300)
    params = _params("static_ols", "rolling", ols=50)
    full = run_pair(cy, cx, params)
    head = run_pair(cy[:60], cx[:60], params)
    np.testing.assert_array_equal(head.beta, full.beta[:60])
    # the static fit equals the rolling fit of the first full window
    rolling = run_pair(cy, cx, dataclasses.replace(params, hedge="rolling_ols"))
    assert full.beta[49] == rolling.beta[49]


def test_z_warm_up_follows_the_spread() -> None:
    cy, cx = _closes(200)
    out = run_pair(cy, cx, _params("rolling_ols", "rolling", ols=30, zw=20))
    first_spread = 29
    assert np.isnan(out.spread[:first_spread]).all()
    assert np.isnan(out.z[: first_spread + 19]).all()
    assert np.isfinite(out.z[first_spread + 19 :]).all()


def test_windows_longer_than_data_give_nan() -> None:
    cy, cx = _closes(20)
    out = run_pair(cy, cx, _params("rolling_ols", "rolling", ols=50))
    assert np.isnan(out.beta).all() and np.isnan(out.z).all()


# ---------------------------------------------------------------- live == batch


@pytest.mark.parametrize("price", ["log", "raw"])
@pytest.mark.parametrize(("hedge", "zscore"), COMBOS)
def test_stepper_equals_batch_exactly(price: str, hedge: str, zscore: str) -> None:
    cy, cx = _closes(300, seed=3)
    params = _params(hedge, zscore, price)
    batch = run_pair(cy, cx, params)
    stepper = PairStepper(params)
    points = [stepper.step(a, b) for a, b in zip(cy, cx, strict=True)]
    for name in ("py", "px", "beta", "alpha", "spread", "z"):
        np.testing.assert_array_equal([getattr(p, name) for p in points], getattr(batch, name))
    if hedge == "kalman":
        np.testing.assert_array_equal([p.innovation for p in points], batch.innovation)
    else:
        assert all(np.isnan(p.innovation) for p in points)
    # pickled mid-run, the copy carries on identically; reset starts over
    stepper.reset()
    for a, b in zip(cy[:150], cx[:150], strict=True):
        stepper.step(a, b)
    clone = pickle.loads(pickle.dumps(stepper))
    rest = [clone.step(a, b).z for a, b in zip(cy[150:], cx[150:], strict=True)]
    np.testing.assert_array_equal(rest, batch.z[150:])


@pytest.mark.parametrize(("hedge", "zscore"), COMBOS)
def test_bank_equals_batch_per_pair(hedge: str, zscore: str) -> None:
    n_pairs, n_bars = 5, 200
    params = _params(hedge, zscore)
    pairs = [_closes(n_bars, seed=s) for s in range(n_pairs)]
    cy = np.stack([p[0] for p in pairs], axis=1)
    cx = np.stack([p[1] for p in pairs], axis=1)
    # pair 2 skips every third bar (it has no new aligned bar then)
    active = np.ones((n_bars, n_pairs), dtype=bool)
    active[::3, 2] = False
    bank = PairBank(params, n_pairs)
    z = np.full((n_bars, n_pairs), np.nan)
    beta = np.full((n_bars, n_pairs), np.nan)
    for t in range(n_bars):
        pts = bank.step_many(cy[t], cx[t], active[t])
        z[t], beta[t] = pts.z, pts.beta
        assert np.isnan(pts.z[~active[t]]).all()
    for i in range(n_pairs):
        rows = active[:, i]
        batch = run_pair(cy[rows, i], cx[rows, i], params)
        np.testing.assert_array_equal(z[rows, i], batch.z)
        np.testing.assert_array_equal(beta[rows, i], batch.beta)
    bank.reset(0)
    again = [bank.step_many(cy[t], cx[t], [True, False, False, False, False]) for t in range(60)]
    batch = run_pair(cy[:60, 0], cx[:60, 0], params)
    np.testing.assert_array_equal([p.beta[0] for p in again], batch.beta)


# ---------------------------------------------------------------- params and bad input


class _Kalman(msgspec.Struct, frozen=True):
    delta: float = 2e-5
    obs_var: float = 2e-3
    init_var: float = 0.5


class _Analytics(msgspec.Struct, frozen=True):
    price: str = "raw"
    hedge: str = "rolling_ols"
    kalman: _Kalman = _Kalman()
    ols_window: int = 120
    zscore: str = "rolling"
    zscore_window: int = 30


def test_params_from_config() -> None:
    p = PairParams.from_config(_Analytics())
    assert p == PairParams("raw", "rolling_ols", 2e-5, 2e-3, 0.5, 120, "rolling", 30)
    assert PairParams() == PairParams("log", "kalman", 1e-5, 1e-3, 1.0, 300, "rolling", 60)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"price": "sqrt"}, "price"),
        ({"hedge": "lasso"}, "hedge"),
        ({"zscore": "ewm"}, "zscore"),
        ({"hedge": "rolling_ols", "zscore": "innovation"}, "innovation"),
        ({"hedge": "static_ols", "zscore": "innovation"}, "innovation"),
        ({"ols_window": 1}, "ols_window"),
        ({"zscore_window": 2.5}, "zscore_window"),
        ({"delta": 1.5}, "delta"),
        ({"obs_var": 0.0}, "obs_var"),
    ],
)
def test_bad_params_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PairParams(**kwargs)


@pytest.mark.parametrize(
    ("cy", "cx", "price", "match"),
    [
        ([1.0, 2.0], [1.0], "log", "same length"),
        ([1.0, np.nan], [1.0, 2.0], "log", "close_y must be finite"),
        ([1.0, 2.0], [1.0, -2.0], "log", "close_x must be finite and > 0"),
        ([1.0, 2.0], [1.0, np.inf], "raw", "close_x must be finite"),
        ([[1.0]], [[1.0]], "log", "1-D"),
    ],
)
def test_run_pair_bad_input(cy, cx, price: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        run_pair(cy, cx, PairParams(price=price))


def test_stepper_and_bank_bad_input() -> None:
    with pytest.raises(DataError, match="close_y"):
        PairStepper(PairParams()).step(0.0, 1.0)
    bank = PairBank(PairParams(), 3)
    with pytest.raises(DataError, match=r"shape \(3,\)"):
        bank.step_many([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="boolean"):
        bank.step_many([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1, 0, 1])
    with pytest.raises(DataError, match="close_x"):
        bank.step_many([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])
    # a masked-out pair may carry NaN: it is not stepped
    bank.step_many([1.0, 2.0, 3.0], [1.0, np.nan, 3.0], [True, False, True])
    with pytest.raises(DataError, match="n_pairs"):
        PairBank(PairParams(), 0)
