"""Import Binance public-data files (USD-M futures aggTrades and klines) into the store.

Files: ``<SYM>-aggTrades-<date>.{csv,zip}`` and ``<SYM>-<interval>-<date>.{csv,zip}`` (klines of
1s, 1m or 5m only), with or without a header row; a zip holds one CSV of the same name. A
``<file>.CHECKSUM`` beside a file (``<sha256>  <name>``) is verified when present. Timestamps of
1e15 or more are microseconds and are converted to ms (floor); the report says so.

Every file is read and validated before anything is written: a malformed file is refused with
its name, line (1-based, counting the header) and column, and the store is left untouched.
Trades become ticks plus 1s, 1m and 5m bars (``engine.bars.build_bars``); klines become bars of
their interval (intervals without trades, ``count`` 0, are dropped: the store keeps no empty
bars). Importing the same file twice changes nothing: the store keeps one row per key.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from engine.bars import build_bars
from engine.binance import (
    AGG_TRADES_CSV_COLUMNS,
    KLINES_CSV_COLUMNS,
    MICROSECONDS_FROM,
    parse_public_file_name,
)
from engine.errors import DataError, UploadError
from engine.schemas import BAR_DTYPE, TICK_DTYPE, TIMEFRAME_MS, bars_to_table
from engine.store import Store

log = logging.getLogger(__name__)

#: Bars built from imported trades.
TRADE_TIMEFRAMES: tuple[str, ...] = ("1s", "1m", "5m")
#: Plausible trade times (ms): 2000-01-01 to 2100-01-01; anything else is a unit or data error.
_MIN_MS, _MAX_MS = 946_684_800_000, 4_102_444_800_000
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class ImportReport:
    """What an import did: files read, rows written, duplicates skipped."""

    files: int
    ticks: int  # new ticks written
    bars: dict[str, int] = field(default_factory=dict)  # timeframe -> bars written or corrected
    microseconds: bool = False  # some file had µs timestamps (converted to ms)
    skipped_duplicates: int = 0  # rows already stored (ticks by agg_id, identical bars)
    empty_klines: int = 0  # kline rows without trades, not stored

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        bars = ", ".join(f"{tf} {n}" for tf, n in self.bars.items()) or "none"
        out = [
            f"files: {self.files}",
            f"ticks written: {self.ticks}",
            f"bars written: {bars}",
            f"skipped duplicates: {self.skipped_duplicates}",
        ]
        if self.empty_klines:
            out.append(f"empty klines skipped: {self.empty_klines}")
        if self.microseconds:
            out.append("timestamps: microseconds found and converted to milliseconds")
        return out


@dataclass(frozen=True)
class ParsedFile:
    """One validated public-data file, ready to store."""

    path: Path
    symbol: str
    ticks: np.ndarray | None  # TICK_DTYPE (aggTrades) or None (klines)
    bars: dict[str, pa.Table]  # timeframe -> BAR_SCHEMA table
    microseconds: bool
    empty_klines: int = 0

    @property
    def bars_rows(self) -> int:
        return sum(t.num_rows for t in self.bars.values())


@dataclass(frozen=True)
class _Where:
    """Where a CSV's rows are, to name line and column in errors."""

    file: str
    columns: Sequence[str]
    header: bool

    def error(self, row: int, column: str, message: str) -> UploadError:
        line = row + 1 + int(self.header)
        col = self.columns.index(column) + 1
        return UploadError(
            f"{self.file}: line {line}, column {col} ({column}): {message}",
            line=line,
            column=column,
        )


def _first(bad: np.ndarray) -> int | None:
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def _require(bad: np.ndarray, where: _Where, column: str, message: Callable[[int], str]) -> None:
    """Raise at the first row where `bad` is True."""
    row = _first(bad)
    if row is not None:
        raise where.error(row, column, message(row))


def _cast(col: pa.Array, typ: pa.DataType, where: _Where, name: str) -> np.ndarray:
    """String column -> NumPy of `typ`; on failure, bisect for the first bad row and name it."""
    try:
        return pc.cast(col, typ).to_numpy(zero_copy_only=False)
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
    raise where.error(lo, name, f"expected {expected}, found {col[lo].as_py()!r}")


