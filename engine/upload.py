"""Parse and validate OHLC CSV files given by a user (the dashboard's upload).

A file holds bars of one symbol, or of several with a ``symbol`` column. Header (any column
order, names case-insensitive): ``ts, open, high, low, close, volume`` and optionally ``symbol``,
``quote_volume``, ``trades``. ``ts`` is the bar open time: Unix ms (integer) or an ISO-8601
date-time (UTC unless it carries an offset). An integer below ``MIN_MS`` (1e11: ms before March
1973) is refused as Unix seconds, never read as a 1970 time: the message says to multiply by
1000. Prices must be finite and > 0 with
``low <= min(open, close)`` and ``high >= max(open, close)``; volumes finite and >= 0; times
strictly increasing per symbol. Without a ``symbol`` column the symbol comes from the file name
(``ETHUSDT.csv``, ``ETHUSDT-1m-2024-06.csv``) or the caller.

Every refusal is an :class:`~engine.errors.UploadError` naming the file, the line (1 = header)
and the column. Files larger than ``max_bytes`` are refused before they are read. The result is
one ``BAR_DTYPE`` array per symbol, the same records stored bars are read into, so an upload is
analysed exactly like stored bars. ``quote_volume`` is NaN and ``trades`` 0 when absent.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone

import numpy as np

from engine.errors import UploadError
from engine.schemas import BAR_DTYPE

#: default size cap of one uploaded file (bytes)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # base64 on the websocket stays under its 20 MB cap

#: smallest integer ``ts`` read as Unix ms; below it a time is taken for Unix seconds (refused)
MIN_MS = 100_000_000_000

REQUIRED = ("ts", "open", "high", "low", "close", "volume")
OPTIONAL = ("symbol", "quote_volume", "trades")

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{5,30}$")


def symbol_from_filename(filename: str) -> str | None:
    """``"ethusdt-1m-2024.csv"`` -> ``"ETHUSDT"``; None when the name does not start with one."""
    stem = re.split(r"[-_. ]", filename.rsplit("/", 1)[-1], maxsplit=1)[0].upper()
    return stem if _SYMBOL_RE.match(stem) else None


def _fail(filename: str, line: int, column: str | None, what: str) -> UploadError:
    where = f"line {line}" + (f", column {column!r}" if column else "")
    return UploadError(f"{filename}: {where}: {what}", line=line, column=column)


def _parse_ts(text: str) -> int:
    """Unix ms from an integer or an ISO-8601 date-time; ValueError otherwise."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(dt.timestamp() * 1000.0)


def _header(filename: str, row: list[str] | None) -> dict[str, int]:
    if row is None:
        raise _fail(filename, 1, None, "the file is empty; expected a header row")
    names = [c.strip().lower() for c in row]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise _fail(filename, 1, name, "the column appears twice in the header")
        if name not in REQUIRED and name not in OPTIONAL:
            allowed = ", ".join((*REQUIRED, *OPTIONAL))
            raise _fail(filename, 1, name or f"#{i + 1}", f"unknown column; expected {allowed}")
        index[name] = i
    missing = [c for c in REQUIRED if c not in index]
    if missing:
        raise _fail(filename, 1, missing[0], f"missing column(s) {missing} in the header")
    return index


