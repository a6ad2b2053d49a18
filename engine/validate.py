"""Websocket frames -> validated ticks per symbol, or rejects counted by reason.

Column path (the usual batch): the frames joined by NUL bytes go through one numba pass
(``engine.aggparse``) that turns combined aggTrade envelopes into columns; msgspec's strict typed
decode takes the few frames that pass does not vouch for (markPrice frames, escapes, nested extra
keys, ...); the price/qty/symbol/duplicate rules then run over whole columns. A frame the strict
decode refuses sends the batch to the per-frame path: the strict decode per frame and a
plain-Python classifier that names the reason. Both paths give the same result for every input.
Reasons (exactly one per rejected frame): ``not_json``, ``bad_frame``, ``missing_field``,
``bad_type``, ``bad_price``, ``bad_qty``, ``unknown_symbol``, ``duplicate``. Checks run in that
order.

A rejected frame does not advance the symbol's last-seen aggregate id (DESIGN.md), so the
trade it carried shows up as a gap and is refilled from REST by the feed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
import numpy as np
import orjson

from engine import aggparse, binance
from engine.errors import DataError
from engine.schemas import TICK_DTYPE

log = logging.getLogger(__name__)

REJECT_REASONS: tuple[str, ...] = (
    "not_json", "bad_frame", "missing_field", "bad_type",
    "bad_price", "bad_qty", "unknown_symbol", "duplicate",
)  # fmt: skip


class MarkUpdate(NamedTuple):
    """One markPrice update: ``ts`` event time (ms), raw ``mark``, ``funding_rate`` (fraction
    per funding interval), ``next_funding_ms``."""

    symbol: str
    ts: int
    mark: float
    funding_rate: float
    next_funding_ms: int


@dataclass
class DecodedBatch:
    """What ``decode_frames`` made of a list of frames.

    ``ticks`` per symbol in arrival order (ids strictly increasing, TICK_DTYPE); ``marks``;
    ``rejects`` reason -> count for this batch; ``controls`` replies to control messages;
    ``streams`` names of the streams that sent a frame (for the watchdog); ``event_ms`` the
    largest exchange event time ``E`` among the decoded payloads (-1 when none).
    """

    ticks: dict[str, np.ndarray] = field(default_factory=dict)
    marks: list[MarkUpdate] = field(default_factory=list)
    rejects: dict[str, int] = field(default_factory=dict)
    controls: list[binance.ControlReply] = field(default_factory=list)
    streams: set[str] = field(default_factory=set)
    event_ms: int = -1

    @property
    def n_ticks(self) -> int:
        return sum(len(a) for a in self.ticks.values())


class _Reject(Exception):
    def __init__(self, reason: str):
        self.reason = reason


_COMBINED = msgspec.json.Decoder(binance.CombinedFrame)
_REST_ROWS = msgspec.json.Decoder(list[binance.RestAggTrade])
_CONTROL = msgspec.json.Decoder(binance.ControlReply)


class FrameValidator:
    """Stateful frame validator for a set of symbols (uppercase).

    ``last_ids`` seeds the last-seen aggregate id per symbol (ids at or below it are
    duplicates). ``last_id(symbol)`` is the highest accepted id (-1 before the first).

    The first validator made in a process loads the numba kernel of the column path (about
    0.3 s; compiling it when the cache is cold takes seconds), so the first batch of frames is
    not delayed by it.
    """

    def __init__(self, symbols: Iterable[str], last_ids: Mapping[str, int] | None = None,
                 *, log_every_s: float = 10.0):
        syms = list(symbols)
        if not syms:
            raise DataError("FrameValidator needs at least one symbol")
        bad = [s for s in syms if not isinstance(s, str) or s.upper() != s or not s.isalnum()]
        if bad:
            raise DataError(f"symbols must be uppercase alphanumeric like 'BTCUSDT', got {bad}")
        self._last: dict[str, int] = dict.fromkeys(syms, -1)
        self._symbols = syms
        self._index = {s: k for k, s in enumerate(syms)}
        self._symbol_table = aggparse.name_table(syms)
        self._stream_table = aggparse.name_table([binance.agg_trade_stream(s) for s in syms])
        aggparse.load_kernel()
        for sym, last in (last_ids or {}).items():
            if sym not in self._last:
                raise DataError(f"last_ids names {sym!r}, not one of the symbols {syms}")
            if not isinstance(last, (int, np.integer)) or isinstance(last, bool) or last < -1:
                raise DataError(f"last id of {sym} must be an int >= -1, got {last!r}")
            self._last[sym] = int(last)
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self._log_every_s = log_every_s
        self._logged_at = -math.inf
        self._logged_counts = dict(self.rejected)

    @property
    def symbols(self) -> list[str]:
        return list(self._last)

    def last_id(self, symbol: str) -> int:
        return self._last[symbol]

    def decode_frames(self, frames: list[bytes | str]) -> DecodedBatch:
        """Decode and validate frames (combined envelopes or raw payloads, text or bytes).

        Column path for the usual batch (combined aggTrade and markPrice envelopes, all well
        formed): one numba pass over the frames joined by NUL bytes (``engine.aggparse``) gives
        the aggTrade columns; the few frames it does not vouch for (markPrice frames, escapes,
        nested extra keys, ...) get msgspec's strict decode; then the price/qty/symbol/duplicate
        rules run over whole columns. A frame the strict decode refuses (or a refused mark)
        sends the whole batch through the per-frame path, which names every reason.
        """
        out = self._decode_columns(frames)
        return out if out is not None else self._decode_each(frames)

    def _decode_columns(self, frames: list[bytes | str]) -> DecodedBatch | None:
        joined = _join(frames)
        if joined is None:
            return None
        tables = self._symbol_table, self._stream_table
        cols = aggparse.parse_agg_trades(joined, len(frames), *tables)
        if cols is None:  # a frame holds a NUL byte: not JSON
            return None
        out = DecodedBatch()
        names = self._stream_table.names
        out.streams.update([names[k] for k in np.flatnonzero(cols.stream_seen).tolist()])
        trade = cols.vouched
        if not trade.all():  # few: markPrice frames, escapes, unusual extra keys
            for i in np.flatnonzero(~trade).tolist():
                try:
                    env = _COMBINED.decode(frames[i])
                except msgspec.MsgspecError:
                    return None
                out.streams.add(env.stream)
                d = env.data
                if type(d) is binance.AggTrade:
                    cols.ticks[i] = (d.T, d.a, float(d.p), float(d.q), d.f, d.l, d.m)
                    cols.event_ms[i], cols.symbol[i] = d.E, self._index.get(d.s, -1)
                    trade[i] = True
                elif self._accept_mark(d, out) is not None:
                    return None
                else:
                    out.event_ms = max(out.event_ms, d.E)
            if not trade.all():
                rows = np.flatnonzero(trade)
                cols.ticks, cols.event_ms = cols.ticks.take(rows), cols.event_ms[rows]
                cols.symbol = cols.symbol[rows]
        if len(cols.ticks):
            self._accept_columns(cols, out)
        return out

    def _accept_columns(self, cols: aggparse.AggColumns, out: DecodedBatch) -> None:
        """The price/qty/symbol/duplicate rules over the columns of a batch's aggTrades."""
        ticks, code, syms = cols.ticks, cols.symbol, self._symbols
        aid = ticks["agg_id"]
        bad_price = ~(ticks["price"] > 0.0)
        bad_qty = ~bad_price & ~(ticks["qty"] > 0.0)
        unknown = ~bad_price & ~bad_qty & (code < 0)
        ok = ~(bad_price | bad_qty | unknown)
        accepted = np.zeros(len(code), dtype=bool)
        for k in np.flatnonzero(np.bincount(code[ok], minlength=len(syms))).tolist():
            rows = np.flatnonzero(ok & (code == k))
            ids = aid[rows]
            before = np.maximum.accumulate(np.concatenate(([self._last[syms[k]]], ids[:-1])))
            self._last[syms[k]] = max(int(before[-1]), int(ids[-1]))
            sel = rows[ids > before]
            if len(sel):
                accepted[sel] = True
                out.ticks[syms[k]] = ticks.take(sel)
        if accepted.any():
            out.event_ms = max(out.event_ms, int(cols.event_ms[accepted].max()))
        counts = {"bad_price": int(bad_price.sum()), "bad_qty": int(bad_qty.sum()),
                  "unknown_symbol": int(unknown.sum()),
                  "duplicate": int((ok & ~accepted).sum())}  # fmt: skip
        self._count_rejects({r: n for r, n in counts.items() if n}, out)

    def _count_rejects(self, rejects: dict[str, int], out: DecodedBatch) -> None:
        out.rejects.update(rejects)
        if rejects:
            for reason, n in rejects.items():
                self.rejected[reason] += n
            self._log_rejects()

    def _decode_each(self, frames: list[bytes | str]) -> DecodedBatch:
        """The per-frame path: strict typed decode, a classifier for what it refuses."""
        out = DecodedBatch()
        rows: dict[str, list[tuple]] = {}
        rejects = out.rejects
        last = self._last
        event_ms = -1
        for frame in frames:
            try:
                env = _COMBINED.decode(frame)
            except msgspec.MsgspecError:
                try:
                    self._slow(frame, out, rows)
                except _Reject as rej:
                    rejects[rej.reason] = rejects.get(rej.reason, 0) + 1
                continue
            out.streams.add(env.stream)
            d = env.data
            if type(d) is binance.AggTrade:
                reason = self._accept(d.s, d.a, d.p, d.q, d.T, d.f, d.l, d.m, last, rows)
            else:
                reason = self._accept_mark(d, out)
            if reason is not None:
                rejects[reason] = rejects.get(reason, 0) + 1
            elif event_ms < d.E:
                event_ms = d.E
        out.event_ms = event_ms
        for sym, sym_rows in rows.items():
            out.ticks[sym] = np.array(sym_rows, dtype=TICK_DTYPE)
        if rejects:
            for reason, n in rejects.items():
                self.rejected[reason] += n
            self._log_rejects()
        return out

    @staticmethod
    def _accept(sym, a, p, q, ts, f, l, m, last, rows) -> str | None:  # noqa: E741
        price = float(p)
        if not price > 0.0:
            return "bad_price"
        qty = float(q)
        if not qty > 0.0:
            return "bad_qty"
        prev = last.get(sym)
        if prev is None:
            return "unknown_symbol"
        if a <= prev:
            return "duplicate"
        last[sym] = a
        bucket = rows.get(sym)
        if bucket is None:
            bucket = rows[sym] = []
        bucket.append((ts, a, price, qty, f, l, m))
        return None

    def _accept_mark(self, d: binance.MarkPriceUpdate, out: DecodedBatch) -> str | None:
        mark = float(d.p)
        if not mark > 0.0:
            return "bad_price"
        if d.s not in self._last:
            return "unknown_symbol"
        out.marks.append(MarkUpdate(d.s, d.E, mark, float(d.r), d.T))
        return None

    def _slow(self, frame: bytes | str, out: DecodedBatch, rows: dict) -> None:
        """Classify a frame the fast path refused; accept it if it is a valid raw payload."""
        try:
            obj = orjson.loads(frame)
        except orjson.JSONDecodeError:
            raise _Reject("not_json") from None
        if not isinstance(obj, dict):
            raise _Reject("bad_frame")
        if "id" in obj and ("result" in obj or "error" in obj):
            try:
                out.controls.append(_CONTROL.decode(frame))
            except msgspec.MsgspecError:
                raise _Reject("bad_frame") from None
            return
        stream = obj.get("stream")
        if "data" in obj or "stream" in obj:
            if not isinstance(stream, str) or not isinstance(obj.get("data"), dict):
                raise _Reject("bad_frame")
            out.streams.add(stream)
            payload = obj["data"]
        else:
            payload = obj
        kind = payload.get("e")
        if kind is None and isinstance(stream, str):  # infer the kind from the stream name
            kind = "aggTrade" if stream.endswith("@aggTrade") else (
                "markPriceUpdate" if "@markPrice" in stream else None)
            if kind is not None:
                raise _Reject("missing_field")
        if kind == "aggTrade":
            _check_fields(payload, binance.AGG_TRADE_FIELDS)
            reason = self._accept(
                payload["s"], payload["a"], payload["p"], payload["q"], payload["T"],
                payload["f"], payload["l"], payload["m"], self._last, rows,
            )  # fmt: skip
        elif kind == "markPriceUpdate":
            _check_fields(payload, binance.MARK_PRICE_FIELDS)
            mark = binance.MarkPriceUpdate(
                E=payload["E"], s=payload["s"], p=payload["p"], r=payload["r"], T=payload["T"]
            )
            reason = self._accept_mark(mark, out)
        else:
            raise _Reject("bad_frame")
        if reason is not None:
            raise _Reject(reason)

    def _log_rejects(self) -> None:
        now = time.monotonic()
        if now - self._logged_at < self._log_every_s:
            return
        delta = {r: n - self._logged_counts[r] for r, n in self.rejected.items()
                 if n != self._logged_counts[r]}  # fmt: skip
        self._logged_at = now
        self._logged_counts = dict(self.rejected)
        log.warning("rejected frames since last report: %s (totals %s)", delta, self.rejected)


