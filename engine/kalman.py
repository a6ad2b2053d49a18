"""Kalman filter hedge ratio: y_t = beta_t * x_t + alpha_t + e_t, state [beta, alpha] a random walk.

Model (docs/semantics.md): identity transition, state noise Q = delta/(1-delta) * I,
observation noise Var(e) = obs_var, initial state mean 0 with covariance init_var * I describing
the state at the first bar (the first observation updates it directly; Q is added before every
later one). That is pykalman's ``KalmanFilter.filter`` convention, the oracle in the tests.

One numba step, ``_update`` on the state as a tuple, serves the batch kernel (looped inside
numba, the tuple kept in registers) and, through ``kalman_step`` (its in-place form on the
state array), the incremental ``KalmanHedge``; both give the same numbers bit for bit. The state
is a float64 array ``[beta, alpha, P00, P01, P11, n_seen]``. Units: those of y and x (log or
raw prices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from engine.arrays import finite_1d
from engine.errors import DataError

#: Length of the Kalman state array [beta, alpha, P00, P01, P11, n_seen].
KALMAN_STATE_SIZE = 6


@dataclass(frozen=True)
class KalmanResult:
    """Filtered hedge after observing each bar t, and the innovation of each bar."""

    beta: np.ndarray
    alpha: np.ndarray
    innovation: np.ndarray  # y_t minus the one-step prediction beta_{t|t-1} x_t + alpha_{t|t-1}
    innovation_var: np.ndarray  # its variance S_t


def check_kalman_params(
    delta: float, obs_var: float, init_var: float
) -> tuple[float, float, float]:
    """Validated (delta, obs_var, init_var) as floats; DataError naming the bad one."""
    delta, obs_var, init_var = float(delta), float(obs_var), float(init_var)
    if not (np.isfinite(delta) and 0.0 < delta < 1.0):
        raise DataError(f"Kalman delta must satisfy 0 < delta < 1, got {delta}")
    if not (np.isfinite(obs_var) and obs_var > 0.0):
        raise DataError(f"Kalman obs_var must be a finite number > 0, got {obs_var}")
    if not (np.isfinite(init_var) and init_var > 0.0):
        raise DataError(f"Kalman init_var must be a finite number > 0, got {init_var}")
    return delta, obs_var, init_var


def state_noise(delta: float) -> float:
    """Diagonal of the state noise covariance Q = delta / (1 - delta)."""
    return delta / (1.0 - delta)


@njit(cache=True)
def new_kalman_state(init_var: float) -> np.ndarray:
    """Fresh state: beta = alpha = 0, P = init_var * I, nothing seen."""
    state = np.zeros(KALMAN_STATE_SIZE)
    state[2] = init_var
    state[4] = init_var
    return state


@njit(cache=True, inline="always")
def _as_tuple(state: np.ndarray) -> tuple:
    """The state array as the tuple ``_update`` works on."""
    return state[0], state[1], state[2], state[3], state[4], state[5]


@njit(cache=True, inline="always")
def _update(kt: tuple, y: float, x: float, q: float, r: float) -> tuple[tuple, float, float]:
    """The one filter step on the state tuple (beta, alpha, P00, P01, P11, n_seen).

    Returns (new state tuple, innovation e, its variance S). Q = q*I is added to P before
    every observation but the first. The covariance update is the Joseph form
    P = (I - K H) P (I - K H)' + r K K' (valid for any gain, so it absorbs the rounding of K),
    rearranged so each step's chain from P to the next P is short; only the upper triangle is
    kept, so P stays symmetric. The state travels as a tuple so the batch loop keeps it in
    registers.
    """
    beta, alpha, p00, p01, p11, n = kt
    qn = q if n > 0.0 else 0.0
    e = y - (beta * x + alpha)
    # P H' with P + Q: brackets that do not wait for the previous P run alongside the rest
    ph0 = p00 * x + (qn * x + p01)
    p00 += qn
    p11 += qn
    ph1 = p01 * x + p11
    s = x * ph0 + (ph1 + r)
    inv_s = 1.0 / s
    k0 = ph0 * inv_s
    k1 = ph1 * inv_s
    # Joseph form for any gain K, rearranged to a short dependency chain: with B = P - K (P H')'
    # and g = P H' - K S (the rounding residual of the gain), (I - K H) P (I - K H)' + r K K'
    # equals B - g K' exactly.
    g0 = ph0 - k0 * s
    g1 = ph1 - k1 * s
    kt = (
        beta + k0 * e,
        alpha + k1 * e,
        (p00 - k0 * ph0) - g0 * k0,
        (p01 - k0 * ph1) - g0 * k1,
        (p11 - k1 * ph1) - g1 * k1,
        n + 1.0,
    )
    return kt, e, s


@njit(cache=True, inline="always")
def kalman_step(state: np.ndarray, y: float, x: float, q: float, r: float) -> tuple[float, float]:
    """Observe (y, x): update ``state`` in place, return (innovation e, its variance S).

    Loads the state array into the tuple of ``_update`` and stores it back. Oracle: pykalman
    ``KalmanFilter.filter`` with observation matrix [[x_t, 1]].
    """
    kt, e, s = _update(_as_tuple(state), y, x, q, r)
    for i in range(KALMAN_STATE_SIZE):
        state[i] = kt[i]
    return e, s


@njit(cache=True)
def _kalman_kernel(
    y: np.ndarray, x: np.ndarray, q: float, r: float, init_var: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch filter: loops ``_update``. Oracle: pykalman ``KalmanFilter.filter``."""
    n = y.size
    kt = _as_tuple(new_kalman_state(init_var))
    beta = np.empty(n)
    alpha = np.empty(n)
    innovation = np.empty(n)
    innovation_var = np.empty(n)
    for i in range(n):
        kt, e, s = _update(kt, y[i], x[i], q, r)
        beta[i] = kt[0]
        alpha[i] = kt[1]
        innovation[i] = e
        innovation_var[i] = s
    return beta, alpha, innovation, innovation_var


