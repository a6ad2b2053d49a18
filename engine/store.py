"""The Hive-partitioned Parquet store (DESIGN.md "Store").

Layout under the store's root (partition columns live in directory names, never in files)::

    ticks/symbol=<S>/date=<YYYY-MM-DD>/<part>.parquet                 TICK_SCHEMA, key agg_id
    bars/timeframe=<tf>/symbol=<S>/date=<YYYY-MM-DD>/<part>.parquet   BAR_SCHEMA, key ts
    funding/symbol=<S>/date=<YYYY-MM-DD>/<part>.parquet               FUNDING_STORED_SCHEMA, key ts

Dates are UTC days of ``ts``. Writes are buffered in memory and written by ``flush()`` (or
``maybe_flush()``, which flushes once the flush interval has passed); each flush writes at most
one new part file per partition. Every file is written under a dotted temporary name
(``.<part>.parquet.tmp``, which pyarrow, DuckDB and polars skip) and then renamed, so readers
never see half a file.

Uniqueness: a tick key (agg_id) is stored once and the first copy wins (a trade never changes);
a bar or funding key (ts) is stored once and the latest write wins (a late tick corrects a bar),
rows identical to the stored ones are skipped without touching any file. New keys above a
partition's largest key (the common case) are appended without reading anything; keys inside
the range are checked against the files whose min/max statistics cover them. A correction is
applied by rewriting the one file that holds the key (write + rename: atomic).

``compact()`` merges a partition's part files into one. Where the OS can swap two directories
atomically (Linux ``renameat2(RENAME_EXCHANGE)``) the merged partition is built aside and
swapped in, so readers see either the old files or the new one, never both; elsewhere the merged
file is renamed in and the old parts removed after it (a reader may briefly see both; this
store's own reads drop duplicate keys anyway).

One writer per symbol (the engine guarantees it); readers may run at any time. A reader that
lists a partition just before a compaction swaps it may find a listed file gone: this store's
reads retry.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.errors import DataError, StoreError
from engine.schemas import (
    BAR_DTYPE,
    BAR_SCHEMA,
    TICK_DTYPE,
    TICK_SCHEMA,
    TIMEFRAME_MS,
    TS_TYPE,
    bars_to_table,
    ticks_to_table,
)

log = logging.getLogger(__name__)

#: Funding (extension partition): the columns every funding row has: a mark-price update's
#: time, mark price and current funding rate (fraction per funding interval).
FUNDING_SCHEMA = pa.schema(
    [("ts", TS_TYPE), ("mark_price", pa.float64()), ("funding_rate", pa.float64())]
)
#: Funding rows as stored and read: FUNDING_SCHEMA + the next funding time the update announced
#: (Binance markPrice ``T``), null for rows written without it (old or imported rows).
FUNDING_STORED_SCHEMA = FUNDING_SCHEMA.append(pa.field("next_funding_time", TS_TYPE))

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")
_STAGING = ".staging"
_READ_RETRIES = 5


@dataclass(frozen=True)
class WriteCounts:
    """What one flush did to one kind of data (rows)."""

    added: int = 0  # new keys written
    replaced: int = 0  # stored rows replaced by a different row with the same key (bars, funding)
    duplicates: int = 0  # rows dropped: key already stored (ticks) or identical row stored

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(
            self.added + other.added,
            self.replaced + other.replaced,
            self.duplicates + other.duplicates,
        )


@dataclass(frozen=True)
class _Kind:
    schema: pa.Schema
    key: str
    replace: bool  # True: latest write wins (upsert); False: first stored copy wins
    optional: tuple[str, ...] = ()  # columns that may be missing or null (read back as null)


_TICKS = _Kind(TICK_SCHEMA, "agg_id", replace=False)
_BARS = _Kind(BAR_SCHEMA, "ts", replace=True)
_FUNDING = _Kind(FUNDING_STORED_SCHEMA, "ts", replace=True, optional=("next_funding_time",))


@dataclass
class _FileInfo:
    name: str
    rows: int
    kmin: int
    kmax: int


def to_ms(value: int | datetime | date | str | None, what: str = "time") -> int | None:
    """A time as Unix ms: int ms, datetime (naive means UTC), date (midnight UTC), or ISO string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DataError(f"{what}: expected ms, datetime or ISO string, got bool {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise DataError(
                f"{what}: {value!r} is not an ISO-8601 time (e.g. 2024-06-01T12:00:00Z)"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, date):
        return (value - date(1970, 1, 1)).days * DAY_MS
    raise DataError(
        f"{what}: expected ms int, datetime or ISO string, got {type(value).__name__}"
    )


