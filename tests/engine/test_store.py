"""The Parquet store: layout, round trips, uniqueness, upserts, range reads, atomicity, compaction.

Oracles: pandas (drop_duplicates, filters) and plain-Python loops over the written rows.
"""

from __future__ import annotations

import os
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
from engine.schemas import BAR_DTYPE, BAR_SCHEMA, TICK_SCHEMA, table_to_bars, table_to_ticks
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
        assert schema.remove_metadata().equals(expected), path
    assert all(p.parts[-4].startswith("timeframe=1m") for p in _files(tmp_path / "bars"))


def test_readable_by_pyarrow_dataset_and_duckdb(tmp_path):
    st = Store(tmp_path)
    for i, sym in enumerate(["BTCUSDT", "ETHUSDT"]):
        st.write_ticks(sym, _ticks(1500, seed=i))
        st.write_bars("1s", sym, _bars(300, seed=i, step_ms=1000))
    st.flush()
    table = ds.dataset(tmp_path / "ticks", partitioning="hive").to_table()
    assert table.num_rows == 3000
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
    assert rows == [("BTCUSDT", 1500, 1500), ("ETHUSDT", 1500, 1500)]


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
        st.write_bars("1h", "BTCUSDT", _bars(3))
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
