"""Seeded mark-price rows (as the store holds them) and a plain-Python oracle of the funding
settlements they imply (the rules of engine/funding.py's docstring, written as a loop)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

HOUR = 3_600_000
TS_TYPE = pa.timestamp("ms", tz="UTC")


def mark_price_rows(
    start_ms: int,
    end_ms: int,
    *,
    every_ms: int = 60_000,
    interval_h: int = 8,
    with_t: str = "all",
    gap: tuple[int, int] | None = None,
    seed: int = 0,
) -> pa.Table:
    """Funding rows ts, mark_price, funding_rate, next_funding_time from ``start_ms`` to
    ``end_ms``: one about every ``every_ms`` (jittered), T = the next multiple of
    ``interval_h`` hours strictly after ts, as Binance announces it.

    ``with_t``: "all", "none" (T null: old/imported rows) or "mixed" (first half without T);
    ``gap`` (lo, hi): no rows in [lo, hi) (a feed outage).
    """
    rng = np.random.default_rng(seed)
    ts = np.arange(start_ms, end_ms, every_ms) + rng.integers(0, every_ms // 2, 1)
    ts = np.sort(ts + rng.integers(-every_ms // 4, every_ms // 4, ts.size))
    if gap is not None:
        ts = ts[(ts < gap[0]) | (ts >= gap[1])]
    iv = interval_h * HOUR
    nft = (ts // iv + 1) * iv
    null = {"all": np.zeros(ts.size, bool), "none": np.ones(ts.size, bool)}.get(with_t)
    if null is None:
        null = np.arange(ts.size) < ts.size // 2
    return pa.table(
        {
            "ts": pa.array(ts, pa.int64()).cast(TS_TYPE),
            "mark_price": rng.uniform(100.0, 200.0, ts.size),
            "funding_rate": rng.normal(1e-4, 3e-4, ts.size),
            "next_funding_time": pa.array(nft, pa.int64(), mask=null).cast(TS_TYPE),
        }
    )


def _ms(value) -> int | None:
    if value is None:
        return None
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def settlements_loop(rows: pa.Table, interval_ms: int = 8 * HOUR) -> list[tuple[int, float, bool]]:
    """(T ms, rate, assumed) per settlement, sorted by T: at each announced T whose last row
    before it announces T, that row's rate; on the interval grid where the last row at or
    before the grid time has no T (and no announced settlement is there), that row's rate."""
    nft_col = (
        rows.column("next_funding_time").to_pylist()
        if "next_funding_time" in rows.column_names
        else [None] * rows.num_rows
    )
    table = sorted(
        zip(
            [_ms(v) for v in rows.column("ts").to_pylist()],
            rows.column("funding_rate").to_pylist(),
            [_ms(v) for v in nft_col],
            strict=True,
        ),
        key=lambda r: r[0],
    )
    events = []
    for t in sorted({r[2] for r in table if r[2] is not None}):
        last = None
        for row in table:
            if row[0] < t:
                last = row
        if last is not None and last[2] == t:
            events.append((t, last[1], False))
    announced = {e[0] for e in events}
    if table and any(r[2] is None for r in table):
        g = -(-table[0][0] // interval_ms) * interval_ms
        while g <= table[-1][0]:
            last = None
            for row in table:
                if row[0] <= g:
                    last = row
            if last[2] is None and g not in announced:
                events.append((g, last[1], True))
            g += interval_ms
    return sorted(events, key=lambda e: e[0])
