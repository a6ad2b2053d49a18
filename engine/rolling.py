"""Rolling window statistics: z-score, mean/std and OLS, batch and incremental from one step.

Every statistic here is computed over the window of ``window`` points that ends at and includes
point t; it is NaN until the window is full. Each has a numba *step* that pushes one value into a
ring buffer and returns the statistic for the window ending at that value. The batch kernels loop
the very same step inside numba, so feeding values one at a time (live) gives bit-identical
results to the batch call (backtest).

Numerics: running sums are kept about a shift K (close to the window mean), so they never hold
the large offset of the raw values (prices around 1e5 lose nothing); they slide by adding the
new point and removing the one that leaves. They are recomputed exactly (two-pass, about the new
window mean) every ``8 * window`` steps (``window`` for the OLS co-moments), which moves K back
near the level and bounds the number of updates a rounding error can build over, and sooner
whenever the summed size of the updates since the last recomputation grows large next to the
current sums (a drift guard).

State layout: a ring buffer (float64 array of length ``window``; ``(2, window)`` for OLS) and a
small float64 state array (indices below). Both are plain arrays, so a stepper can be copied or
pickled, and a many-pairs host can stack them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.arrays import finite_1d
from engine.errors import DataError

# z-score / mean-std state indices
_N = 0  # values pushed so far
_POS = 1  # next ring slot
_K = 2  # shift (NaN until the first finite value)
_M = 3  # mean of the finite values in the window, minus K
_M2 = 4  # sum of squared deviations from the mean of the finite values in the window
_SINCE = 5  # pushes since the last exact recomputation
_NAN = 6  # NaN values in the window
_RUN = 7  # length of the current run of equal values
_LAST = 8  # last value pushed
_C = 9  # finite values in the window
_ACC = 10  # sum of |M2 updates| since the last recomputation (bounds its rounding error)
ZSTATE_SIZE = 11

#: Recompute exactly once the updates summed since the last recomputation exceed this many
#: times the current M2: the sliding M2 then has a relative error below about 2**10 * 2**-52.
_DRIFT = 1024.0

#: Recompute exactly at least every ``_EVERY * window`` pushes, so the shift K follows the level.
_EVERY = 8

# OLS state indices
_ON = 0
_OPOS = 1
_KX = 2
_KY = 3
_MX = 4  # mean of (x - Kx) over the window
_MY = 5  # mean of (y - Ky) over the window
_CXX = 6  # sum of (x - mean x)^2
_CXY = 7  # sum of (x - mean x)(y - mean y)
_OSINCE = 8
_XRUN = 9  # length of the current run of equal x values
_XLAST = 10
_OACC = 11  # sum of |CXX updates| since the last recomputation
OLS_STATE_SIZE = 12


# ---------------------------------------------------------------- window mean / std / z-score


@njit(cache=True)
def new_window_state(window: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh (ring buffer, state) for the mean/std/z-score step over ``window`` points."""
    buf = np.full(window, np.nan)
    state = np.zeros(ZSTATE_SIZE)
    state[_K] = np.nan
    state[_LAST] = np.nan
    return buf, state


@njit(cache=True)
def _recompute(buf: np.ndarray) -> tuple[float, float, float, float]:
    """Exact (K, M, M2, count) of the finite values in a full buffer, about a new shift K.

    Two passes: K is the plain mean, then M and M2 come from the deviations d = v - K in one
    pass with the corrected two-pass formula M2 = sum d^2 - (sum d)^2 / count.
    """
    total = 0.0
    count = 0
    for v in buf:
        if not np.isnan(v):
            total += v
            count += 1
    if count == 0:
        return np.nan, 0.0, 0.0, 0.0
    k = total / count
    s1 = 0.0
    s2 = 0.0
    for v in buf:
        if not np.isnan(v):
            d = v - k
            s1 += d
            s2 += d * d
    m = s1 / count
    return k, m, s2 - s1 * m, float(count)


@njit(cache=True, inline="always")
def _load(st: np.ndarray) -> tuple:
    """The z-score state array as a tuple of floats, in the index order above."""
    return (st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9], st[10])


@njit(cache=True, inline="always")
def _store(st: np.ndarray, zs: tuple) -> None:
    """Write a state tuple from ``_push`` back into the state array."""
    for i in range(ZSTATE_SIZE):
        st[i] = zs[i]


