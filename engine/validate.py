"""Websocket frames -> validated ticks per symbol, or rejects counted by reason.

One decoder for every batch: the frames joined by NUL bytes go through one numba pass
(``engine.aggparse``) that turns combined aggTrade envelopes into columns; msgspec's strict typed
decode takes the few frames that pass does not vouch for (markPrice frames, escapes, nested extra
keys, ...), and a plain-Python classifier names the reason of a frame msgspec refuses (or
accepts a raw payload); the price/qty/symbol/duplicate rules then run over whole columns in
arrival order. Payload facts (structs, field kinds, ``check_fields``, the REST rows' parse) live
in ``engine.binance``; this module imports it, never the other way.
Reasons (exactly one per rejected frame): ``not_json``, ``bad_frame``, ``missing_field``,
``bad_type``, ``bad_price``, ``bad_qty``, ``unknown_symbol``, ``duplicate``. Checks run in that
order.

A rejected frame does not advance the symbol's last-seen aggregate id (docs/semantics.md), so the
trade it carried shows up as a gap and is refilled from REST by the feed.

Ids gone backwards: a trade whose id lies more than ``BEHIND_MARGIN`` below the symbol's
last-seen id (the store's last id it resumed from, or the highest accepted since) does not come
from the source that wrote the store (a simulator restarted from scratch, another exchange).
Its frame is still rejected as a ``duplicate`` (two sources' ids never mix in one store: the
store stays intact), but the symbol counts as *behind* (``ids_behind``: symbol -> (stream id,
stored id)) and a warning is logged at once, once per episode; the episode ends when a frame of
the symbol is no longer that far below.
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
from numba import njit

from engine import aggparse, binance
from engine.errors import DataError
from engine.schemas import TICK_DTYPE

log = logging.getLogger(__name__)

#: aggregate ids a trade may lie below the last-seen id and still count as an ordinary
#: duplicate. Normal overlaps are far smaller: a new connection starts at the exchange's
#: current trade, so it repeats at most what the old one delivered during the skew between two
#: connections (milliseconds; a busy Binance symbol makes a few hundred trades a second at
#: peaks), and the simulator re-sends one of its last few frames. More than 1,000 ids back
#: means the stream is not the source the store was written from.
BEHIND_MARGIN = 1_000


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


_COMBINED = msgspec.json.Decoder(binance.CombinedFrame)
_CONTROL = msgspec.json.Decoder(binance.ControlReply)


class FrameValidator:
    """Stateful frame validator for a set of symbols (uppercase).

    ``last_ids`` seeds the last-seen aggregate id per symbol (ids at or below it are
    duplicates). ``last_id(symbol)`` is the highest accepted id (-1 before the first).
    ``ids_behind`` maps each symbol whose stream is now more than ``BEHIND_MARGIN`` ids below
    its last-seen id to (latest stream id, last-seen id); see the module docstring.

    The first validator made in a process loads the numba kernel of the column path (about
    0.3 s; compiling it when the cache is cold takes seconds), so the first batch of frames is
    not delayed by it.
    """

    def __init__(self, symbols: Iterable[str], last_ids: Mapping[str, int] | None = None,
                 *, log_every_s: float = 10.0):
        syms = list(symbols)
        if not syms:
            raise DataError("FrameValidator needs at least one symbol")
        for sym in syms:
            binance.check_symbol(sym, DataError)
        self._last = np.full(len(syms), -1, dtype=np.int64)  # highest id seen, by symbol index
        self._symbols = syms
        self._index = {s: k for k, s in enumerate(syms)}
        self._symbol_table = aggparse.name_table(syms)
        self._stream_table = aggparse.name_table([binance.agg_trade_stream(s) for s in syms])
        aggparse.load_kernel()
        _accept_ids(*_accept_ids_args(len(syms)))  # loaded now, not at the first batch
        for sym, last in (last_ids or {}).items():
            if sym not in self._index:
                raise DataError(f"last_ids names {sym!r}, not one of the symbols {syms}")
            if not isinstance(last, (int, np.integer)) or isinstance(last, bool) or last < -1:
                raise DataError(f"last id of {sym} must be an int >= -1, got {last!r}")
            self._last[self._index[sym]] = int(last)
        self.rejected: dict[str, int] = dict.fromkeys(binance.REJECT_REASONS, 0)
        self.ids_behind: dict[str, tuple[int, int]] = {}
        self._log_every_s = log_every_s
        self._logged_at = -math.inf
        self._logged_counts = dict(self.rejected)

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def last_id(self, symbol: str) -> int:
        return int(self._last[self._index[symbol]])

    def decode_frames(self, frames: list[bytes | str]) -> DecodedBatch:
        """Decode and validate frames (combined envelopes or raw payloads, text or bytes).

        One numba pass over the frames joined by NUL bytes (``engine.aggparse``) gives the
        aggTrade columns; the few frames it does not vouch for (markPrice frames, escapes,
        nested extra keys, ...) get msgspec's strict decode, and those that refuses a
        plain-Python classifier that names the reason (or accepts a raw payload); their trades
        take their rows in the columns, so the price/qty/symbol/duplicate rules run over whole
        columns in arrival order.
        """
        n = len(frames)
        joined = _join(frames)
        tables = self._symbol_table, self._stream_table
        cols = None if joined is None else aggparse.parse_agg_trades(joined, n, *tables)
        if cols is None:  # a frame holds a NUL byte (not JSON) or is not text: none vouched
            cols = aggparse.AggColumns(
                np.zeros(n, dtype=TICK_DTYPE), np.full(n, -1, dtype=np.int64),
                np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool),
                np.zeros(len(self._stream_table.names), dtype=np.int64),
            )  # fmt: skip
        out = DecodedBatch()
        names = self._stream_table.names
        out.streams.update([names[k] for k in np.flatnonzero(cols.stream_seen).tolist()])
        trade = cols.vouched
        rejects: dict[str, int] = {}
        if not trade.all():  # few: markPrice frames, escapes, unusual extra keys, bad frames
            for i in np.flatnonzero(~trade).tolist():
                try:
                    row = self._refused(frames[i], out)
                except binance.Reject as rej:
                    rejects[rej.reason] = rejects.get(rej.reason, 0) + 1
                    continue
                if row is not None:
                    tick, event_ms, sym = row
                    cols.ticks[i], cols.event_ms[i] = tick, event_ms
                    cols.symbol[i] = self._index.get(sym, -1)
                    trade[i] = True
            if not trade.all():
                rows = np.flatnonzero(trade)
                cols.ticks, cols.event_ms = cols.ticks.take(rows), cols.event_ms[rows]
                cols.symbol = cols.symbol[rows]
        if len(cols.ticks):
            self._accept_columns(cols, out, rejects)
        else:
            self._count_rejects(rejects, out)
        return out

    def _refused(self, frame: bytes | str, out: DecodedBatch) -> tuple | None:
        """A frame the column pass left: ``(tick row, event ms, symbol)`` of its aggTrade, or
        None when it was a mark (appended to ``out``) or a control reply; Reject otherwise."""
        try:
            env = _COMBINED.decode(frame)
        except msgspec.MsgspecError:
            return self._classify(frame, out)
        out.streams.add(env.stream)
        d = env.data
        if type(d) is binance.AggTrade:
            return (d.T, d.a, float(d.p), float(d.q), d.f, d.l, d.m), d.E, d.s
        reason = self._accept_mark(d, out)
        if reason is not None:
            raise binance.Reject(reason)
        out.event_ms = max(out.event_ms, d.E)
        return None

    def _accept_columns(
        self, cols: aggparse.AggColumns, out: DecodedBatch, rejects: dict[str, int]
    ) -> None:
        """The price/qty/symbol/duplicate rules over the columns of a batch's aggTrades."""
        ticks, code, syms = cols.ticks, cols.symbol, self._symbols
        bad_price = ~(ticks["price"] > 0.0)
        bad_qty = ~bad_price & ~(ticks["qty"] > 0.0)
        unknown = ~bad_price & ~bad_qty & (code < 0)
        ok = ~(bad_price | bad_qty | unknown)
        accepted, batch_last, before_last = _accept_ids(code, ticks["agg_id"], ok, self._last)
        for k in np.flatnonzero(batch_last != NO_ROW).tolist():
            self._check_behind(syms[k], int(batch_last[k]), int(before_last[k]))
        rows = np.flatnonzero(accepted)
        if len(rows):
            by_symbol = rows[np.argsort(code[rows], kind="stable")]  # arrival order per symbol
            taken = ticks.take(by_symbol)
            ends = np.cumsum(np.bincount(code[rows], minlength=len(syms)))
            for k in np.flatnonzero(np.diff(ends, prepend=0)).tolist():
                out.ticks[syms[k]] = taken[ends[k - 1] if k else 0 : ends[k]]
        if accepted.any():
            out.event_ms = max(out.event_ms, int(cols.event_ms[accepted].max()))
        counts = {"bad_price": int(bad_price.sum()), "bad_qty": int(bad_qty.sum()),
                  "unknown_symbol": int(unknown.sum()),
                  "duplicate": int((ok & ~accepted).sum())}  # fmt: skip
        for reason, count in counts.items():
            if count:
                rejects[reason] = rejects.get(reason, 0) + count
        self._count_rejects(rejects, out)

    def _check_behind(self, symbol: str, stream_id: int, known_id: int) -> None:
        """Start, update or end the symbol's ids-behind episode from its latest trade id in a
        batch and the last-seen id before it."""
        if stream_id >= known_id - BEHIND_MARGIN:
            if self.ids_behind.pop(symbol, None) is not None:
                log.info("ids on %s are back within %d of the last seen: the stream is at id %d",
                         symbol, BEHIND_MARGIN, stream_id)  # fmt: skip
            return
        if symbol not in self.ids_behind:
            log.warning("ids went backwards on %s: the stream is at id %d, the store holds up "
                        "to %d: the store was written from another source?",
                        symbol, stream_id, known_id)  # fmt: skip
        self.ids_behind[symbol] = (stream_id, known_id)

    def _count_rejects(self, rejects: dict[str, int], out: DecodedBatch) -> None:
        out.rejects.update(rejects)
        if rejects:
            for reason, n in rejects.items():
                self.rejected[reason] += n
            self._log_rejects()

    def _accept_mark(self, d: binance.MarkPriceUpdate, out: DecodedBatch) -> str | None:
        mark = float(d.p)
        if not mark > 0.0:
            return "bad_price"
        if d.s not in self._index:
            return "unknown_symbol"
        out.marks.append(MarkUpdate(d.s, d.E, mark, float(d.r), d.T))
        return None

    def _classify(self, frame: bytes | str, out: DecodedBatch) -> tuple | None:
        """A frame msgspec's strict decode refused: Reject with its reason, or what
        ``_refused`` returns for a valid raw payload (or a control reply: None)."""
        try:
            obj = orjson.loads(frame)
        except orjson.JSONDecodeError:
            raise binance.Reject("not_json") from None
        if not isinstance(obj, dict):
            raise binance.Reject("bad_frame")
        if "id" in obj and ("result" in obj or "error" in obj):
            try:
                out.controls.append(_CONTROL.decode(frame))
            except msgspec.MsgspecError:
                raise binance.Reject("bad_frame") from None
            return None
        stream = obj.get("stream")
        if "data" in obj or "stream" in obj:
            if not isinstance(stream, str) or not isinstance(obj.get("data"), dict):
                raise binance.Reject("bad_frame")
            out.streams.add(stream)
            payload = obj["data"]
        else:
            payload = obj
        kind = payload.get("e")
        if kind is None and isinstance(stream, str):  # infer the kind from the stream name
            kind = "aggTrade" if stream.endswith("@aggTrade") else (
                "markPriceUpdate" if "@markPrice" in stream else None)
            if kind is not None:
                raise binance.Reject("missing_field")
        if kind == "aggTrade":
            binance.check_fields(payload, binance.AGG_TRADE_FIELDS)
            p = payload
            tick = (p["T"], p["a"], float(p["p"]), float(p["q"]), p["f"], p["l"], p["m"])
            return tick, p["E"], p["s"]
        if kind != "markPriceUpdate":
            raise binance.Reject("bad_frame")
        binance.check_fields(payload, binance.MARK_PRICE_FIELDS)
        mark = binance.MarkPriceUpdate(
            E=payload["E"], s=payload["s"], p=payload["p"], r=payload["r"], T=payload["T"]
        )
        reason = self._accept_mark(mark, out)
        if reason is not None:
            raise binance.Reject(reason)
        out.event_ms = max(out.event_ms, mark.E)
        return None

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


