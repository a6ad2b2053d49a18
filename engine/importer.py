"""Import Binance public-data files (USD-M futures aggTrades, klines, funding rates) into the store.

Files: ``<SYM>-aggTrades-<date>``, ``<SYM>-<interval>-<date>`` (klines of any timeframe the store
knows, ``engine.schemas.TIMEFRAME_MS``: 1s and Binance's 1m ... 1d) and
``<SYM>-fundingRate-<YYYY-MM>``, each ``.csv`` or ``.zip`` (one CSV of the same name), with or
without a header row. A ``<file>.CHECKSUM`` beside a file (``<sha256>  <name>``) is verified
when present.

Streaming, memory bounded whatever the input: a file is never read whole. It is read in blocks
of ``BLOCK_BYTES`` from the file (the aggTrades fast path maps a CSV file and lets go of each
block's pages once parsed) or from the zip member's stream, and a zip member cannot
expand beyond the size the archive declares for it (zipfile stops there and checks the CRC), so
a zip bomb costs one block of memory and is refused at its first bad row. Lines are at most
``BLOCK_BYTES`` long.

Two readers. aggTrades go through ``engine.aggcsv`` first: a numba kernel that parses and
checks a block in one pass and vouches only for rows exactly as the reference reader reads them
(ms times, ``true``/``false``, plain decimals of up to 40 digits), in a worker thread (a zip
member inflated ahead in another), while bars are built and a third thread writes the store,
so reading, building and writing overlap. Where it cannot vouch for a row (microsecond or
second times, other spellings, a malformed row), what it staged of the file is dropped and
the reference reader reads the file: pyarrow's streaming CSV reader with every column's type,
and ``_Decoder``'s checks, which accept the file or name the line (1-based, counting the
header) and the column. Klines and funding files always take the reference reader.

One pass per file, and still a malformed file leaves the store untouched: each file is read,
checked and written into a staging store of its own under ``<store>/.staging`` (a dotted
directory, which readers skip), flushed every ``FLUSH_ROWS`` rows; once every file is staged,
``Store.adopt`` moves them in: a staged file whose key range overlaps nothing stored is renamed
in (a fresh import writes each row once), any other is merged like a write. An error removes
the staging. Bars are built across block boundaries: the bars still open at the end of a block
are carried over to the next (``engine.bars.SortedBars``, all three timeframes in one call), so
the bars equal those built from the whole file at once. A crash while files are moved in leaves
part of the import stored; importing again completes it (one row per key).

Times are Unix ms. A file whose first time is 1e15 or more is in microseconds (floor to ms), one
whose first time is below 1e11 is in seconds (x 1000; no ms time of a date after 1973 is that
small); the report says so, and a row in another unit than the file's first row is refused.

Trades become ticks plus 1s, 1m and 5m bars (``engine.bars.SortedBars``); klines become
bars of their interval (intervals without trades, ``count`` 0, are dropped: the store keeps no
empty bars); a funding file's settlement (``calc_time``, ``last_funding_rate``) becomes a funding
row at ``calc_time - 1`` ms announcing ``next_funding_time = calc_time``: the last update before
the settlement, which is what ``engine.funding`` pays at ``calc_time`` (with the stored rate);
its ``mark_price`` is null, the file has none (a backtest marks a leg at its close). Importing
the same file twice changes nothing: the store keeps one row per key.
"""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import re
import shutil
import sys
import threading
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from engine.aggcsv import NotVouched, agg_trade_blocks
from engine.bars import SortedBars
from engine.binance import (
    AGG_TRADES_CSV_COLUMNS,
    FUNDING_CSV_COLUMNS,
    KLINES_CSV_COLUMNS,
    MICROSECONDS_FROM,
    SECONDS_BELOW,
    parse_public_file_name,
)
from engine.errors import DataError, UploadError
from engine.schemas import BAR_DTYPE, TICK_SCHEMA, TIMEFRAME_MS, TS_TYPE
from engine.store import Store, WriteCounts, columns_table

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Bars built from imported trades.
TRADE_TIMEFRAMES: tuple[str, ...] = ("1s", "1m", "5m")
#: Bytes pyarrow parses at a time (also the longest line accepted).
BLOCK_BYTES = 4 << 20
#: Buffered rows at which the second pass flushes the store.
FLUSH_ROWS = 500_000
#: Plausible times (ms): 2000-01-01 to 2100-01-01; anything else is a unit or data error.
_MIN_MS, _MAX_MS = 946_684_800_000, 4_102_444_800_000
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_TRUE, _FALSE = ["true", "True", "TRUE"], ["false", "False", "FALSE"]
_UNIT_NOTE = {"us": "microseconds", "s": "seconds"}
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


