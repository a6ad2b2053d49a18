"""Ingest: validated tick batches of one connection's symbols -> bars, store writes, publish
entries. Plain Python, no network and no Ray (``actors.feed.FeedActor`` runs it in its client's
event loop).

``FeedCore`` takes validated tick batches per symbol and clock readings: it queues ticks, bars
(every configured timeframe, late corrections upserted) and funding for the ``Store``
(``take_writes``/``write``), and hands out publish entries ``{"symbol", "wm", "bars",
"advances"}`` for the PairActors, one list per batch. Its recent closed bars are the
``BarBuilder``'s own kept bars (``BarBuilder.recent``, ``RECENT_BARS`` per series, late
corrections included). On (re)start it resumes from the store: each builder is seeded with the
recent stored bars and refed with the stored ticks after its timeframe's last stored bar, the
feed resumes after the store's last aggregate id (REST backfill closes the hole), and the first
publish repeats the recent stored bars (``repeat_bars``, at least ``RESUME_REPEAT_MS``) so a
PairActor that missed some gets them (it drops what it already has). A symbol with stored bars
but no stored trades (bars from klines: ``engine.warmup``) is seeded with them, repeated alike.

``feed_row`` turns a client's ``FeedStats`` into one row of ``status()["feeds"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from engine.bars import NO_WATERMARK, RECENT_BARS, BarBuilder, BarUpdate
from engine.config import FeedConfig, Timeframe
from engine.feed import FeedBatch, FeedStats
from engine.schemas import BAR_DTYPE, table_to_bars, table_to_ticks, timeframe_ms
from engine.store import Store
from engine.warmup import recent_start

log = logging.getLogger(__name__)

#: how far back (ms) the first publish after a (re)start repeats stored bars
RESUME_REPEAT_MS = 15 * 60_000
#: how a FeedActor's client cuts batches: as soon as frames arrive (at most one batch per
#: ``cut_gap_ms``), when the clock reaches the next bar close of the analytics timeframe
#: (``FeedCore.next_close_ms``), and every ``batch_ms`` when nothing comes (ms)
CLIENT_BATCHING = {"batch_ms": 100.0, "cut_gap_ms": 1.0}


class FeedCore:
    """Bars, store writes and publish entries for the symbols of one connection."""

    def __init__(
        self,
        symbols: Sequence[str],
        store: Store,
        *,
        feed: FeedConfig,
        timeframe: Timeframe,
        timeframes: Sequence[Timeframe],
        repeat_bars: int = 0,
    ):
        """``feed``: the config's feed section (``lateness_ms``); ``timeframe``: the one pairs
        step on (``analytics.timeframe``), published; ``timeframes``: every one built and
        stored; ``repeat_bars``: the first publish repeats at least this many stored bars of
        ``timeframe`` (the warm-up window: ``engine.warmup``)."""
        self.symbols = list(symbols)
        self.repeat_ms = max(RESUME_REPEAT_MS, int(repeat_bars) * timeframe_ms(timeframe))
        self.store = store
        self._writes: list[tuple] = []  # (store method, args), applied by ``write``
        self.tf = timeframe
        self.timeframes = list(dict.fromkeys([self.tf, *timeframes]))
        lateness = int(feed.lateness_ms)
        self.lateness_ms = lateness
        self.builders = {
            (s, tf): BarBuilder(tf, lateness, keep=RECENT_BARS)
            for s in self.symbols
            for tf in self.timeframes
        }
        self._pending: dict[str, list[np.ndarray]] = {s: [] for s in self.symbols}
        self._advances: dict[str, list[tuple[int, float]]] = {s: [] for s in self.symbols}
        self._wm: dict[str, int] = {}
        self._published_wm: dict[str, int] = {}
        self.ticks = 0
        self.late_ticks = 0
        self.last_ids: dict[str, int | None] = {}
        for s in self.symbols:
            self._resume(s)

    def _resume(self, symbol: str) -> None:
        """Rebuild the open bars from stored ticks after each timeframe's last stored bar."""
        self.last_ids[symbol] = self.store.last_agg_id(symbol)
        if self.last_ids[symbol] is None:
            self._seed_bars(symbol)
            return
        starts = {}
        for tf in self.timeframes:
            bars = self._stored_bars(symbol, tf)
            starts[tf] = int(bars["ts"][-1]) + timeframe_ms(tf) if len(bars) else None
            keep = bars[-RECENT_BARS:]
            self.builders[(symbol, tf)].seed(keep)
            if tf == self.tf and len(bars):
                self._pending[symbol].append(bars[bars["ts"] >= bars["ts"][-1] - self.repeat_ms])
        known = [v for v in starts.values() if v is not None]
        first = min(known) if len(known) == len(starts) else None
        ticks = table_to_ticks(self.store.read_ticks(symbol, start=first))
        for tf in self.timeframes:
            start = starts[tf]
            mine = ticks if start is None else ticks[ticks["ts"] >= start]
            # history: its bars were final before this start (no latency samples of them)
            self._apply(symbol, tf, self.builders[(symbol, tf)].add(mine), None, count_late=False)
        log.info(
            "%s: resumed after agg id %s (%d stored ticks refed)",
            symbol,
            self.last_ids[symbol],
            len(ticks),
        )

    def _seed_bars(self, symbol: str) -> None:
        """No stored trades: seed the analytics timeframe's builder with the stored bars (from
        klines: the warm-up) and repeat the last ``repeat_ms`` of them at the first publish."""
        bars = self._stored_bars(symbol, self.tf)
        if len(bars):
            self.builders[(symbol, self.tf)].seed(bars[-RECENT_BARS:])
            self._pending[symbol].append(bars[bars["ts"] >= bars["ts"][-1] - self.repeat_ms])

    def _stored_bars(self, symbol: str, tf: str) -> np.ndarray:
        """The stored bars a resume needs: the recent ones kept and repeated (not a store of
        months), all of them when there are none that recent."""
        n = max(RECENT_BARS, self.repeat_ms // timeframe_ms(tf))
        start = recent_start(self.store, tf, symbol, n)
        return table_to_bars(self.store.read_bars(tf, symbol, start=start))

    def on_ticks(self, symbol: str, ticks: np.ndarray, wall_ms: float) -> None:
        """A batch of validated ticks of one symbol (TICK_DTYPE, id order), received at wall_ms."""
        if len(ticks) == 0:
            return
        self._writes.append((self.store.write_ticks, (symbol, ticks)))
        self.ticks += len(ticks)
        for tf in self.timeframes:
            upd = self.builders[(symbol, tf)].add(ticks)
            self._apply(symbol, tf, upd, wall_ms, count_late=tf == self.tf)

    def on_funding(
        self, symbol: str, ts_ms: int, mark: float, rate: float, next_funding_ms: int
    ) -> None:
        """One mark-price update: stored as a funding row (ts, mark_price, funding_rate,
        next_funding_time: the exchange's ``T``, when this rate is paid)."""
        import pyarrow as pa

        from engine.store import FUNDING_STORED_SCHEMA

        ts_type = FUNDING_STORED_SCHEMA.field("ts").type
        table = pa.table(
            {
                "ts": pa.array([int(ts_ms)], type=pa.int64()).cast(ts_type),
                "mark_price": pa.array([float(mark)]),
                "funding_rate": pa.array([float(rate)]),
                "next_funding_time": pa.array([int(next_funding_ms)], type=pa.int64()).cast(
                    ts_type
                ),
            },
            schema=FUNDING_STORED_SCHEMA,
        )
        self._writes.append((self.store.write_funding, (symbol, table)))

    def advance(
        self, clock_ms: float, hold: Iterable[str] = (), wall_ms: float | None = None
    ) -> None:
        """Clock reading: closes bars whose end + lateness has passed ``clock_ms``, except for
        the symbols in ``hold`` (a hole is being refilled: their bars must not close on the
        clock). ``wall_ms`` (default ``clock_ms``) is when the clock reading was true: an
        interval ending at e became final when the clock passed e + lateness, at wall time
        ``wall_ms - (clock_ms - e - lateness_ms)`` (recorded for the latency)."""
        held = set(hold)
        wall = clock_ms if wall_ms is None else wall_ms
        now = int(clock_ms)
        for (symbol, tf), builder in self.builders.items():
            if now >= builder.next_close_ms and symbol not in held:
                upd = builder.advance(now)
                self._apply(symbol, tf, upd, wall, count_late=False, clock_ms=clock_ms)

    def next_close_ms(self, hold: Iterable[str] = ()) -> float:
        """The earliest clock (ms) at which ``advance`` closes a bar or moves a watermark of
        the analytics timeframe, symbols in ``hold`` left out (inf when none)."""
        held = set(hold)
        times = [self.builders[(s, self.tf)].next_close_ms for s in self.symbols if s not in held]
        return float(min(times, default=np.inf))

    def on_batches(self, batches: list[FeedBatch], hold: Iterable[str] = ()) -> None:
        """The FeedClient's batches, oldest first: their ticks and funding rows, then one clock
        step to the last batch's clock (``FeedBatch.clock_ms``: what has been received, never a
        later wall reading), holding that batch's pending gaps and the symbols in ``hold``."""
        for batch in batches:
            for sym, ticks in batch.ticks.items():
                self.on_ticks(sym, ticks, batch.cut_ms)
            for m in batch.marks:
                self.on_funding(m.symbol, m.ts, m.mark, m.funding_rate, m.next_funding_ms)
        if batches:
            last = batches[-1]
            held = {*last.stats.pending_gaps, *hold}
            self.advance(last.clock_ms, hold=held, wall_ms=last.cut_ms)

    def _apply(
        self,
        symbol: str,
        tf: str,
        upd: BarUpdate,
        wall_ms: float | None,
        *,
        count_late: bool,
        clock_ms: float | None = None,
    ) -> None:
        if len(upd.closed):
            self._writes.append((self.store.write_bars, (tf, symbol, upd.closed)))
            if tf == self.tf:
                self._pending[symbol].append(upd.closed)
        if len(upd.corrected):
            self._writes.append((self.store.write_bars, (tf, symbol, upd.corrected)))
        if count_late:
            self.late_ticks += int(upd.late)
        if tf == self.tf:
            wm = self.builders[(symbol, tf)].watermark
            if wm > self._wm.get(symbol, NO_WATERMARK):
                self._wm[symbol] = wm
                if wall_ms is None:  # not seen live: no advance for the latency
                    return
                if clock_ms is not None:  # the clock passed wm + lateness this long ago
                    wall_ms -= max(0.0, clock_ms - (wm + self.lateness_ms))
                self._advances[symbol].append((wm, wall_ms))

    def take_entries(self) -> list[dict]:
        """Publish entries for symbols with new bars or an advanced watermark since last time."""
        out = []
        for s in self.symbols:
            wm = self.builders[(s, self.tf)].watermark
            pending = self._pending[s]
            if not pending and wm <= self._published_wm.get(s, NO_WATERMARK):
                continue
            if len(pending) == 1:  # the usual case: no np.concatenate (slow on records)
                bars = pending[0]
            else:
                bars = np.concatenate(pending) if pending else np.empty(0, dtype=BAR_DTYPE)
            out.append({"symbol": s, "wm": wm, "bars": bars, "advances": self._advances[s]})
            self._pending[s] = []
            self._advances[s] = []
            self._published_wm[s] = wm
        return out

    def recent_bars(self, symbol: str, timeframe: str, n: int) -> np.ndarray:
        """The last ``n`` closed bars of a symbol and timeframe (BAR_DTYPE, a copy)."""
        builder = self.builders.get((symbol, timeframe))
        if builder is None:
            raise KeyError(f"no bars of {symbol} {timeframe} in this feed")
        return builder.recent(n)

    def recent_for(self, symbols: Iterable[str], timeframe: str) -> list[dict]:
        """Entries with the recent bars and current watermark of the given symbols (warm-up)."""
        out = []
        for s in symbols:
            builder = self.builders.get((s, timeframe))
            if builder is not None:
                out.append(
                    {"symbol": s, "wm": builder.watermark, "bars": builder.recent(), "advances": []}
                )
        return out

    def take_writes(self) -> list[tuple]:
        """The store writes queued since the last call (for ``write``, in order)."""
        writes, self._writes = self._writes, []
        return writes

    def write(self, writes: list[tuple]) -> None:
        """Hand queued writes to the store and flush it (may run in another thread than the
        rest of the core: it touches the store only)."""
        for method, args in writes:
            method(*args)
        self.store.flush()

    def flush(self) -> None:
        """Write and flush everything queued so far."""
        self.write(self.take_writes())

    def compact(self, now_ms: float | None = None) -> int:
        """Merge this core's part files in the store (``Store.compact_closed``: a day once over
        into one file per partition, today's by size tiers); call it where ``write`` runs, this
        core being its symbols' one writer. Partitions changed."""
        return self.store.compact_closed(self.symbols, None if now_ms is None else int(now_ms))


def feed_row(s: FeedStats, late_ticks: int, warm: dict[str, bool] | None = None) -> dict:
    """One ``status()["feeds"]`` row (builtins only) from a client's stats and the late ticks,
    plus ``open_gaps`` (count), ``open_gap_list`` (``{"symbol", "first", "last", "why"}``,
    aggregate ids inclusive: trades REST could not refill), ``watchdog_recoveries``,
    ``connect_failures`` (failed connection attempts), ``last_error`` (the latest one's text,
    "" when none), ``ids_behind`` (``{symbol: {"stream", "store"}}``: the stream's latest
    aggregate id and the id the store holds, for symbols whose stream ids fell far below the
    store's; their trades are rejected, never stored), ``starved`` (frames arrive, all
    rejected), ``healthy`` (connected, nothing behind, not starved: what "up" means) and
    ``warm_symbols`` (``{symbol: bool}``: its warm-up window was full when it went live)."""
    return {
        "symbols": list(s.symbols),
        "connected": bool(s.connected),
        "ticks_per_s": float(s.ticks_per_s),
        "ticks": int(s.ticks),
        "rejected": {k: int(v) for k, v in s.rejected.items()},
        "gaps_backfilled": int(s.gaps_backfilled),
        "late_ticks": int(late_ticks),
        "reconnects": int(s.reconnects),
        "open_gaps": int(s.open_gaps),
        "open_gap_list": [
            {"symbol": g.symbol, "first": int(g.first), "last": int(g.last), "why": str(g.why)}
            for g in s.open_gap_list
        ],
        "watchdog_recoveries": int(s.watchdog_recoveries),
        "connect_failures": int(s.connect_failures),
        "last_error": str(s.last_error),
        "ids_behind": {
            sym: {"stream": int(stream), "store": int(store)}
            for sym, (stream, store) in s.ids_behind.items()
        },
        "starved": bool(s.starved),
        "healthy": bool(s.healthy),
        "warm_symbols": {sym: bool(w) for sym, w in (warm or {}).items()},
    }
