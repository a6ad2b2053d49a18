"""A store of long 1m bar histories for the History tab, its bench and the notebook walkthrough:
two cointegrated symbols, seeded, written with ``engine.store.Store`` in a second or two."""

from __future__ import annotations

import os

import numpy as np

from engine.schemas import BAR_DTYPE
from engine.store import Store
from tests.kit import cointegrated_pair

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
MINUTE = 60_000
Y, X = "HISTAUSDT", "HISTBUSDT"


def dropped_by(hole: int, max_carry: int) -> int:
    """Bar times a carry limit of ``max_carry`` bars drops in a ``hole`` of one leg while the
    other trades every bar: inside the hole the leg's close is 1, 2, ..., ``hole`` bars old."""
    return max(0, hole - max_carry)


def leg_bars(close: np.ndarray, seed: int, start_ms: int = T0, *, noise: float = 1e-4,
             wick: float = 3e-4) -> np.ndarray:
    """BAR_DTYPE 1m bars from closes, one every minute: opens at the previous close times
    exp(N(0, ``noise``)), highs/lows ``wick`` (a fraction) beyond the open and close."""
    rng = np.random.default_rng(seed)
    n = close.shape[0]
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["ts"] = start_ms + MINUTE * np.arange(n)
    bars["close"] = close
    bars["open"] = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0, noise, n))
    bars["high"] = np.maximum(bars["open"], close) * (1.0 + wick)
    bars["low"] = np.minimum(bars["open"], close) * (1.0 - wick)
    bars["volume"] = rng.uniform(1, 10, n)
    bars["quote_volume"] = bars["volume"] * close
    bars["trades"] = rng.integers(1, 50, n)
    return bars


def write_history(
    path: str | os.PathLike,
    days: float = 90.0,
    *,
    missing: float = 0.0,
    seed: int = 3,
    hole: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``days`` of 1m bars of ``Y`` and ``X`` (cointegrated, half-life 30 bars) written to the
    store at ``path``, a ``missing`` fraction of each leg's bars left out (not the first) and
    ``hole`` consecutive bars of ``X`` from bar ``n // 2`` on; returns the bars
    written (y, x)."""
    n = int(days * 24 * 60)
    y, x = cointegrated_pair(n, beta=1.2, half_life=30.0, noise=0.002, x0=3_000.0, seed=seed)
    rng = np.random.default_rng(seed + 3)
    keep = rng.random((2, n)) >= missing
    keep[:, 0] = True
    keep[1, n // 2 : n // 2 + hole] = False
    bars_y, bars_x = leg_bars(y, seed + 1)[keep[0]], leg_bars(x, seed + 2)[keep[1]]
    store = Store(path, durable=False)
    store.write_bars("1m", Y, bars_y)
    store.write_bars("1m", X, bars_x)
    store.flush()
    return bars_y, bars_x