@njit(cache=True, inline="always")
def _push(buf: np.ndarray, zs: tuple, value: float) -> tuple:
    """The one mean/M2 step: push ``value`` into the ring, return the new state tuple.

    Sliding Welford updates of the mean and M2 about the shift K; exact recomputation every
    ``_EVERY * window`` pushes (to move K back near the mean), or sooner when M2 has shrunk so
    much that its rounding error could show. The state travels as a tuple so the batch loop
    keeps it in registers; ``window_push`` loads and stores it from the state array.
    """
    n, pos, k, m, m2, since, nans, run, last, c, acc = zs
    w = buf.size
    p = int(pos)
    full = n >= w
    old = buf[p] if full else np.nan
    buf[p] = value
    pos = pos + 1.0 if p + 1 < w else 0.0
    n += 1.0
    new_ok = not np.isnan(value)
    old_ok = not np.isnan(old)
    if new_ok and np.isnan(k):
        k = value
    if new_ok and old_ok:
        dn = value - k
        do = old - k
        # a NaN-free window (c == w, the common case) multiplies by the loop-invariant 1/w
        m_new = m + ((dn - do) * (1.0 / w) if c == w else (dn - do) / c)
        upd = (dn - do) * ((dn - m_new) + (do - m))
        m2 += upd
        acc += abs(upd)
        m = m_new
    elif old_ok:
        c -= 1.0
        if c == 0.0:
            m = 0.0
            m2 = 0.0
        else:
            delta = (old - k) - m
            m_new = m - delta / c
            upd = delta * ((old - k) - m_new)
            m2 -= upd
            acc += abs(upd)
            m = m_new
    elif new_ok:
        c += 1.0
        delta = (value - k) - m
        m_new = m + delta / c
        upd = delta * ((value - k) - m_new)
        m2 += upd
        acc += abs(upd)
        m = m_new
    if new_ok:
        run = run + 1.0 if value == last else 1.0
        if full and not old_ok:
            nans -= 1.0
    else:
        run = 0.0
        if full == old_ok:
            nans += 1.0
    last = value
    since += 1.0
    if since >= _EVERY * w or (run < w and acc > _DRIFT * m2):
        k, m, m2, c = _recompute(buf)
        since = 0.0
        acc = 0.0
    return n, pos, k, m, m2, since, nans, run, last, c, acc


@njit(cache=True, inline="always")
def window_push(buf: np.ndarray, st: np.ndarray, value: float) -> None:
    """Push one value (NaN allowed: the window then reports NaN until it leaves) into the ring."""
    _store(st, _push(buf, _load(st), value))


@njit(cache=True, inline="always")
def _var(w: int, run: float, m2: float) -> float:
    """Sample variance (ddof=1) of a full NaN-free window; exactly 0 for a constant window."""
    if run >= w:
        return 0.0
    return max(m2, 0.0) / (w - 1)


@njit(cache=True)
def window_mean_var(buf: np.ndarray, st: np.ndarray) -> tuple[float, float]:
    """(mean, sample variance ddof=1) of the current window; NaN unless full and NaN-free."""
    w = buf.size
    if st[_N] < w or st[_NAN] > 0:
        return np.nan, np.nan
    return st[_K] + st[_M], _var(w, st[_RUN], st[_M2])


@njit(cache=True, inline="always")
def _zstep(buf: np.ndarray, zs: tuple, value: float) -> tuple[tuple, float]:
    """The one z-score step on a state tuple: (new state, z of ``value`` in its window)."""
    zs = _push(buf, zs, value)
    w = buf.size
    if zs[_N] < w or zs[_NAN] > 0 or zs[_RUN] >= w or zs[_M2] <= 0.0:
        return zs, np.nan
    # z = d / sqrt(M2 / (w - 1)), with one division: sqrt(w - 1) is fixed for the window
    return zs, ((value - zs[_K]) - zs[_M]) / np.sqrt(zs[_M2]) * np.sqrt(w - 1.0)


@njit(cache=True, inline="always")
def zscore_step(buf: np.ndarray, st: np.ndarray, value: float) -> float:
    """Push ``value`` and return its z-score in the window ending at it (ddof=1).

    Oracle: pandas ``(s - s.rolling(w).mean()) / s.rolling(w).std()``. NaN while the window is
    not full or holds a NaN, and NaN when the window's std is zero (a constant window).
    """
    zs, z = _zstep(buf, _load(st), value)
    _store(st, zs)
    return z


@njit(cache=True)
def _rolling_zscore_kernel(s: np.ndarray, window: int) -> np.ndarray:
    """Batch z-score: loops ``_zstep``. Oracle: pandas rolling mean/std (ddof=1)."""
    buf, st = new_window_state(window)
    zs = _load(st)
    out = np.empty(s.size)
    for i in range(s.size):
        zs, out[i] = _zstep(buf, zs, s[i])
    return out