def _positive(values: np.ndarray, where: _Where, name: str, *, allow_zero: bool = False) -> None:
    bad = ~np.isfinite(values) | ((values < 0) if allow_zero else (values <= 0))
    what = "a finite number >= 0" if allow_zero else "a finite number > 0"
    _require(bad, where, name, lambda r: f"expected {what}, found {values[r]!r}")


def _times(values: np.ndarray, where: _Where, name: str, micro: bool) -> np.ndarray:
    """Raw file times -> ms; the unit is the file's (decided by its first row)."""
    in_micro = values >= MICROSECONDS_FROM
    _require(in_micro != micro, where, name, lambda r: (
        f"mixed time units: {values[r]} is {'ms' if micro else 'µs'} but the file's first row "
        f"is {'µs' if micro else 'ms'}"
    ))
    ms = values // 1000 if micro else values
    _require((ms < _MIN_MS) | (ms >= _MAX_MS), where, name,
             lambda r: f"time {values[r]} is not a Unix time in ms or µs between 2000 and 2100")
    return ms


def _increasing(values: np.ndarray, where: _Where, name: str, *, strict: bool) -> None:
    bad = np.zeros(len(values), dtype=bool)
    bad[1:] = (values[1:] <= values[:-1]) if strict else (values[1:] < values[:-1])
    order = "strictly increasing" if strict else "in time order"
    _require(bad, where, name,
             lambda r: f"rows must be {order}: {values[r]} after {values[r - 1]}")


def _read_csv(data: bytes, file: str, columns: Sequence[str]) -> tuple[pa.Table, _Where]:
    """CSV bytes -> table of string columns named `columns`, with or without a header row."""
    data = data.rstrip(b"\r\n")
    if not data.strip():
        raise UploadError(f"{file}: empty file, expected CSV rows", line=1)
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    cells = [c.strip().lower() for c in first.split(",")]
    header = not cells[0].lstrip("-").isdigit()
    where = _Where(file, tuple(columns), header)
    if header:
        if len(cells) != len(columns):
            raise UploadError(
                f"{file}: line 1: header has {len(cells)} columns, expected {len(columns)}: "
                f"{','.join(columns)}", line=1)
        for cell, name in zip(cells, columns, strict=True):
            if cell != name:
                raise where.error(-1, name, f"header says {cell!r}, expected {name!r}")
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(columns), skip_rows=int(header)),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise _shape_error(data, where) or UploadError(f"{file}: malformed CSV: {exc}") from None
    return table.combine_chunks(), where


def _shape_error(data: bytes, where: _Where) -> UploadError | None:
    """The first line whose number of fields is wrong (pyarrow's message gives no line)."""
    lines = data.decode("utf-8", "replace").split("\n")
    for number, line in enumerate(lines[int(where.header):], start=int(where.header) + 1):
        found = len(line.rstrip("\r").split(","))
        if found != len(where.columns):  # name the first missing column, or the last one
            col = min(found + 1, len(where.columns))
            return UploadError(
                f"{where.file}: line {number}, column {col}: expected {len(where.columns)} "
                f"comma-separated fields, found {found}",
                line=number,
                column=where.columns[col - 1],
            )
    return None


