"""Seeded synthetic data for tests: cointegrated price pairs and tick streams.

Everything is made here from a seed, never downloaded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.schemas import BAR_DTYPE, TICK_DTYPE


def cointegrated_pair(
    n: int,
    *,
    beta: float = 1.5,
    alpha: float = 0.2,
    half_life: float = 20.0,
    noise: float = 0.002,
    x0: float = 100.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw prices (y, x): log y = alpha + beta * log x + AR(1) spread with the given half-life."""
    rng = np.random.default_rng(seed)
    log_x = np.log(x0) + np.cumsum(rng.normal(0.0, 0.001, n))
    phi = 0.5 ** (1.0 / half_life)
    spread = np.empty(n)
    spread[0] = 0.0
    shocks = rng.normal(0.0, noise, n)
    for i in range(1, n):
        spread[i] = phi * spread[i - 1] + shocks[i]
    log_y = alpha + beta * log_x + spread
    return np.exp(log_y), np.exp(log_x)


def random_ticks(
    n: int,
    *,
    start_ms: int = 1_700_000_000_000,
    mean_gap_ms: float = 150.0,
    price0: float = 100.0,
    tick_size: float = 0.01,
    first_id: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """TICK_DTYPE records sorted by time: Poisson arrivals, equal timestamps allowed."""
    rng = np.random.default_rng(seed)
    gaps = np.floor(rng.exponential(mean_gap_ms, n)).astype(np.int64)
    ts = start_ms + np.cumsum(gaps)
    price = price0 * np.exp(np.cumsum(rng.normal(0.0, 5e-4, n)))
    price = np.maximum(np.round(price / tick_size) * tick_size, tick_size)
    qty = np.round(rng.lognormal(-2.0, 1.0, n), 3) + 0.001
    out = np.empty(n, dtype=TICK_DTYPE)
    out["ts"] = ts
    out["agg_id"] = first_id + np.arange(n)
    out["price"] = price
    out["qty"] = qty
    out["first_id"] = 10 * out["agg_id"]
    out["last_id"] = 10 * out["agg_id"] + rng.integers(0, 5, n)
    out["buyer_maker"] = rng.random(n) < 0.5
    return out


def assert_bars_equal(ours: np.ndarray, expected: np.ndarray) -> None:
    """Times, OHLC and counts exactly; sums to 1e-12 (pandas sums with compensation)."""
    assert ours.dtype == BAR_DTYPE
    np.testing.assert_array_equal(ours["ts"], expected["ts"])
    for name in ("open", "high", "low", "close", "trades"):
        np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)
    for name in ("volume", "quote_volume"):
        np.testing.assert_allclose(ours[name], expected[name], rtol=1e-12, err_msg=name)


#: pandas resample rule of each timeframe
PANDAS_RULE = {"1s": "1s", "1m": "1min", "3m": "3min", "5m": "5min", "15m": "15min",
               "30m": "30min", "1h": "1h", "2h": "2h", "4h": "4h", "12h": "12h", "1d": "1D"}


def pandas_resample(bars: np.ndarray, to: str) -> np.ndarray:
    """Oracle: pandas resample (left-labelled, left-closed), empty intervals dropped."""
    frame = pd.DataFrame(bars, index=pd.to_datetime(bars["ts"], unit="ms", utc=True))
    frame["n"] = 1
    agg = frame.resample(PANDAS_RULE[to], label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
         "quote_volume": "sum", "trades": "sum", "n": "sum"})
    return frame_bars(agg[agg["n"] > 0])


def frame_bars(frame: pd.DataFrame) -> np.ndarray:
    """A pandas frame of bars (time index, BAR_DTYPE's columns) as BAR_DTYPE records."""
    out = np.empty(len(frame), dtype=BAR_DTYPE)
    out["ts"] = frame.index.as_unit("ms").asi8
    for name in BAR_DTYPE.names[1:]:
        out[name] = frame[name].to_numpy()
    return out
