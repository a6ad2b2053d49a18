"""Rolling z-score (engine.rolling.rolling_zscore) vs pandas rolling mean/std, and the
throughput of the many-pairs step (engine.pairstep.PairBank) vs one PairStepper call per pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.timing import best_s
from engine.pairstep import PairBank, PairParams, PairStepper
from engine.rolling import rolling_zscore


def _pandas_z(s: pd.Series, window: int) -> pd.Series:
    roll = s.rolling(window)
    return (s - roll.mean()) / roll.std()


def _zscore_rows(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    s = 1e5 + np.cumsum(rng.normal(0.0, 1.0, n))
    ps = pd.Series(s)
    rows = []
    for window in (60, 10_000):
        rolling_zscore(s[: window + 1], window)  # compile / load the cache
        ours = best_s(lambda w=window: rolling_zscore(s, w), 5)
        peer = best_s(lambda w=window: _pandas_z(ps, w), 5)
        rows.append(
            {
                "case": f"rolling_zscore {n:,} points, window {window:,}",
                "ours_s": ours,
                "peer": "pandas (s - rolling.mean()) / rolling.std()",
                "peer_s": peer,
                "ratio": peer / ours,
            }
        )
    return rows


def _bank_row(n_pairs: int, n_steps: int) -> dict:
    params = PairParams()
    rng = np.random.default_rng(1)
    cx = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, (n_steps, n_pairs)), axis=0))
    cy = 50.0 * cx**1.2 * np.exp(rng.normal(0.0, 1e-3, (n_steps, n_pairs)))
    PairBank(params, 2).step_many(cy[0, :2], cx[0, :2])  # compile / load the cache

    def bank() -> None:
        b = PairBank(params, n_pairs)
        for t in range(n_steps):
            b.step_many(cy[t], cx[t])

    peer_steps = max(1, n_steps // 10)

    def steppers() -> None:
        s = [PairStepper(params) for _ in range(n_pairs)]
        for t in range(peer_steps):
            for i in range(n_pairs):
                s[i].step(cy[t, i], cx[t, i])

    ours = best_s(bank, 3)
    peer = best_s(steppers, 1) * n_steps / peer_steps
    return {
        "case": f"PairBank.step_many, {n_pairs:,} pairs x {n_steps:,} steps",
        "ours_s": ours,
        "peer": f"one PairStepper.step per pair (timed on {peer_steps} steps, scaled)",
        "peer_s": peer,
        "ratio": peer / ours,
        "pair_steps_per_s": n_pairs * n_steps / ours,
    }


def run(quick: bool) -> list[dict]:
    """Rows: z-score at two windows, then PairBank throughput for 1,000 pairs."""
    n, steps = (100_000, 50) if quick else (1_000_000, 500)
    return [*_zscore_rows(n), _bank_row(1_000, steps)]