def parse_agg_trades(data: bytes, file: str) -> tuple[np.ndarray, bool]:
    """aggTrades CSV bytes -> (TICK_DTYPE in file order, microseconds); UploadError if malformed."""
    table, where = _read_csv(data, file, AGG_TRADES_CSV_COLUMNS)
    out = np.empty(table.num_rows, dtype=TICK_DTYPE)
    if not table.num_rows:
        return out, False
    ints = {n: _cast(table.column(n).chunk(0), pa.int64(), where, n)
            for n in ("agg_trade_id", "first_trade_id", "last_trade_id", "transact_time")}
    price = _cast(table.column("price").chunk(0), pa.float64(), where, "price")
    qty = _cast(table.column("quantity").chunk(0), pa.float64(), where, "quantity")
    maker_text = pc.utf8_lower(pc.utf8_trim_whitespace(table.column("is_buyer_maker").chunk(0)))
    maker = maker_text.to_numpy(zero_copy_only=False)
    _require(~np.isin(maker, ["true", "false"]), where, "is_buyer_maker",
             lambda r: f"expected true or false, found {maker[r]!r}")
    for name in ("agg_trade_id", "first_trade_id"):
        _require(ints[name] < 0, where, name, lambda r, n=name: f"negative id {ints[n][r]}")
    _increasing(ints["agg_trade_id"], where, "agg_trade_id", strict=True)
    _require(ints["last_trade_id"] < ints["first_trade_id"], where, "last_trade_id",
             lambda r: f"last_trade_id {ints['last_trade_id'][r]} is below first_trade_id "
                       f"{ints['first_trade_id'][r]}")
    _positive(price, where, "price")
    _positive(qty, where, "quantity")
    raw_ts = ints["transact_time"]
    micro = bool(raw_ts[0] >= MICROSECONDS_FROM)
    ts = _times(raw_ts, where, "transact_time", micro)
    _increasing(ts, where, "transact_time", strict=False)
    out["ts"] = ts
    out["agg_id"] = ints["agg_trade_id"]
    out["price"] = price
    out["qty"] = qty
    out["first_id"] = ints["first_trade_id"]
    out["last_id"] = ints["last_trade_id"]
    out["buyer_maker"] = maker == "true"
    return out, micro


def parse_klines(data: bytes, file: str, timeframe: str) -> tuple[np.ndarray, bool, int]:
    """Klines CSV bytes -> (BAR_DTYPE of bars with trades, microseconds, empty rows dropped)."""
    tf_ms = TIMEFRAME_MS[timeframe]
    table, where = _read_csv(data, file, KLINES_CSV_COLUMNS)
    if not table.num_rows:
        return np.empty(0, dtype=BAR_DTYPE), False, 0
    col = {n: table.column(n).chunk(0) for n in KLINES_CSV_COLUMNS}
    ints = {n: _cast(col[n], pa.int64(), where, n) for n in ("open_time", "close_time", "count")}
    floats = {n: _cast(col[n], pa.float64(), where, n)
              for n in KLINES_CSV_COLUMNS[1:6] + KLINES_CSV_COLUMNS[7:8] + KLINES_CSV_COLUMNS[9:11]}
    micro = bool(ints["open_time"][0] >= MICROSECONDS_FROM)
    open_ms = _times(ints["open_time"], where, "open_time", micro)
    close_ms = _times(ints["close_time"], where, "close_time", micro)
    _require(open_ms % tf_ms != 0, where, "open_time",
             lambda r: f"open time {ints['open_time'][r]} is not on a {timeframe} boundary")
    _increasing(open_ms, where, "open_time", strict=True)
    _require(close_ms != open_ms + tf_ms - 1, where, "close_time",
             lambda r: f"close time {ints['close_time'][r]} is not open time + {timeframe} - 1 ms")
    for name in ("open", "high", "low", "close"):
        _positive(floats[name], where, name)
    for name in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
        _positive(floats[name], where, name, allow_zero=True)
    o, h, lo, c = (floats[n] for n in ("open", "high", "low", "close"))
    _require(h < np.maximum(o, c), where, "high", lambda r: f"high {h[r]} is below open or close")
    _require(lo > np.minimum(o, c), where, "low", lambda r: f"low {lo[r]} is above open or close")
    count = ints["count"]
    _require(count < 0, where, "count", lambda r: f"negative trade count {count[r]}")
    _require((count == 0) & (floats["volume"] > 0), where, "volume",
             lambda r: f"volume {floats['volume'][r]} in a kline without trades")
    keep = count > 0
    out = np.empty(int(keep.sum()), dtype=BAR_DTYPE)
    out["ts"] = open_ms[keep]
    for name in ("open", "high", "low", "close", "volume", "quote_volume"):
        out[name] = floats[name][keep]
    out["trades"] = count[keep]
    return out, micro, int((~keep).sum())