def _check_symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise DataError(
            f"symbol {symbol!r}: expected an uppercase Binance symbol such as 'BTCUSDT'"
        )
    return symbol


def _check_timeframe(timeframe: str) -> str:
    if timeframe not in TIMEFRAME_MS:
        raise DataError(f"timeframe {timeframe!r}: expected one of {list(TIMEFRAME_MS)}")
    return timeframe


def _coerce(data: object, kind: _Kind, dtype: np.dtype | None, what: str) -> pa.Table:
    """Records or a table-like -> a table with exactly kind.schema; DataError when impossible."""
    if isinstance(data, np.ndarray):
        if dtype is None or data.dtype != dtype:
            expected = "an Arrow table" if dtype is None else f"records of dtype {dtype}"
            raise DataError(f"{what}: expected {expected}, got an array of dtype {data.dtype}")
        data = ticks_to_table(data) if dtype == TICK_DTYPE else bars_to_table(data)
    elif not isinstance(data, pa.Table):
        try:
            data = pa.table(data)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"{what}: cannot make an Arrow table from {type(data).__name__}: "
                            f"{exc}") from None
    missing = [f.name for f in kind.schema
               if f.name not in data.column_names and f.name not in kind.optional]
    if missing:
        raise DataError(f"{what}: missing columns {missing}; expected {kind.schema.names}")
    columns = []
    for field in kind.schema:
        if field.name not in data.column_names:
            columns.append(pa.nulls(data.num_rows, field.type))
            continue
        col = data.column(field.name)
        if col.null_count and field.name not in kind.optional:
            raise DataError(f"{what}: column {field.name!r} has {col.null_count} null value(s)")
        try:
            col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise DataError(
                f"{what}: column {field.name!r} of type {col.type} cannot be stored as "
                f"{field.type}: {exc}"
            ) from None
        if pa.types.is_floating(field.type):
            values = col.to_numpy()
            if not np.isfinite(values).all():
                bad = int(np.flatnonzero(~np.isfinite(values))[0])
                raise DataError(f"{what}: column {field.name!r} row {bad} is {values[bad]}")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=kind.schema)


def _keys(table: pa.Table, kind: _Kind) -> np.ndarray:
    col = table.column(kind.key)
    if kind.key == "ts":
        col = col.cast(pa.int64())
    return col.to_numpy()


def _unique_keys(table: pa.Table, kind: _Kind) -> pa.Table:
    """Sorted by key, one row per key: the first for tick-like kinds, the last for upserts."""
    keys = _keys(table, kind)
    if len(keys) < 2 or (np.diff(keys) > 0).all():
        return table
    if kind.replace:
        rev = np.argsort(keys[::-1], kind="stable")
        order = len(keys) - 1 - rev  # latest occurrence first among equal keys
    else:
        order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return table.take(order[keep])


def _date_name(day: int) -> str:
    return "date=" + str(np.datetime64(int(day), "D"))


