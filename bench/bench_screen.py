"""``pairstack screen`` end to end on a generated store: 500 symbols x 30 days of 5m bars.

The store (8,640 bars per symbol, one file per symbol and day, bars missing at random, groups
of cointegrated symbols) is written to a temporary directory first (not timed). Each row times
what ``pairstack screen`` does after it has parsed its options: ``engine.screen.load_bars``
(store read), then ``screen_bars`` (universe, alignment, the co-moments, every pair in both
orders, the table) on ``actors.screen.ScreenRunner(n)`` Ray actors (their start-up is timed;
the Ray cluster, 2 CPUs, is started once before). Cases: 500 symbols (124,750 pairs) on 1 and 2
actors, and 100 and 200 symbols on 2 actors for the scaling. No peer: the statsmodels loop
would take ~100 hours (``bench_stats``: ~0.6 s per ``coint`` of 8,640 bars, two per pair).
BLAS is pinned to one thread (OPENBLAS_NUM_THREADS/OMP_NUM_THREADS=1, also in the actors).
Goal: 500 symbols in at most 60 s on a 2-core machine.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy loads BLAS; Ray's workers inherit it

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from actors.screen import ScreenRunner  # noqa: E402
from engine.schemas import BAR_DTYPE  # noqa: E402
from engine.screen import load_bars, screen_bars  # noqa: E402
from engine.store import Store  # noqa: E402

T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
TF = 300_000
GROUP = 5  # symbols per cointegrated group


def write_store(path: Path, k: int, n: int, seed: int = 0) -> list[str]:
    """``k`` symbols x ``n`` 5m bars: groups of ``GROUP`` share a random walk (each member its
    own hedge and an AR(1) spread), ~5% of the bars missing. Returns the symbols."""
    rng = np.random.default_rng(seed)
    ts = T0 + TF * np.arange(n)
    store = Store(path, durable=False)
    names = [f"S{i:03d}USDT" for i in range(k)]
    for g in range(0, k, GROUP):
        leader = np.cumsum(rng.normal(0.0, 2e-3, n))
        for i in range(g, min(g + GROUP, k)):
            phi = 0.5 ** (1.0 / rng.uniform(10, 200))
            shocks = rng.normal(0.0, 1e-3, n)
            spread = np.empty(n)
            spread[0] = 0.0
            for t in range(1, n):
                spread[t] = phi * spread[t - 1] + shocks[t]
            log_p = np.log(rng.uniform(1, 1000)) + rng.uniform(0.5, 1.5) * leader + spread
            keep = rng.random(n) > 0.05
            bars = np.zeros(keep.sum(), dtype=BAR_DTYPE)
            bars["ts"] = ts[keep]
            close = np.exp(log_p[keep])
            bars["open"] = bars["high"] = bars["low"] = bars["close"] = close
            bars["volume"] = rng.uniform(1, 10, bars.size)
            bars["quote_volume"] = bars["volume"] * close
            bars["trades"] = 1
            store.write_bars("5m", names[i], bars)
        store.flush()
    return names


def _case(store: Path, symbols: list[str], actors: int) -> dict:
    runner = ScreenRunner(actors)
    started = time.perf_counter()
    bars = load_bars(store, "5m", symbols)
    read_s = time.perf_counter() - started
    result = screen_bars(bars, "5m", runner=runner)
    total_s = time.perf_counter() - started
    pairs = result.params["pairs"]
    return {
        "case": f"screen {len(symbols)} symbols x {result.params['bars']} bars, {actors} actor(s)",
        "symbols": len(symbols),
        "pairs": pairs,
        "actors": actors,
        "read_s": read_s,
        "screen_s": total_s - read_s,
        "ours_s": total_s,
        "pairs_per_s": pairs / total_s,
        "peer": "none",
        "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
    }


def run(quick: bool) -> list[dict]:
    import ray

    k, n = (40, 2_000) if quick else (500, 8_640)
    sizes = (10, 20) if quick else (100, 200)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
            started = time.perf_counter()
            names = write_store(Path(tmp) / "store", k, n)
            rows = [{"case": f"write store {k} x {n}", "ours_s": time.perf_counter() - started}]
            rows.append(_case(Path(tmp) / "store", names, 2))
            rows.append(_case(Path(tmp) / "store", names, 1))
            for size in sizes:
                rows.append(_case(Path(tmp) / "store", names[:size], 2))
            rows[1]["goal_s"] = 60.0
            return rows
    finally:
        ray.shutdown()
