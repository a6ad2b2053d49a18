"""Funding settlement events from stored mark-price rows (docs/semantics.md "Pair and backtest
semantics", Funding).

Stored funding rows (``engine.store``: ``ts``, ``mark_price``, ``funding_rate`` and, when the
writer had it, ``next_funding_time``) are mark-price updates, one a second or so. Binance's
markPrice payload carries ``T``, the next funding time, and symbols settle every 8 h, 4 h or
1 h, so the settlement times come from ``T``:

- a settlement happens at each distinct announced ``T`` whose last row published before it
  (``ts < T``) announces that same ``T`` (a ``T`` announced and later moved is not paid), and it
  pays that row's ``funding_rate``;
- rows without ``T`` (old or imported rows) fall back to the 8-hour UTC grid (00:00, 08:00,
  16:00): an event at every grid time inside the rows' range whose last row at or before it
  carries no ``T`` (and that is not already a ``T`` event), with that row's rate. Such events
  are flagged ``assumed`` so a backtest can say how many of its settlements were guessed.

A settlement time that no stored row announced (a feed outage longer than the funding
interval) is not known, so it is not paid. Whether a settlement falls inside a backtest (the
bar clock has passed it) and what mark it uses (the leg's close then) is
``engine.backtest``'s business. Times in ms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from engine.errors import DataError

log = logging.getLogger(__name__)

#: Binance's usual settlement interval (ms), the fallback grid for rows without ``T``
FUNDING_INTERVAL_MS = 8 * 3_600_000


@dataclass(frozen=True)
class FundingEvents:
    """Settlements of one symbol, sorted by time: ``ts`` (ms, int64), ``rate`` (fraction per
    settlement), ``assumed`` (bool: on the fallback grid, the rows carried no ``T``)."""

    ts: np.ndarray
    rate: np.ndarray
    assumed: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def _column_ms(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as int64 ms, valid mask) of a timestamp or integer column."""
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
    elif not pa.types.is_integer(col.type):
        raise DataError(f"funding column {name!r}: expected ms or timestamps, got {col.type}")
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    return col.fill_null(0).cast(pa.int64()).to_numpy(), valid


def funding_events(table: Any, interval_ms: int = FUNDING_INTERVAL_MS) -> FundingEvents:
    """Settlement events of one symbol from its stored funding rows (see the module docstring).

    ``table`` is an Arrow table (or anything ``pa.table`` takes) with ``ts`` and
    ``funding_rate``, and optionally ``next_funding_time`` (null where unknown);
    ``interval_ms`` is the fallback grid for rows without it.
    """
    if not isinstance(table, pa.Table):
        try:
            table = pa.table(table)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"funding rows: cannot make an Arrow table: {exc}") from None
    missing = [c for c in ("ts", "funding_rate") if c not in table.column_names]
    if missing:
        raise DataError(f"funding rows: missing columns {missing}; got {table.column_names}")
    if not (isinstance(interval_ms, int) and interval_ms > 0):
        raise DataError(f"funding interval: expected a positive number of ms, got {interval_ms!r}")
    ts, ts_ok = _column_ms(table, "ts")
    if not ts_ok.all():
        raise DataError("funding rows: 'ts' has null values")
    rate = table.column("funding_rate").to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.all(np.isfinite(rate)):
        raise DataError("funding rows: 'funding_rate' has non-finite or null values")
    if "next_funding_time" in table.column_names:
        nft, has_t = _column_ms(table, "next_funding_time")
    else:
        nft, has_t = np.zeros(ts.shape[0], np.int64), np.zeros(ts.shape[0], bool)
    order = np.argsort(ts, kind="stable")
    ts, rate, nft, has_t = ts[order], rate[order], nft[order], has_t[order]

    # announced settlements: the last row before T must announce T
    announced = np.unique(nft[has_t])
    last = np.searchsorted(ts, announced, side="left") - 1
    ok = last >= 0
    ok[ok] = has_t[last[ok]] & (nft[last[ok]] == announced[ok])
    t_ts, t_rate = announced[ok], rate[last[ok]]

    # fallback grid where the latest row at or before the grid time carries no T
    g_ts = g_rate = np.empty(0)
    if ts.size and not has_t.all():
        first = -(-int(ts[0]) // interval_ms) * interval_ms
        grid = np.arange(first, int(ts[-1]) + 1, interval_ms, dtype=np.int64)
        at = np.searchsorted(ts, grid, side="right") - 1
        use = ~has_t[at] & ~np.isin(grid, t_ts)
        g_ts, g_rate = grid[use], rate[at[use]]
        if g_ts.size:
            log.warning(
                "%d funding row(s) carry no next_funding_time: %d settlement(s) assumed on the "
                "%d h UTC grid",
                int(np.count_nonzero(~has_t)),
                g_ts.size,
                interval_ms // 3_600_000,
            )
    times = np.concatenate((t_ts, g_ts)).astype(np.int64)
    by_time = np.argsort(times, kind="stable")
    return FundingEvents(
        ts=times[by_time],
        rate=np.concatenate((t_rate, g_rate)).astype(np.float64)[by_time],
        assumed=np.concatenate((np.zeros(t_ts.size, bool), np.ones(g_ts.size, bool)))[by_time],
    )
