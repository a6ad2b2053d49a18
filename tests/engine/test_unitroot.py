"""engine.unitroot against statsmodels' adfuller / coint / mackinnonp / mackinnoncrit (the oracle).

Contract: statistic to 1e-8 relative, p-value to 1e-6 absolute, the same chosen lag and nobs.
statsmodels' BLAS should run on one thread (``make test`` exports OPENBLAS_NUM_THREADS=1 and
OMP_NUM_THREADS=1) so its own figures do not vary between runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import statsmodels.api as sm
from kit import cointegrated_pair
from statsmodels.tsa import adfvalues, stattools
from statsmodels.tsa.tsatools import add_trend

from engine import stats, unitroot
from engine.errors import DataError, NumericalError

STAT_RTOL = 1e-8
P_ATOL = 1e-6


def ar1(n: int, phi: float, seed: int, sigma: float = 1.0) -> np.ndarray:
    """AR(1) s_t = phi*s_{t-1} + e_t, plain loop."""
    e = np.random.default_rng(seed).normal(0.0, sigma, n)
    s = np.empty(n)
    s[0] = e[0]
    for i in range(1, n):
        s[i] = phi * s[i - 1] + e[i]
    return s


SERIES: dict[str, Callable[[int, int], np.ndarray]] = {
    "random_walk": lambda n, seed: np.cumsum(np.random.default_rng(seed).normal(size=n)),
    "ar1_0.5": lambda n, seed: ar1(n, 0.5, seed),
    "near_unit_0.99": lambda n, seed: ar1(n, 0.99, seed),
    "near_unit_0.999": lambda n, seed: ar1(n, 0.999, seed),
    "trending": lambda n, seed: np.cumsum(ar1(n, 0.8, seed)),
    "drift": lambda n, seed: np.cumsum(0.3 + ar1(n, 0.2, seed)),
    "log_prices": lambda n, seed: 4.6 + np.cumsum(ar1(n, 0.1, seed, sigma=1e-3)),
    "offset_prices": lambda n, seed: 1e4 + 50.0 * np.cumsum(ar1(n, 0.1, seed)) / n,
}


def sm_adf(x: np.ndarray, **kwargs) -> tuple:
    """statsmodels ``adfuller``: (stat, pvalue, usedlag, nobs, crit)."""
    return stattools.adfuller(x.copy(), result_object=False, **kwargs)[:5]


def sm_coint(y: np.ndarray, x: np.ndarray, **kwargs) -> tuple[float, float, np.ndarray, int]:
    """statsmodels ``coint`` and the lag its adfuller of the residuals chose."""
    stat, pvalue, crit = stattools.coint(y.copy(), x.copy(), **kwargs)
    trend = kwargs.get("trend", "c")
    design = x[:, None] if trend == "n" else add_trend(x[:, None], trend)
    resid = sm.OLS(y, design).fit().resid
    lag = stattools.adfuller(
        resid,
        maxlag=kwargs.get("maxlag"),
        autolag=kwargs.get("autolag", "aic"),
        regression="n",
        result_object=False,
    )[2]
    return stat, pvalue, crit, lag


def assert_adf_matches(x: np.ndarray, **kwargs) -> stats.TestResult:
    stat, pvalue, lag, nobs, crit = sm_adf(x, **kwargs)
    got = stats.adf(x, **kwargs)
    np.testing.assert_allclose(got.stat, stat, rtol=STAT_RTOL)
    np.testing.assert_allclose(got.pvalue, pvalue, rtol=0, atol=P_ATOL)
    assert (got.lags, got.nobs) == (lag, nobs)
    np.testing.assert_allclose(list(got.crit.values()), list(crit.values()), rtol=1e-12)
    return got


def assert_coint_matches(y: np.ndarray, x: np.ndarray, **kwargs) -> None:
    stat, pvalue, crit, lag = sm_coint(y, x, **kwargs)
    got = stats.coint(y, x, **kwargs)
    np.testing.assert_allclose(got.stat, stat, rtol=STAT_RTOL)
    np.testing.assert_allclose(got.pvalue, pvalue, rtol=0, atol=P_ATOL)
    np.testing.assert_allclose(list(got.crit.values()), crit, rtol=1e-12)
    ntrend, maxlag, method = unitroot.kernel_args(
        "coint", kwargs.get("trend", "c"), kwargs.get("maxlag"), kwargs.get("autolag", "aic")
    )
    assert unitroot.coint_kernel(y, x, ntrend, maxlag, method)[2] == lag


# --------------------------------------------------------------------------- MacKinnon


@pytest.mark.parametrize("trend", unitroot.TRENDS)
def test_mackinnon_p_and_crit_match_statsmodels(trend: str) -> None:
    code = unitroot.TRENDS.index(trend)
    for n_series in range(1, 7):
        for stat in np.linspace(-30.0, 4.0, 341):
            expected = adfvalues.mackinnonp(stat, regression=trend, N=n_series)
            got = unitroot.mackinnon_p(stat, code, n_series)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    for n_series in range(1, 13 if trend != "n" else 2):
        for nobs in (10, 99, 8639):
            expected = adfvalues.mackinnoncrit(N=n_series, regression=trend, nobs=nobs)
            got = unitroot.mackinnon_crit(code, n_series, nobs)
            np.testing.assert_allclose(got, expected, rtol=1e-14)


@pytest.mark.parametrize("n", [10, 11, 99, 100, 101, 1600, 8640, 20_000])
def test_default_maxlag_is_statsmodels(n: int) -> None:
    x = SERIES["random_walk"](n, 0)
    assert stats.adf(x, autolag=None).lags == sm_adf(x, autolag=None)[2]


# --------------------------------------------------------------------------- ADF


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [100, 400, 2000])
@pytest.mark.parametrize("kind", list(SERIES))
def test_adf_matches_adfuller(kind: str, n: int, seed: int) -> None:
    assert_adf_matches(SERIES[kind](n, seed))


@pytest.mark.parametrize("kind", ["random_walk", "near_unit_0.999", "log_prices"])
def test_adf_matches_adfuller_on_long_series(kind: str) -> None:
    assert_adf_matches(SERIES[kind](20_000, 3))


@pytest.mark.parametrize("n", range(10, 31))
def test_adf_matches_adfuller_near_the_minimum(n: int) -> None:
    for seed in range(3):
        for kind in ("random_walk", "ar1_0.5", "log_prices"):
            assert_adf_matches(SERIES[kind](n, seed))


@pytest.mark.parametrize("regression", unitroot.TRENDS)
@pytest.mark.parametrize("autolag", ["AIC", "BIC", "t-stat", None])
def test_adf_other_arguments_match_adfuller(regression: str, autolag: str | None) -> None:
    for kind in ("random_walk", "ar1_0.5", "trending"):
        x = SERIES[kind](300, 5)
        assert_adf_matches(x, regression=regression, autolag=autolag)
        assert_adf_matches(x, regression=regression, autolag=autolag, maxlag=4)


def test_adf_lag_choice_matches_over_many_seeds() -> None:
    """Many short series: every close call of the AIC search must go the same way."""
    chosen = set()
    for seed in range(300):
        x = SERIES["random_walk" if seed % 2 else "ar1_0.5"](60 + seed % 90, seed)
        chosen.add(assert_adf_matches(x).lags)
    assert len(chosen) > 5  # the search did not always land on one lag


def _aics(x: np.ndarray) -> np.ndarray:
    """statsmodels' AIC of every candidate lag of ``adfuller(x)``'s search."""
    store = stattools.adfuller(x, store=True, regresults=True, result_object=False)[-1]
    results = store.autolag_results
    return np.array([results[k].aic for k in sorted(results)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adf_near_tie_of_two_lags_matches(seed: int) -> None:
    """Bisect x + theta*z until statsmodels' two best lags differ by < 1e-9 (relative) in AIC."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=200))
    z = np.cumsum(rng.normal(size=200))
    thetas = np.linspace(0.0, 2.0, 41)
    best = [int(np.argmin(_aics(x + t * z))) for t in thetas]
    k = next(i for i in range(len(best) - 1) if best[i] != best[i + 1])
    lo, hi = thetas[k], thetas[k + 1]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        aic = _aics(x + mid * z)
        first, second = np.sort(aic)[:2]
        if (second - first) < 1e-9 * abs(first):
            break
        if int(np.argmin(aic)) == best[k]:
            lo = mid
        else:
            hi = mid
    assert (second - first) < 1e-9 * abs(first)
    assert_adf_matches(x + mid * z)