def _verify_checksum(path: Path, data: bytes) -> None:
    """Check `<path>.CHECKSUM` (``<sha256>  <name>``) when it exists."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.exists():
        return
    parts = checksum.read_text(encoding="utf-8", errors="replace").split()
    if len(parts) != 2 or not _SHA256_RE.match(parts[0]) or parts[1].lstrip("*") != path.name:
        raise UploadError(
            f"{checksum}: line 1: expected '<sha256>  {path.name}', found "
            f"{' '.join(parts)[:120]!r}", line=1)
    actual = hashlib.sha256(data).hexdigest()
    if actual != parts[0].lower():
        raise UploadError(
            f"{path}: checksum mismatch: {checksum.name} says {parts[0].lower()}, the file's "
            f"SHA-256 is {actual}; download the file again")


def _csv_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UploadError(f"{path}: no such file") from None
    except OSError as exc:
        raise UploadError(f"{path}: cannot read: {exc}") from None
    _verify_checksum(path, data)
    if path.suffix == ".csv":
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            expected = path.stem + ".csv"
            if names != [expected]:
                raise UploadError(f"{path}: expected one member {expected!r}, found {names}")
            return archive.read(expected)
    except zipfile.BadZipFile as exc:
        raise UploadError(f"{path}: not a valid zip file: {exc}") from None


def parse_file(path: str | Path) -> ParsedFile:
    """Read and validate one public-data file (CSV or ZIP); UploadError when it is malformed."""
    path = Path(path)
    if path.suffix not in (".csv", ".zip"):
        raise UploadError(f"{path}: expected a .csv or .zip Binance public-data file")
    try:
        symbol, kind, _ = parse_public_file_name(path.name)
    except DataError as exc:
        raise UploadError(f"{path}: {exc}") from None
    if kind != "aggTrades" and kind not in TIMEFRAME_MS:
        raise UploadError(
            f"{path}: klines interval {kind!r} is not supported: only {', '.join(TIMEFRAME_MS)} "
            "bars are stored")
    data = _csv_bytes(path)
    if kind == "aggTrades":
        ticks, micro = parse_agg_trades(data, str(path))
        bars = {tf: build_bars(ticks["ts"], ticks["price"], ticks["qty"], tf)
                for tf in TRADE_TIMEFRAMES}
        return ParsedFile(path, symbol, ticks, bars, micro)
    records, micro, empty = parse_klines(data, str(path), kind)
    return ParsedFile(path, symbol, None, {kind: bars_to_table(records)}, micro, empty)


def import_files(paths: Iterable[str | Path], store: Store, *,
                 progress: bool = False) -> ImportReport:
    """Validate every file, then write them all into `store`; `progress`: tqdm bar on stderr.

    ``<zip>.CHECKSUM`` files given among `paths` are skipped (they are checked beside their zip).
    """
    files = [Path(p) for p in paths if not str(p).endswith(".CHECKSUM")]
    if not files:
        raise UploadError("no public-data files given (expected .csv or .zip files)")
    parsed: list[ParsedFile] = []
    rows = 0
    with tqdm(files, desc="import", unit="file", file=sys.stderr, disable=not progress) as bar:
        for path in bar:
            item = parse_file(path)
            rows += len(item.ticks) if item.ticks is not None else item.bars_rows
            bar.set_postfix(rows=rows)
            parsed.append(item)
    for item in parsed:
        if item.ticks is not None:
            store.write_ticks(item.symbol, item.ticks)
        for tf, table in item.bars.items():
            store.write_bars(tf, item.symbol, table)
    counts = store.flush()
    ticks = counts.get("ticks")
    bars = {tf: counts[f"bars/{tf}"].added + counts[f"bars/{tf}"].replaced
            for tf in TIMEFRAME_MS if f"bars/{tf}" in counts}
    skipped = sum(c.duplicates for label, c in counts.items() if label != "funding")
    report = ImportReport(
        files=len(parsed),
        ticks=ticks.added if ticks else 0,
        bars=bars,
        microseconds=any(p.microseconds for p in parsed),
        skipped_duplicates=skipped,
        empty_klines=sum(p.empty_klines for p in parsed),
    )
    log.info("import done: %s", "; ".join(report.lines()))
    return report
