"""engine.stats against independent oracles: statsmodels (OLS, adfuller, coint), pandas (corr),
numpy least squares and plain-Python loops written here."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from kit import cointegrated_pair
from statsmodels.tsa import stattools

import engine.rolling
from engine import stats
from engine.errors import DataError, NumericalError

SEEDS = [0, 1, 2]
RTOL = 1e-9


def ar1(n: int, phi: float, seed: int, sigma: float = 1.0) -> np.ndarray:
    """AR(1) s_t = phi*s_{t-1} + e_t, plain loop."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, sigma, n)
    s = np.empty(n)
    s[0] = e[0]
    for i in range(1, n):
        s[i] = phi * s[i - 1] + e[i]
    return s


def random_walk(n: int, seed: int) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=n))


def trending(n: int, seed: int) -> np.ndarray:
    """A walk whose steps are positively autocorrelated (momentum): Hurst above 0.5."""
    return np.cumsum(ar1(n, 0.8, seed))


SERIES: dict[str, Callable[[int, int], np.ndarray]] = {
    "random_walk": random_walk,
    "ar1": lambda n, seed: ar1(n, 0.9, seed),
    "white": lambda n, seed: ar1(n, 0.0, seed),
    "trending": trending,
    "offset_prices": lambda n, seed: 1e4 + 50.0 * np.cumsum(ar1(n, 0.1, seed)) / n,
}