@njit(cache=True)
def _rolling_mean_std_kernel(s: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch rolling mean and std (ddof=1). Oracle: pandas ``rolling(w).mean()/.std()``."""
    buf, st = new_window_state(window)
    mean = np.empty(s.size)
    std = np.empty(s.size)
    for i in range(s.size):
        window_push(buf, st, s[i])
        m, v = window_mean_var(buf, st)
        mean[i] = m
        std[i] = np.sqrt(v)
    return mean, std


# ---------------------------------------------------------------- rolling OLS


@njit(cache=True)
def new_ols_state(window: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh (ring buffer of shape (2, window): x row then y row, state) for ``ols_step``."""
    buf = np.full((2, window), np.nan)
    state = np.zeros(OLS_STATE_SIZE)
    state[_XLAST] = np.nan
    return buf, state


@njit(cache=True)
def _ols_recompute(buf: np.ndarray, st: np.ndarray) -> None:
    """Exact two-pass means and co-moments of a full window, about new shifts."""
    w = buf.shape[1]
    kx = 0.0
    ky = 0.0
    for i in range(w):
        kx += buf[0, i]
        ky += buf[1, i]
    kx /= w
    ky /= w
    sx = 0.0
    sy = 0.0
    for i in range(w):
        sx += buf[0, i] - kx
        sy += buf[1, i] - ky
    mx = sx / w
    my = sy / w
    cxx = 0.0
    cxy = 0.0
    for i in range(w):
        dx = (buf[0, i] - kx) - mx
        cxx += dx * dx
        cxy += dx * ((buf[1, i] - ky) - my)
    st[_KX] = kx
    st[_KY] = ky
    st[_MX] = mx
    st[_MY] = my
    st[_CXX] = cxx
    st[_CXY] = cxy
    st[_OSINCE] = 0.0
    st[_OACC] = 0.0


@njit(cache=True, inline="always")
def ols_push(buf: np.ndarray, st: np.ndarray, y: float, x: float) -> None:
    """Push one finite (y, x) point into the OLS ring (sliding Welford co-moments about shifts)."""
    w = buf.shape[1]
    pos = int(st[_OPOS])
    n = st[_ON]
    if n == 0:
        st[_KX] = x
        st[_KY] = y
    kx = st[_KX]
    ky = st[_KY]
    if n >= w:
        # remove the point leaving the window (count w -> w - 1)
        dx = (buf[0, pos] - kx) - st[_MX]
        dy = (buf[1, pos] - ky) - st[_MY]
        mx = st[_MX] - dx / (w - 1)
        my = st[_MY] - dy / (w - 1)
        ux = dx * ((buf[0, pos] - kx) - mx)
        uy = dx * ((buf[1, pos] - ky) - my)
        st[_CXX] -= ux
        st[_CXY] -= uy
        st[_OACC] += abs(ux)
        st[_MX] = mx
        st[_MY] = my
        count = float(w)
    else:
        count = n + 1.0
    # add the new point
    dx = (x - kx) - st[_MX]
    dy = (y - ky) - st[_MY]
    mx = st[_MX] + dx / count
    my = st[_MY] + dy / count
    ux = dx * ((x - kx) - mx)
    st[_CXX] += ux
    st[_CXY] += dx * ((y - ky) - my)
    st[_OACC] += abs(ux)
    st[_MX] = mx
    st[_MY] = my
    buf[0, pos] = x
    buf[1, pos] = y
    st[_OPOS] = pos + 1 if pos + 1 < w else 0
    st[_ON] = n + 1.0
    st[_XRUN] = st[_XRUN] + 1.0 if x == st[_XLAST] else 1.0
    st[_XLAST] = x
    st[_OSINCE] += 1.0
    if st[_OSINCE] >= w or (n + 1.0 >= w and st[_XRUN] < w and st[_OACC] > _DRIFT * st[_CXX]):
        _ols_recompute(buf, st)


@njit(cache=True, inline="always")
def ols_full(buf: np.ndarray, st: np.ndarray) -> bool:
    """True once the OLS window holds ``window`` points."""
    return st[_ON] >= buf.shape[1]


@njit(cache=True, inline="always")
def ols_fit(buf: np.ndarray, st: np.ndarray) -> tuple[float, float]:
    """(beta, alpha) of y = beta*x + alpha on the current window; NaN unless full and x varies."""
    w = buf.shape[1]
    if st[_ON] < w or st[_XRUN] >= w or st[_CXX] <= 0.0:
        return np.nan, np.nan
    beta = st[_CXY] / st[_CXX]
    alpha = (st[_KY] + st[_MY]) - beta * (st[_KX] + st[_MX])
    return beta, alpha


@njit(cache=True, inline="always")
def ols_step(buf: np.ndarray, st: np.ndarray, y: float, x: float) -> tuple[float, float]:
    """Push (y, x) and return (beta, alpha) fitted on the window ending at it.

    Oracle: statsmodels ``OLS(y_w, add_constant(x_w)).fit().params`` on each window.
    """
    ols_push(buf, st, y, x)
    return ols_fit(buf, st)


@njit(cache=True)
def _rolling_ols_kernel(y: np.ndarray, x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch rolling OLS: loops ``ols_step``. Oracle: statsmodels OLS per window."""
    buf, st = new_ols_state(window)
    beta = np.empty(y.size)
    alpha = np.empty(y.size)
    for i in range(y.size):
        b, a = ols_step(buf, st, y[i], x[i])
        beta[i] = b
        alpha[i] = a
    return beta, alpha


# ---------------------------------------------------------------- validating wrappers


_HINT = "drop or fill them before computing rolling statistics"


def check_window(window: object, n: int | None = None, name: str = "window") -> int:
    """Validate a window length (int >= 2; not larger than ``n`` points when n is given)."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise DataError(f"{name} must be an integer, got {window!r}")
    if window < 2:
        raise DataError(f"{name} must be at least 2 (sample std/OLS), got {window}")
    if n is not None and window > n:
        raise DataError(f"{name} {window} is larger than the data ({n} points)")
    return int(window)


def rolling_zscore(s: object, window: int) -> np.ndarray:
    """Rolling z-score of ``s`` (units of window std; ddof=1), window ending at and including t.

    NaN for the first ``window - 1`` points and wherever the window's std is zero (constant
    values). Stable for large offsets (prices around 1e5) and long windows. Non-finite input is
    a DataError, as is a window larger than the data.
    """
    arr = finite_1d("s", s, _HINT)
    w = check_window(window, arr.size)
    return _rolling_zscore_kernel(arr, w)


def rolling_mean_std(s: object, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling (mean, sample std ddof=1) over the window ending at and including t; NaN before."""
    arr = finite_1d("s", s, _HINT)
    w = check_window(window, arr.size)
    return _rolling_mean_std_kernel(arr, w)


def rolling_ols(y: object, x: object, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling OLS hedge ``y = beta*x + alpha`` on the window ending at and including t.

    Returns (beta, alpha) arrays in the units of y per unit of x; NaN for the first
    ``window - 1`` points and wherever x is constant over the window.
    """
    ya = finite_1d("y", y, _HINT)
    xa = finite_1d("x", x, _HINT)
    if ya.size != xa.size:
        raise DataError(f"y and x must have the same length, got {ya.size} and {xa.size}")
    w = check_window(window, ya.size)
    return _rolling_ols_kernel(ya, xa, w)


class RollingZScore:
    """Incremental rolling z-score: ``update(value) -> z`` equals ``rolling_zscore`` bit for bit.

    NaN values are accepted live (the z is NaN while one is in the window).
    """

    def __init__(self, window: int):
        self.window = check_window(window)
        self.buf, self.state = new_window_state(self.window)

    def update(self, value: float) -> float:
        """Push one value; return the z-score of the window ending at it."""
        return float(zscore_step(self.buf, self.state, float(value)))

    def reset(self) -> None:
        """Forget every value seen."""
        self.buf, self.state = new_window_state(self.window)


class RollingOLS:
    """Incremental rolling OLS: ``update(y, x) -> (beta, alpha)`` equals ``rolling_ols``."""

    def __init__(self, window: int):
        self.window = check_window(window)
        self.buf, self.state = new_ols_state(self.window)

    def update(self, y: float, x: float) -> tuple[float, float]:
        """Push one finite (y, x) point; return (beta, alpha) of the window ending at it."""
        y, x = float(y), float(x)
        if not (np.isfinite(y) and np.isfinite(x)):
            raise DataError(f"rolling OLS needs finite y and x, got y={y}, x={x}")
        beta, alpha = ols_step(self.buf, self.state, y, x)
        return float(beta), float(alpha)

    def reset(self) -> None:
        """Forget every point seen."""
        self.buf, self.state = new_ols_state(self.window)