@dataclass(frozen=True)
class ImportReport:
    """What an import did: files and rows read, rows written, duplicates skipped."""

    files: int
    ticks: int  # new ticks written
    bars: dict[str, int] = field(default_factory=dict)  # timeframe -> bars written or corrected
    microseconds: bool = False  # some file had µs timestamps (converted to ms)
    skipped_duplicates: int = 0  # rows already stored (ticks by agg_id, identical bars)
    empty_klines: int = 0  # kline rows without trades, not stored
    seconds: bool = False  # some file had timestamps in seconds (converted to ms)
    funding: int = 0  # funding rows written or corrected
    rows: int = 0  # CSV rows read (header not counted)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        bars = ", ".join(f"{tf} {n}" for tf, n in self.bars.items()) or "none"
        out = [
            f"files: {self.files}",
            f"rows read: {self.rows}",
            f"ticks written: {self.ticks}",
            f"bars written: {bars}",
            f"skipped duplicates: {self.skipped_duplicates}",
        ]
        if self.funding:
            out.append(f"funding rows written: {self.funding}")
        if self.empty_klines:
            out.append(f"empty klines skipped: {self.empty_klines}")
        if self.microseconds:
            out.append("timestamps: microseconds found and converted to milliseconds")
        if self.seconds:
            out.append("timestamps: seconds found and converted to milliseconds")
        return out


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    """One public-data file: what it holds and where its rows are (to name lines in errors)."""

    path: Path
    symbol: str
    kind: str  # "aggTrades", "fundingRate" or a timeframe (klines)
    columns: tuple[str, ...]
    types: dict[str, pa.DataType]
    header: bool

    def error(self, row: int, column: str, message: str) -> UploadError:
        """UploadError at data row ``row`` (0-based, -1: the header) and ``column``."""
        line = row + 1 + int(self.header)
        col = self.columns.index(column) + 1
        return UploadError(
            f"{self.path}: line {line}, column {col} ({column}): {message}",
            line=line,
            column=column,
        )


def _types(columns: Iterable[str], ints: Iterable[str], strings: Iterable[str] = (),
           bools: Iterable[str] = ()) -> dict[str, pa.DataType]:  # fmt: skip
    ints, strings, bools = set(ints), set(strings), set(bools)
    return {c: pa.int64() if c in ints else pa.string() if c in strings
            else pa.bool_() if c in bools else pa.float64() for c in columns}  # fmt: skip


_LAYOUTS: dict[str, tuple[tuple[str, ...], dict[str, pa.DataType]]] = {
    "aggTrades": (AGG_TRADES_CSV_COLUMNS, _types(
        AGG_TRADES_CSV_COLUMNS, ("agg_trade_id", "first_trade_id", "last_trade_id",
                                 "transact_time"), bools=("is_buyer_maker",))),
    "klines": (KLINES_CSV_COLUMNS, _types(
        KLINES_CSV_COLUMNS, ("open_time", "close_time", "count"), strings=("ignore",))),
    "fundingRate": (FUNDING_CSV_COLUMNS, _types(
        FUNDING_CSV_COLUMNS, ("calc_time", "funding_interval_hours"))),
}  # fmt: skip


