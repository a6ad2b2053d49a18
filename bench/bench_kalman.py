"""Kalman hedge (engine.kalman.kalman_hedge) vs pykalman's KalmanFilter.filter on the same model.

pykalman is a pure-Python loop (tens of microseconds per bar), so it is timed on a shorter
series and scaled linearly to the full size; the row says so.
"""

from __future__ import annotations

import numpy as np

from bench.timing import best_s
from engine.kalman import kalman_hedge


def _series(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.log(100.0) + np.cumsum(rng.normal(0.0, 1e-3, n))
    y = 0.2 + 1.5 * x + rng.normal(0.0, 2e-3, n)
    return y, x


def run(quick: bool) -> list[dict]:
    """One row: ours on n bars, pykalman on n_peer bars scaled to n."""
    from pykalman import KalmanFilter

    n, n_peer = (10_000, 1_000) if quick else (100_000, 10_000)
    y, x = _series(n)
    kalman_hedge(y[:10], x[:10])  # compile / load the cache outside the timing
    ours = best_s(lambda: kalman_hedge(y, x), 5)
    delta, obs_var = 1e-5, 1e-3
    q = delta / (1 - delta)
    kf = KalmanFilter(
        transition_matrices=np.eye(2),
        observation_matrices=np.stack([x[:n_peer], np.ones(n_peer)], axis=1)[:, None, :],
        transition_covariance=q * np.eye(2),
        observation_covariance=np.array([[obs_var]]),
        initial_state_mean=np.zeros(2),
        initial_state_covariance=np.eye(2),
    )
    peer_measured = best_s(lambda: kf.filter(y[:n_peer, None]), 1)
    peer = peer_measured * n / n_peer
    return [
        {
            "case": f"kalman_hedge {n:,} bars",
            "ours_s": ours,
            "peer": f"pykalman filter, timed on {n_peer:,} bars x {n // n_peer} (linear)",
            "peer_s": peer,
            "ratio": peer / ours,
            "ns_per_bar": ours / n * 1e9,
        }
    ]