def _number(filename: str, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _fail(filename, line, column, f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _fail(filename, line, column, f"expected a finite number, got {text!r}")
    return value


def _check_row(filename: str, line: int, rec: dict[str, float]) -> None:
    for col in ("open", "high", "low", "close"):
        if rec[col] <= 0:
            raise _fail(filename, line, col, f"price must be > 0, got {rec[col]:g}")
    if rec["low"] > min(rec["open"], rec["close"]):
        raise _fail(filename, line, "low", f"low {rec['low']:g} is above open or close")
    if rec["high"] < max(rec["open"], rec["close"]):
        raise _fail(filename, line, "high", f"high {rec['high']:g} is below open or close")
    for col in ("volume", "quote_volume"):
        if rec.get(col, 0.0) < 0:
            raise _fail(filename, line, col, f"must be >= 0, got {rec[col]:g}")


def parse_ohlc_csv(
    data: bytes,
    *,
    filename: str = "upload.csv",
    symbol: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> dict[str, np.ndarray]:
    """One CSV file -> ``{symbol: BAR_DTYPE bars}`` (see the module docstring).

    ``symbol`` names the bars of a file without a ``symbol`` column (default: from
    ``filename``). UploadError (file, line, column) for anything malformed.
    """
    if len(data) > max_bytes:
        raise UploadError(
            f"{filename}: {len(data)} bytes is over the upload limit of {max_bytes} bytes",
            line=None,
            column=None,
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _fail(filename, line, None, "the file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    index = _header(filename, next(reader, None))
    default_symbol = symbol or symbol_from_filename(filename)
    if "symbol" not in index and default_symbol is None:
        raise _fail(
            filename,
            1,
            "symbol",
            "no symbol column and the file name does not start with a symbol (e.g. ETHUSDT.csv)",
        )
    rows: dict[str, list[tuple]] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(index):
            raise _fail(
                filename, line, None, f"expected {len(index)} fields, found {len(row)}"
            )
        try:
            ts = _parse_ts(row[index["ts"]])
        except ValueError:
            raise _fail(
                filename, line, "ts", f"expected Unix ms or ISO-8601, got {row[index['ts']]!r}"
            ) from None
        if ts < MIN_MS and re.fullmatch(r"\s*-?\d+\s*", row[index["ts"]]):
            raise _fail(
                filename,
                line,
                "ts",
                f"expected Unix ms, got {ts}: below {MIN_MS} it would be a time before 1973, "
                f"so it looks like Unix seconds; give ms ({ts * 1000}) or ISO-8601 times",
            )
        rec = {c: _number(filename, line, c, row[index[c]]) for c in REQUIRED if c != "ts"}
        if "quote_volume" in index:
            qv = row[index["quote_volume"]]
            rec["quote_volume"] = _number(filename, line, "quote_volume", qv)
        trades = 0
        if "trades" in index:
            raw = row[index["trades"]].strip()
            if not re.fullmatch(r"\d+", raw):
                raise _fail(filename, line, "trades", f"expected an integer >= 0, got {raw!r}")
            trades = int(raw)
        _check_row(filename, line, rec)
        sym = row[index["symbol"]].strip().upper() if "symbol" in index else default_symbol
        if not _SYMBOL_RE.match(sym or ""):
            raise _fail(filename, line, "symbol", f"expected a symbol like ETHUSDT, got {sym!r}")
        bucket = rows.setdefault(sym, [])
        if bucket and ts <= bucket[-1][0]:
            raise _fail(
                filename,
                line,
                "ts",
                f"times must increase strictly per symbol; {ts} follows {bucket[-1][0]} ({sym})",
            )
        bucket.append(
            (
                ts,
                rec["open"],
                rec["high"],
                rec["low"],
                rec["close"],
                rec["volume"],
                rec.get("quote_volume", math.nan),
                trades,
            )
        )
    if not rows:
        raise _fail(filename, 2, None, "no bars after the header")
    return {sym: np.array(recs, dtype=BAR_DTYPE) for sym, recs in rows.items()}


def parse_uploads(
    files: Mapping[str, bytes], *, max_bytes: int = MAX_UPLOAD_BYTES
) -> dict[str, np.ndarray]:
    """Several files (name -> content) -> ``{symbol: bars}``; each symbol from one file only."""
    if not files:
        raise UploadError("no file given: upload one CSV per leg or one with a symbol column")
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for name, data in files.items():
        for sym, bars in parse_ohlc_csv(data, filename=name, max_bytes=max_bytes).items():
            if sym in out:
                raise UploadError(
                    f"{name}: symbol {sym} is also in {origin[sym]}; give each symbol once",
                    line=None,
                    column="symbol",
                )
            out[sym], origin[sym] = bars, name
    return out
