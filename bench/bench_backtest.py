"""Backtest kernel throughput (bars/s on one core) beside a pandas + plain-Python peer.

Cases: ``simulate_kernel`` (fills, costs, equity) from zscore targets, and the zscore strategy
batch kernel. The peer implements the same rules with pandas (shifted arrays) and a Python loop.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from engine.backtest import simulate_kernel
from strategies.zscore import zscore_run


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_x = np.log(100.0) + np.cumsum(rng.normal(0.0, 1e-3, n))
    spread = np.zeros(n)
    shocks = rng.normal(0.0, 2e-3, n)
    for i in range(1, n):  # AR(1) spread, half-life about 20 bars
        spread[i] = 0.966 * spread[i - 1] + shocks[i]
    close_y, close_x = np.exp(0.2 + 1.5 * log_x + spread), np.exp(log_x)
    z = spread / spread.std()
    return {
        "open_y": np.concatenate(([close_y[0]], close_y[:-1])),
        "close_y": close_y,
        "open_x": np.concatenate(([close_x[0]], close_x[:-1])),
        "close_x": close_x,
        "z": z,
        "beta": np.full(n, 1.5),
    }


def _peer_strategy(z: np.ndarray, entry: float, exit_: float, stop: float) -> np.ndarray:
    pos, blocked, out = 0, False, []
    for v in z.tolist():
        if v != v:
            pass
        elif pos == 0:
            if blocked:
                blocked = not abs(v) < entry
            elif entry < v <= stop:
                pos = -1
            elif -stop <= v < -entry:
                pos = 1
        elif (v >= -exit_) if pos > 0 else (v <= exit_):
            pos = 0
        elif abs(v) > stop:
            pos, blocked = 0, True
        out.append(pos)
    return np.array(out, dtype=np.int8)


def _peer_simulate(d: dict[str, np.ndarray], target: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame({k: d[k] for k in ("open_y", "close_y", "open_x", "close_x", "beta")})
    frame["want"] = pd.Series(target).shift(1, fill_value=0)  # decided at t-1, filled at open t
    frame["beta_dec"] = frame["beta"].shift(1)
    notional, fee, slip = 10_000.0, 5e-4, 1e-4
    cash, pos, qy, qx, equity = notional, 0, 0.0, 0.0, []
    for oy, cy, ox, cx, want, b in frame[
        ["open_y", "close_y", "open_x", "close_x", "want", "beta_dec"]
    ].itertuples(index=False):
        if want != pos:
            if pos != 0:
                fy = oy * (1 - slip) if qy > 0 else oy * (1 + slip)
                fx = ox * (1 - slip) if qx > 0 else ox * (1 + slip)
                cash += qy * fy + qx * fx - fee * (abs(qy) * fy + abs(qx) * fx)
                pos, qy, qx = 0, 0.0, 0.0
            if want != 0:
                fy = oy * (1 + slip * want)
                fx = ox * (1 - slip * want) if b > 0 else ox * (1 + slip * want)
                qy, qx = want * notional / fy, -want * b * notional / fx
                cash -= qy * fy + qx * fx + fee * (abs(qy) * fy + abs(qx) * fx)
                pos = want
        equity.append(cash + qy * cy + qx * cx)
    return np.array(equity)


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def run(quick: bool) -> list[dict]:
    """Rows for the strategy and simulation kernels; ratio = peer_s / ours_s."""
    n = 200_000 if quick else 2_000_000
    d = _inputs(n)
    entry, exit_, stop = 1.5, 0.0, 3.5

    def ours_strategy() -> np.ndarray:
        out = np.empty(n, dtype=np.int8)
        zscore_run(np.zeros(2), d["z"], entry, exit_, stop, out)
        return out

    def ours_simulate():
        return simulate_kernel(
            d["open_y"],
            d["close_y"],
            d["open_x"],
            d["close_x"],
            target,
            d["beta"],
            zeros,
            zeros,
            10_000.0,
            10_000.0,
            5e-4,
            1e-4,
            True,
        )[0]

    ours_strategy()  # compile (or load the cache) outside the timing
    target = ours_strategy()
    zeros = np.zeros(n)
    ours_simulate()
    rows = []
    for case, ours, peer, peer_name in (
        (
            "zscore strategy",
            ours_strategy,
            lambda: _peer_strategy(d["z"], entry, exit_, stop),
            "plain-Python loop",
        ),
        (
            "two-leg simulation",
            ours_simulate,
            lambda: _peer_simulate(d, target),
            "pandas + Python loop",
        ),
    ):
        ours_s, ours_out = _best(ours, 5)
        peer_s, peer_out = _best(peer, 1)
        if case == "zscore strategy":
            np.testing.assert_array_equal(ours_out, peer_out)
        else:
            np.testing.assert_allclose(ours_out, peer_out, rtol=1e-9)
        rows.append(
            {
                "case": case,
                "bars": n,
                "position_changes": int(np.count_nonzero(np.diff(target))),
                "ours_s": ours_s,
                "bars_per_s": n / ours_s,
                "peer": peer_name,
                "peer_s": peer_s,
                "ratio": peer_s / ours_s,
            }
        )
    return rows