def _join(frames: list[bytes | str]) -> bytes | None:
    """The frames joined by NUL bytes (text as UTF-8); None when some frame is neither
    bytes-like nor encodable text."""
    try:
        return b"\0".join(frames)
    except TypeError:
        try:
            return b"\0".join([f.encode() if isinstance(f, str) else f for f in frames])
        except (TypeError, UnicodeEncodeError):
            return None


_DECIMAL_REASON = {"p": "bad_price", "q": "bad_qty"}


def _check_fields(payload: dict, fields: Mapping[str, str]) -> None:
    """Raise _Reject(missing_field | bad_type | bad_price | bad_qty) for the first problem."""
    for key in fields:
        if key not in payload:
            raise _Reject("missing_field")
    for key, kind in fields.items():
        value = payload[key]
        if kind == "int":
            ok = type(value) is int and 0 <= value < 2**63
        elif kind == "bool":
            ok = type(value) is bool
        else:
            ok = type(value) is str
        if not ok:
            raise _Reject("bad_type")
    for key, kind in fields.items():
        if kind == "decimal" and not binance.DECIMAL_RE.match(payload[key]):
            raise _Reject(_DECIMAL_REASON.get(key, "bad_price"))
        if kind == "signed" and not binance.SIGNED_DECIMAL_RE.match(payload[key]):
            raise _Reject("bad_type")


