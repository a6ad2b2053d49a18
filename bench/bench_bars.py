"""Bars: ``build_bars`` vs pandas ``resample`` on the same trades; ``BarBuilder`` throughput
and its cost per call (``add`` of 500, 5 and 1 ticks; ``advance`` on every clock reading vs
only when ``now >= next_close_ms``), which is what a feed with many symbols pays per batch.

Trades: a BTCUSDT-like stream (about 20 aggregate trades per second, Poisson arrivals, equal
times allowed, prices on a 0.10 tick). Both sides start from the same NumPy arrays and end with
the bars; pandas' time includes building its DataFrame. The outputs are checked equal. Times
are the best of several runs (the machine is shared).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.timing import best_of
from engine.bars import BarBuilder, build_bar_records, build_bars
from engine.schemas import BAR_DTYPE, TICK_DTYPE, table_to_bars


def _trades(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=TICK_DTYPE)
    out["ts"] = 1_700_000_000_000 + np.cumsum(np.floor(rng.exponential(50.0, n)).astype(np.int64))
    out["agg_id"] = np.arange(1, n + 1)
    price = 60_000.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-5, n)))
    out["price"] = np.round(price * 10.0) / 10.0
    out["qty"] = np.round(rng.lognormal(-4.0, 1.5, n), 3) + 0.001
    out["first_id"] = out["agg_id"]
    out["last_id"] = out["agg_id"]
    out["buyer_maker"] = rng.random(n) < 0.5
    return out


def _pandas_bars(ts: np.ndarray, price: np.ndarray, qty: np.ndarray) -> pd.DataFrame:
    index = pd.to_datetime(ts, unit="ms", utc=True)
    df = pd.DataFrame({"price": price, "qty": qty, "quote": price * qty}, index=index)
    resampled = df.resample("1s")
    frame = resampled["price"].ohlc()
    frame["volume"] = resampled["qty"].sum()
    frame["quote_volume"] = resampled["quote"].sum()
    frame["trades"] = resampled["price"].count()
    return frame[frame["trades"] > 0]


def _check_equal(ours: np.ndarray, frame: pd.DataFrame) -> None:
    np.testing.assert_array_equal(ours["ts"], frame.index.as_unit("ms").asi8)
    for name in ("open", "high", "low", "close", "trades"):
        np.testing.assert_array_equal(ours[name], frame[name].to_numpy(), err_msg=name)
    for name in ("volume", "quote_volume"):
        np.testing.assert_allclose(ours[name], frame[name].to_numpy(), rtol=1e-12, err_msg=name)


def run(quick: bool) -> list[dict]:
    n = 1_000_000 if quick else 10_000_000
    ticks = _trades(n)
    ts = np.ascontiguousarray(ticks["ts"])
    price = np.ascontiguousarray(ticks["price"])
    qty = np.ascontiguousarray(ticks["qty"])
    build_bars(ts[:1000], price[:1000], qty[:1000], "1s")  # compile / load the numba cache

    ours_s, table = best_of(lambda: build_bars(ts, price, qty, "1s"), 7)
    peer_s, frame = best_of(lambda: _pandas_bars(ts, price, qty), 3)
    _check_equal(table_to_bars(table), frame)
    rows = [
        {
            "case": f"build_bars 1s, {n:.0e} trades",
            "bars": table.num_rows,
            "ours_s": ours_s,
            "peer": "pandas resample ohlc+sum+count",
            "peer_s": peer_s,
            "ratio": peer_s / ours_s,
        }
    ]

    m = 200_000 if quick else 2_000_000
    batch = 100

    def incremental() -> np.ndarray:
        builder = BarBuilder("1s", 250)
        closed = []
        for j in range(0, m, batch):
            chunk = ticks[j : j + batch]
            closed.append(builder.add(chunk).closed)
            closed.append(builder.advance(int(chunk["ts"][-1])).closed)
        closed.append(builder.advance(2**62).closed)
        return np.concatenate(closed)

    incremental_s, bars = best_of(incremental, 3)
    expected = build_bar_records(ts[:m], price[:m], qty[:m], "1s")
    assert bars.dtype == BAR_DTYPE
    np.testing.assert_array_equal(bars, expected)
    rows.append(
        {
            "case": f"BarBuilder add+advance, batches of {batch}, {m:.0e} trades",
            "bars": bars.size,
            "ours_s": incremental_s,
            "ticks_per_s": m / incremental_s,
        }
    )
    rows.extend(_per_call(ticks[:m]))
    return rows


def _per_call(ticks: np.ndarray) -> list[dict]:
    """Microseconds per ``add`` for batches of 500, 5 and 1 ticks (1s and 1m bars) and per
    clock reading (one every 20 ms) with and without the ``next_close_ms`` check."""
    rows = []
    for timeframe in ("1s", "1m"):
        for size in (500, 5, 1):
            chunks = [ticks[j : j + size] for j in range(0, min(ticks.size, 2_000 * size), size)]

            def adds(chunks: list[np.ndarray] = chunks, timeframe: str = timeframe) -> None:
                builder = BarBuilder(timeframe, 250)
                for chunk in chunks:
                    builder.add(chunk)

            seconds = best_of(adds, 5)[0]
            rows.append(
                {
                    "case": f"BarBuilder.add, {size} ticks per call, {timeframe} bars",
                    "calls": len(chunks),
                    "ours_s": seconds,
                    "us_per_call": seconds / len(chunks) * 1e6,
                }
            )
    clock = list(range(int(ticks["ts"][0]), int(ticks["ts"][0]) + 20 * 20_000, 20))
    builder = BarBuilder("1m", 250)
    builder.add(ticks[:1])

    def every() -> None:
        for now in clock:
            builder.advance(now)

    def skipping() -> None:
        for now in clock:
            if now >= builder.next_close_ms:
                builder.advance(now)

    for label, fn in (("every reading", every), ("when now >= next_close_ms", skipping)):
        seconds = best_of(fn, 5)[0]
        rows.append(
            {
                "case": f"BarBuilder.advance, 1m bars, clock every 20 ms, {label}",
                "calls": len(clock),
                "ours_s": seconds,
                "us_per_call": seconds / len(clock) * 1e6,
            }
        )
    return rows