#: ``_accept_ids``' batch_last for a symbol with no row in the batch
NO_ROW = -2


@njit(cache=True)
def _accept_ids(code, agg_id, ok, last):
    """The duplicate rule over one batch's rows in arrival order: row i (``ok[i]``, symbol
    ``code[i]``) is accepted when its id is above every id of its symbol seen before it
    (``last[code]`` before the batch, then the batch's earlier rows). ``last`` (int64 by symbol)
    is raised in place. Returns (accepted by row, per symbol the id of its last ok row in the
    batch (``NO_ROW``: none) and the highest id seen before that row). Oracle: the former
    per-symbol NumPy form (``np.maximum.accumulate``), tests/engine/test_validate.py."""
    accepted = np.zeros(code.shape[0], dtype=np.bool_)
    batch_last = np.full(last.shape[0], NO_ROW, dtype=np.int64)
    before_last = np.empty(last.shape[0], dtype=np.int64)
    for i in range(code.shape[0]):
        if ok[i]:
            k = code[i]
            before_last[k] = last[k]
            batch_last[k] = agg_id[i]
            if agg_id[i] > last[k]:
                accepted[i] = True
                last[k] = agg_id[i]
    return accepted, batch_last, before_last


def _accept_ids_args(n_symbols: int) -> tuple[np.ndarray, ...]:
    """Arguments of ``_accept_ids`` typed as the validator passes them (two rows, no symbol)."""
    agg_id = np.zeros(2, dtype=TICK_DTYPE)["agg_id"]  # a field of the ticks: strided
    return (np.full(2, -1, dtype=np.int64), agg_id, np.zeros(2, dtype=bool),
            np.full(n_symbols, -1, dtype=np.int64))  # fmt: skip
