"""Statistics for hedging and pair selection.

Prices handed to these functions are whatever the caller analyses (log or raw prices, a spread);
nothing here takes logs unless the docstring says so. Every function validates its input and
raises :class:`~engine.errors.DataError` (wrong shape, mismatched lengths, NaN/inf, non-positive
prices where logs are taken) or :class:`~engine.errors.NumericalError` (too few points, a
constant series, a singular fit).

- ``ols_hedge(y, x)``: least squares ``y = beta*x + alpha``.
- ``rolling_ols``, ``rolling_zscore``: re-exported from :mod:`engine.rolling`.
- ``adf(s)``, ``coint(y, x)``: statsmodels' ``adfuller`` / Engle-Granger ``coint`` figures with
  their defaults, as a :class:`TestResult`, computed by the numba kernels of
  :mod:`engine.unitroot` (statsmodels is not imported; it is the oracle in the tests).
- ``half_life(s)``: bars for a deviation of the AR(1) fit to halve; ``inf`` when not reverting.
- ``hurst(s, max_lag)``: Hurst exponent from the variance of lagged differences.
- ``log_return_corr(closes)``: correlation matrix of log returns.
- ``screen_pairs(closes)``: one :class:`ScreenRow` per pair of symbols, sorted by p-value
  (both orders tested in one :func:`engine.unitroot.coint_pairs` call).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine import unitroot
from engine.arrays import finite_1d
from engine.errors import DataError, NumericalError
from engine.rolling import rolling_ols, rolling_zscore

__all__ = [
    "ADF_MIN_OBS",
    "ScreenRow",
    "TestResult",
    "adf",
    "coint",
    "half_life",
    "hurst",
    "log_return_corr",
    "ols_hedge",
    "rolling_ols",
    "rolling_zscore",
    "screen_pairs",
]

log = logging.getLogger(__name__)

#: Fewest observations ``adf`` and ``coint`` accept (statsmodels runs on fewer, meaninglessly).
ADF_MIN_OBS = unitroot.MIN_OBS

_LEVELS = ("1%", "5%", "10%")


@dataclass(frozen=True)
class TestResult:
    """A unit-root / cointegration test result (statsmodels' figures).

    ``stat``: the test statistic; ``pvalue``: MacKinnon's approximate p-value; ``crit``:
    critical values keyed "1%", "5%", "10%"; ``nobs``: observations used by the final
    regression (``adf``) or the length of the inputs (``coint``); ``lags``: lagged differences
    used (``adf``; ``None`` for ``coint``, whose statsmodels result does not report it).
    """

    __test__ = False  # not a pytest test class, despite the name

    stat: float
    pvalue: float
    crit: Mapping[str, float] = field(default_factory=dict)
    nobs: int = 0
    lags: int | None = None


@dataclass(frozen=True)
class ScreenRow:
    """One pair of a screen: ``y`` is regressed on ``x`` (log prices by default).

    ``corr``: correlation of log returns; ``stat``/``pvalue``: Engle-Granger ``coint(y, x)``;
    ``beta``/``alpha``: OLS hedge; ``half_life``: of the OLS spread, in bars; ``nobs``: bars
    used; ``note``: why the test figures are NaN, when they are.
    """

    y: str
    x: str
    corr: float
    stat: float
    pvalue: float
    beta: float
    alpha: float
    half_life: float
    nobs: int
    note: str = ""

    @property
    def pair(self) -> str:
        """The pair's name, "Y/X"."""
        return f"{self.y}/{self.x}"


def _series(s: object, name: str, min_obs: int) -> np.ndarray:
    """A contiguous finite float64 1-D array of ``s`` with at least ``min_obs`` points."""
    arr = finite_1d(name, s)
    if arr.size < min_obs:
        raise NumericalError(f"{name}: needs at least {min_obs} points, got {arr.size}")
    return arr


def _pair(y: object, x: object, min_obs: int) -> tuple[np.ndarray, np.ndarray]:
    ya = _series(y, "y", 0)
    xa = _series(x, "x", 0)
    if ya.size != xa.size:
        raise DataError(f"y and x differ in length: {ya.size} != {xa.size}")
    if ya.size < min_obs:
        raise NumericalError(f"y and x: need at least {min_obs} points, got {ya.size}")
    return ya, xa


def _fit_line(y: np.ndarray, x: np.ndarray, what: str) -> tuple[float, float]:
    """Least squares ``y = slope*x + intercept`` on validated arrays (centred sums)."""
    if x.max() == x.min():
        raise NumericalError(f"{what}: the regressor is constant, the slope is undefined")
    x_mean = x.mean()
    y_mean = y.mean()
    dx = x - x_mean
    slope = float(dx @ (y - y_mean) / (dx @ dx))
    return slope, float(y_mean - slope * x_mean)


def ols_hedge(y: object, x: object) -> tuple[float, float]:
    """Least-squares hedge ``y = beta*x + alpha`` over the whole sample: ``(beta, alpha)``.

    Units are those of the inputs (log or raw prices). Oracle: statsmodels ``OLS(y,
    add_constant(x))``. NumericalError with fewer than 2 points or a constant ``x``.
    """
    ya, xa = _pair(y, x, 2)
    return _fit_line(ya, xa, "ols_hedge")


def adf(
    s: object, *, maxlag: int | None = None, regression: str = "c", autolag: str | None = "AIC"
) -> TestResult:
    """Augmented Dickey-Fuller test of ``s``: statsmodels ``adfuller`` figures, same defaults.

    Computed by :mod:`engine.unitroot` (numba; statsmodels is the oracle in the tests).
    ``regression``: "c" (default), "n", "ct" or "ctt"; ``autolag``: "AIC" (default), "BIC",
    "t-stat" or None (exactly ``maxlag`` lags); ``maxlag`` None: ``12*(n/100)^(1/4)`` capped.
    NumericalError for fewer than :data:`ADF_MIN_OBS` points, a constant series or a ``maxlag``
    too large for ``n``; DataError for a bad argument.
    """
    arr = _series(s, "adf", ADF_MIN_OBS)
    ntrend, lag, method = unitroot.kernel_args("adf", regression, maxlag, autolag)
    stat, used, nobs, status = unitroot.adf_kernel(arr, lag, ntrend, method)
    if status != unitroot.OK:
        raise NumericalError(unitroot.failure(status, "adf", arr.size, ntrend, lag))
    if not math.isfinite(stat):
        raise NumericalError(f"adf: the test statistic is {stat} (n={arr.size})")
    return TestResult(
        stat=float(stat),
        pvalue=float(unitroot.mackinnon_p(stat, ntrend, 1)),
        crit=dict(zip(_LEVELS, unitroot.mackinnon_crit(ntrend, 1, nobs), strict=True)),
        nobs=int(nobs),
        lags=int(used),
    )


def coint(
    y: object,
    x: object,
    *,
    trend: str = "c",
    maxlag: int | None = None,
    autolag: str | None = "aic",
) -> TestResult:
    """Engle-Granger cointegration test of ``y`` on ``x``: statsmodels ``coint`` figures.

    Computed by :mod:`engine.unitroot` (numba; statsmodels is the oracle in the tests). The
    null hypothesis is no cointegration. NumericalError for fewer than :data:`ADF_MIN_OBS`
    points, a constant input or (almost) perfectly collinear inputs (statsmodels would report
    ``-inf``); DataError for a bad argument.
    """
    ya, xa = _pair(y, x, ADF_MIN_OBS)
    ntrend, lag, method = unitroot.kernel_args("coint", trend, maxlag, autolag)
    stat, pvalue, _, status = unitroot.coint_kernel(ya, xa, ntrend, lag, method)
    if status != unitroot.OK:
        raise NumericalError(unitroot.failure(status, "coint", ya.size, 0, lag))
    return TestResult(
        stat=float(stat),
        pvalue=float(pvalue),
        crit=dict(zip(_LEVELS, unitroot.mackinnon_crit(ntrend, 2, ya.size - 1), strict=True)),
        nobs=int(ya.size),
        lags=None,
    )


def half_life(s: object) -> float:
    """Mean-reversion half-life of ``s`` in bars, from the AR(1) fit ``ds_t = a + b*s_{t-1}``.

    Returns ``-ln(2) / ln(1 + b)``: exact for an AR(1) with coefficient ``phi = 1 + b``.
    ``inf`` when ``b >= 0`` (no reversion) or ``b <= -1`` (``phi <= 0``: ln undefined), so the
    result is never negative nor NaN. NumericalError for fewer than 3 points or a constant series.
    """
    arr = _series(s, "half_life", 3)
    b, _ = _fit_line(np.diff(arr), arr[:-1], "half_life")
    if not -1.0 < b < 0.0:
        return math.inf
    return -math.log(2.0) / math.log1p(b)


def hurst(s: object, max_lag: int = 20) -> float:
    """Hurst exponent of ``s`` from the variance of lagged differences.

    ``Var(s_{t+k} - s_t) ~ k^(2H)`` for lags ``k = 2..max_lag``: ``H`` is half the slope of the
    least-squares line of log variance on log lag. About 0.5 for a random walk, below for a
    mean-reverting series, above for a trending one. Needs more than ``2*max_lag`` points.
    """
    if isinstance(max_lag, bool) or not isinstance(max_lag, int | np.integer) or max_lag < 3:
        raise DataError(f"hurst: max_lag must be an int >= 3, got {max_lag!r}")
    arr = _series(s, "hurst", 2 * int(max_lag) + 1)
    lags = np.arange(2, int(max_lag) + 1)
    var = np.array([np.var(arr[k:] - arr[:-k]) for k in lags])
    if (var <= 0.0).any():
        raise NumericalError("hurst: a lagged difference has zero variance (constant series?)")
    slope, _ = _fit_line(np.log(var), np.log(lags.astype(np.float64)), "hurst")
    return slope / 2.0


def _closes_matrix(
    closes: Mapping[str, object] | np.ndarray, symbols: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray]:
    """Validated ``(symbols, prices)`` with prices shaped (n, k): finite, positive, same length."""
    if isinstance(closes, Mapping):
        if symbols is not None:
            raise DataError("symbols: give symbols only with a 2-D array (a dict names its own)")
        names = tuple(str(k) for k in closes)
        cols = [_series(v, f"closes[{k!r}]", 0) for k, v in closes.items()]
        lengths = {c.size for c in cols}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}={c.size}" for k, c in zip(names, cols, strict=True))
            raise DataError(f"closes: series differ in length ({sizes})")
        mat = np.column_stack(cols) if cols else np.empty((0, 0))
    else:
        mat = np.array(closes, dtype=np.float64)
        if mat.ndim != 2:
            raise DataError(f"closes: expected a 2-D array (bars, symbols), got shape {mat.shape}")
        names = tuple(str(i) for i in range(mat.shape[1])) if symbols is None else tuple(symbols)
        if len(names) != mat.shape[1]:
            raise DataError(f"symbols: {len(names)} names for {mat.shape[1]} columns")
        bad = ~np.isfinite(mat)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"closes[{names[col]!r}]: NaN/inf value(s), first at index {row}")
    if len(set(names)) != len(names):
        raise DataError(f"symbols: duplicate names in {names}")
    if not names:
        raise DataError("closes: no symbols given")
    if (mat <= 0.0).any():
        col = int(np.argwhere(mat <= 0.0)[0][1])
        raise DataError(f"closes[{names[col]!r}]: prices must be > 0 to take logs")
    return names, mat