def _verify_checksum(path: Path) -> None:
    """Check ``<path>.CHECKSUM`` (``<sha256>  <name>``) when it exists (file hashed by blocks)."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.exists():
        return
    parts = checksum.read_text(encoding="utf-8", errors="replace").split()
    if len(parts) != 2 or not _SHA256_RE.match(parts[0]) or parts[1].lstrip("*") != path.name:
        raise UploadError(
            f"{checksum}: line 1: expected '<sha256>  {path.name}', found "
            f"{' '.join(parts)[:120]!r}", line=1)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != parts[0].lower():
        raise UploadError(
            f"{path}: checksum mismatch: {checksum.name} says {parts[0].lower()}, the file's "
            f"SHA-256 is {actual}; download the file again")


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    """The CSV bytes of ``path`` as a stream: the file, or the zip's one member."""
    try:
        if path.suffix == ".csv":
            with path.open("rb") as stream:
                yield stream
            return
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            expected = path.stem + ".csv"
            if names != [expected]:
                raise UploadError(f"{path}: expected one member {expected!r}, found {names}")
            with archive.open(expected) as stream:
                yield stream
    except FileNotFoundError:
        raise UploadError(f"{path}: no such file") from None
    except _ZIP_ERRORS as exc:
        raise UploadError(f"{path}: not a valid zip file: {exc}") from None
    except OSError as exc:
        raise UploadError(f"{path}: cannot read: {exc}") from None


class _ChunkStream(io.RawIOBase):
    """A binary stream over chunks of bytes (read by one thread): a zip member inflated ahead
    in a worker thread (``_ahead``; zlib releases the GIL), so inflating overlaps parsing."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._rest:
            self._rest = memoryview(next(self._chunks, b""))
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _source(path: str | Path) -> _Source:
    """The file's layout and header, from its name and first line; UploadError if unusable."""
    path = Path(path)
    if path.suffix not in (".csv", ".zip"):
        raise UploadError(f"{path}: expected a .csv or .zip Binance public-data file")
    try:
        symbol, kind, _ = parse_public_file_name(path.name)
    except DataError as exc:
        raise UploadError(f"{path}: {exc}") from None
    if kind not in ("aggTrades", "fundingRate") and kind not in TIMEFRAME_MS:
        raise UploadError(
            f"{path}: klines interval {kind!r} is not supported: only {', '.join(TIMEFRAME_MS)} "
            "bars are stored")
    columns, types = _LAYOUTS["klines" if kind in TIMEFRAME_MS else kind]
    with _open(path) as stream:
        first = stream.readline(BLOCK_BYTES).decode("utf-8", "replace").strip()
    _verify_checksum(path)
    if not first:
        raise UploadError(f"{path}: empty file, expected CSV rows", line=1)
    cells = [c.strip().lower() for c in first.split(",")]
    header = not cells[0].lstrip("-").isdigit()
    src = _Source(path, symbol, kind, columns, types, header)
    if header:
        if len(cells) != len(columns):
            raise UploadError(
                f"{path}: line 1: header has {len(cells)} columns, expected {len(columns)}: "
                f"{','.join(columns)}", line=1)
        for cell, name in zip(cells, columns, strict=True):
            if cell != name:
                raise src.error(-1, name, f"header says {cell!r}, expected {name!r}")
    return src


# ----------------------------------------------------------------------------- reading


def _batches(src: _Source, types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    """The file's rows in blocks, columns converted to ``types``."""
    with _open(src.path) as stream:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=list(src.columns),
                                               skip_rows=int(src.header),
                                               block_size=BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, null_values=[], true_values=_TRUE,
                    false_values=_FALSE, strings_can_be_null=False,
                    quoted_strings_can_be_null=False),
            )  # fmt: skip
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):  # a header and no rows
                return
            raise
        try:
            yield from reader
        except _ZIP_ERRORS as exc:
            raise UploadError(f"{src.path}: corrupt zip member: {exc}") from None