def parse_rest_agg_trades(body: bytes | str) -> tuple[np.ndarray, dict[str, int]]:
    """Body of ``GET /fapi/v1/aggTrades`` -> (valid rows as TICK_DTYPE in id order, rejects).

    Same strict rules as the stream (reasons ``missing_field``, ``bad_type``, ``bad_price``,
    ``bad_qty``; a body that is not a JSON array is ``not_json``/``bad_frame``).
    """
    try:
        trades = _REST_ROWS.decode(body)
        rows = [(t.T, t.a, float(t.p), float(t.q), t.f, t.l, t.m) for t in trades]
        rejects: dict[str, int] = {}
    except msgspec.MsgspecError:
        rows, rejects = _slow_rest_rows(body)
    ticks = np.array(rows, dtype=TICK_DTYPE)
    keep = (ticks["price"] > 0) & (ticks["qty"] > 0)
    if not keep.all():
        n_price = int((~(ticks["price"] > 0)).sum())
        if n_price:
            rejects["bad_price"] = rejects.get("bad_price", 0) + n_price
        n_qty = int(((ticks["price"] > 0) & ~(ticks["qty"] > 0)).sum())
        if n_qty:
            rejects["bad_qty"] = rejects.get("bad_qty", 0) + n_qty
        ticks = ticks[keep]
    if ticks.size > 1 and not (np.diff(ticks["agg_id"]) > 0).all():
        ticks = ticks[np.argsort(ticks["agg_id"], kind="stable")]
        ticks = ticks[np.concatenate(([True], np.diff(ticks["agg_id"]) > 0))]
    return ticks, rejects


def _slow_rest_rows(body: bytes | str) -> tuple[list[tuple], dict[str, int]]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [], {"not_json": 1}
    if not isinstance(items, list):
        return [], {"bad_frame": 1}
    rows, rejects = [], {}
    for item in items:
        try:
            if not isinstance(item, dict):
                raise _Reject("bad_frame")
            _check_fields(item, binance.REST_AGG_TRADE_FIELDS)
        except _Reject as rej:
            rejects[rej.reason] = rejects.get(rej.reason, 0) + 1
            continue
        rows.append((item["T"], item["a"], float(item["p"]), float(item["q"]),
                     item["f"], item["l"], item["m"]))  # fmt: skip
    return rows, rejects