def _day_of(name: str) -> int | None:
    try:
        return int(np.datetime64(name.removeprefix("date="), "D").astype(np.int64))
    except ValueError:
        return None


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(table: pa.Table, final: Path, durable: bool) -> None:
    """Write under a dotted temporary name in the same directory, then rename over `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(table, tmp)
    if durable:
        _fsync(tmp)
    os.replace(tmp, final)


def _new_part_name() -> str:
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


def _exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise StoreError(f"cannot swap {a} and {b}: {os.strerror(err)}")


class Store:
    """Hive-partitioned Parquet store of ticks, bars and funding under `path`."""

    def __init__(self, path: str | os.PathLike, *, flush_interval_ms: int = 1000,
                 durable: bool = True) -> None:
        """`flush_interval_ms`: what `maybe_flush` waits between flushes; `durable`: fsync files."""
        if flush_interval_ms < 0:
            raise DataError(f"flush_interval_ms must be >= 0, got {flush_interval_ms}")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} exists and is not a directory")
        self.flush_interval_ms = flush_interval_ms
        self.durable = durable
        self._buffers: dict[Path, tuple[_Kind, str, list[pa.Table]]] = {}
        self._files: dict[Path, list[_FileInfo]] = {}
        self._last_id: dict[str, int | None] = {}
        self._last_flush = time.monotonic()

    # ----------------------------------------------------------------------------- paths
    def _ticks_dir(self, symbol: str) -> Path:
        return self.path / "ticks" / f"symbol={_check_symbol(symbol)}"

    def _bars_dir(self, timeframe: str, symbol: str) -> Path:
        tf = _check_timeframe(timeframe)
        return self.path / "bars" / f"timeframe={tf}" / f"symbol={_check_symbol(symbol)}"

    def _funding_dir(self, symbol: str) -> Path:
        return self.path / "funding" / f"symbol={_check_symbol(symbol)}"

    # ----------------------------------------------------------------------------- writes
    def write_ticks(self, symbol: str, ticks: np.ndarray | pa.Table) -> None:
        """Buffer ticks (TICK_DTYPE records or a table with the tick columns) of one symbol."""
        table = _coerce(ticks, _TICKS, TICK_DTYPE, f"ticks of {symbol}")
        self._buffer(self._ticks_dir(symbol), _TICKS, "ticks", table)
        if table.num_rows:
            top = int(pc.max(table.column("agg_id")).as_py())
            last = self.last_agg_id(symbol)
            self._last_id[symbol] = top if last is None else max(last, top)

    def write_bars(self, timeframe: str, symbol: str, bars: np.ndarray | pa.Table) -> None:
        """Buffer bars (BAR_DTYPE records or a table); a stored bar with the same ts is replaced."""
        table = _coerce(bars, _BARS, BAR_DTYPE, f"{timeframe} bars of {symbol}")
        self._buffer(self._bars_dir(timeframe, symbol), _BARS, f"bars/{timeframe}", table)

    def write_funding(self, symbol: str, funding: pa.Table | object) -> None:
        """Buffer funding rows (ts, mark_price, funding_rate and optionally next_funding_time,
        ms or timestamp, null where unknown); same ts replaces the stored row."""
        table = _coerce(funding, _FUNDING, None, f"funding of {symbol}")
        self._buffer(self._funding_dir(symbol), _FUNDING, "funding", table)

    def _buffer(self, directory: Path, kind: _Kind, label: str, table: pa.Table) -> None:
        if table.num_rows:
            self._buffers.setdefault(directory, (kind, label, []))[2].append(table)

    @property
    def buffered_rows(self) -> int:
        """Rows written but not yet flushed to files."""
        return sum(t.num_rows for _, _, tables in self._buffers.values() for t in tables)

    def maybe_flush(self, now: float | None = None) -> dict[str, WriteCounts] | None:
        """Flush when `flush_interval_ms` has passed since the last flush (`now`: monotonic s)."""
        now = time.monotonic() if now is None else now
        if (now - self._last_flush) * 1000.0 < self.flush_interval_ms:
            return None
        return self.flush(now)

    def flush(self, now: float | None = None) -> dict[str, WriteCounts]:
        """Write every buffered row; returns counts by kind ("ticks", "bars/1m", "funding")."""
        self._last_flush = time.monotonic() if now is None else now
        counts: dict[str, WriteCounts] = {}
        for directory in list(self._buffers):
            label, got = self._flush_dir(directory)
            counts[label] = counts.get(label, WriteCounts()) + got
        return counts

    def _flush_dir(self, directory: Path) -> tuple[str, WriteCounts]:
        kind, label, tables = self._buffers.pop(directory)
        table = _unique_keys(pa.concat_tables(tables), kind)
        dropped = sum(t.num_rows for t in tables) - table.num_rows
        days = table.column("ts").cast(pa.int64()).to_numpy() // DAY_MS
        counts = WriteCounts(duplicates=dropped if not kind.replace else 0)
        for day in np.unique(days):
            part = table.filter(pa.array(days == day))
            counts = counts + self._merge(directory / _date_name(day), kind, part)
        return label, counts

    def _merge(self, part_dir: Path, kind: _Kind, new: pa.Table) -> WriteCounts:
        """Merge rows unique by key (sorted) into one partition."""
        infos = self._file_infos(part_dir)
        keys = _keys(new, kind)
        lo, hi = int(keys[0]), int(keys[-1])
        overlapping = [f for f in infos if f.kmin <= hi and f.kmax >= lo]
        replaced = duplicates = 0
        if overlapping:
            pending = np.ones(len(keys), dtype=bool)
            for info in overlapping:
                path = part_dir / info.name
                if kind.replace:
                    stored = self._read_file(path, kind)
                    skeys = _keys(stored, kind)
                else:  # first copy wins: only the keys are needed
                    skeys = pq.ParquetFile(path).read(columns=[kind.key]).column(0).to_numpy()
                hit_new = np.isin(keys, skeys) & pending
                if not hit_new.any():
                    continue
                pending &= ~hit_new
                if not kind.replace:
                    duplicates += int(hit_new.sum())
                    continue
                n_repl = self._upsert_file(part_dir, info, kind, stored,
                                           new.filter(pa.array(hit_new)))
                replaced += n_repl
                duplicates += int(hit_new.sum()) - n_repl
            new = new.filter(pa.array(pending))
        if new.num_rows:
            name = _new_part_name()
            _write_atomic(new, part_dir / name, self.durable)
            k = _keys(new, kind)
            infos.append(_FileInfo(name, new.num_rows, int(k[0]), int(k[-1])))
        return WriteCounts(added=new.num_rows, replaced=replaced, duplicates=duplicates)

    def _upsert_file(self, part_dir: Path, info: _FileInfo, kind: _Kind, stored: pa.Table,
                     incoming: pa.Table) -> int:
        """Replace rows of one file by `incoming` (all keys present there); returns rows changed."""
        skeys = _keys(stored, kind)
        ikeys = _keys(incoming, kind)
        idx = np.searchsorted(skeys, ikeys)  # stored files are sorted by key
        old = stored.take(pa.array(idx))
        same = np.ones(len(ikeys), dtype=bool)
        for name in kind.schema.names:
            a, b = old.column(name), incoming.column(name)
            both_null = pc.and_(pc.is_null(a), pc.is_null(b))
            same &= pc.or_(pc.fill_null(pc.equal(a, b), False), both_null).to_numpy()
        if same.all():
            return 0
        changed = incoming.filter(pa.array(~same))
        keep = np.ones(len(skeys), dtype=bool)
        keep[idx[~same]] = False
        merged = pa.concat_tables([stored.filter(pa.array(keep)), changed])
        merged = merged.take(np.argsort(_keys(merged, kind), kind="stable"))
        _write_atomic(merged, part_dir / info.name, self.durable)
        return int((~same).sum())

    # ----------------------------------------------------------------------------- file index
    def _file_infos(self, part_dir: Path) -> list[_FileInfo]:
        """Part files of a partition with their key range (from Parquet statistics), cached."""
        infos = self._files.get(part_dir)
        if infos is None:
            infos = [self._scan_info(part_dir / name) for name in self._part_names(part_dir)]
            self._files[part_dir] = infos
        return infos

    @staticmethod
    def _scan_info(path: Path) -> _FileInfo:
        try:
            meta = pq.ParquetFile(path).metadata
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read Parquet footer of {path}: {exc}") from None
        names = meta.schema.to_arrow_schema().names
        key = "agg_id" if "agg_id" in names else "ts"
        col = names.index(key)
        kmin, kmax = None, None
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(col).statistics
            if stats is None or not stats.has_min_max:
                raise StoreError(f"{path}: no min/max statistics for {key!r}")
            kmin = stats.min_raw if kmin is None else min(kmin, stats.min_raw)
            kmax = stats.max_raw if kmax is None else max(kmax, stats.max_raw)
        if kmin is None:
            kmin, kmax = 0, -1  # empty file: a range that overlaps nothing
        return _FileInfo(path.name, meta.num_rows, int(kmin), int(kmax))

    @staticmethod
    def _part_names(part_dir: Path) -> list[str]:
        try:
            names = os.listdir(part_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _visible(n) and n.endswith(".parquet"))

    @staticmethod
    def _date_dirs(root: Path) -> list[tuple[int, Path]]:
        """(day number, path) of the visible date partitions under a symbol directory, sorted."""
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            day = _day_of(name) if _visible(name) and name.startswith("date=") else None
            if day is not None:
                out.append((day, root / name))
        return sorted(out)

    @staticmethod
    def _read_file(path: Path, kind: _Kind) -> pa.Table:
        try:
            table = pq.ParquetFile(path).read()
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from None
        for name in kind.optional:  # files written before an optional column existed
            if name not in table.column_names:
                column = pa.nulls(table.num_rows, kind.schema.field(name).type)
                table = table.append_column(name, column)
        try:
            return table.select(kind.schema.names).cast(kind.schema)
        except (KeyError, pa.ArrowException) as exc:
            raise StoreError(f"{path} does not hold the expected columns: {exc}") from None

    # ----------------------------------------------------------------------------- reads
    def _read(self, root: Path, kind: _Kind, start: object, end: object) -> pa.Table:
        if root in self._buffers:
            self._flush_dir(root)
        start_ms = to_ms(start, "start")
        end_ms = to_ms(end, "end")
        for attempt in range(_READ_RETRIES):
            try:
                tables = [
                    self._read_file(part_dir / name, kind)
                    for day, part_dir in self._date_dirs(root)
                    if (end_ms is None or day * DAY_MS < end_ms)
                    and (start_ms is None or (day + 1) * DAY_MS > start_ms)
                    for name in self._part_names(part_dir)
                ]
                break
            except FileNotFoundError:  # a compaction swapped the partition while listing
                if attempt == _READ_RETRIES - 1:
                    raise StoreError(f"{root} kept changing while being read") from None
                time.sleep(0.01)
        table = pa.concat_tables(tables) if tables else kind.schema.empty_table()
        if start_ms is not None or end_ms is not None:
            ts = table.column("ts").cast(pa.int64())
            mask = None
            if start_ms is not None:
                mask = pc.greater_equal(ts, start_ms)
            if end_ms is not None:
                below = pc.less(ts, end_ms)
                mask = below if mask is None else pc.and_(mask, below)
            table = table.filter(mask)
        # files are listed in write order (names sort by time): for upsert kinds the later wins
        return _unique_keys(table, kind)

    def read_ticks(self, symbol: str, start: object = None, end: object = None) -> pa.Table:
        """Ticks with start <= ts < end (ms, datetime or ISO), sorted by agg_id."""
        return self._read(self._ticks_dir(symbol), _TICKS, start, end)

    def read_bars(self, timeframe: str, symbol: str, start: object = None,
                  end: object = None) -> pa.Table:
        """Bars with start <= ts < end (bar open time; ms, datetime or ISO), sorted by ts."""
        return self._read(self._bars_dir(timeframe, symbol), _BARS, start, end)

    def read_funding(self, symbol: str, start: object = None, end: object = None) -> pa.Table:
        """Funding rows (FUNDING_STORED_SCHEMA: ts, mark_price, funding_rate, next_funding_time,
        null for rows written without it) with start <= ts < end, sorted by ts."""
        return self._read(self._funding_dir(symbol), _FUNDING, start, end)

    def last_agg_id(self, symbol: str) -> int | None:
        """Largest aggregate id stored or buffered for `symbol` (None when none); cached."""
        if symbol not in self._last_id:
            root = self._ticks_dir(symbol)
            found = None
            for _, part_dir in reversed(self._date_dirs(root)):
                infos = [f for f in self._file_infos(part_dir) if f.rows]
                if infos:
                    found = max(f.kmax for f in infos)
                    break
            self._last_id[symbol] = found
        return self._last_id[symbol]

    def symbols(self, kind: str = "ticks") -> list[str]:
        """Symbols with data of a kind: "ticks", "funding" or a bar timeframe ("1s", "1m", "5m")."""
        if kind == "ticks":
            root = self.path / "ticks"
        elif kind == "funding":
            root = self.path / "funding"
        else:
            root = self.path / "bars" / f"timeframe={_check_timeframe(kind)}"
        found = {d.name for d in self._buffers if d.parent == root}
        if root.is_dir():
            found.update(n for n in os.listdir(root) if _visible(n))
        return sorted(n.removeprefix("symbol=") for n in found if n.startswith("symbol="))

    def agg_id_gaps(self, symbol: str) -> list[tuple[int, int]]:
        """Missing aggregate-id ranges (first, last inclusive) between the stored min and max."""
        ids = self.read_ticks(symbol).column("agg_id").to_numpy()
        if len(ids) < 2:
            return []
        at = np.flatnonzero(np.diff(ids) > 1)
        return [(int(ids[i]) + 1, int(ids[i + 1]) - 1) for i in at]

    # ----------------------------------------------------------------------------- compaction
    def _symbol_dirs(self) -> Iterable[tuple[Path, _Kind]]:
        for sub, kind in (("ticks", _TICKS), ("funding", _FUNDING)):
            root = self.path / sub
            if root.is_dir():
                yield from ((d, kind) for d in sorted(root.iterdir()) if _visible(d.name))
        bars = self.path / "bars"
        if bars.is_dir():
            for tf_dir in sorted(bars.iterdir()):
                if _visible(tf_dir.name):
                    yield from ((d, _BARS) for d in sorted(tf_dir.iterdir()) if _visible(d.name))

    def compact(self, symbol: str | None = None) -> int:
        """Merge each partition's part files into one (all symbols, or one); partitions merged."""
        self.flush()
        if symbol is not None:
            _check_symbol(symbol)
        merged = 0
        for sym_dir, kind in self._symbol_dirs():
            if symbol is not None and sym_dir.name != f"symbol={symbol}":
                continue
            self._clean_staging(sym_dir)
            for _, part_dir in self._date_dirs(sym_dir):
                merged += self._compact_partition(sym_dir, part_dir, kind)
        return merged

    def _staging_prefix(self, sym_dir: Path) -> str:
        return "-".join(sym_dir.relative_to(self.path).parts) + "-"

    def _clean_staging(self, sym_dir: Path) -> None:
        """Remove what an interrupted compaction of this symbol left aside."""
        staging = self.path / _STAGING
        prefix = self._staging_prefix(sym_dir)
        if staging.is_dir():
            for leftover in staging.iterdir():
                if leftover.name.startswith(prefix):
                    shutil.rmtree(leftover, ignore_errors=True)

    def _compact_partition(self, sym_dir: Path, part_dir: Path, kind: _Kind) -> int:
        for stale in os.listdir(part_dir):  # temp files of an interrupted write: never read
            if stale.startswith(".") and stale.endswith(".tmp"):
                (part_dir / stale).unlink(missing_ok=True)
        names = self._part_names(part_dir)
        if len(names) <= 1:
            return 0
        tables = [self._read_file(part_dir / n, kind) for n in names]
        table = pa.concat_tables(tables) if tables else kind.schema.empty_table()
        table = _unique_keys(table, kind)
        name = _new_part_name()
        staging = self.path / _STAGING / f"{self._staging_prefix(sym_dir)}{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        pq.write_table(table, staging / name)
        if self.durable:
            _fsync(staging / name)
        if _exchange_dirs(staging, part_dir):
            shutil.rmtree(staging)
        else:
            log.info("no atomic directory swap here: compacting %s by rename + delete", part_dir)
            os.replace(staging / name, part_dir / name)
            staging.rmdir()
            for old in names:
                (part_dir / old).unlink()
        self._files.pop(part_dir, None)
        return 1
