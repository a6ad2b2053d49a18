"""Kalman filter hedge ratio: y_t = beta_t * x_t + alpha_t + e_t, state [beta, alpha] a random walk.

Model (DESIGN.md contract): identity transition, state noise Q = delta/(1-delta) * I,
observation noise Var(e) = obs_var, initial state mean 0 with covariance init_var * I describing
the state at the first bar (the first observation updates it directly; Q is added before every
later one). That is pykalman's ``KalmanFilter.filter`` convention, the oracle in the tests.

One numba step, ``kalman_step``, serves the batch kernel (looped inside numba) and the
incremental ``KalmanHedge``; both give the same numbers bit for bit. The state is a float64
array ``[beta, alpha, P00, P01, P11, n_seen]``. Units: those of y and x (log or raw prices).
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
def kalman_step(state: np.ndarray, y: float, x: float, q: float, r: float) -> tuple[float, float]:
    """Observe (y, x): update ``state`` in place, return (innovation e, its variance S).

    Q = q*I is added to P before every observation but the first. The covariance update is the
    Joseph form P = (I - K H) P (I - K H)' + r K K', which stays symmetric and positive
    semi-definite under rounding. Oracle: pykalman ``KalmanFilter.filter`` with observation
    matrix [[x_t, 1]].
    """
    p00 = state[2]
    p01 = state[3]
    p11 = state[4]
    if state[5] > 0.0:
        p00 += q
        p11 += q
    e = y - (state[0] * x + state[1])
    ph0 = p00 * x + p01  # P H'
    ph1 = p01 * x + p11
    s = x * ph0 + ph1 + r
    k0 = ph0 / s
    k1 = ph1 / s
    state[0] += k0 * e
    state[1] += k1 * e
    # A = I - K H = [[1 - k0 x, -k0], [-k1 x, 1 - k1]]
    a00 = 1.0 - k0 * x
    a01 = -k0
    a10 = -k1 * x
    a11 = 1.0 - k1
    # B = A P
    b00 = a00 * p00 + a01 * p01
    b01 = a00 * p01 + a01 * p11
    b10 = a10 * p00 + a11 * p01
    b11 = a10 * p01 + a11 * p11
    state[2] = b00 * a00 + b01 * a01 + r * k0 * k0
    state[3] = b00 * a10 + b01 * a11 + r * k0 * k1
    state[4] = b10 * a10 + b11 * a11 + r * k1 * k1
    state[5] += 1.0
    return e, s


@njit(cache=True)
def _kalman_kernel(
    y: np.ndarray, x: np.ndarray, q: float, r: float, init_var: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch filter: loops ``kalman_step``. Oracle: pykalman ``KalmanFilter.filter``."""
    n = y.size
    state = new_kalman_state(init_var)
    beta = np.empty(n)
    alpha = np.empty(n)
    innovation = np.empty(n)
    innovation_var = np.empty(n)
    for i in range(n):
        e, s = kalman_step(state, y[i], x[i], q, r)
        beta[i] = state[0]
        alpha[i] = state[1]
        innovation[i] = e
        innovation_var[i] = s
    return beta, alpha, innovation, innovation_var


_HINT = "the Kalman filter needs finite prices"


def kalman_hedge(
    y: object, x: object, delta: float = 1e-5, obs_var: float = 1e-3, init_var: float = 1.0
) -> KalmanResult:
    """Kalman-filtered hedge of y on x (DESIGN.md model); arrays of the same length as y.

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
