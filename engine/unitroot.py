"""Augmented Dickey-Fuller and Engle-Granger tests in numba: statsmodels' figures without it.

Oracle: statsmodels ``tsa.stattools.adfuller`` and ``tsa.stattools.coint`` (the tests compare
statistic, p-value, chosen lag and critical values over a grid of series). What they compute,
and so what the kernels here compute:

- ``adfuller(x, maxlag, regression, autolag)``: ``n = len(x)``, ``d = diff(x)``; the default
  ``maxlag`` is ``ceil(12 * (n/100)**0.25)`` capped at ``n//2 - ntrend - 1`` (ntrend: 0 for
  "n", 1 "c", 2 "ct", 3 "ctt"). The lag search fits, for every ``b = 0..maxlag``, the OLS of
  ``d[s]`` on ``[trend terms, x[s], d[s-1], ..., d[s-b]]`` over the same rows
  ``s = maxlag..n-2`` and keeps the ``b`` of the smallest (criterion, b) (AIC, BIC), or for
  "t-stat" the largest ``b`` whose last coefficient has |t| >= 1.6448536269514722. The chosen
  ``b`` is then re-fitted over its own, longer sample ``s = b..n-2`` (``nobs = n - 1 - b``);
  the statistic is the t-value of ``x[s]`` there. AIC is ``-2 llf + 2k`` and BIC
  ``-2 llf + log(nobs) k`` with the profile log-likelihood
  ``llf = -nobs/2 (log(2 pi) + log(ssr/nobs) + 1)`` and ``k`` regressors.
- ``coint(y, x, trend)``: OLS of ``y`` on ``[x, trend terms]``; when its R-squared is at least
  ``1 - 100*sqrt(eps)`` the pair is collinear (statsmodels warns and reports -inf; we refuse);
  otherwise ``adfuller`` of the residuals with regression "n". P-value: MacKinnon (1994) with
  ``N = 2`` and the coint trend; critical values: MacKinnon (2010) with ``nobs = n - 1``.
- P-values: ``Phi(polynomial(stat))`` with MacKinnon's small-p coefficients below ``tau_star``
  and large-p ones above, 0 below ``tau_min`` and 1 above ``tau_max``.

Numerics: every candidate regression of the search is a leading block of one cross-product
matrix of ``[trend terms, level, d lags 1..maxlag, d]`` over the search rows; one Cholesky of it
gives every candidate's residual sum of squares (the tail sums of the last row of the factor,
no cancellation) and t-values. The lagged-difference products are built from one row of lag
products (``O(n * maxlag)``) and the recursion ``P(i+1, j+1) = P(i, j) + first row - last
row`` (``O(maxlag^2)``). With a constant, levels and differences are shifted by their means
first (OLS with a constant is unchanged by that), so the constant's Cholesky step does not
cancel. The final fit adds the extra leading rows to the search sums and puts the level column
last, so its t-value is read off the factor. Degenerate candidates follow statsmodels: a
saturated regression (as many regressors as rows, only possible without a constant) wins the
search and gives the statistic 0.

Status codes returned by the kernels (the wrappers turn them into ``NumericalError``):
:data:`OK`, :data:`Y_CONSTANT`, :data:`X_CONSTANT`, :data:`COLLINEAR`, :data:`SINGULAR`,
:data:`TOO_SHORT` (the default ``maxlag`` is negative: too few points for the trend terms),
:data:`BAD_MAXLAG` (a given ``maxlag`` above ``n//2 - ntrend - 1``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from engine.errors import DataError, NumericalError

#: ``regression``/``trend`` names in kernel order; the index is the number of trend terms.
TRENDS = ("n", "c", "ct", "ctt")
#: ``autolag`` names in kernel order (``None`` -> 0: exactly ``maxlag`` lags).
AUTOLAGS = (None, "aic", "bic", "t-stat")

#: Fewest points the wrappers accept (statsmodels runs on fewer, meaninglessly).
MIN_OBS = 10

OK = 0
Y_CONSTANT = 1
X_CONSTANT = 2
COLLINEAR = 3
SINGULAR = 4
TOO_SHORT = 5
BAD_MAXLAG = 6

_T_STOP = 1.6448536269514722  # statsmodels' 5% one-sided normal quantile for "t-stat"
_SQRTEPS = math.sqrt(np.finfo(np.float64).eps)
_LOG_2PI = math.log(2.0 * math.pi)
_NEAR_EXACT = 1e-4  # below this share of sum(d^2) the final ssr is taken from the residuals

# --------------------------------------------------------------------------- MacKinnon tables
# MacKinnon (1994) p-value surfaces and MacKinnon (2010) critical values: published
# coefficients, rows N = 1..6 (p-values) / 1..12 (critical values), trends in TRENDS order.

_TAU_STAR = np.array(
    [
        [-1.04, -1.53, -2.68, -3.09, -3.07, -3.77],
        [-1.61, -2.62, -3.13, -3.47, -3.78, -3.93],
        [-2.89, -3.19, -3.50, -3.65, -3.80, -4.36],
        [-3.21, -3.51, -3.81, -3.83, -4.12, -4.63],
    ]
)
_TAU_MIN = np.array(
    [
        [-19.04, -19.62, -21.21, -23.25, -21.63, -25.74],
        [-18.83, -18.86, -23.48, -28.07, -25.96, -23.27],
        [-16.18, -21.15, -25.37, -26.63, -26.53, -26.18],
        [-17.17, -21.1, -24.33, -24.03, -24.33, -28.22],
    ]
)
_TAU_MAX = np.array(
    [
        [np.inf, 1.51, 0.86, 0.88, 1.05, 1.24],
        [2.74, 0.92, 0.55, 0.61, 0.79, 1],
        [0.7, 0.63, 0.71, 0.93, 1.19, 1.42],
        [0.54, 0.79, 1.08, 1.43, 3.49, 1.92],
    ]
)
# Polynomial coefficients, lowest degree first, scaled as MacKinnon prints them.
_TAU_SMALLP = np.array(
    [
        [
            [0.6344, 1.2378, 3.2496],
            [1.9129, 1.3857, 3.5322],
            [2.7648, 1.4502, 3.4186],
            [3.4336, 1.4835, 3.19],
            [4.0999, 1.5533, 3.59],
            [4.5388, 1.5344, 2.9807],
        ],
        [
            [2.1659, 1.4412, 3.8269],
            [2.92, 1.5012, 3.9796],
            [3.4699, 1.4856, 3.164],
            [3.9673, 1.4777, 2.6315],
            [4.5509, 1.5338, 2.9545],
            [5.1399, 1.6036, 3.4445],
        ],
        [
            [3.2512, 1.6047, 4.9588],
            [3.6646, 1.5419, 3.6448],
            [4.0983, 1.5173, 2.9898],
            [4.5844, 1.5338, 2.8796],
            [5.0722, 1.5634, 2.9472],
            [5.53, 1.5914, 3.0392],
        ],
        [
            [4.0003, 1.658, 4.8288],
            [4.3534, 1.6016, 3.7947],
            [4.7343, 1.5768, 3.2396],
            [5.214, 1.6077, 3.3449],
            [5.6481, 1.6274, 3.3455],
            [5.9296, 1.5929, 2.8223],
        ],
    ]
) * np.array([1, 1, 1e-2])
_TAU_LARGEP = np.array(
    [
        [
            [0.4797, 9.3557, -0.6999, 3.3066],
            [1.5578, 8.558, -2.083, -3.3549],
            [2.2268, 6.8093, -3.2362, -5.4448],
            [2.7654, 6.4502, -3.0811, -4.4946],
            [3.2684, 6.8051, -2.6778, -3.4972],
            [3.7268, 7.167, -2.3648, -2.8288],
        ],
        [
            [1.7339, 9.3202, -1.2745, -1.0368],
            [2.1945, 6.4695, -2.9198, -4.2377],
            [2.5893, 4.5168, -3.6529, -5.0074],
            [3.0387, 4.5452, -3.3666, -4.1921],
            [3.5049, 5.2098, -2.9158, -3.3468],
            [3.9489, 5.8933, -2.5359, -2.721],
        ],
        [
            [2.5261, 6.1654, -3.7956, -6.0285],
            [2.85, 5.272, -3.6622, -5.1695],
            [3.221, 5.255, -3.2685, -4.1501],
            [3.652, 5.9758, -2.7483, -3.2081],
            [4.0712, 6.6428, -2.3464, -2.546],
            [4.4735, 7.1757, -2.0681, -2.1196],
        ],
        [
            [3.0778, 4.9529, -4.1477, -5.9359],
            [3.4713, 5.967, -3.2507, -4.2286],
            [3.8637, 6.7852, -2.6286, -3.1381],
            [4.2736, 7.6199, -2.1534, -2.4026],
            [4.6679, 8.2618, -1.822, -1.9147],
            [5.0009, 8.3735, -1.6994, -1.6928],
        ],
    ]
) * np.array([1, 1e-1, 1e-1, 1e-2])

_NAN4 = [np.nan] * 4
# MacKinnon (2010) critical values [trend, N-1, (1%, 5%, 10%), coefficients of 1/nobs lowest
# first]; "n" is given for N = 1 only.
_TAU_2010 = np.array(
    [
        [
            [
                [-2.56574, -2.2358, -3.627, 0],
                [-1.94100, -0.2686, -3.365, 31.223],
                [-1.61682, 0.2656, -2.714, 25.364],
            ],
            *([[_NAN4, _NAN4, _NAN4]] * 11),
        ],
        [
            [
                [-3.43035, -6.5393, -16.786, -79.433],
                [-2.86154, -2.8903, -4.234, -40.040],
                [-2.56677, -1.5384, -2.809, 0],
            ],
            [
                [-3.89644, -10.9519, -33.527, 0],
                [-3.33613, -6.1101, -6.823, 0],
                [-3.04445, -4.2412, -2.720, 0],
            ],
            [
                [-4.29374, -14.4354, -33.195, 47.433],
                [-3.74066, -8.5632, -10.852, 27.982],
                [-3.45218, -6.2143, -3.718, 0],
            ],
            [
                [-4.64332, -18.1031, -37.972, 0],
                [-4.09600, -11.2349, -11.175, 0],
                [-3.81020, -8.3931, -4.137, 0],
            ],
            [
                [-4.95756, -21.8883, -45.142, 0],
                [-4.41519, -14.0405, -12.575, 0],
                [-4.13157, -10.7417, -3.784, 0],
            ],
            [
                [-5.24568, -25.6688, -57.737, 88.639],
                [-4.70693, -16.9178, -17.492, 60.007],
                [-4.42501, -13.1875, -5.104, 27.877],
            ],
            [
                [-5.51233, -29.5760, -69.398, 164.295],
                [-4.97684, -19.9021, -22.045, 110.761],
                [-4.69648, -15.7315, -5.104, 27.877],
            ],
            [
                [-5.76202, -33.5258, -82.189, 256.289],
                [-5.22924, -23.0023, -24.646, 144.479],
                [-4.95007, -18.3959, -7.344, 94.872],
            ],
            [
                [-5.99742, -37.6572, -87.365, 248.316],
                [-5.46697, -26.2057, -26.627, 176.382],
                [-5.18897, -21.1377, -9.484, 172.704],
            ],
            [
                [-6.22103, -41.7154, -102.680, 389.33],
                [-5.69244, -29.4521, -30.994, 251.016],
                [-5.41533, -24.0006, -7.514, 163.049],
            ],
            [
                [-6.43377, -46.0084, -106.809, 352.752],
                [-5.90714, -32.8336, -30.275, 249.994],
                [-5.63086, -26.9693, -4.083, 151.427],
            ],
            [
                [-6.63790, -50.2095, -124.156, 579.622],
                [-6.11279, -36.2681, -32.505, 314.802],
                [-5.83724, -29.9864, -2.686, 184.116],
            ],
        ],
        [
            [
                [-3.95877, -9.0531, -28.428, -134.155],
                [-3.41049, -4.3904, -9.036, -45.374],
                [-3.12705, -2.5856, -3.925, -22.380],
            ],
            [
                [-4.32762, -15.4387, -35.679, 0],
                [-3.78057, -9.5106, -12.074, 0],
                [-3.49631, -7.0815, -7.538, 21.892],
            ],
            [
                [-4.66305, -18.7688, -49.793, 104.244],
                [-4.11890, -11.8922, -19.031, 77.332],
                [-3.83511, -9.0723, -8.504, 35.403],
            ],
            [
                [-4.96940, -22.4694, -52.599, 51.314],
                [-4.42871, -14.5876, -18.228, 39.647],
                [-4.14633, -11.2500, -9.873, 54.109],
            ],
            [
                [-5.25276, -26.2183, -59.631, 50.646],
                [-4.71537, -17.3569, -22.660, 91.359],
                [-4.43422, -13.6078, -10.238, 76.781],
            ],
            [
                [-5.51727, -29.9760, -75.222, 202.253],
                [-4.98228, -20.3050, -25.224, 132.03],
                [-4.70233, -16.1253, -9.836, 94.272],
            ],
            [
                [-5.76537, -33.9165, -84.312, 245.394],
                [-5.23299, -23.3328, -28.955, 182.342],
                [-4.95405, -18.7352, -10.168, 120.575],
            ],
            [
                [-6.00003, -37.8892, -96.428, 335.92],
                [-5.46971, -26.4771, -31.034, 220.165],
                [-5.19183, -21.4328, -10.726, 157.955],
            ],
            [
                [-6.22288, -41.9496, -109.881, 466.068],
                [-5.69447, -29.7152, -33.784, 273.002],
                [-5.41738, -24.2882, -8.584, 169.891],
            ],
            [
                [-6.43551, -46.1151, -120.814, 566.823],
                [-5.90887, -33.0251, -37.208, 346.189],
                [-5.63255, -27.2042, -6.792, 177.666],
            ],
            [
                [-6.63894, -50.4287, -128.997, 642.781],
                [-6.11404, -36.4610, -36.246, 348.554],
                [-5.83850, -30.1995, -5.163, 210.338],
            ],
            [
                [-6.83488, -54.7119, -139.800, 736.376],
                [-6.31127, -39.9676, -37.021, 406.051],
                [-6.03650, -33.2381, -6.606, 317.776],
            ],
        ],
        [
            [
                [-4.37113, -11.5882, -35.819, -334.047],
                [-3.83239, -5.9057, -12.490, -118.284],
                [-3.55326, -3.6596, -5.293, -63.559],
            ],
            [
                [-4.69276, -20.2284, -64.919, 88.884],
                [-4.15387, -13.3114, -28.402, 72.741],
                [-3.87346, -10.4637, -17.408, 66.313],
            ],
            [
                [-4.99071, -23.5873, -76.924, 184.782],
                [-4.45311, -15.7732, -32.316, 122.705],
                [-4.17280, -12.4909, -17.912, 83.285],
            ],
            [
                [-5.26780, -27.2836, -78.971, 137.871],
                [-4.73244, -18.4833, -31.875, 111.817],
                [-4.45268, -14.7199, -17.969, 101.92],
            ],
            [
                [-5.52826, -30.9051, -92.490, 248.096],
                [-4.99491, -21.2360, -37.685, 194.208],
                [-4.71587, -17.0820, -18.631, 136.672],
            ],
            [
                [-5.77379, -34.7010, -105.937, 393.991],
                [-5.24217, -24.2177, -39.153, 232.528],
                [-4.96397, -19.6064, -18.858, 174.919],
            ],
            [
                [-6.00609, -38.7383, -108.605, 365.208],
                [-5.47664, -27.3005, -39.498, 246.918],
                [-5.19921, -22.2617, -17.910, 208.494],
            ],
            [
                [-6.22758, -42.7154, -119.622, 421.395],
                [-5.69983, -30.4365, -44.300, 345.48],
                [-5.42320, -24.9686, -19.688, 274.462],
            ],
            [
                [-6.43933, -46.7581, -136.691, 651.38],
                [-5.91298, -33.7584, -42.686, 346.629],
                [-5.63704, -27.8965, -13.880, 236.975],
            ],
            [
                [-6.64235, -50.9783, -145.462, 752.228],
                [-6.11753, -37.056, -48.719, 473.905],
                [-5.84215, -30.8119, -14.938, 316.006],
            ],
            [
                [-6.83743, -55.2861, -152.651, 792.577],
                [-6.31396, -40.5507, -46.771, 487.185],
                [-6.03921, -33.8950, -9.122, 285.164],
            ],
            [
                [-7.02582, -59.6037, -166.368, 989.879],
                [-6.50353, -44.0797, -47.242, 543.889],
                [-6.22941, -36.9673, -10.868, 418.414],
            ],
        ],
    ]
)


@njit(cache=True)
def mackinnon_p(stat: float, trend: int, n_series: int) -> float:
    """MacKinnon (1994) approximate p-value of a unit-root / Engle-Granger statistic.

    ``trend``: index into :data:`TRENDS`; ``n_series``: I(1) series (1 for ADF, 2 for a pair).
    Oracle: statsmodels ``tsa.adfvalues.mackinnonp(stat, regression, N)``.
    """
    row = n_series - 1
    if stat > _TAU_MAX[trend, row]:
        return 1.0
    if stat < _TAU_MIN[trend, row]:
        return 0.0
    coef = _TAU_SMALLP[trend, row] if stat <= _TAU_STAR[trend, row] else _TAU_LARGEP[trend, row]
    z = 0.0
    for i in range(coef.size - 1, -1, -1):  # Horner, highest degree first (np.polyval)
        z = z * stat + coef[i]
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def mackinnon_crit(trend: int, n_series: int, nobs: int) -> tuple[float, float, float]:
    """MacKinnon (2010) critical values (1%, 5%, 10%) for ``nobs`` observations.

    NaN where MacKinnon gives none (trend "n" with more than one series). Oracle: statsmodels
    ``tsa.adfvalues.mackinnoncrit(N, regression, nobs)``.
    """
    out = []
    x = 1.0 / nobs
    for coef in _TAU_2010[trend, n_series - 1]:
        y = 0.0
        for c in coef[::-1]:
            y = y * x + c
        out.append(float(y))
    return out[0], out[1], out[2]


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def default_maxlag(n: int, ntrend: int) -> int:
    """statsmodels' default ``maxlag`` of ``adfuller`` for ``n`` points (negative: too short)."""
    lag = math.ceil(12.0 * math.pow(n / 100.0, 0.25))
    return min(n // 2 - ntrend - 1, lag)


@njit(cache=True, inline="always")
def _trend_term(s: int, k: int, mid: float, half: float) -> float:
    """Trend term ``k`` (0 constant, 1 linear, 2 quadratic) at row ``s``, scaled to [-1, 1]."""
    if k == 0:
        return 1.0
    u = (s - mid) / half
    if k == 1:
        return u
    return u * u - 1.0 / 3.0


@njit(cache=True, fastmath=True)
def _dot2(u, v, w):
    """``(u @ w, v @ w)`` in one pass (reassociated sums: vectorised; rounding as any dot)."""
    su = 0.0
    sv = 0.0
    for i in range(w.size):
        su += u[i] * w[i]
        sv += v[i] * w[i]
    return su, sv


@njit(cache=True)
def _is_constant(x) -> bool:
    """True when every value equals the first (stops at the first that differs)."""
    x0 = x[0]
    for v in x:  # noqa: SIM110 (a loop: numba compiles it, not all() of a generator)
        if v != x0:
            return False
    return True


@njit(cache=True)
def _cross(x, dr, lo, hi, nlag, ntrend, xshift, mid, half):
    """Cross products over rows ``s = lo..hi`` of ``[trend terms, x[s], d[s-1..s-nlag], d[s]]``.

    ``dr`` is the reversed, shifted difference series: ``d[s] - shift == dr[m - s]`` with
    ``m = dr.size - 1``. Needs ``lo >= nlag``.
    """
    lev = ntrend
    yc = ntrend + nlag + 1
    k = yc + 1
    out = np.zeros((k, k))
    m = dr.size - 1
    # first row of lag products P(0, j) = sum_s d[s] d[s-j] and level products, by dot products
    # over the reversed series (row s sits at m - s)
    a = m - hi
    b = m - lo + 1
    lev_r = np.empty(b - a)
    for s in range(lo, hi + 1):
        lev_r[m - s - a] = x[s] - xshift
    p0 = np.empty(nlag + 1)
    q = np.empty(nlag + 1)
    for j in range(nlag + 1):
        p0[j], q[j] = _dot2(dr[a:b], lev_r, dr[a + j : b + j])
    ll = _dot2(lev_r, lev_r, lev_r)[0]
    # P(i, j) for i <= j by P(i+1, j+1) = P(i, j) + d[lo-1-i] d[lo-1-j] - d[hi-i] d[hi-j]
    col = np.empty(nlag + 1, dtype=np.int64)
    col[0] = yc
    for i in range(1, nlag + 1):
        col[i] = lev + i
    for j0 in range(nlag + 1):
        acc = p0[j0]
        out[col[0], col[j0]] = out[col[j0], col[0]] = acc
        for i in range(1, nlag + 1 - j0):
            j = i + j0
            acc += dr[m - lo + i] * dr[m - lo + j] - dr[m - hi + i - 1] * dr[m - hi + j - 1]
            out[col[i], col[j]] = out[col[j], col[i]] = acc
    for j in range(nlag + 1):
        out[lev, col[j]] = out[col[j], lev] = q[j]
    out[lev, lev] = ll
    # trend terms against everything (direct; the constant's sums by the same recursion)
    for t in range(ntrend):
        if t == 0:
            acc = 0.0
            for s in range(lo, hi + 1):
                acc += dr[m - s]
            out[0, yc] = acc
            for i in range(1, nlag + 1):
                acc += dr[m - lo + i] - dr[m - hi + i - 1]
                out[0, lev + i] = acc
            acc = 0.0
            for s in range(lo, hi + 1):
                acc += x[s] - xshift
            out[0, lev] = acc
            out[0, 0] = hi - lo + 1.0
        else:
            for s in range(lo, hi + 1):
                g = _trend_term(s, t, mid, half)
                for t2 in range(t + 1):
                    out[t2, t] += g * _trend_term(s, t2, mid, half)
                out[t, lev] += g * (x[s] - xshift)
                for j in range(nlag + 1):
                    out[t, col[j]] += g * dr[m - s + j]
    for t in range(ntrend):  # the trend rows were filled above the diagonal
        for j in range(t + 1, k):
            out[j, t] = out[t, j]
    return out


@njit(cache=True)
def _cholesky(a):
    """Lower Cholesky factor of ``a``, last column is the response: its pivot may be 0.

    Returns (factor, ok); ok is False when a regressor's pivot falls to ~1e-13 of its diagonal
    (the regressors are (almost) linearly dependent).
    """
    k = a.shape[0]
    low = np.zeros((k, k))
    for j in range(k):
        acc = a[j, j]
        for p in range(j):
            acc -= low[j, p] * low[j, p]
        if j < k - 1:
            if not acc > 1e-13 * a[j, j]:
                return low, False
        elif acc < 0.0:
            acc = 0.0
        piv = math.sqrt(acc)
        low[j, j] = piv
        for i in range(j + 1, k):
            acc = a[i, j]
            for p in range(j):
                acc -= low[i, p] * low[j, p]
            low[i, j] = acc / piv if piv > 0.0 else 0.0
    return low, True


@njit(cache=True)
def _explicit_ssr(x, dr, lo, hi, ntrend, xshift, mid, half, low):
    """Residual sum of squares of the final fit from its residuals (rows ``lo..hi``).

    For near-exact fits, where ``ssr`` from the factor would cancel: the coefficients come from
    the factor ``low`` (columns ``[trend, d lags 1..b, level, d]``), the residuals from the data.
    """
    kk = low.shape[0]
    k = kk - 1
    m = dr.size - 1
    coef = np.empty(k)
    for i in range(k - 1, -1, -1):  # back substitution, L^T coef = L[y, :k]
        acc = low[k, i]
        for j in range(i + 1, k):
            acc -= low[j, i] * coef[j]
        coef[i] = acc / low[i, i]
    ssr = 0.0
    for s in range(lo, hi + 1):
        r = dr[m - s] - coef[k - 1] * (x[s] - xshift)
        for t in range(ntrend):
            r -= coef[t] * _trend_term(s, t, mid, half)
        for i in range(1, k - ntrend):
            r -= coef[ntrend + i - 1] * dr[m - s + i]
        ssr += r * r
    return ssr


@njit(cache=True)
def adf_kernel(x, maxlag, ntrend, method):
    """ADF statistic of ``x``: ``(stat, used_lag, nobs, status)``.

    ``maxlag < 0``: statsmodels' default; ``ntrend``: index into :data:`TRENDS`; ``method``:
    index into :data:`AUTOLAGS`. Oracle: statsmodels ``adfuller(x, maxlag, regression,
    autolag)`` (``stat`` its ``adfstat``, ``used_lag`` its ``usedlag``, ``nobs`` its ``nobs``).
    """
    n = x.size
    if n < 2 or _is_constant(x):
        return np.nan, 0, 0, Y_CONSTANT
    if maxlag < 0:
        maxlag = default_maxlag(n, ntrend)
        if maxlag < 0:
            return np.nan, 0, 0, TOO_SHORT
    elif maxlag > n // 2 - ntrend - 1:
        return np.nan, 0, 0, BAD_MAXLAG
    m = n - 2  # last row (index of the last difference)
    lo = maxlag
    nobs = m - lo + 1
    dshift = 0.0
    xshift = 0.0
    if ntrend > 0:
        xshift = x[lo : m + 1].mean()
        dshift = (x[n - 1] - x[0]) / (n - 1)
    dr = np.empty(n - 1)
    for s in range(n - 1):
        dr[m - s] = (x[s + 1] - x[s]) - dshift
    mid = 0.5 * m
    half = max(0.5 * m, 1.0)
    full = _cross(x, dr, lo, m, maxlag, ntrend, xshift, mid, half)
    yc = ntrend + maxlag + 1
    best = maxlag
    if method > 0:
        low, ok = _cholesky(full)
        if not ok:
            return np.nan, 0, 0, SINGULAR
        tail = low[yc, yc] * low[yc, yc]
        ssr = np.empty(maxlag + 1)
        for b in range(maxlag, -1, -1):
            ssr[b] = tail
            tail += low[yc, ntrend + b] * low[yc, ntrend + b]
        if method == 3:
            best = 0
            for b in range(maxlag, -1, -1):
                k = ntrend + 1 + b
                dof = nobs - k
                tv = 0.0  # statsmodels: a saturated fit has infinite standard errors
                if dof > 0:
                    tv = (
                        math.inf if ssr[b] <= 0.0 else abs(low[yc, k - 1]) / math.sqrt(ssr[b] / dof)
                    )
                if tv >= _T_STOP:
                    best = b
                    break
        else:
            best_ic = math.inf
            penalty = 2.0 if method == 1 else math.log(nobs)
            for b in range(maxlag + 1):
                k = ntrend + 1 + b
                if nobs == k or ssr[b] <= 0.0:
                    ic = -math.inf
                else:
                    llf = -nobs / 2.0 * _LOG_2PI - nobs / 2.0 * math.log(ssr[b] / nobs) - nobs / 2.0
                    ic = -2.0 * llf + penalty * k
                if ic < best_ic or b == 0:
                    best_ic = ic
                    best = b
    # final fit: rows best..m, columns [trend, d lags 1..best, level, d]
    kk = ntrend + best + 2
    idx = np.empty(kk, dtype=np.int64)
    for t in range(ntrend):
        idx[t] = t
    for i in range(1, best + 1):
        idx[ntrend + i - 1] = ntrend + i
    idx[kk - 2] = ntrend
    idx[kk - 1] = yc
    fin = np.empty((kk, kk))
    for i in range(kk):
        for j in range(kk):
            fin[i, j] = full[idx[i], idx[j]]
    row = np.empty(kk)
    for s in range(best, lo):
        for t in range(ntrend):
            row[t] = _trend_term(s, t, mid, half)
        for i in range(1, best + 1):
            row[ntrend + i - 1] = dr[m - s + i]
        row[kk - 2] = x[s] - xshift
        row[kk - 1] = dr[m - s]
        for i in range(kk):
            for j in range(kk):
                fin[i, j] += row[i] * row[j]
    nobs = m - best + 1
    low, ok = _cholesky(fin)
    if not ok:
        return np.nan, best, nobs, SINGULAR
    dof = nobs - (kk - 1)
    if dof == 0:
        return 0.0, best, nobs, OK
    ssr = low[kk - 1, kk - 1] * low[kk - 1, kk - 1]
    if ssr < _NEAR_EXACT * fin[kk - 1, kk - 1]:
        ssr = _explicit_ssr(x, dr, best, m, ntrend, xshift, mid, half, low)
    if ssr <= 0.0:  # an exact fit: the t-value is infinite
        return np.nan, best, nobs, SINGULAR
    return low[kk - 1, kk - 2] / math.sqrt(ssr / dof), best, nobs, OK


@njit(cache=True)
def _axpy(a, u, w):
    """``w += a * u`` in place."""
    for i in range(w.size):
        w[i] += a * u[i]


@njit(cache=True)
def _residuals(y, x, ntrend):
    """Residuals and R-squared of the OLS of ``y`` on ``[x, trend terms]`` (Gram-Schmidt, twice).

    Oracle: statsmodels ``OLS(y, add_trend(x, trend)).fit()`` ``resid`` and ``rsquared``.
    """
    n = y.size
    k = ntrend + 1
    q = np.empty((k, n))
    mid = 0.5 * (n - 1)
    half = max(0.5 * (n - 1), 1.0)
    for t in range(ntrend):
        for s in range(n):
            q[t, s] = _trend_term(s, t, mid, half)
    q[ntrend] = x
    e = y.copy()
    for c in range(k):
        qc = q[c]
        for _ in range(2):
            for p in range(c):
                _axpy(-_dot2(q[p], q[p], qc)[0], q[p], qc)
        nrm = math.sqrt(_dot2(qc, qc, qc)[0])
        if nrm == 0.0:
            return e, 1.0
        for s in range(n):
            qc[s] /= nrm
    for _ in range(2):
        for p in range(k):
            _axpy(-_dot2(q[p], q[p], e)[0], q[p], e)
    ssr = _dot2(e, e, e)[0]
    if ntrend > 0:
        ybar = y.mean()
        tss = 0.0
        for s in range(n):
            tss += (y[s] - ybar) * (y[s] - ybar)
    else:
        tss = _dot2(y, y, y)[0]
    return e, 1.0 - ssr / tss


@njit(cache=True)
def coint_kernel(y, x, ntrend, maxlag, method):
    """Engle-Granger test of ``y`` on ``x``: ``(stat, pvalue, used_lag, status)``.

    Arguments as :func:`adf_kernel` (``ntrend`` is the coint ``trend``). Oracle: statsmodels
    ``coint(y, x, trend, maxlag=maxlag, autolag)`` (``coint_t`` and ``pvalue``; ``used_lag`` is
    the lag its ``adfuller`` of the residuals chose).
    """
    if _is_constant(y):
        return np.nan, np.nan, 0, Y_CONSTANT
    if _is_constant(x):
        return np.nan, np.nan, 0, X_CONSTANT
    resid, rsq = _residuals(y, x, ntrend)
    if not rsq < 1.0 - 100.0 * _SQRTEPS:
        return np.nan, np.nan, 0, COLLINEAR
    stat, lag, _, status = adf_kernel(resid, maxlag, 0, method)
    if status != OK:
        return np.nan, np.nan, lag, status
    return stat, mackinnon_p(stat, ntrend, 2), lag, OK


@njit(cache=True)
def coint_pairs_kernel(cols, pairs, ntrend, maxlag, method):
    """:func:`coint_kernel` for each ``(y, x)`` row of ``pairs`` (indices into ``cols``' rows).

    ``cols``: (symbols, bars) C-contiguous. Returns ``(stat, pvalue, used_lag, status)`` arrays.
    """
    npairs = pairs.shape[0]
    stat = np.empty(npairs)
    pvalue = np.empty(npairs)
    lag = np.empty(npairs, dtype=np.int64)
    status = np.empty(npairs, dtype=np.int64)
    for i in range(npairs):
        stat[i], pvalue[i], lag[i], status[i] = coint_kernel(
            cols[pairs[i, 0]], cols[pairs[i, 1]], ntrend, maxlag, method
        )
    return stat, pvalue, lag, status


# --------------------------------------------------------------------------- wrappers


class CointBatch(NamedTuple):
    """:func:`coint_pairs` figures, one entry per pair: ``stat``, ``pvalue`` (NaN where
    ``status`` is not :data:`OK`), ``lags`` (lag chosen for the residuals' ADF), ``status``."""

    stat: np.ndarray
    pvalue: np.ndarray
    lags: np.ndarray
    status: np.ndarray


def kernel_args(what: str, trend: object, maxlag: object, autolag: object) -> tuple[int, int, int]:
    """``(ntrend, maxlag, method)`` codes for the kernels from statsmodels-style arguments.

    ``trend``: one of :data:`TRENDS`; ``maxlag``: None (statsmodels' default) or an int >= 0;
    ``autolag``: None, "aic", "bic" or "t-stat" (any case). DataError otherwise.
    """
    if trend not in TRENDS:
        raise DataError(f"{what}: trend/regression must be one of {TRENDS}, got {trend!r}")
    method = autolag.lower() if isinstance(autolag, str) else autolag
    if method not in AUTOLAGS:
        raise DataError(f"{what}: autolag must be None, 'AIC', 'BIC' or 't-stat', got {autolag!r}")
    if maxlag is None:
        lag = -1
    elif isinstance(maxlag, bool) or not isinstance(maxlag, int | np.integer) or maxlag < 0:
        raise DataError(f"{what}: maxlag must be None or an int >= 0, got {maxlag!r}")
    else:
        lag = int(maxlag)
    return TRENDS.index(trend), lag, AUTOLAGS.index(method)


def failure(status: int, what: str, n: int, ntrend: int, maxlag: int) -> str:
    """The message for a kernel ``status`` other than :data:`OK` (``what``: the caller)."""
    limit = n // 2 - ntrend - 1
    return {
        Y_CONSTANT: f"{what}: {'y' if what == 'coint' else 'the series'} is constant, "
        "the test is undefined",
        X_CONSTANT: f"{what}: x is constant, the test is undefined",
        COLLINEAR: f"{what}: y and x are (almost) perfectly collinear, the test is undefined",
        SINGULAR: f"{what}: the level and lagged differences fit exactly or are (almost) "
        f"linearly dependent (a deterministic series?, n={n}); the test is undefined",
        TOO_SHORT: f"{what}: too few points ({n}) for the deterministic terms of trend "
        f"{TRENDS[ntrend]!r}; give more points",
        BAD_MAXLAG: f"{what}: maxlag must be at most n//2 - 1 - (trend terms) = {limit} "
        f"for n={n}, got {maxlag}",
    }.get(status, f"{what}: unknown status {status}")


def coint_pairs(
    cols: np.ndarray,
    pairs: np.ndarray,
    *,
    trend: str = "c",
    maxlag: int | None = None,
    autolag: str | None = "aic",
) -> CointBatch:
    """Engle-Granger ``coint(cols[y], cols[x])`` for every ``(y, x)`` row of ``pairs``.

    ``cols``: (symbols, bars) float64, finite (log or raw prices, as the caller tests);
    ``pairs``: (m, 2) integer row indices into ``cols``. Same figures as statsmodels ``coint``
    with the same arguments, one kernel call for all pairs (chunk ``pairs`` to spread a large
    screen over processes). Pairs that cannot be tested have NaN figures and a ``status``
    (:func:`failure` gives its message). DataError for bad shapes, indices or values,
    NumericalError for fewer than :data:`MIN_OBS` bars.
    """
    ntrend, lag, method = kernel_args("coint_pairs", trend, maxlag, autolag)
    arr = np.ascontiguousarray(cols, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"coint_pairs: cols must be 2-D (symbols, bars), got shape {arr.shape}")
    if arr.shape[1] < MIN_OBS:
        raise NumericalError(f"coint_pairs: needs at least {MIN_OBS} bars, got {arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise DataError("coint_pairs: cols hold NaN/inf values; forward-fill or drop them first")
    idx = np.ascontiguousarray(pairs, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[1] != 2:
        raise DataError(f"coint_pairs: pairs must be shaped (m, 2), got {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= arr.shape[0]):
        raise DataError(
            f"coint_pairs: pair indices must lie in [0, {arr.shape[0]}), "
            f"got {idx.min()}..{idx.max()}"
        )
    return CointBatch(*coint_pairs_kernel(arr, idx, ntrend, lag, method))
