"""Websocket frames -> validated ticks per symbol, or rejects counted by reason.

Fast path: one msgspec typed decode per frame (combined envelope, strict types, decimal
patterns); anything it refuses goes to a plain-Python classifier that names the reason. Reasons
(exactly one per rejected frame): ``not_json``, ``bad_frame``, ``missing_field``, ``bad_type``,
``bad_price``, ``bad_qty``, ``unknown_symbol``, ``duplicate``. Checks run in that order.

A rejected frame does not advance the symbol's last-seen aggregate id (DESIGN.md), so the
trade it carried shows up as a gap and is refilled from REST by the feed.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
import numpy as np
import orjson

from engine import binance
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


class _LooseTrade(msgspec.Struct, tag_field="e", tag="aggTrade"):
    """``binance.AggTrade``'s keys and JSON types without the decimal patterns and id ranges
    (the bulk path checks those over whole columns)."""

    E: int
    s: str
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 (Binance's key)
    T: int
    m: bool


class _LooseFrame(msgspec.Struct):
    stream: str
    data: _LooseTrade | binance.MarkPriceUpdate


_LOOSE = msgspec.json.Decoder(_LooseFrame)
#: newline-separated decimals, each matching ``binance.DECIMAL_PATTERN``
_DECIMALS = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?(?:\n[0-9]{1,20}(?:\.[0-9]{1,20})?)*")


class FrameValidator:
    """Stateful frame validator for a set of symbols (uppercase).

    ``last_ids`` seeds the last-seen aggregate id per symbol (ids at or below it are
    duplicates). ``last_id(symbol)`` is the highest accepted id (-1 before the first).
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

        Bulk path for the usual batch (combined aggTrade and markPrice envelopes, all well
        formed): one loose decode per frame, then the decimal patterns, id ranges and the
        price/qty/symbol/duplicate rules over whole columns. Any frame the bulk path cannot
        vouch for sends the whole batch through the per-frame path, which names every reason.
        """
        out = self._decode_bulk(frames)
        return out if out is not None else self._decode_each(frames)

    def _decode_bulk(self, frames: list[bytes | str]) -> DecodedBatch | None:
        try:
            envs = [_LOOSE.decode(f) for f in frames]
        except msgspec.MsgspecError:
            return None
        out = DecodedBatch()
        out.streams.update([e.stream for e in envs])
        trades = [e.data for e in envs if type(e.data) is _LooseTrade]
        if len(trades) != len(envs):  # markPrice frames: few, through the strict decoder
            for frame, env in zip(frames, envs, strict=True):
                if type(env.data) is not _LooseTrade:
                    try:
                        mark = _COMBINED.decode(frame).data
                    except msgspec.MsgspecError:
                        return None
                    reason = self._accept_mark(mark, out)
                    if reason is not None:
                        return None
                    out.event_ms = max(out.event_ms, mark.E)
        if not trades:
            return out
        ps, qs = [d.p for d in trades], [d.q for d in trades]
        if not (_DECIMALS.fullmatch("\n".join(ps)) and _DECIMALS.fullmatch("\n".join(qs))):
            return None
        try:
            ints = np.array([(d.T, d.a, d.f, d.l, d.E) for d in trades], dtype=np.int64)
        except OverflowError:
            return None
        if (ints < 0).any():
            return None
        price = np.array([float(x) for x in ps])
        qty = np.array([float(x) for x in qs])
        index = {s: k for k, s in enumerate(self._last)}
        code = np.array([index.get(d.s, -1) for d in trades], dtype=np.int64)
        ts, aid = ints[:, 0], ints[:, 1]
        bad_price = ~(price > 0.0)
        bad_qty = ~bad_price & ~(qty > 0.0)
        unknown = ~bad_price & ~bad_qty & (code < 0)
        ok = ~(bad_price | bad_qty | unknown)
        accepted = np.zeros(len(trades), dtype=bool)
        syms = list(self._last)
        for k in np.unique(code[ok]).tolist():
            rows = np.flatnonzero(ok & (code == k))
            ids = aid[rows]
            before = np.maximum.accumulate(np.r_[self._last[syms[k]], ids])[:-1]
            keep = ids > before
            accepted[rows[keep]] = True
            self._last[syms[k]] = int(before[-1] if before[-1] > ids[-1] else ids[-1])
            sel = rows[keep]
            if not len(sel):
                continue
            t = np.empty(len(sel), dtype=TICK_DTYPE)
            t["ts"], t["agg_id"], t["price"], t["qty"] = ts[sel], aid[sel], price[sel], qty[sel]
            t["first_id"], t["last_id"] = ints[sel, 2], ints[sel, 3]
            t["buyer_maker"] = [trades[i].m for i in sel.tolist()]
            out.ticks[syms[k]] = t
        if accepted.any():
            out.event_ms = max(out.event_ms, int(ints[accepted, 4].max()))
        counts = {"bad_price": int(bad_price.sum()), "bad_qty": int(bad_qty.sum()),
                  "unknown_symbol": int(unknown.sum()),
                  "duplicate": int((ok & ~accepted).sum())}  # fmt: skip
        self._count_rejects({r: n for r, n in counts.items() if n}, out)
        return out

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