def log_return_corr(
    closes: Mapping[str, object] | np.ndarray, symbols: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """Correlation matrix of log returns (not price levels): ``(symbols, matrix)``.

    ``closes``: a dict symbol -> close prices (same length, order kept) or a 2-D array of shape
    (bars, symbols) with optional ``symbols`` names (default "0", "1", ...). A symbol whose
    price never moves has NaN correlations, as in the oracle, pandas ``DataFrame.corr()``.
    Needs at least 3 prices (2 returns).
    """
    names, mat = _closes_matrix(closes, symbols)
    if mat.shape[0] < 3:
        raise NumericalError(f"log_return_corr: needs at least 3 prices, got {mat.shape[0]}")
    ret = np.diff(np.log(mat), axis=0)
    ret -= ret.mean(axis=0)
    cov = ret.T @ ret
    scale = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(scale, scale)
    corr[:, scale == 0.0] = np.nan
    corr[scale == 0.0, :] = np.nan
    return names, np.clip(corr, -1.0, 1.0)


def _screen_row(
    y: str, x: str, py: np.ndarray, px: np.ndarray, corr: float, test: tuple[float, float, str]
) -> ScreenRow:
    """The screen row of one pair, ``y`` regressed on ``x``, given its ``(stat, pvalue, note)``."""
    stat, pvalue, note = test
    try:
        beta, alpha = ols_hedge(py, px)
        hl = half_life(py - beta * px - alpha)
    except NumericalError as exc:
        beta = alpha = hl = math.nan
        note = note or str(exc)
    return ScreenRow(
        y=y,
        x=x,
        corr=float(corr),
        stat=float(stat),
        pvalue=float(pvalue),
        beta=beta,
        alpha=alpha,
        half_life=hl,
        nobs=py.size,
        note=note,
    )


def screen_pairs(
    closes: Mapping[str, object], *, min_obs: int = 100, price: str = "log"
) -> list[ScreenRow]:
    """Screen every pair of symbols for cointegration; rows sorted by Engle-Granger p-value.

    ``closes``: symbol -> close prices, already aligned on the same bars (same length, no NaN;
    forward-fill missing bars before calling). ``price``: "log" (default) or "raw" prices for
    the test, hedge and spread. For each pair the Engle-Granger test runs in both orders and the
    row keeps the order with the lower p-value (ties: the order given), so ``y``/``x`` is the
    direction to trade. Pairs whose test cannot be computed (collinear, constant) come last
    with NaN figures and a ``note``. NumericalError with fewer than ``min_obs`` bars.
    """
    if price not in ("log", "raw"):
        raise DataError(f"price: expected 'log' or 'raw', got {price!r}")
    if not isinstance(closes, Mapping):
        raise DataError(f"closes: expected a dict symbol -> prices, got {type(closes).__name__}")
    names, mat = _closes_matrix(closes, None)
    if len(names) < 2:
        raise DataError(f"closes: a screen needs at least 2 symbols, got {len(names)}")
    if mat.shape[0] < max(min_obs, ADF_MIN_OBS):
        raise NumericalError(
            f"screen_pairs: needs at least {max(min_obs, ADF_MIN_OBS)} bars, got {mat.shape[0]}"
        )
    _, corr = log_return_corr(mat, names)
    series = np.log(mat) if price == "log" else mat
    upper = np.argwhere(np.triu(np.ones((len(names), len(names)), dtype=bool), k=1))
    both = np.concatenate([upper, upper[:, ::-1]])  # every pair, then every pair reversed
    cols = np.ascontiguousarray(series.T)
    nobs = cols.shape[1]
    batch = unitroot.coint_pairs(cols, both)
    npairs = upper.shape[0]
    rows = []
    for k, (i, j) in enumerate(upper):
        order = k + npairs if batch.pvalue[k + npairs] < batch.pvalue[k] else k
        y, x = both[order]
        status = int(batch.status[order])
        note = "" if status == unitroot.OK else unitroot.failure(status, "coint", nobs, 0, -1)
        test = (batch.stat[order], batch.pvalue[order], note)
        rows.append(_screen_row(names[y], names[x], cols[y], cols[x], corr[i, j], test))
    log.debug("screened %d pairs of %d symbols over %d bars", len(rows), len(names), mat.shape[0])
    return sorted(rows, key=lambda r: (math.isnan(r.pvalue), r.pvalue, r.pair))
