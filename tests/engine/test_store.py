"""The Parquet store: layout, round trips, uniqueness, upserts, range reads, atomicity, compaction.

Oracles: pandas (drop_duplicates, filters) and plain-Python loops over the written rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine import store as store_mod
from engine.errors import DataError, StoreError
from engine.schemas import (
    BAR_DTYPE,
    BAR_SCHEMA,
    TICK_SCHEMA,
    bars_to_table,
    table_to_bars,
    table_to_ticks,
    ticks_to_table,
)
from engine.store import DAY_MS, FUNDING_STORED_SCHEMA, Store, WriteCounts, to_ms
from tests.kit import random_ticks

START = 1_717_200_000_000  # 2024-06-01 00:00 UTC


def _ticks(n: int, seed: int = 0, first_id: int = 1, gap_ms: float = 60_000.0) -> np.ndarray:
    """Ticks spread over several UTC days (mean gap one minute)."""
    return random_ticks(n, start_ms=START, mean_gap_ms=gap_ms, first_id=first_id, seed=seed)


def _bars(n: int, seed: int = 0, step_ms: int = 60_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=BAR_DTYPE)
    out["ts"] = START + step_ms * np.sort(rng.choice(4 * n, n, replace=False))
    out["open"] = 100 + rng.normal(size=n)
    out["close"] = 100 + rng.normal(size=n)
    out["high"] = np.maximum(out["open"], out["close"]) + 0.5
    out["low"] = np.minimum(out["open"], out["close"]) - 0.5
    out["volume"] = rng.uniform(1, 5, n)
    out["quote_volume"] = out["volume"] * 100
    out["trades"] = rng.integers(1, 50, n)
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _frame(records: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({name: records[name] for name in records.dtype.names})


# ----------------------------------------------------------------------------- layout


def test_hive_layout_schema_and_no_partition_columns_in_files(tmp_path):
    st = Store(tmp_path)
    ticks = _ticks(3000)
    st.write_ticks("BTCUSDT", ticks)
    st.write_bars("1m", "BTCUSDT", _bars(500))
    st.flush()
    days = {str(np.datetime64(int(t // DAY_MS), "D")) for t in ticks["ts"]}
    tick_dirs = {p.parent.relative_to(tmp_path).as_posix()
                 for p in _files(tmp_path / "ticks")}
    assert tick_dirs == {f"ticks/symbol=BTCUSDT/date={d}" for d in days}
    for path in _files(tmp_path):
        assert path.suffix == ".parquet" and not path.name.startswith((".", "_"))
        schema = pq.read_schema(path)
        expected = TICK_SCHEMA if "ticks" in path.parts else BAR_SCHEMA
        # the contract's types; every column required (none is ever null)
        assert schema.remove_metadata().equals(required(expected)), path
    assert all(p.parts[-4].startswith("timeframe=1m") for p in _files(tmp_path / "bars"))


def required(schema: pa.Schema, optional: tuple[str, ...] = ()) -> pa.Schema:
    return pa.schema([f.with_nullable(f.name in optional) for f in schema])


def test_readable_by_pyarrow_dataset_and_duckdb(tmp_path):
    st = Store(tmp_path)
    for i, sym in enumerate(["BTCUSDT", "ETHUSDT"]):
        st.write_ticks(sym, _ticks(1500, seed=i))
        st.write_bars("1s", sym, _bars(300, seed=i, step_ms=1000))
    st.flush()
    # a file as earlier versions wrote them (nullable columns) beside the new ones
    old = ticks_to_table(_ticks(10, seed=9, first_id=10**9))
    assert old.schema.equals(TICK_SCHEMA)
    day = str(np.datetime64(int(old.column("ts")[0].value // DAY_MS), "D"))
    old_dir = tmp_path / "ticks" / "symbol=BTCUSDT" / f"date={day}"
    old_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(old, old_dir / "part-00000000000000000000-old.parquet")
    assert len(Store(tmp_path).read_ticks("BTCUSDT")) == 1510
    table = ds.dataset(tmp_path / "ticks", partitioning="hive").to_table()
    table.validate(full=True)
    assert table.num_rows == 3010
    assert sorted(set(table.column("symbol").to_pylist())) == ["BTCUSDT", "ETHUSDT"]
    bars = ds.dataset(tmp_path / "bars", partitioning="hive").to_table()
    assert set(bars.column("timeframe").to_pylist()) == {"1s"}
    assert bars.num_rows == 600
    con = duckdb.connect()
    glob = (tmp_path / "ticks" / "**" / "*.parquet").as_posix()
    rows = con.execute(
        f"SELECT symbol, count(*), count(DISTINCT agg_id) FROM read_parquet('{glob}', "
        "hive_partitioning=true) GROUP BY symbol ORDER BY symbol"
    ).fetchall()
    assert rows == [("BTCUSDT", 1510, 1510), ("ETHUSDT", 1500, 1500)]


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("batch", [1, 97, 1000, 5000])
@pytest.mark.parametrize("seed", [0, 1])
def test_ticks_round_trip_in_batches(tmp_path, batch, seed):
    ticks = _ticks(5000 if batch > 1 else 300, seed=seed)
    st = Store(tmp_path)
    for i in range(0, len(ticks), batch):
        st.write_ticks("BTCUSDT", ticks[i:i + batch])
        if (i // batch) % 7 == 3:
            st.flush()
    st.flush()
    got = table_to_ticks(Store(tmp_path).read_ticks("BTCUSDT"))
    np.testing.assert_array_equal(got, ticks)


def test_arrow_table_input_is_cast_to_the_schema(tmp_path):
    ticks = _ticks(100)
    raw = pa.table({n: ticks[n] for n in ticks.dtype.names})  # ts as int64 ms
    Store(tmp_path).write_ticks("BTCUSDT", raw)
    st = Store(tmp_path)
    st.write_ticks("ETHUSDT", raw)
    st.flush()
    assert st.read_ticks("ETHUSDT").schema.equals(TICK_SCHEMA)
    np.testing.assert_array_equal(table_to_ticks(st.read_ticks("ETHUSDT")), ticks)


# ----------------------------------------------------------------------------- uniqueness


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("flush_every", [1, 3])
def test_overlapping_tick_writes_store_each_agg_id_once(tmp_path, seed, flush_every):
    rng = np.random.default_rng(seed)
    ticks = _ticks(4000, seed=seed)
    st = Store(tmp_path)
    written = 0
    for k in range(12):  # reconnect-like overlaps: chunks reaching back before the last end
        lo = int(rng.integers(0, 3500))
        hi = int(rng.integers(lo + 1, 4000))
        st.write_ticks("BTCUSDT", ticks[lo:hi])
        written += hi - lo
        if k % flush_every == 0:
            st.flush()
    st.flush()
    got = st.read_ticks("BTCUSDT").to_pandas()
    ids = got["agg_id"].to_numpy()
    assert len(ids) == len(np.unique(ids))
    seen = sorted({int(a) for a in ids})
    assert list(ids) == seen
    expected = _frame(ticks).set_index("agg_id").loc[seen]
    np.testing.assert_array_equal(got["price"].to_numpy(), expected["price"].to_numpy())
    files = ds.dataset(tmp_path / "ticks", partitioning="hive").to_table()
    assert files.num_rows == len(ids)


def test_restart_keeps_uniqueness_and_last_agg_id(tmp_path):
    ticks = _ticks(3000)
    first = Store(tmp_path)
    assert first.last_agg_id("BTCUSDT") is None
    first.write_ticks("BTCUSDT", ticks[:2000])
    assert first.last_agg_id("BTCUSDT") == ticks["agg_id"][1999]  # buffered counts too
    first.flush()
    second = Store(tmp_path)
    assert second.last_agg_id("BTCUSDT") == ticks["agg_id"][1999]
    second.write_ticks("BTCUSDT", ticks[1500:])  # reconnect overlap after a restart
    counts = second.flush()
    assert counts == {"ticks": WriteCounts(added=1000, duplicates=500)}
    third = Store(tmp_path)
    assert third.last_agg_id("BTCUSDT") == ticks["agg_id"][-1]
    third.write_ticks("BTCUSDT", ticks)  # a re-import of everything
    assert third.flush() == {"ticks": WriteCounts(duplicates=3000)}
    np.testing.assert_array_equal(table_to_ticks(third.read_ticks("BTCUSDT")), ticks)


def test_duplicates_inside_one_batch_are_dropped(tmp_path):
    ticks = _ticks(200)
    st = Store(tmp_path)
    st.write_ticks("BTCUSDT", np.concatenate([ticks, ticks[50:80]]))
    assert st.flush()["ticks"] == WriteCounts(added=200, duplicates=30)


# ----------------------------------------------------------------------------- bars upsert


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("compact_between", [False, True])
def test_bar_upsert_replaces_corrected_bars(tmp_path, seed, compact_between):
    rng = np.random.default_rng(seed)
    bars = _bars(2000, seed=seed)
    st = Store(tmp_path)
    for chunk in np.array_split(bars, 4):  # several part files per partition
        st.write_bars("1m", "ETHUSDT", chunk)
        st.flush()
    if compact_between:
        st.compact()
    pick = np.sort(rng.choice(len(bars), 300, replace=False))
    update = bars[pick].copy()
    changed = rng.random(300) < 0.5
    update["close"][changed] += 1.0
    update["volume"][changed] += 0.25
    update["trades"][changed] += 1
    fresh = _bars(50, seed=seed + 100)
    fresh["ts"] = bars["ts"].max() + 60_000 * (1 + np.arange(50))
    Store(tmp_path).write_bars("1m", "ETHUSDT", np.concatenate([update, fresh]))
    st2 = Store(tmp_path)
    st2.write_bars("1m", "ETHUSDT", np.concatenate([update, fresh]))
    counts = st2.flush()["bars/1m"]
    assert counts == WriteCounts(added=50, replaced=int(changed.sum()),
                                 duplicates=int((~changed).sum()))
    oracle = (pd.concat([_frame(bars), _frame(update), _frame(fresh)])
              .drop_duplicates("ts", keep="last").sort_values("ts"))
    got = table_to_bars(Store(tmp_path).read_bars("1m", "ETHUSDT"))
    for name in BAR_DTYPE.names:
        np.testing.assert_array_equal(got[name], oracle[name].to_numpy(), err_msg=name)
    raw = ds.dataset(tmp_path / "bars", partitioning="hive").to_table()
    assert raw.num_rows == len(oracle)
    # the same corrections again change nothing, not even a file
    before = {p: p.stat().st_mtime_ns for p in _files(tmp_path / "bars")}
    st3 = Store(tmp_path)
    st3.write_bars("1m", "ETHUSDT", np.concatenate([update, fresh]))
    assert st3.flush()["bars/1m"] == WriteCounts(duplicates=350)
    assert {p: p.stat().st_mtime_ns for p in _files(tmp_path / "bars")} == before


def test_last_write_wins_inside_one_flush(tmp_path):
    bars = _bars(10)
    late = bars[3:4].copy()
    late["close"] += 2.0
    st = Store(tmp_path)
    st.write_bars("1s", "BTCUSDT", bars)
    st.write_bars("1s", "BTCUSDT", late)
    st.flush()
    got = table_to_bars(st.read_bars("1s", "BTCUSDT"))
    assert got["close"][3] == late["close"][0]
    assert len(got) == 10


# ----------------------------------------------------------------------------- range reads


@pytest.mark.parametrize("lo, hi", [(None, None), (0.1, None), (None, 0.7), (0.25, 0.6),
                                    (0.5, 0.5), (0.0, 1.0)])
@pytest.mark.parametrize("form", ["ms", "datetime", "iso"])
def test_range_reads_start_inclusive_end_exclusive(tmp_path, lo, hi, form):
    ticks = _ticks(4000)
    bars = _bars(1500)
    st = Store(tmp_path)
    st.write_ticks("BTCUSDT", ticks)
    st.write_bars("1m", "BTCUSDT", bars)
    st.flush()

    def bound(frac):
        if frac is None:
            return None, None
        ms = int(ticks["ts"][int(frac * (len(ticks) - 1))])  # an existing time: edges matter
        if form == "ms":
            return ms, ms
        when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
        return ms, (when if form == "datetime" else when.isoformat().replace("+00:00", "Z"))

    lo_ms, lo_arg = bound(lo)
    hi_ms, hi_arg = bound(hi)
    for records, table in ((ticks, st.read_ticks("BTCUSDT", lo_arg, hi_arg)),
                           (bars, st.read_bars("1m", "BTCUSDT", start=lo_arg, end=hi_arg))):
        frame = _frame(records)
        if lo_ms is not None:
            frame = frame[frame["ts"] >= lo_ms]
        if hi_ms is not None:
            frame = frame[frame["ts"] < hi_ms]
        got = table.column("ts").cast(pa.int64()).to_numpy()
        np.testing.assert_array_equal(got, frame["ts"].to_numpy())


@pytest.mark.parametrize("value, expected", [
    (1_717_200_000_123, 1_717_200_000_123),
    ("2024-06-01T00:00:00.123Z", 1_717_200_000_123),
    ("2024-06-01T02:00:00+02:00", 1_717_200_000_000),
    ("2024-06-01", 1_717_200_000_000),
    (datetime(2024, 6, 1), 1_717_200_000_000),
    (pd.Timestamp("2024-06-01 00:00:01", tz="UTC"), 1_717_200_001_000),
])
def test_to_ms_accepts_ms_datetimes_and_iso(value, expected):
    assert to_ms(value) == expected


# ----------------------------------------------------------------------------- atomicity


def test_no_temp_files_after_writes_and_crash_leftovers_are_ignored(tmp_path):
    ticks = _ticks(2000)
    st = Store(tmp_path)
    st.write_ticks("BTCUSDT", ticks)
    st.write_bars("5m", "BTCUSDT", _bars(200, step_ms=300_000))
    st.flush()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    # a crash between write and rename leaves a dotted temp file: half written here
    part_dir = next((tmp_path / "ticks" / "symbol=BTCUSDT").iterdir())
    good = next(part_dir.iterdir())
    crash = part_dir / f".{good.name.replace('part-', 'part-9')}.tmp"
    crash.write_bytes(good.read_bytes()[:100])
    bars_dir = next((tmp_path / "bars" / "timeframe=5m" / "symbol=BTCUSDT").iterdir())
    (bars_dir / ".part-x.parquet.tmp").write_bytes(b"PAR1 half")
    assert ds.dataset(tmp_path / "ticks", partitioning="hive").to_table().num_rows == 2000
    assert ds.dataset(tmp_path / "bars", partitioning="hive").to_table().num_rows == 200
    glob = (tmp_path / "ticks" / "**" / "*.parquet").as_posix()
    count = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()
    assert count == (2000,)
    fresh = Store(tmp_path)
    assert fresh.read_ticks("BTCUSDT").num_rows == 2000
    fresh.compact()
    assert not crash.exists()


def test_interrupted_compaction_leftover_is_invisible_and_cleaned(tmp_path):
    st = Store(tmp_path)
    ticks = _ticks(1000)
    st.write_ticks("BTCUSDT", ticks[:500])
    st.flush()
    st.write_ticks("BTCUSDT", ticks[500:])
    st.flush()
    # what a crash right after the directory swap leaves: the old parts aside in .staging
    leftover = tmp_path / ".staging" / "ticks-symbol=BTCUSDT-deadbeef"
    leftover.mkdir(parents=True)
    pq.write_table(st.read_ticks("BTCUSDT"), leftover / "part-0.parquet")
    assert ds.dataset(tmp_path / "ticks", partitioning="hive").to_table().num_rows == 1000
    st.compact("BTCUSDT")
    assert not leftover.exists()


# ----------------------------------------------------------------------------- compaction


@pytest.mark.parametrize("swap", [True, False])
def test_compaction_merges_parts_and_preserves_rows(tmp_path, monkeypatch, swap):
    if not swap:  # platforms without an atomic directory swap take the rename + delete path
        monkeypatch.setattr(store_mod, "_exchange_dirs", lambda a, b: False)
    ticks = _ticks(3000)
    bars = _bars(600)
    st = Store(tmp_path)
    for i in range(0, 3000, 250):
        st.write_ticks("BTCUSDT", ticks[i:i + 250])
        st.write_bars("1m", "BTCUSDT", bars[i // 5:(i + 250) // 5])
        st.write_funding("BTCUSDT", pa.table({
            "ts": pa.array([START + i * 1000], pa.timestamp("ms", tz="UTC")),
            "mark_price": [100.0 + i], "funding_rate": [1e-4]}))
        st.flush()
    partitions = {p.parent for p in _files(tmp_path)}
    several = sum(1 for d in partitions if len(list(d.iterdir())) > 1)
    assert several > 0
    assert st.compact() == several
    for d in partitions:
        assert len([p for p in d.iterdir()]) == 1, d
    assert st.compact() == 0
    fresh = Store(tmp_path)
    np.testing.assert_array_equal(table_to_ticks(fresh.read_ticks("BTCUSDT")), ticks)
    np.testing.assert_array_equal(table_to_bars(fresh.read_bars("1m", "BTCUSDT")), bars)
    assert fresh.read_funding("BTCUSDT").num_rows == 12
    assert fresh.last_agg_id("BTCUSDT") == ticks["agg_id"][-1]
    assert not list((tmp_path / ".staging").iterdir())


# ----------------------------------------------------------------------------- funding, misc


def test_funding_round_trip_and_upsert(tmp_path):
    ts = START + 8 * 3600 * 1000 * np.arange(9)
    table = pa.table({"ts": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
                      "mark_price": 100.0 + np.arange(9), "funding_rate": np.full(9, 1e-4)})
    st = Store(tmp_path)
    st.write_funding("BTCUSDT", table)
    st.flush()
    st.write_funding("BTCUSDT", {"ts": ts[4:5], "mark_price": [1.0], "funding_rate": [-2e-4]})
    assert st.flush()["funding"] == WriteCounts(replaced=1)
    got = st.read_funding("BTCUSDT")
    assert got.schema.equals(FUNDING_STORED_SCHEMA)
    optional = ("mark_price", "next_funding_time")  # may be null: nullable in the files
    for path in _files(tmp_path / "funding"):
        schema = pq.read_schema(path).remove_metadata()
        assert schema.equals(required(FUNDING_STORED_SCHEMA, optional)), path
    expected_rate = np.full(9, 1e-4)
    expected_rate[4] = -2e-4
    np.testing.assert_array_equal(got.column("funding_rate").to_numpy(), expected_rate)
    part = ds.dataset(tmp_path / "funding", partitioning="hive").to_table()
    assert part.num_rows == 9 and set(part.column("symbol").to_pylist()) == {"BTCUSDT"}


def test_symbols_by_kind(tmp_path):
    st = Store(tmp_path)
    st.write_ticks("SOLUSDT", _ticks(10))
    st.write_ticks("BTCUSDT", _ticks(10))
    st.flush()
    st.write_ticks("ETHUSDT", _ticks(10))  # buffered only
    st.write_bars("5m", "BNBUSDT", _bars(3, step_ms=300_000))
    assert st.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert Store(tmp_path).symbols("ticks") == ["BTCUSDT", "SOLUSDT"]
    assert st.symbols("5m") == ["BNBUSDT"]
    assert st.symbols("1s") == [] and st.symbols("funding") == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agg_id_gaps_match_a_plain_loop(tmp_path, seed):
    rng = np.random.default_rng(seed)
    ticks = _ticks(2000, seed=seed)
    kept = ticks[rng.random(2000) > 0.05]
    st = Store(tmp_path)
    st.write_ticks("BTCUSDT", kept)
    ids = set(kept["agg_id"].tolist())
    expected, start = [], None
    for a in range(min(ids), max(ids) + 1):
        if a not in ids and start is None:
            start = a
        if a in ids and start is not None:
            expected.append((start, a - 1))
            start = None
    assert st.agg_id_gaps("BTCUSDT") == expected


def test_maybe_flush_waits_for_the_interval(tmp_path):
    st = Store(tmp_path, flush_interval_ms=1000)
    st.flush(now=100.0)
    st.write_ticks("BTCUSDT", _ticks(10))
    assert st.maybe_flush(now=100.5) is None
    assert st.buffered_rows == 10 and not (tmp_path / "ticks").exists()
    assert st.maybe_flush(now=101.0) == {"ticks": WriteCounts(added=10)}
    assert st.buffered_rows == 0


def test_flush_min_rows_writes_only_the_directories_holding_that_many(tmp_path):
    st = Store(tmp_path)
    st.write_ticks("BTCUSDT", _ticks(10))
    st.write_bars("1m", "BTCUSDT", _bars(3))
    assert st.flush(min_rows=5) == {"ticks": WriteCounts(added=10)}
    assert st.buffered_rows == 3 and not (tmp_path / "bars").exists()
    assert st.flush() == {"bars/1m": WriteCounts(added=3)}
    assert st.read_bars("1m", "BTCUSDT").num_rows == 3 and st.buffered_rows == 0


# ----------------------------------------------------------------------------- small writes


def _small_writes(rows: np.ndarray, rng: np.random.Generator, to_table) -> list:
    """`rows` cut into hundreds of writes of 1-30 rows, a third reaching back over rows already
    written (repeats), some as strided views and some as Arrow tables, in write order."""
    writes, at = [], 0
    while at < len(rows):
        lo = max(0, at - int(rng.integers(0, 40))) if rng.random() < 0.33 else at
        hi = min(len(rows), at + int(rng.integers(1, 31)))
        chunk = rows[lo:hi]
        form = rng.random()
        if form < 0.15:
            chunk = np.repeat(chunk, 2)[::2]  # same rows, not contiguous
        elif form < 0.2:
            chunk = to_table(chunk)
        writes.append(chunk)
        at = hi
    return writes


def _one_file_per_day(root: Path) -> dict[str, pa.Table]:
    out = {}
    for day_dir in sorted(root.iterdir()):
        (path,) = list(day_dir.iterdir())
        out[day_dir.name] = pq.read_table(path).replace_schema_metadata(None)
    return out


def _by_day(records: np.ndarray, to_table) -> dict[str, pa.Table]:
    """Per day, the table a file of the records holds (every column required)."""
    days = records["ts"] // DAY_MS
    tables = {f"date={np.datetime64(int(d), 'D')}": to_table(records[days == d])
              for d in np.unique(days)}  # fmt: skip
    return {day: t.cast(required(t.schema)) for day, t in tables.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_many_small_writes_flush_to_the_files_one_write_of_the_kept_rows_makes(tmp_path, seed):
    """Hundreds of small writes of ticks and bars (repeats across writes, views, tables), one
    flush: each day partition holds one file whose table equals the oracle's rows converted
    by engine.schemas (first copy of a tick, last copy of a bar; sorted by key), and the same
    rows written as one batch to another store make equal files."""
    rng = np.random.default_rng(seed)
    ticks = _ticks(3000, seed=seed)  # about two days
    bars = _bars(800, seed=seed)
    tick_writes = _small_writes(ticks, rng, ticks_to_table)
    bar_writes = _small_writes(bars, rng, bars_to_table)
    for k in range(0, len(bar_writes), 5):  # some writes carry corrected values of a bar
        if isinstance(bar_writes[k], np.ndarray):
            bar_writes[k] = bar_writes[k].copy()
            bar_writes[k]["close"] += 1.0
    st = Store(tmp_path / "small")
    for chunk in tick_writes:
        st.write_ticks("BTCUSDT", chunk)
    for chunk in bar_writes:
        st.write_bars("1m", "BTCUSDT", chunk)
    total_ticks = sum(len(c) for c in tick_writes)
    assert st.buffered_rows == total_ticks + sum(len(c) for c in bar_writes)

    def records(chunk, convert):
        return convert(chunk) if isinstance(chunk, pa.Table) else chunk

    written_ticks = pd.concat([_frame(records(c, table_to_ticks)) for c in tick_writes])
    kept_ticks = written_ticks.drop_duplicates("agg_id", keep="first").sort_values("agg_id")
    kept_bars = (pd.concat([_frame(records(c, table_to_bars)) for c in bar_writes])
                 .drop_duplicates("ts", keep="last").sort_values("ts"))
    oracle_ticks = np.empty(len(kept_ticks), dtype=ticks.dtype)
    oracle_bars = np.empty(len(kept_bars), dtype=BAR_DTYPE)
    for name in ticks.dtype.names:
        oracle_ticks[name] = kept_ticks[name].to_numpy()
    for name in BAR_DTYPE.names:
        oracle_bars[name] = kept_bars[name].to_numpy()
    np.testing.assert_array_equal(oracle_ticks, ticks)  # every tick was written at least once

    counts = st.flush()
    assert counts["ticks"] == WriteCounts(added=len(ticks),
                                          duplicates=total_ticks - len(ticks))
    assert counts["bars/1m"].added == len(oracle_bars)
    assert not np.array_equal(oracle_bars["close"], bars["close"])  # corrections were kept
    assert st.buffered_rows == 0
    small_ticks = _one_file_per_day(tmp_path / "small" / "ticks" / "symbol=BTCUSDT")
    small_bars = _one_file_per_day(tmp_path / "small" / "bars" / "timeframe=1m" /
                                   "symbol=BTCUSDT")
    expected_ticks = _by_day(oracle_ticks, ticks_to_table)
    expected_bars = _by_day(oracle_bars, bars_to_table)
    assert len(expected_ticks) >= 2 and small_ticks.keys() == expected_ticks.keys()
    assert small_bars.keys() == expected_bars.keys()
    for day, table in expected_ticks.items():
        assert small_ticks[day].equals(table), day
    for day, table in expected_bars.items():
        assert small_bars[day].equals(table), day
    one = Store(tmp_path / "one")
    one.write_ticks("BTCUSDT", oracle_ticks)
    one.write_bars("1m", "BTCUSDT", oracle_bars)
    one.flush()
    assert _one_file_per_day(tmp_path / "one" / "ticks" / "symbol=BTCUSDT") == small_ticks
    assert _one_file_per_day(tmp_path / "one" / "bars" / "timeframe=1m" /
                             "symbol=BTCUSDT") == small_bars


def test_bad_batch_is_refused_when_written_and_leaves_no_trace(tmp_path):
    ticks = _ticks(100, gap_ms=1000.0)
    st = Store(tmp_path)
    st.write_ticks("BTCUSDT", ticks[:40])
    bad = ticks[40:60].copy()
    bad["qty"][7] = np.inf
    bad["qty"][9] = np.nan
    with pytest.raises(DataError, match=r"ticks of BTCUSDT: column 'qty' row 7 is inf"):
        st.write_ticks("BTCUSDT", bad)
    bad = ticks[40:60].copy()
    bad["price"][6] = -np.inf
    with pytest.raises(DataError, match=r"column 'price' row 3 is -inf"):
        st.write_ticks("BTCUSDT", bad[::2])  # a strided view: its row 3 is row 6
    with pytest.raises(DataError, match="one-dimensional"):
        st.write_ticks("BTCUSDT", ticks[40:60].reshape(4, 5))
    assert st.buffered_rows == 40 and st.last_agg_id("BTCUSDT") == ticks["agg_id"][39]
    bars = _bars(5)
    bars["low"][0] = np.nan
    with pytest.raises(DataError, match=r"1m bars of ETHUSDT: column 'low' row 0 is nan"):
        st.write_bars("1m", "ETHUSDT", bars)
    assert st.symbols("1m") == [] and st.buffered_rows == 40
    st.write_ticks("BTCUSDT", ticks[40:])
    assert st.flush() == {"ticks": WriteCounts(added=100)}
    np.testing.assert_array_equal(table_to_ticks(st.read_ticks("BTCUSDT")), ticks)
    assert [p.parts[-4] for p in _files(tmp_path)] == ["ticks"]


def test_written_records_are_copied(tmp_path):
    """The caller may reuse its array right after a write: the store keeps what was written."""
    ticks = _ticks(50, gap_ms=1000.0)
    bars = _bars(20)
    expected_ticks, expected_bars = ticks.copy(), bars.copy()
    st = Store(tmp_path)
    st.write_ticks("BTCUSDT", ticks)
    st.write_bars("1s", "BTCUSDT", bars)
    ticks["price"] = 1.0
    bars["close"] = np.nan
    st.flush()
    np.testing.assert_array_equal(table_to_ticks(st.read_ticks("BTCUSDT")), expected_ticks)
    np.testing.assert_array_equal(table_to_bars(st.read_bars("1s", "BTCUSDT")), expected_bars)


def test_writing_records_and_flushing_do_not_import_pandas(tmp_path):
    """pyarrow's NumPy conversions import pandas on first use (0.2 s holding the GIL, in the
    feed's writer thread): record writes, flushes and append-only merges must not need it."""
    code = f"""
import sys
import numpy as np
from engine.schemas import BAR_DTYPE, TICK_DTYPE
from engine.store import Store
st = Store({str(tmp_path)!r})
for k in range(3):
    ticks = np.zeros(500, dtype=TICK_DTYPE)
    ticks["ts"] = 1_717_200_000_000 + np.arange(500) * 400 + k * 200_000
    ticks["agg_id"] = np.arange(500) + 500 * k
    ticks["price"] = ticks["qty"] = 1.0
    ticks["buyer_maker"] = np.arange(500) % 3 == 0
    st.write_ticks("BTCUSDT", ticks)
    st.write_ticks("BTCUSDT", ticks[:10])  # repeats
    bars = np.zeros(3, dtype=BAR_DTYPE)
    bars["ts"] = 1_717_200_000_000 + (np.arange(3) + 3 * k) * 60_000
    st.write_bars("1m", "BTCUSDT", bars)
    st.flush()
assert "pandas" not in sys.modules, "pandas was imported"
assert st.read_ticks("BTCUSDT").num_rows == 1500
"""
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_refused_with_clear_errors(tmp_path):
    st = Store(tmp_path)
    ticks = _ticks(10)
    with pytest.raises(DataError, match="dtype"):
        st.write_ticks("BTCUSDT", _bars(3))
    with pytest.raises(DataError, match="missing columns"):
        st.write_ticks("BTCUSDT", pa.table({"ts": [1], "agg_id": [1]}))
    nan = ticks.copy()
    nan["price"][4] = np.nan
    with pytest.raises(DataError, match="'price' row 4"):
        st.write_ticks("BTCUSDT", nan)
    with pytest.raises(DataError, match="null"):
        st.write_funding("BTCUSDT", {"ts": [1, None], "mark_price": [1.0, 2.0],
                                     "funding_rate": [0.0, 0.0]})
    with pytest.raises(DataError, match="cannot be stored"):
        st.write_funding("BTCUSDT", {"ts": [1], "mark_price": ["x"], "funding_rate": [0.0]})
    with pytest.raises(DataError, match="expected an Arrow table"):
        st.write_funding("BTCUSDT", ticks)
    for symbol in ("btcusdt", "../x", "", "BTC/USDT"):
        with pytest.raises(DataError, match="symbol"):
            st.write_ticks(symbol, ticks)
    with pytest.raises(DataError, match="timeframe"):
        st.write_bars("1w", "BTCUSDT", _bars(3))
    with pytest.raises(DataError, match="ISO-8601"):
        st.read_ticks("BTCUSDT", start="yesterday")
    with pytest.raises(DataError, match="bool"):
        st.read_bars("1m", "BTCUSDT", end=True)
    with pytest.raises(DataError, match="got list"):
        st.read_bars("1m", "BTCUSDT", end=[1])
    with pytest.raises(DataError, match="timeframe"):
        st.symbols("klines")
    assert st.buffered_rows == 0 and not list(tmp_path.iterdir())