def numpy_fit(y: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of y on [1, columns...]: (coefficients, standard errors)."""
    design = np.column_stack([np.ones_like(y), *columns])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    sigma2 = resid @ resid / (y.size - design.shape[1])
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
    return coef, se


# --------------------------------------------------------------------------- OLS hedge


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("beta", "alpha", "n"), [(1.5, 0.2, 50), (0.3, -4.0, 1000), (-2.0, 7, 3)])
def test_ols_hedge_matches_statsmodels(seed: int, beta: float, alpha: float, n: int) -> None:
    rng = np.random.default_rng(seed)
    x = 100.0 + np.cumsum(rng.normal(size=n))
    y = alpha + beta * x + rng.normal(0.0, 0.5, n)
    expected_alpha, expected_beta = sm.OLS(y, sm.add_constant(x)).fit().params
    got_beta, got_alpha = stats.ols_hedge(y, x)
    np.testing.assert_allclose([got_beta, got_alpha], [expected_beta, expected_alpha], rtol=RTOL)
    assert isinstance(got_beta, float) and isinstance(got_alpha, float)


def test_ols_hedge_recovers_the_kit_pair_in_log_prices() -> None:
    y, x = cointegrated_pair(5000, beta=1.5, alpha=0.2, half_life=5.0, seed=3)
    beta, _ = stats.ols_hedge(np.log(y), np.log(x))
    assert abs(beta - 1.5) < 0.05


# --------------------------------------------------------------------------- ADF


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", list(SERIES))
def test_adf_matches_adfuller_defaults(kind: str, seed: int) -> None:
    s = SERIES[kind](400, seed)
    expected = stattools.adfuller(s.copy(), result_object=False)
    got = stats.adf(s)
    np.testing.assert_allclose([got.stat, got.pvalue], expected[:2], rtol=RTOL)
    assert (got.lags, got.nobs) == (expected[2], expected[3])
    assert got.crit.keys() == expected[4].keys()
    np.testing.assert_allclose(list(got.crit.values()), list(expected[4].values()), rtol=RTOL)
    assert isinstance(got.stat, float) and isinstance(got.pvalue, float)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lags", [0, 1, 4])
@pytest.mark.parametrize("kind", ["random_walk", "ar1", "trending"])
def test_adf_statistic_is_the_t_value_of_the_adf_regression(
    kind: str, lags: int, seed: int
) -> None:
    """ds_t = a + g*s_{t-1} + sum_i c_i*ds_{t-i}: the ADF statistic is g / se(g)."""
    s = SERIES[kind](300, seed)
    ds = np.diff(s)
    target = ds[lags:]
    level = s[lags:-1]
    lagged = [ds[lags - i : -i] for i in range(1, lags + 1)]
    coef, se = numpy_fit(target, level, *lagged)
    got = stats.adf(s, maxlag=lags, autolag=None)
    np.testing.assert_allclose(got.stat, coef[1] / se[1], rtol=1e-8)
    assert (got.lags, got.nobs) == (lags, s.size - lags - 1)


def test_adf_separates_stationary_from_random_walk() -> None:
    assert stats.adf(ar1(2000, 0.5, 0)).pvalue < 0.01
    assert stats.adf(random_walk(2000, 0)).pvalue > 0.05


# --------------------------------------------------------------------------- coint


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("half_life", [3.0, 30.0, 1e6])
def test_coint_matches_statsmodels(seed: int, half_life: float) -> None:
    y, x = cointegrated_pair(400, half_life=half_life, seed=seed)
    ly, lx = np.log(y), np.log(x)
    stat, pvalue, crit = stattools.coint(ly.copy(), lx.copy())
    got = stats.coint(ly, lx)
    np.testing.assert_allclose([got.stat, got.pvalue], [stat, pvalue], rtol=RTOL)
    np.testing.assert_allclose([got.crit["1%"], got.crit["5%"], got.crit["10%"]], crit, rtol=RTOL)
    assert got.nobs == 400 and got.lags is None


def test_coint_finds_the_cointegrated_pair() -> None:
    y, x = cointegrated_pair(3000, half_life=10.0, seed=4)
    assert stats.coint(np.log(y), np.log(x)).pvalue < 0.01
    walk = 4.0 + np.cumsum(np.random.default_rng(9).normal(0, 0.001, 3000))
    assert stats.coint(walk, np.log(x)).pvalue > 0.05


# --------------------------------------------------------------------------- half-life


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("true_half_life", [1.5, 10.0, 60.0])
def test_half_life_matches_numpy_ar1_fit(seed: int, true_half_life: float) -> None:
    s = 3.0 + ar1(2000, 0.5 ** (1.0 / true_half_life), seed, sigma=0.01)
    coef, _ = numpy_fit(np.diff(s), s[:-1])
    expected = -math.log(2.0) / math.log(1.0 + coef[1])
    got = stats.half_life(s)
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    assert 0.5 * true_half_life < got < 2.0 * true_half_life


@pytest.mark.parametrize(
    ("name", "series"),
    [
        ("explosive", 1.01 ** np.arange(200.0)),
        ("trend", np.arange(200.0) ** 2),
        (
            "oscillating",
            np.where(np.arange(200) % 2 == 0, 1.0, -1.0) * (1.0 + 0.01 * np.arange(200)),
        ),
    ],
)
def test_half_life_is_inf_when_not_reverting(name: str, series: np.ndarray) -> None:
    coef, _ = numpy_fit(np.diff(series), series[:-1])
    assert coef[1] >= 0.0 or coef[1] <= -1.0, name
    assert stats.half_life(series) == math.inf


@pytest.mark.parametrize("seed", SEEDS)
def test_half_life_of_a_random_walk_is_never_negative_or_nan(seed: int) -> None:
    for n in (5, 50, 500):
        value = stats.half_life(random_walk(n, seed))
        assert value > 0.0 and not math.isnan(value)


# --------------------------------------------------------------------------- Hurst


def hurst_oracle(s: np.ndarray, max_lag: int) -> float:
    """Plain loop: slope of log std of lagged differences on log lag."""
    log_lags, log_tau = [], []
    for lag in range(2, max_lag + 1):
        diffs = [s[i + lag] - s[i] for i in range(len(s) - lag)]
        log_lags.append(math.log(lag))
        log_tau.append(math.log(float(np.std(diffs))))
    return float(np.polyfit(log_lags, log_tau, 1)[0])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("max_lag", [3, 20, 50])
@pytest.mark.parametrize("kind", ["random_walk", "ar1", "trending"])
def test_hurst_matches_plain_loop(kind: str, max_lag: int, seed: int) -> None:
    s = SERIES[kind](1500, seed)
    np.testing.assert_allclose(stats.hurst(s, max_lag=max_lag), hurst_oracle(s, max_lag), rtol=RTOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_hurst_ranks_reverting_random_and_trending(seed: int) -> None:
    assert 0.4 < stats.hurst(random_walk(5000, seed)) < 0.6
    assert stats.hurst(ar1(5000, 0.5, seed)) < 0.3
    assert stats.hurst(trending(5000, seed)) > 0.65


# --------------------------------------------------------------------------- correlation


def _closes(k: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    common = np.cumsum(rng.normal(0, 0.001, n))
    return {
        f"S{i}USDT": (10.0 + 90 * i)
        * np.exp(rng.uniform(0, 2) * common + np.cumsum(rng.normal(0, 0.001, n)))
        for i in range(k)
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "n"), [(1, 3), (2, 50), (6, 500)])
def test_log_return_corr_matches_pandas(seed: int, k: int, n: int) -> None:
    closes = _closes(k, n, seed)
    expected = pd.DataFrame(closes).apply(np.log).diff().corr()
    symbols, matrix = stats.log_return_corr(closes)
    assert symbols == tuple(closes)
    np.testing.assert_allclose(matrix, expected.to_numpy(), rtol=RTOL, atol=1e-15)
    names, from_array = stats.log_return_corr(np.column_stack(list(closes.values())), symbols)
    assert names == symbols
    np.testing.assert_allclose(from_array, matrix, rtol=0, atol=0)


def test_log_return_corr_is_of_returns_not_levels() -> None:
    """Two independent trending walks: levels correlate strongly, returns do not."""
    n = 2000
    t = np.arange(n)
    rng = np.random.default_rng(5)
    a = 100 * np.exp(0.0005 * t + np.cumsum(rng.normal(0, 0.001, n)))
    b = 50 * np.exp(0.0005 * t + np.cumsum(rng.normal(0, 0.001, n)))
    assert np.corrcoef(a, b)[0, 1] > 0.9
    _, matrix = stats.log_return_corr({"A": a, "B": b})
    assert abs(matrix[0, 1]) < 0.1


def test_log_return_corr_of_a_flat_symbol_is_nan_like_pandas() -> None:
    closes = _closes(3, 100, 0)
    closes["FLATUSDT"] = np.full(100, 7.0)
    expected = pd.DataFrame(closes).apply(np.log).diff().corr().to_numpy()
    _, matrix = stats.log_return_corr(closes)
    np.testing.assert_allclose(matrix, expected, rtol=RTOL, atol=1e-15)
    assert np.isnan(matrix[3]).all() and np.isnan(matrix[:, 3]).all()


# --------------------------------------------------------------------------- screen


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("price", ["log", "raw"])
def test_screen_pairs_rows_match_oracles(seed: int, price: str) -> None:
    y, x = cointegrated_pair(400, half_life=8.0, seed=seed)
    rng = np.random.default_rng(seed + 100)
    closes = {"YUSDT": y, "XUSDT": x, "ZUSDT": 30.0 * np.exp(np.cumsum(rng.normal(0, 0.002, 400)))}
    rows = stats.screen_pairs(closes, min_obs=100, price=price)
    assert len(rows) == 3
    assert [r.pvalue for r in rows] == sorted(r.pvalue for r in rows)
    assert {frozenset((r.y, r.x)) for r in rows} == {
        frozenset(p) for p in (("YUSDT", "XUSDT"), ("YUSDT", "ZUSDT"), ("XUSDT", "ZUSDT"))
    }
    corr = pd.DataFrame(closes).apply(np.log).diff().corr()
    for row in rows:
        py, px = closes[row.y], closes[row.x]
        if price == "log":
            py, px = np.log(py), np.log(px)
        forward = stattools.coint(py, px)
        backward = stattools.coint(px, py)
        assert forward.pvalue <= backward.pvalue  # the row keeps the better order
        np.testing.assert_allclose([row.stat, row.pvalue], forward[:2], rtol=RTOL)
        (alpha, beta), _ = numpy_fit(py, px)
        np.testing.assert_allclose([row.beta, row.alpha], [beta, alpha], rtol=1e-8)
        spread = py - beta * px - alpha
        coef, _ = numpy_fit(np.diff(spread), spread[:-1])
        expected_hl = -math.log(2) / math.log1p(coef[1]) if -1 < coef[1] < 0 else math.inf
        np.testing.assert_allclose(row.half_life, expected_hl, rtol=1e-7)
        np.testing.assert_allclose(row.corr, corr.loc[row.y, row.x], rtol=RTOL)
        assert row.nobs == 400 and row.note == "" and row.pair == f"{row.y}/{row.x}"
        assert isinstance(row.corr, float)
    assert {rows[0].y, rows[0].x} == {"YUSDT", "XUSDT"}
    assert rows[0].pvalue < 0.01


def test_screen_pairs_puts_untestable_pairs_last_with_a_note() -> None:
    y, x = cointegrated_pair(200, seed=1)
    closes = {"AUSDT": y, "BUSDT": x, "CUSDT": 2.0 * y}  # C is A scaled: perfectly collinear
    rows = stats.screen_pairs(closes, min_obs=50)
    assert math.isnan(rows[-1].pvalue)
    assert {rows[-1].y, rows[-1].x} == {"AUSDT", "CUSDT"}
    assert "collinear" in rows[-1].note
    assert all(not math.isnan(r.pvalue) for r in rows[:-1])


# --------------------------------------------------------------------------- re-exports


def test_rolling_functions_are_re_exported() -> None:
    assert stats.rolling_zscore is engine.rolling.rolling_zscore
    assert stats.rolling_ols is engine.rolling.rolling_ols


# --------------------------------------------------------------------------- bad input

WALK = random_walk(100, 0)
PRICES = np.exp(WALK / 100.0)
NAN_WALK = WALK.copy()
NAN_WALK[7] = np.nan

BAD = [
    pytest.param(
        lambda: stats.ols_hedge(WALK, WALK[:-1]), DataError, "differ in length", id="ols-len"
    ),
    pytest.param(
        lambda: stats.ols_hedge(NAN_WALK, WALK), DataError, "first at index 7", id="ols-nan"
    ),
    pytest.param(
        lambda: stats.ols_hedge([1.0], [2.0]), NumericalError, "at least 2", id="ols-short"
    ),
    pytest.param(
        lambda: stats.ols_hedge(WALK, np.ones(100)), NumericalError, "constant", id="ols-x"
    ),
    pytest.param(
        lambda: stats.ols_hedge(WALK.reshape(10, 10), WALK), DataError, "1-D", id="ols-2d"
    ),
    pytest.param(lambda: stats.ols_hedge(["a", "b"], [1, 2]), DataError, "numbers", id="ols-str"),
    pytest.param(lambda: stats.adf(WALK[:9]), NumericalError, "at least 10", id="adf-short"),
    pytest.param(lambda: stats.adf(NAN_WALK), DataError, "NaN", id="adf-nan"),
    pytest.param(lambda: stats.adf(np.full(50, 3.0)), NumericalError, "constant", id="adf-const"),
    pytest.param(
        lambda: stats.adf(WALK[:20], maxlag=15, autolag=None),
        NumericalError,
        "maxlag",
        id="adf-lag",
    ),
    pytest.param(
        lambda: stats.coint(WALK, WALK[:50]), DataError, "differ in length", id="coint-len"
    ),
    pytest.param(
        lambda: stats.coint(WALK[:9], WALK[:9]), NumericalError, "at least 10", id="c-short"
    ),
    pytest.param(lambda: stats.coint(WALK, 2 * WALK + 1), NumericalError, "collinear", id="c-coll"),
    pytest.param(
        lambda: stats.coint(np.ones(100), WALK), NumericalError, "y is constant", id="c-c"
    ),
    pytest.param(lambda: stats.coint(WALK, NAN_WALK), DataError, "x: 1 NaN", id="coint-nan"),
    pytest.param(lambda: stats.half_life(WALK[:2]), NumericalError, "at least 3", id="hl-short"),
    pytest.param(lambda: stats.half_life(np.ones(10)), NumericalError, "constant", id="hl-const"),
    pytest.param(lambda: stats.half_life(NAN_WALK), DataError, "NaN", id="hl-nan"),
    pytest.param(lambda: stats.hurst(WALK, max_lag=2), DataError, "max_lag", id="hurst-lag"),
    pytest.param(lambda: stats.hurst(WALK, max_lag=2.5), DataError, "max_lag", id="hurst-float"),
    pytest.param(
        lambda: stats.hurst(WALK[:40], max_lag=20), NumericalError, "41", id="hurst-short"
    ),
    pytest.param(lambda: stats.hurst(np.ones(100)), NumericalError, "zero variance", id="h-const"),
    pytest.param(
        lambda: stats.log_return_corr({"A": PRICES, "B": PRICES[:-1]}),
        DataError,
        "A=100, B=99",
        id="c-len",
    ),
    pytest.param(
        lambda: stats.log_return_corr({"A": PRICES, "B": -PRICES}), DataError, "'B'", id="corr-neg"
    ),
    pytest.param(
        lambda: stats.log_return_corr({"A": PRICES[:2]}), NumericalError, "at least 3", id="corr-n"
    ),
    pytest.param(lambda: stats.log_return_corr({}), DataError, "no symbols", id="corr-empty"),
    pytest.param(lambda: stats.log_return_corr(PRICES), DataError, "2-D", id="corr-1d"),
    pytest.param(
        lambda: stats.log_return_corr(np.ones((5, 2)), ["A"]), DataError, "1 names for 2", id="c-nm"
    ),
    pytest.param(
        lambda: stats.log_return_corr(np.column_stack([PRICES, np.exp(NAN_WALK)]), ["A", "B"]),
        DataError,
        "closes['B']: NaN",
        id="corr-nan",
    ),
    pytest.param(
        lambda: stats.screen_pairs({"A": PRICES}), DataError, "at least 2 symbols", id="screen-one"
    ),
    pytest.param(
        lambda: stats.screen_pairs({"A": PRICES, "B": PRICES}, min_obs=500),
        NumericalError,
        "at least 500 bars",
        id="screen-short",
    ),
    pytest.param(
        lambda: stats.screen_pairs({"A": PRICES, "B": PRICES}, price="pct"),
        DataError,
        "price",
        id="s-p",
    ),
    pytest.param(
        lambda: stats.screen_pairs(np.ones((50, 2))), DataError, "dict", id="screen-array"
    ),
]


@pytest.mark.parametrize(("call", "error", "text"), BAD)
def test_bad_input_raises_a_clear_error(call: Callable[[], object], error: type, text: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value), str(info.value)
