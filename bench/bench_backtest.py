"""Backtest kernel throughput (bars/s on one core) beside a pandas + plain-Python peer.

Cases: ``simulate_kernel`` (fills, costs, equity) from zscore targets, and the zscore strategy
batch kernel. The peer implements the same rules with pandas (shifted arrays) and a Python loop.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from bench.timing import best_of
from engine.backtest import simulate_kernel
from engine.config import StrategyConfig
from strategies import make_strategy


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


def run(quick: bool) -> list[dict]:
    """Rows for the strategy and simulation kernels and the sweep; ratio = peer_s / ours_s."""
    n = 200_000 if quick else 2_000_000
    d = _inputs(n)
    entry, exit_, stop = 1.5, 0.0, 3.5

    def ours_strategy() -> np.ndarray:
        config = StrategyConfig(name="zscore", entry=entry, exit=exit_, stop=stop)
        return make_strategy(config).run(d["z"])

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
            np.full(n, 10_000.0),  # fixed notional per entry
            False,
            np.inf,  # no gross cap
            10_000.0,
            -np.inf,  # no ruin floor: the peer has none
            n,  # never halted
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
        ours_s, ours_out = best_of(ours, 5)
        peer_s, peer_out = best_of(peer, 1)
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
    return rows + run_sweep(quick)


# ----------------------------------------------------------------------------- parameter sweep


def _sweep_bars(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two legs' 1m bars (BAR_DTYPE) of a cointegrated pair, about 2% of each leg missing."""
    from engine.schemas import BAR_DTYPE

    d = _inputs(n, seed)
    rng = np.random.default_rng(seed + 1)
    legs = []
    for leg in ("y", "x"):
        bars = np.zeros(n, dtype=BAR_DTYPE)
        bars["ts"] = 1_704_067_200_000 + 60_000 * np.arange(n)  # 2024-01-01
        bars["open"], bars["close"] = d[f"open_{leg}"], d[f"close_{leg}"]
        bars["high"] = np.maximum(bars["open"], bars["close"])
        bars["low"] = np.minimum(bars["open"], bars["close"])
        bars["volume"] = 1.0
        bars["quote_volume"] = bars["close"]
        bars["trades"] = 1
        keep = rng.random(n) > 0.02
        keep[0] = True
        legs.append(bars[keep])
    return legs[0], legs[1]


def run_sweep(quick: bool) -> list[dict]:
    """Sweep wall time with 1 and 2 BacktestActors beside ``engine.backtest.run`` called once
    per set in-process on freshly loaded data (the peer re-aligns and re-steps the pair every
    time).

    Ray is started before anything is timed. Per actor count: ``setup_s`` is the one-off cost
    (data put in the object store, actors started, data fetched, kernels loaded: ``SweepPool``
    start), ``run_s`` the sets themselves (``sets_per_s``), ``ours_s`` both. ``inproc_s`` is the
    same grouped sets through one plain ``BacktestActor`` in the driver (no Ray), the one-core
    figure that actors must beat. Full: 1,000 sets over a year of 1m bars (525,600); quick: 50
    sets over 30 days. In full mode the peer runs the first 100 sets and its time is scaled to
    all of them (``peer_sets``).
    """
    import ray

    from actors.backtest import BacktestActor, SweepPool
    from engine.backtest import Costs
    from engine.backtest import run as run_backtest
    from engine.backtest_data import PairData
    from engine.config import StrategyConfig
    from engine.sweep import assign_chunks, plan_sweep
    from strategies import make_strategy

    def backtest(p, s):  # the peer: data aligned again, pair stepped again, for every set
        fresh = PairData.from_tables(by, bx, y="YUSDT", x="XUSDT", timeframe="1m")
        return run_backtest(fresh, p, make_strategy(s), Costs.from_config(s))

    n = 30 * 1440 if quick else 525_600
    if quick:
        grid = {"zscore_window": [30, 60], "entry": [1.5, 2.0, 2.5, 3.0, 3.5],
                "exit": [0.0, 0.2, 0.4, 0.6, 0.8]}
    else:
        grid = {"zscore_window": [30, 60, 120, 240], "delta": [1e-5, 1e-4],
                "entry": [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0,
                          4.25, 4.5, 4.75, 5.0, 5.25, 5.5, 5.75, 6.0, 6.25, 6.5, 6.75, 7.0],
                "exit": [0.0, 0.2, 0.4, 0.6, 0.8]}
    by, bx = _sweep_bars(n)
    data = PairData.from_tables(by, bx, y="YUSDT", x="XUSDT", timeframe="1m")
    _, sets, _ = plan_sweep(data, grid, strategy=StrategyConfig(stop=None))  # all valid
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        backtest(*sets[0])  # compile (or load the cache) untimed
        peer_sets = sets if quick else sets[:100]
        started = time.perf_counter()
        want = [backtest(p, s).stats for p, s in peer_sets]
        peer_s = (time.perf_counter() - started) * len(sets) / len(peer_sets)
        local = BacktestActor(data)
        order = [j for chunk in assign_chunks(sets, 1)[0] for j in chunk]
        started = time.perf_counter()
        inproc = dict(zip(order, local.run([sets[j] for j in order]), strict=True))
        inproc_s = time.perf_counter() - started
        final = [inproc[j]["final_equity"] for j in range(len(sets))]
        np.testing.assert_array_equal(final[: len(peer_sets)], [w["final_equity"] for w in want])
        rows: list[dict] = []
        for n_actors in (1, 2):
            started = time.perf_counter()
            with SweepPool(data, n_actors).start(sets[0]) as pool:
                setup_s = time.perf_counter() - started
                got = pool.run_sets(sets)
                run_s = time.perf_counter() - started - setup_s
            np.testing.assert_array_equal([g["final_equity"] for g in got], final)
            ours_s = setup_s + run_s
            rows.append(
                {
                    "case": f"sweep, {n_actors} actor{'s' if n_actors > 1 else ''}",
                    "bars": data.n,
                    "sets": len(sets),
                    "setup_s": setup_s,
                    "run_s": run_s,
                    "sets_per_s": len(sets) / run_s,
                    "ours_s": ours_s,
                    "speedup_run": rows[0]["run_s"] / run_s if rows else 1.0,
                    "inproc_s": inproc_s,
                    "peer": "backtest() per set, in-process",
                    "peer_sets": len(peer_sets),
                    "peer_s": peer_s,
                    "ratio": peer_s / ours_s,
                }
            )
    finally:
        if owns_ray:
            ray.shutdown()
    return rows