def _columns(src: _Source) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(index of the block's first row, column -> NumPy values) of each block of the file.

    The fast path parses typed columns; where a cell does not parse, the file is read again as
    text to name the line and column (``_diagnose``)."""
    base = 0
    try:
        for batch in _batches(src, src.types):
            yield base, {name: batch.column(i).to_numpy(zero_copy_only=False)
                         for i, name in enumerate(src.columns)}  # fmt: skip
            base += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise _diagnose(src, exc) from None


def _cast(col: pa.Array, typ: pa.DataType, src: _Source, name: str, base: int) -> None:
    """UploadError at the first cell of a text column that does not convert to ``typ``."""
    if pa.types.is_boolean(typ):
        bad = ~np.isin(col.to_numpy(zero_copy_only=False), _TRUE + _FALSE)
        row = int(np.argmax(bad))
        if bad.any():
            raise src.error(base + row, name, f"expected true or false, found {col[row].as_py()!r}")
        return
    try:
        pc.cast(col, typ)
        return
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    lo, hi = 0, len(col)  # col[:lo] casts; col[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(col.slice(lo, mid - lo), typ)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    expected = "an integer" if pa.types.is_integer(typ) else "a number"
    raise src.error(base + lo, name, f"expected {expected}, found {col[lo].as_py()!r}")


def _diagnose(src: _Source, exc: Exception) -> UploadError:
    """The first cell or line of ``src`` that the typed read refused (``exc``), named."""
    base = 0
    text = dict.fromkeys(src.columns, pa.string())
    try:
        for batch in _batches(src, text):
            for i, name in enumerate(src.columns):
                if src.types[name] != pa.string():
                    _cast(batch.column(i), src.types[name], src, name, base)
            base += batch.num_rows
    except pa.ArrowInvalid as shape_exc:
        return _shape_error(src) or UploadError(f"{src.path}: malformed CSV: {shape_exc}")
    except UploadError as found:
        return found
    return UploadError(f"{src.path}: malformed CSV: {exc}")


def _shape_error(src: _Source) -> UploadError | None:
    """The first line whose number of fields is wrong (pyarrow's message gives no line)."""
    with _open(src.path) as stream:
        number = 0
        while line := stream.readline(BLOCK_BYTES + 1):
            number += 1
            if number == 1 and src.header:
                continue
            if len(line) > BLOCK_BYTES:
                return UploadError(f"{src.path}: line {number}: longer than {BLOCK_BYTES} "
                                   "bytes; not a Binance public-data CSV", line=number)
            found = line.rstrip(b"\r\n").count(b",") + 1
            if found != len(src.columns):  # name the first missing column, or the last one
                col = min(found + 1, len(src.columns))
                return UploadError(
                    f"{src.path}: line {number}, column {col}: expected {len(src.columns)} "
                    f"comma-separated fields, found {found}",
                    line=number,
                    column=src.columns[col - 1],
                )
    return None


# ----------------------------------------------------------------------------- validation


def _require(bad: np.ndarray, src: _Source, base: int, column: str,
             message: Callable[[int], str]) -> None:  # fmt: skip
    """Raise at the first row where ``bad`` is True (``base``: file row of ``bad[0]``)."""
    if bad.any():
        row = int(np.argmax(bad))
        raise src.error(base + row, column, message(row))


def _positive(values: np.ndarray, src: _Source, base: int, name: str, *,
              allow_zero: bool = False) -> None:  # fmt: skip
    bad = ~np.isfinite(values) | ((values < 0) if allow_zero else (values <= 0))
    what = "a finite number >= 0" if allow_zero else "a finite number > 0"
    _require(bad, src, base, name, lambda r: f"expected {what}, found {values[r]!r}")


def _unit_of(values: np.ndarray) -> np.ndarray:
    """Per value: 0 seconds, 1 milliseconds, 2 microseconds (by magnitude)."""
    return (values >= SECONDS_BELOW).astype(np.int8) + (values >= MICROSECONDS_FROM)


_TO_MS = {0: lambda v: v * 1000, 1: lambda v: v, 2: lambda v: v // 1000}
_UNIT_NAMES = ("s", "ms", "us")


class _Times:
    """A file's time unit (its first row's) and the conversion of its times to ms."""

    def __init__(self, src: _Source) -> None:
        self.src = src
        self.unit: int | None = None

    def to_ms(self, values: np.ndarray, base: int, name: str) -> np.ndarray:
        if self.unit is None and values.size:
            self.unit = int(_unit_of(values[:1])[0])
        own = _unit_of(values)
        plausible = np.zeros(values.shape, dtype=bool)
        for unit, convert in _TO_MS.items():
            ms = convert(values)
            plausible |= (own == unit) & (ms >= _MIN_MS) & (ms < _MAX_MS)
        file_unit = _UNIT_NAMES[self.unit] if self.unit is not None else "ms"
        _require(plausible & (own != self.unit), self.src, base, name, lambda r: (
            f"mixed time units: {values[r]} is {_UNIT_NAMES[own[r]]} but the file's first row "
            f"is {file_unit}"))
        ms = _TO_MS[self.unit](values) if self.unit is not None else values
        _require((ms < _MIN_MS) | (ms >= _MAX_MS), self.src, base, name, lambda r: (
            f"time {values[r]} is not a Unix time in s, ms or µs between 2000 and 2100"))
        return ms

    @property
    def note(self) -> str | None:
        """"microseconds"/"seconds" when the file's times were not in ms."""
        return _UNIT_NOTE.get(_UNIT_NAMES[self.unit]) if self.unit is not None else None


class _Order:
    """Row order across blocks: each value after the previous block's last."""

    def __init__(self, src: _Source, name: str, *, strict: bool) -> None:
        self.src, self.name, self.strict = src, name, strict
        self.last: int | None = None

    def check(self, values: np.ndarray, base: int) -> None:
        if not values.size:
            return
        prev = np.empty_like(values)
        prev[1:] = values[:-1]
        prev[0] = values[0] - 1 if self.last is None else self.last
        bad = (values <= prev) if self.strict else (values < prev)
        order = "strictly increasing" if self.strict else "in time order"
        _require(bad, self.src, base, self.name, lambda r: (
            f"rows must be {order}: {values[r]} after {prev[r]}"))
        self.last = int(values[-1])


class _Decoder:
    """Validates a file's blocks in order and turns them into records."""

    def __init__(self, src: _Source) -> None:
        self.src = src
        self.times = _Times(src)
        key = {"aggTrades": "agg_trade_id", "fundingRate": "calc_time"}.get(src.kind, "open_time")
        self.order = _Order(src, key, strict=True)
        self.time_order = _Order(src, "transact_time", strict=False)
        self.empty_klines = 0

    def decode(self, base: int,
               cols: dict[str, np.ndarray]) -> dict[str, np.ndarray] | np.ndarray | pa.Table:
        if self.src.kind == "aggTrades":
            return self._trades(base, cols)
        if self.src.kind == "fundingRate":
            return self._funding(base, cols)
        return self._klines(base, cols)

    def _trades(self, base: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tick columns (TICK_DTYPE's names), as ``engine.aggcsv`` yields them."""
        src = self.src
        for name in ("agg_trade_id", "first_trade_id"):
            _require(c[name] < 0, src, base, name, lambda r, n=name: f"negative id {c[n][r]}")
        self.order.check(c["agg_trade_id"], base)
        first, last = c["first_trade_id"], c["last_trade_id"]
        _require(last < first, src, base, "last_trade_id",
                 lambda r: f"last_trade_id {last[r]} is below first_trade_id {first[r]}")
        _positive(c["price"], src, base, "price")
        _positive(c["quantity"], src, base, "quantity")
        ts = self.times.to_ms(c["transact_time"], base, "transact_time")
        self.time_order.check(ts, base)
        return {"ts": ts, "agg_id": c["agg_trade_id"], "price": c["price"],
                "qty": c["quantity"], "first_id": first, "last_id": last,
                "buyer_maker": c["is_buyer_maker"]}  # fmt: skip

    def _klines(self, base: int, c: dict[str, np.ndarray]) -> np.ndarray:
        src, tf = self.src, self.src.kind
        tf_ms = TIMEFRAME_MS[tf]
        open_ms = self.times.to_ms(c["open_time"], base, "open_time")
        close_ms = self.times.to_ms(c["close_time"], base, "close_time")
        _require(open_ms % tf_ms != 0, src, base, "open_time",
                 lambda r: f"open time {c['open_time'][r]} is not on a {tf} boundary")
        self.order.check(open_ms, base)
        close_expected = open_ms + tf_ms - 1
        if self.times.unit == 0:  # seconds: the close time's last ms is cut off
            close_expected = close_expected // 1000 * 1000
        _require(close_ms != close_expected, src, base, "close_time",
                 lambda r: f"close time {c['close_time'][r]} is not open time + {tf} - 1 ms")
        for name in ("open", "high", "low", "close"):
            _positive(c[name], src, base, name)
        for name in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
            _positive(c[name], src, base, name, allow_zero=True)
        o, h, lo, cl = (c[n] for n in ("open", "high", "low", "close"))
        _require(h < np.maximum(o, cl), src, base, "high",
                 lambda r: f"high {h[r]} is below open or close")
        _require(lo > np.minimum(o, cl), src, base, "low",
                 lambda r: f"low {lo[r]} is above open or close")
        count = c["count"]
        _require(count < 0, src, base, "count", lambda r: f"negative trade count {count[r]}")
        _require((count == 0) & (c["volume"] > 0), src, base, "volume",
                 lambda r: f"volume {c['volume'][r]} in a kline without trades")
        keep = count > 0
        self.empty_klines += int((~keep).sum())
        out = np.empty(int(keep.sum()), dtype=BAR_DTYPE)
        out["ts"] = open_ms[keep]
        for name in ("open", "high", "low", "close", "volume", "quote_volume"):
            out[name] = c[name][keep]
        out["trades"] = count[keep]
        return out

    def _funding(self, base: int, c: dict[str, np.ndarray]) -> pa.Table:
        src = self.src
        calc = self.times.to_ms(c["calc_time"], base, "calc_time")
        self.order.check(calc, base)
        hours = c["funding_interval_hours"]
        _require((hours <= 0) | (hours > 24), src, base, "funding_interval_hours",
                 lambda r: f"expected 1 to 24 hours, found {hours[r]}")
        rate = c["last_funding_rate"]
        _require(~np.isfinite(rate) | (np.abs(rate) >= 1), src, base, "last_funding_rate",
                 lambda r: f"expected a fraction between -1 and 1, found {rate[r]!r}")
        return funding_rows(calc, rate)


def funding_rows(settle_ms: np.ndarray, rate: np.ndarray,
                 mark: np.ndarray | None = None) -> pa.Table:  # fmt: skip
    """Funding rows of settlements (time ms, rate per interval, mark price or None: null): each
    the last update before its settlement, ``ts = settle_ms - 1`` announcing
    ``next_funding_time = settle_ms``, which ``engine.funding`` pays at ``settle_ms``."""
    settle_ms = np.asarray(settle_ms, dtype=np.int64)
    return pa.table({
        "ts": pa.array(settle_ms - 1).cast(TS_TYPE),
        "mark_price": (pa.nulls(len(settle_ms), pa.float64()) if mark is None
                       else pa.array(mark, type=pa.float64(), from_pandas=True)),
        "funding_rate": pa.array(rate, type=pa.float64()),
        "next_funding_time": pa.array(settle_ms).cast(TS_TYPE),
    })  # fmt: skip


# ----------------------------------------------------------------------------- writing


class _Writer:
    """Writes decoded blocks into a (staging) store, flushing every ``FLUSH_ROWS`` rows."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def maybe_flush(self) -> None:
        """Once ``FLUSH_ROWS`` rows are buffered, write the kinds holding at least half of
        that (bars wait for their own half, which bounds what is held to about twice
        ``FLUSH_ROWS``: three small files less per flush)."""
        if self.store.buffered_rows >= FLUSH_ROWS:
            self.store.flush(min_rows=FLUSH_ROWS // 2)

    def trades(self, symbol: str, blocks: Iterable[dict[str, np.ndarray]]) -> int:
        """Ticks (blocks of columns, TICK_DTYPE's names) as they come; the bars each block
        closed (see module doc). Bars are built here while a worker thread writes the blocks
        before (``_behind``). Returns the rows written."""
        bars = SortedBars(TRADE_TIMEFRAMES)
        rows = 0
        with _behind(partial(self._write_trades, symbol)) as put:
            for cols in blocks:
                n = len(cols["ts"])
                if not n:
                    continue
                rows += n
                put((columns_table([cols], TICK_SCHEMA),
                     bars.add(cols["ts"], cols["price"], cols["qty"])))  # fmt: skip
            put((None, bars.finish()))
        return rows

    def _write_trades(self, symbol: str, items: Iterable[tuple[pa.Table | None, list]]) -> None:
        """Store the (ticks table or None, bar records by ``TRADE_TIMEFRAMES``) of ``trades``."""
        for ticks, bars in items:
            if ticks is not None:
                self.store.write_ticks(symbol, ticks)
            for tf, records in zip(TRADE_TIMEFRAMES, bars, strict=True):
                self.store.write_bars(tf, symbol, records)
            self.maybe_flush()


@contextmanager
def _behind(consume: Callable[[Iterator[_T]], None],
            depth: int = 4) -> Iterator[Callable[[_T], None]]:  # fmt: skip
    """A ``put`` whose items ``consume`` takes in a worker thread, at most ``depth`` behind:
    Parquet writes and numba kernels release the GIL, so writing overlaps building on
    another core. The worker's exception is raised by the next ``put`` or on exit; on exit
    the worker consumes what was put and is waited for."""
    items: queue.Queue = queue.Queue(depth)
    done = object()
    failed: list[BaseException] = []

    def feed() -> Iterator[_T]:
        while (item := items.get()) is not done:
            yield item

    def work() -> None:
        try:
            consume(feed())
        except BaseException as exc:  # handed to the producer, raised there
            failed.append(exc)
            while items.get() is not done:  # unblocks the producer
                pass

    def put(item: _T) -> None:
        if failed:
            raise failed[0]
        items.put(item)

    worker = threading.Thread(target=work, name="pairstack-import-write", daemon=True)
    worker.start()
    try:
        yield put
    finally:
        items.put(done)
        worker.join()
    if failed:
        raise failed[0]


def _ahead(produce: Callable[[], Iterator[_T]], depth: int = 2) -> Iterator[_T]:
    """The items of ``produce()``, made in a worker thread at most ``depth`` ahead of the
    consumer: the numba parse and zlib release the GIL, so reading a file overlaps writing it
    on another core. The worker's exception is raised here; closing this generator stops the
    worker (after the item it is making) and waits for it."""
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in produce():
                if not put((item, None)):
                    return
            put((done, None))
        except Exception as exc:  # handed to the consumer, raised there
            put((None, exc))

    worker = threading.Thread(target=work, name="pairstack-import-read", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _fast_blocks(src: _Source) -> Iterator[dict[str, np.ndarray]]:
    """Tick columns of an aggTrades file by the vouching fast path (``engine.aggcsv``);
    ``NotVouched`` where the reference reader must decide."""
    with _open(src.path) as stream, ExitStack() as stack:
        if src.path.suffix == ".zip":  # inflated ahead: inflating overlaps parsing
            inflate = partial(iter, partial(stream.read, BLOCK_BYTES), b"")
            stream = _ChunkStream(stack.enter_context(closing(_ahead(inflate))))
        try:
            yield from agg_trade_blocks(stream, header=src.header, block_bytes=BLOCK_BYTES,
                                        min_ms=_MIN_MS, max_ms=_MAX_MS)  # fmt: skip
        except _ZIP_ERRORS as exc:
            raise UploadError(f"{src.path}: corrupt zip member: {exc}") from None


def _stage(src: _Source, path: Path, durable: bool) -> tuple[Store, int, str | None, int]:
    """Read, validate and write one file into a new staging store at ``path``, in one pass:
    (the store, rows read, unit note, empty klines). aggTrades take the fast path when it
    vouches for every row; otherwise (and for klines and funding) the reference decoder reads
    the file (what the fast path staged is dropped first)."""
    store = Store(path, durable=durable)
    if src.kind == "aggTrades":
        try:
            rows = _Writer(store).trades(src.symbol, _ahead(partial(_fast_blocks, src)))
            store.flush()
            return store, rows, None, 0
        except NotVouched:
            shutil.rmtree(path, ignore_errors=True)
            store = Store(path, durable=durable)
    decoder = _Decoder(src)
    writer = _Writer(store)
    rows = 0

    def blocks() -> Iterator[np.ndarray | pa.Table]:
        nonlocal rows
        for base, cols in _columns(src):
            rows = base + len(cols[src.columns[0]])
            yield decoder.decode(base, cols)

    if src.kind == "aggTrades":
        writer.trades(src.symbol, blocks())
    else:
        for block in blocks():
            if src.kind == "fundingRate":
                store.write_funding(src.symbol, block)
            else:
                store.write_bars(src.kind, src.symbol, block)
            writer.maybe_flush()
    store.flush()
    return store, rows, decoder.times.note, decoder.empty_klines


def import_files(paths: Iterable[str | Path], store: Store, *,
                 progress: bool = False) -> ImportReport:
    """Read and validate every file into a staging store under ``<store>/.staging`` (one pass
    each), then move them all into ``store`` (``Store.adopt``: files renamed in where nothing
    overlaps them); a malformed file leaves ``store`` untouched. ``progress``: a tqdm bar on
    stderr.

    ``<zip>.CHECKSUM`` files given among ``paths`` are skipped (they are checked beside their zip).
    """
    files = [Path(p) for p in paths if not str(p).endswith(".CHECKSUM")]
    if not files:
        raise UploadError("no public-data files given (expected .csv or .zip files)")
    staging = store.path / ".staging" / f"import-{uuid.uuid4().hex}"
    notes: set[str] = set()
    rows = empty = 0
    counts: dict[str, WriteCounts] = {}
    try:
        staged: list[Store] = []
        with tqdm(files, desc="import", unit="file", file=sys.stderr,
                  disable=not progress) as bar:  # fmt: skip
            for k, path in enumerate(bar):
                src = _source(path)
                one, n, note, e = _stage(src, staging / str(k), store.durable)
                staged.append(one)
                rows += n
                empty += e
                if note:
                    notes.add(note)
                bar.set_postfix(rows=rows)
        for one in staged:
            for label, got in store.adopt(one).items():
                counts[label] = counts.get(label, WriteCounts()) + got
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with suppress(OSError):  # kept while another import or a compaction uses it
            staging.parent.rmdir()
    ticks = counts.get("ticks")
    funding = counts.get("funding")
    bars = {tf: counts[f"bars/{tf}"].added + counts[f"bars/{tf}"].replaced
            for tf in TIMEFRAME_MS if f"bars/{tf}" in counts}
    skipped = sum(c.duplicates for label, c in counts.items() if label != "funding")
    report = ImportReport(
        files=len(files),
        ticks=ticks.added if ticks else 0,
        bars=bars,
        microseconds="microseconds" in notes,
        skipped_duplicates=skipped,
        empty_klines=empty,
        seconds="seconds" in notes,
        funding=funding.added + funding.replaced if funding else 0,
        rows=rows,
    )
    log.info("import done: %s", "; ".join(report.lines()))
    return report
