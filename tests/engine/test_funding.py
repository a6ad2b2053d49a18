"""Funding settlements from stored mark-price rows against a plain-Python loop, and the store's
funding rows with their optional next funding time (real Parquet files)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from funding_kit import HOUR, TS_TYPE, mark_price_rows, settlements_loop

from engine.errors import DataError
from engine.funding import FUNDING_INTERVAL_MS, funding_events
from engine.store import FUNDING_SCHEMA, FUNDING_STORED_SCHEMA, Store, WriteCounts

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
DAY = 24 * HOUR


def assert_events(got, want):
    np.testing.assert_array_equal(got.ts, [e[0] for e in want])
    np.testing.assert_array_equal(got.rate, [e[1] for e in want])
    np.testing.assert_array_equal(got.assumed, [e[2] for e in want])


@pytest.mark.parametrize("interval_h", [1, 4, 8])
@pytest.mark.parametrize("with_t", ["all", "none", "mixed"])
@pytest.mark.parametrize("seed", [0, 1])
def test_events_against_a_loop(interval_h, with_t, seed):
    gap = (T0 + 5 * HOUR + 7_000, T0 + 14 * HOUR) if seed else None  # a feed outage
    rows = mark_price_rows(
        T0, T0 + 2 * DAY, every_ms=10 * 60_000, interval_h=interval_h, with_t=with_t,
        gap=gap, seed=seed,
    )
    got = funding_events(rows)
    want = settlements_loop(rows)
    assert_events(got, want)
    if with_t == "all":  # every announced time is paid, at the symbol's own interval
        assert not got.assumed.any()
        steps = np.diff(got.ts)
        if gap is None:
            np.testing.assert_array_equal(steps, interval_h * HOUR)
        else:  # times never announced (inside the outage) are not known, so not paid
            assert np.all(steps % (interval_h * HOUR) == 0)
            assert (steps.max() > interval_h * HOUR) == (interval_h < 8)
    if with_t == "none":
        assert got.assumed.all() and np.all(got.ts % FUNDING_INTERVAL_MS == 0)


@pytest.mark.parametrize("interval_h", [1, 4, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_fallback_grid_without_the_column(interval_h, seed):
    """Rows written before next_funding_time existed: the grid, last rate at or before."""
    rng = np.random.default_rng(seed)
    ts = np.sort(T0 + rng.integers(0, 3 * DAY, 400))
    rate = rng.normal(0, 1e-4, ts.size)
    table = pa.table({"ts": pa.array(ts, pa.int64()), "funding_rate": rate})
    iv = interval_h * HOUR
    got = funding_events(table, iv)
    assert_events(got, settlements_loop(table, iv))
    want_ts, want_rate = [], []
    t = (int(ts[0]) + iv - 1) // iv * iv
    while t <= ts[-1]:
        last = None
        for row_ts, row_rate in zip(ts.tolist(), rate.tolist(), strict=True):
            if row_ts <= t:
                last = row_rate
        want_ts.append(t)
        want_rate.append(last)
        t += iv
    np.testing.assert_array_equal(got.ts, want_ts)
    np.testing.assert_array_equal(got.rate, want_rate)


def test_announced_rules_by_hand():
    """T paid with the last rate before it; a T announced then moved is not paid; a row at
    exactly T still announcing T is not "before" it; unsorted input is sorted first."""
    h = HOUR
    rows = pa.table(
        {
            "ts": [T0 + 1 * h, T0 + 3 * h, T0 + 4 * h, T0 + 5 * h, T0 + 6 * h, T0 + 9 * h],
            "funding_rate": [1e-4, 2e-4, 9e-4, 3e-4, 4e-4, 5e-4],
            # 4 h interval, then the symbol moves to 8 h before 08:00 (T 08:00 -> 16:00)
            "next_funding_time": [T0 + 4 * h, T0 + 4 * h, T0 + 4 * h, T0 + 8 * h,
                                  T0 + 16 * h, T0 + 16 * h],
        }
    )
    got = funding_events(rows.take([5, 2, 0, 4, 1, 3]))
    assert_events(got, [(T0 + 4 * h, 2e-4, False), (T0 + 16 * h, 5e-4, False)])
    assert_events(got, settlements_loop(rows))


def test_no_rows_and_mixed_old_and_new_rows(caplog):
    empty = funding_events(FUNDING_STORED_SCHEMA.empty_table())
    assert len(empty) == 0 and empty.rate.dtype == np.float64
    rows = mark_price_rows(T0, T0 + DAY, interval_h=4, with_t="mixed", seed=3)
    with caplog.at_level(logging.WARNING, logger="engine.funding"):
        got = funding_events(rows)
    assert "assumed on the 8 h UTC grid" in caplog.text
    assert got.assumed.any() and not got.assumed.all()
    assert_events(got, settlements_loop(rows))


@pytest.mark.parametrize(
    "rows, interval, match",
    [
        ({"ts": [1, 2]}, FUNDING_INTERVAL_MS, "missing columns \\['funding_rate'\\]"),
        ({"ts": [1, 2], "funding_rate": [1e-4, float("nan")]}, FUNDING_INTERVAL_MS, "non-finite"),
        ({"ts": [1, None], "funding_rate": [1e-4, 1e-4]}, FUNDING_INTERVAL_MS, "'ts' has null"),
        ({"ts": [1.5], "funding_rate": [1e-4]}, FUNDING_INTERVAL_MS, "expected ms or timestamps"),
        ({"ts": [1], "funding_rate": [1e-4]}, 0, "positive number of ms"),
        ("not rows", FUNDING_INTERVAL_MS, "cannot make an Arrow table"),
    ],
)
def test_bad_rows(rows, interval, match):
    with pytest.raises(DataError, match=match):
        funding_events(rows, interval)


# ----------------------------------------------------------------------------- the store


def test_store_keeps_the_next_funding_time(tmp_path):
    st = Store(tmp_path, durable=False)
    rows = mark_price_rows(T0, T0 + 2 * DAY, interval_h=4, with_t="mixed", seed=4)
    st.write_funding("SOLUSDT", rows)
    # as the feed writes today: the three required columns only
    old = rows.select(FUNDING_SCHEMA.names).slice(0, 5)
    st.write_funding("BTCUSDT", old)
    counts = st.flush()["funding"]
    assert counts == WriteCounts(added=rows.num_rows + 5)
    got = Store(tmp_path).read_funding("SOLUSDT")
    assert got.schema == FUNDING_STORED_SCHEMA
    assert got.equals(rows.cast(FUNDING_STORED_SCHEMA))
    btc = Store(tmp_path).read_funding("BTCUSDT")
    assert btc.column("next_funding_time").null_count == 5
    # identical rows (nulls included) are skipped, a changed T replaces its row
    st.write_funding("SOLUSDT", rows.slice(0, 50))
    assert st.flush()["funding"] == WriteCounts(duplicates=50)
    late = rows.slice(10, 1).set_column(
        3, "next_funding_time", pa.array([T0 + 99 * HOUR], pa.int64()).cast(TS_TYPE)
    )
    st.write_funding("SOLUSDT", late)
    assert st.flush()["funding"] == WriteCounts(replaced=1)
    got = st.read_funding("SOLUSDT").column("next_funding_time").cast(pa.int64()).to_numpy(
        zero_copy_only=False
    )
    assert got[10] == T0 + 99 * HOUR
    part = ds.dataset(tmp_path / "funding", partitioning="hive").to_table()
    assert "next_funding_time" in part.column_names and part.num_rows == rows.num_rows + 5


def test_store_reads_files_written_before_the_column(tmp_path):
    """A partition file holding only ts, mark_price, funding_rate reads back with null T and
    takes upserts and compaction like any other."""
    rows = mark_price_rows(T0, T0 + 6 * HOUR, every_ms=600_000, with_t="none", seed=5)
    part_dir = tmp_path / "funding" / "symbol=ETHUSDT" / "date=2024-06-01"
    part_dir.mkdir(parents=True)
    pq.write_table(rows.select(FUNDING_SCHEMA.names).cast(FUNDING_SCHEMA),
                   part_dir / "part-00000000000000000001-old.parquet")
    st = Store(tmp_path, durable=False)
    got = st.read_funding("ETHUSDT")
    assert got.schema == FUNDING_STORED_SCHEMA and got.column("next_funding_time").null_count
    assert got.equals(rows.cast(FUNDING_STORED_SCHEMA))
    newer = rows.slice(3, 2).set_column(
        3, "next_funding_time", pa.array([T0 + 8 * HOUR] * 2, pa.int64()).cast(TS_TYPE)
    )
    st.write_funding("ETHUSDT", newer)
    assert st.flush()["funding"] == WriteCounts(replaced=2)
    st.write_funding("ETHUSDT", rows.slice(6, 1).select(FUNDING_SCHEMA.names))
    assert st.flush()["funding"] == WriteCounts(duplicates=1)
    assert st.compact("ETHUSDT") == 0  # still one file: rewritten in place
    events = funding_events(st.read_funding("ETHUSDT"))
    assert_events(events, settlements_loop(st.read_funding("ETHUSDT")))


def test_store_refuses_bad_funding_times(tmp_path):
    st = Store(tmp_path)
    with pytest.raises(DataError, match="next_funding_time"):
        st.write_funding("BTCUSDT", {"ts": [1], "mark_price": [1.0], "funding_rate": [0.0],
                                     "next_funding_time": ["soon"]})
    with pytest.raises(DataError, match="'funding_rate' has 1 null"):
        st.write_funding("BTCUSDT", {"ts": [1], "mark_price": [None], "funding_rate": [None],
                                     "next_funding_time": [None]})