def test_store_path_that_is_a_file_and_corrupt_parts_raise_store_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store(tmp_path / "file")
    with pytest.raises(DataError, match="flush_interval_ms"):
        Store(tmp_path / "s", flush_interval_ms=-1)
    st = Store(tmp_path / "s")
    st.write_ticks("BTCUSDT", _ticks(10, gap_ms=1.0))
    st.flush()
    part_dir = next((tmp_path / "s" / "ticks" / "symbol=BTCUSDT").iterdir())
    (part_dir / "part-zzz.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StoreError, match="cannot read"):
        Store(tmp_path / "s").read_ticks("BTCUSDT")
    fresh = Store(tmp_path / "s")
    with pytest.raises(StoreError, match="footer"):
        fresh.write_ticks("BTCUSDT", _ticks(10, gap_ms=1.0))
    assert os.path.exists(part_dir / "part-zzz.parquet")


# ----------------------------------------------------------------------------- live compaction
def _flush_in_steps(st: Store, ticks: np.ndarray, bars: np.ndarray, steps: int,
                    every: int = 0, fanout: int = 4) -> None:
    """One flush per step (as a live writer makes), ``compact_closed`` every ``every`` steps."""
    for k, (t, b) in enumerate(zip(np.array_split(ticks, steps), np.array_split(bars, steps),
                                   strict=True)):  # fmt: skip
        st.write_ticks("BTCUSDT", t)
        st.write_bars("1m", "BTCUSDT", b)
        st.flush()
        if every and (k + 1) % every == 0:
            st.compact_closed(now_ms=START + DAY_MS // 2, fanout=fanout)


@pytest.mark.parametrize("swap", [True, False])
def test_compact_closed_bounds_files_of_today_and_merges_closed_days(tmp_path, monkeypatch,
                                                                     swap):
    if not swap:
        monkeypatch.setattr(store_mod, "_exchange_dirs", lambda a, b: False)
    n = 4_000
    ticks = random_ticks(n, start_ms=START, mean_gap_ms=10_000, seed=3)  # within 2024-06-01
    bars = _bars(400, seed=3, step_ms=30_000)
    assert int(ticks["ts"][-1]) < START + DAY_MS and int(bars["ts"][-1]) < START + DAY_MS
    st = Store(tmp_path)
    _flush_in_steps(st, ticks, bars, steps=400, every=1, fanout=4)
    tick_dir = tmp_path / "ticks" / "symbol=BTCUSDT" / "date=2024-06-01"
    files = list(tick_dir.iterdir())
    # 4,000 rows in flushes of 10: tiers of [4^k, 4^(k+1)) rows hold at most 3 files each
    assert 1 < len(files) <= 3 * 5, len(files)
    rows = [pq.ParquetFile(p).metadata.num_rows for p in files]
    assert sum(rows) == n
    np.testing.assert_array_equal(table_to_ticks(Store(tmp_path).read_ticks("BTCUSDT")), ticks)
    # the next day: the closed day is one file per partition
    assert st.compact_closed(now_ms=START + DAY_MS) == 2
    for part in (tick_dir, tmp_path / "bars" / "timeframe=1m" / "symbol=BTCUSDT" /
                 "date=2024-06-01"):  # fmt: skip
        assert len(list(part.iterdir())) == 1
    assert st.compact_closed(now_ms=START + DAY_MS) == 0
    fresh = Store(tmp_path)
    np.testing.assert_array_equal(table_to_ticks(fresh.read_ticks("BTCUSDT")), ticks)
    np.testing.assert_array_equal(table_to_bars(fresh.read_bars("1m", "BTCUSDT")), bars)
    assert not list((tmp_path / ".staging").iterdir())


def test_compact_closed_never_shows_a_reader_a_row_twice_or_misses_one(tmp_path):
    """A writer flushes and compacts while readers (this store's and pyarrow's dataset) read:
    every read holds each agg_id once and every row flushed before the read began."""
    import threading

    n, steps = 6_000, 300
    ticks = random_ticks(n, start_ms=START, mean_gap_ms=10_000, seed=5)
    flushed = [0]  # rows on disk (written before the count moves)
    done = threading.Event()
    failures: list[str] = []
    reads = {"store": 0, "dataset": 0}

    def writer() -> None:
        st = Store(tmp_path, durable=False)
        try:
            for k, part in enumerate(np.array_split(ticks, steps)):
                st.write_ticks("BTCUSDT", part)
                st.flush()
                flushed[0] += len(part)
                if k % 3 == 2:
                    st.compact_closed(now_ms=START + DAY_MS // 2, fanout=4)
            st.compact_closed(now_ms=START + DAY_MS)
        finally:
            done.set()

    def check(ids: np.ndarray, before: int, who: str) -> None:
        if len(np.unique(ids)) != len(ids):
            failures.append(f"{who}: a row twice")
        if not set(ticks["agg_id"][:before].tolist()) <= set(ids.tolist()):
            failures.append(f"{who}: a flushed row missing")
        reads[who] += 1

    def reader() -> None:
        try:
            read_until_done()
        except Exception as exc:  # the test fails on it below
            failures.append(f"reader raised {exc!r}")

    def read_until_done() -> None:
        while not done.is_set():
            before = flushed[0]
            ids = table_to_ticks(Store(tmp_path).read_ticks("BTCUSDT"))["agg_id"]
            check(ids, before, "store")
            before = flushed[0]
            try:
                table = ds.dataset(tmp_path / "ticks", partitioning="hive").to_table()
            except FileNotFoundError:  # listed a file a swap then took away: read again
                continue
            if table.num_columns == 0:  # no file yet: nothing flushed before the read
                check(np.empty(0, dtype=np.int64), before, "dataset")
                continue
            check(table.column("agg_id").to_numpy(), before, "dataset")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    (tmp_path / "ticks").mkdir()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures[:5]
    assert reads["store"] > 5 and reads["dataset"] > 5, reads
    files = list((tmp_path / "ticks" / "symbol=BTCUSDT").rglob("*.parquet"))
    assert len(files) == 1
    np.testing.assert_array_equal(table_to_ticks(Store(tmp_path).read_ticks("BTCUSDT")), ticks)


def test_adopt_renames_new_files_in_and_merges_overlapping_ones(tmp_path):
    """Oracle: the same rows written straight into one store (first tick copy wins, latest bar
    wins)."""
    ticks, bars = _ticks(3000, seed=5), _bars(400, seed=5)
    staged = Store(tmp_path / "main" / ".staging" / "a", durable=False)
    staged.write_ticks("BTCUSDT", ticks[:2000])
    staged.write_bars("1m", "BTCUSDT", bars)
    staged.flush()
    staged_files = {p.name: os.stat(p).st_ino for p in _files(staged.path)}
    main = Store(tmp_path / "main", durable=False)
    counts = main.adopt(staged)
    assert counts == {"ticks": WriteCounts(added=2000), "bars/1m": WriteCounts(added=400)}
    assert _files(staged.path) == []
    moved = {p.name: os.stat(p).st_ino for p in _files(main.path)}
    assert moved == staged_files  # renamed, not rewritten
    corrected = bars[100:200].copy()
    corrected["close"] += 1.0
    again = Store(tmp_path / "main" / ".staging" / "b", durable=False)
    again.write_ticks("BTCUSDT", ticks[1000:])
    again.write_bars("1m", "BTCUSDT", np.concatenate((bars[:100], corrected)))
    counts = main.adopt(again)
    assert counts["ticks"] == WriteCounts(added=1000, duplicates=1000)
    assert counts["bars/1m"] == WriteCounts(replaced=100, duplicates=100)
    oracle = Store(tmp_path / "oracle", durable=False)
    oracle.write_ticks("BTCUSDT", ticks)
    oracle.write_bars("1m", "BTCUSDT", bars)
    oracle.write_bars("1m", "BTCUSDT", corrected)
    fresh = Store(tmp_path / "main")
    assert fresh.read_ticks("BTCUSDT").equals(oracle.read_ticks("BTCUSDT"))
    assert fresh.read_bars("1m", "BTCUSDT").equals(oracle.read_bars("1m", "BTCUSDT"))
    assert main.last_agg_id("BTCUSDT") == int(ticks["agg_id"].max())
