"""Record layouts for ticks and bars, declared once.

NumPy structured dtypes are what kernels and actors pass around; the Arrow schemas are what the
store writes (see "Store" in docs/semantics.md). Times are Unix milliseconds (int64) in NumPy
and ``timestamp[ms, UTC]`` in Arrow.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.errors import DataError

#: Bar timeframes the store knows and their length in milliseconds: the live feed's 1s, 1m and
#: 5m, and every interval of Binance's futures klines (imported or downloaded as bars of their
#: interval).
TIMEFRAME_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}

TICK_DTYPE = np.dtype(
    [
        ("ts", np.int64),  # trade time, ms
        ("agg_id", np.int64),
        ("price", np.float64),
        ("qty", np.float64),
        ("first_id", np.int64),
        ("last_id", np.int64),
        ("buyer_maker", np.bool_),
    ]
)

BAR_DTYPE = np.dtype(
    [
        ("ts", np.int64),  # bar open time, ms
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("volume", np.float64),  # base quantity
        ("quote_volume", np.float64),  # sum of price * qty, USDT
        ("trades", np.int64),  # number of aggregate trades
    ]
)

TS_TYPE = pa.timestamp("ms", tz="UTC")

TICK_SCHEMA = pa.schema(
    [
        ("ts", TS_TYPE),
        ("agg_id", pa.int64()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("first_id", pa.int64()),
        ("last_id", pa.int64()),
        ("buyer_maker", pa.bool_()),
    ]
)

BAR_SCHEMA = pa.schema(
    [
        ("ts", TS_TYPE),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("trades", pa.int64()),
    ]
)


def timeframe_ms(timeframe: str) -> int:
    """Length of a timeframe ("1s", "1m", ..., "1d") in ms; DataError for anything else."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise DataError(
            f"unknown timeframe {timeframe!r}: expected one of {sorted(TIMEFRAME_MS)}"
        ) from None


def _to_table(records: np.ndarray, dtype: np.dtype, schema: pa.Schema) -> pa.Table:
    if records.dtype != dtype:
        raise DataError(f"expected records of dtype {dtype}, got {records.dtype}")
    columns = []
    for field in schema:
        col = np.ascontiguousarray(records[field.name])
        if field.name == "ts":
            columns.append(pa.array(col, type=pa.int64()).cast(TS_TYPE))
        else:
            columns.append(pa.array(col, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _from_table(table: pa.Table, dtype: np.dtype) -> np.ndarray:
    out = np.empty(table.num_rows, dtype=dtype)
    for name in dtype.names:
        col = table.column(name)
        if name == "ts":
            col = col.cast(TS_TYPE).cast(pa.int64())
        out[name] = col.to_numpy(zero_copy_only=False)
    return out


def ticks_to_table(ticks: np.ndarray) -> pa.Table:
    """TICK_DTYPE records -> Arrow table with TICK_SCHEMA."""
    return _to_table(ticks, TICK_DTYPE, TICK_SCHEMA)


def bars_to_table(bars: np.ndarray) -> pa.Table:
    """BAR_DTYPE records -> Arrow table with BAR_SCHEMA."""
    return _to_table(bars, BAR_DTYPE, BAR_SCHEMA)


def table_to_ticks(table: pa.Table) -> np.ndarray:
    """Arrow table with the tick columns -> TICK_DTYPE records (extra columns ignored)."""
    return _from_table(table, TICK_DTYPE)


def as_bar_records(name: str, bars: object) -> np.ndarray:
    """BAR_DTYPE records from records or an Arrow table with the bar columns; DataError else."""
    if isinstance(bars, pa.Table):
        bars = table_to_bars(bars)
    if not isinstance(bars, np.ndarray) or bars.dtype != BAR_DTYPE:
        raise DataError(
            f"{name}: expected BAR_DTYPE records or an Arrow table with the bar columns, "
            f"got {type(bars).__name__}"
        )
    return bars


def table_to_bars(table: pa.Table) -> np.ndarray:
    """Arrow table with the bar columns -> BAR_DTYPE records (extra columns ignored)."""
    return _from_table(table, BAR_DTYPE)