# --------------------------------------------------------------------------- coint


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [100, 1000, 3000])
@pytest.mark.parametrize("half_life", [3.0, 30.0, 1e6])
def test_coint_matches_statsmodels_on_cointegrated_pairs(
    half_life: float, n: int, seed: int
) -> None:
    y, x = cointegrated_pair(n, half_life=half_life, seed=seed)
    assert_coint_matches(np.log(y), np.log(x))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [100, 1000, 3000])
def test_coint_matches_statsmodels_on_independent_walks(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = 3.0 + np.cumsum(rng.normal(0.0, 1e-3, n))
    x = 4.6 + np.cumsum(rng.normal(0.0, 1e-3, n))
    assert_coint_matches(y, x)
    assert_coint_matches(x, y)


def test_coint_matches_statsmodels_on_raw_prices_and_trends() -> None:
    y, x = cointegrated_pair(1500, half_life=20.0, seed=7)
    assert_coint_matches(y, x)
    drift = SERIES["drift"](1500, 8)
    assert_coint_matches(drift + SERIES["ar1_0.5"](1500, 9), drift)
    for trend in ("ct", "ctt"):
        assert_coint_matches(np.log(y), np.log(x), trend=trend)
    walk = SERIES["random_walk"](1500, 10)  # no offset: without a constant, log prices of
    assert_coint_matches(0.5 * walk + SERIES["ar1_0.5"](1500, 11), walk, trend="n")  # ~R2=1
    for autolag in ("bic", "t-stat", None):
        assert_coint_matches(np.log(y), np.log(x), autolag=autolag, maxlag=6)


@pytest.mark.parametrize("n", [8640, 20_000])
def test_coint_matches_statsmodels_at_market_length(n: int) -> None:
    y, x = cointegrated_pair(n, half_life=50.0, seed=11)
    assert_coint_matches(np.log(y), np.log(x))


@pytest.mark.parametrize("n", range(10, 31))
def test_coint_matches_statsmodels_near_the_minimum(n: int) -> None:
    """Short pairs, including the saturated searches of even n (statsmodels reports 0)."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = np.cumsum(rng.normal(size=n))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # statsmodels' log(0), x/0
            assert_coint_matches(x + rng.normal(size=n), x)


# --------------------------------------------------------------------------- batch


def test_coint_pairs_equals_statsmodels_per_pair_in_both_orders() -> None:
    rng = np.random.default_rng(4)
    n = 700
    common = np.cumsum(rng.normal(0.0, 1e-3, n))
    cols = np.array(
        [4.0 + k * 0.3 + (1 + 0.2 * k) * common + ar1(n, 0.9, k, 1e-3) for k in range(3)]
        + [2.0 + np.cumsum(rng.normal(0.0, 1e-3, n))]
    )
    pairs = np.array([(i, j) for i in range(4) for j in range(4) if i != j])
    batch = unitroot.coint_pairs(cols, pairs)
    assert (batch.status == unitroot.OK).all()
    for (i, j), stat, pvalue in zip(pairs, batch.stat, batch.pvalue, strict=True):
        expected = stattools.coint(cols[i], cols[j])
        np.testing.assert_allclose(stat, expected[0], rtol=STAT_RTOL)
        np.testing.assert_allclose(pvalue, expected[1], rtol=0, atol=P_ATOL)


def test_coint_pairs_reports_untestable_pairs_by_status() -> None:
    walk = np.cumsum(np.random.default_rng(0).normal(size=200))
    cols = np.array([walk, 2.0 * walk + 1.0, np.full(200, 3.0)])
    batch = unitroot.coint_pairs(cols, np.array([[0, 1], [2, 0], [0, 2]]))
    assert batch.status.tolist() == [unitroot.COLLINEAR, unitroot.Y_CONSTANT, unitroot.X_CONSTANT]
    assert np.isnan(batch.stat).all() and np.isnan(batch.pvalue).all()
    assert "collinear" in unitroot.failure(unitroot.COLLINEAR, "coint", 200, 0, -1)


@pytest.mark.parametrize(
    ("cols", "pairs", "text"),
    [
        (np.ones(10), [[0, 0]], "2-D"),
        (np.ones((2, 10)), [[0, 2]], "indices"),
        (np.ones((2, 10)), [0, 1], "(m, 2)"),
        (np.array([[1.0, np.nan] * 5, [1.0, 2.0] * 5]), [[0, 1]], "NaN"),
        (np.ones((2, 9)), [[0, 1]], "at least 10 bars"),
    ],
)
def test_coint_pairs_refuses_bad_input(cols: np.ndarray, pairs: list, text: str) -> None:
    with pytest.raises((DataError, NumericalError)) as info:
        unitroot.coint_pairs(cols, np.array(pairs))
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"regression": "x"}, "trend/regression"),
        ({"autolag": "hqic"}, "autolag"),
        ({"maxlag": -1}, "maxlag"),
        ({"maxlag": 2.5}, "maxlag"),
    ],
)
def test_adf_refuses_bad_arguments(kwargs: dict, text: str) -> None:
    with pytest.raises(DataError) as info:
        stats.adf(SERIES["random_walk"](100, 0), **kwargs)
    assert text in str(info.value)


@pytest.mark.parametrize("n", range(10, 31))
def test_coint_of_short_offset_pairs_matches_adfuller_of_exact_residuals(n: int) -> None:
    """Short log-price pairs: statsmodels' first-stage OLS (pinv of [x, 1], x ~ 4.6 +- 1e-3)
    rounds the residuals by ~1e-10 relative, which its ADF can amplify past 1e-8. Ours are the
    exact residuals (extended-precision oracle here), so the oracle is adfuller of those."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = 4.6 + np.cumsum(rng.normal(0.0, 1e-3, n))
        y = 0.2 + 1.5 * x + ar1(n, 0.9, seed + 10, 2e-3)
        xl, yl = x.astype(np.longdouble), y.astype(np.longdouble)
        xc, yc = xl - xl.mean(), yl - yl.mean()
        resid = (yc - (xc @ yc) / (xc @ xc) * xc).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # statsmodels' log(0), x/0
            stat, _, lag, _, _ = sm_adf(resid, regression="n")
        got = stats.coint(y, x)
        np.testing.assert_allclose(got.stat, stat, rtol=STAT_RTOL)
        expected_p = adfvalues.mackinnonp(stat, regression="c", N=2)
        np.testing.assert_allclose(got.pvalue, expected_p, rtol=0, atol=P_ATOL)
        assert unitroot.coint_kernel(y, x, 1, -1, 1)[2] == lag


def exact_recurrence(n: int) -> np.ndarray:
    x = np.zeros(n)
    x[1] = 2.0
    for i in range(2, n):
        x[i] = 0.5 * x[i - 1] + 0.3 * x[i - 2] + 1.0
    return x


@pytest.mark.parametrize(
    "call",
    [
        lambda: stats.adf(exact_recurrence(200)),
        lambda: stats.adf(exact_recurrence(200), autolag="t-stat"),
        lambda: stats.adf(np.arange(100.0)),
        lambda: stats.coint(np.arange(100.0) ** 2, np.arange(100.0)),
    ],
    ids=["recurrence", "recurrence-tstat", "line", "coint-parabola"],
)
def test_deterministic_series_are_refused(call: Callable[[], object]) -> None:
    with pytest.raises(NumericalError) as info:
        call()
    assert "deterministic series" in str(info.value)