_HINT = "the Kalman filter needs finite prices"


def kalman_hedge(
    y: object, x: object, delta: float = 1e-5, obs_var: float = 1e-3, init_var: float = 1.0
) -> KalmanResult:
    """Kalman-filtered hedge of y on x (docs/semantics.md model); arrays of the same length as y.

    ``beta``/``alpha`` are the filtered state after observing t; ``innovation`` and
    ``innovation_var`` are e_t and S_t, in the units of y (and y squared).
    """
    delta, obs_var, init_var = check_kalman_params(delta, obs_var, init_var)
    ya = finite_1d("y", y, _HINT)
    xa = finite_1d("x", x, _HINT)
    if ya.size != xa.size:
        raise DataError(f"y and x must have the same length, got {ya.size} and {xa.size}")
    beta, alpha, e, s = _kalman_kernel(ya, xa, state_noise(delta), obs_var, init_var)
    return KalmanResult(beta=beta, alpha=alpha, innovation=e, innovation_var=s)


class KalmanHedge:
    """Incremental Kalman hedge: ``update(y, x)`` one bar at a time equals ``kalman_hedge``.

    The whole state is the float64 array ``state``, so the object copies and pickles cheaply.
    """

    def __init__(self, delta: float = 1e-5, obs_var: float = 1e-3, init_var: float = 1.0):
        self.delta, self.obs_var, self.init_var = check_kalman_params(delta, obs_var, init_var)
        self._q = state_noise(self.delta)
        self.state = new_kalman_state(self.init_var)

    @property
    def beta(self) -> float:
        """Filtered beta after the last update (0 before any)."""
        return float(self.state[0])

    @property
    def alpha(self) -> float:
        """Filtered alpha after the last update (0 before any)."""
        return float(self.state[1])

    def update(self, y: float, x: float) -> tuple[float, float, float, float]:
        """Observe one bar; return (beta, alpha, innovation e, innovation variance S)."""
        y, x = float(y), float(x)
        if not (np.isfinite(y) and np.isfinite(x)):
            raise DataError(f"the Kalman filter needs finite prices, got y={y}, x={x}")
        e, s = kalman_step(self.state, y, x, self._q, self.obs_var)
        return float(self.state[0]), float(self.state[1]), float(e), float(s)

    def reset(self) -> None:
        """Back to the initial state (nothing seen)."""
        self.state = new_kalman_state(self.init_var)
