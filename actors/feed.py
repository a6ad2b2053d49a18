"""FeedActor: one websocket connection's symbols, from trades to stored and published bars.

``FeedCore`` (plain, no network, no Ray) takes validated tick batches per symbol and clock
readings: it queues ticks, bars (every configured timeframe, late corrections upserted) and
funding for the ``Store`` (``take_writes``/``write``), keeps the recent closed bars in memory,
and hands out publish entries ``{"symbol", "wm", "bars", "advances"}`` for the PairActors (see
actors/pair.py), one list per batch. On (re)start it resumes from the store: bar builders are
refed with the stored ticks after each timeframe's last stored bar, the feed resumes after the
store's last aggregate id (REST backfill closes the hole), and the first publish repeats the
recent stored bars so a PairActor that missed some gets them (it drops what it already has).

``FeedActor`` runs a ``FeedClient`` on an asyncio loop in its own thread and feeds the core in
that loop as each batch is cut (no hand-off to another thread), sending each PairActor one
``on_bars`` call per batch (its entries packed into one ``engine.packets.BarPacket``), with at
most ``MAX_IN_FLIGHT`` calls outstanding per PairActor (bounded with ``ray.wait``); it writes
the store from a second thread, right after bar closes and at least once a second, so file I/O
never delays bars or publishing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable

import numpy as np

from actors.args import as_config, lookup_actor
from engine import packets
from engine.bars import NO_WATERMARK, RECENT_BARS, BarBuilder, BarUpdate
from engine.feed import FeedBatch, FeedClient, FeedStats
from engine.schemas import BAR_DTYPE, table_to_bars, table_to_ticks, timeframe_ms
from engine.store import Store

log = logging.getLogger(__name__)

#: how far back (ms) the first publish after a (re)start repeats stored bars
RESUME_REPEAT_MS = 15 * 60_000
#: outstanding on_bars calls per PairActor before the feed waits
MAX_IN_FLIGHT = 4
#: how the FeedActor's client cuts batches: as soon as frames arrive (at most one batch per
#: ``cut_gap_ms``), when the clock reaches the next bar close of the analytics timeframe
#: (``FeedCore.next_close_ms``), and every ``batch_ms`` when nothing comes (ms)
CLIENT_BATCHING = {"batch_ms": 100.0, "cut_gap_ms": 1.0}


def now_ms() -> float:
    return time.time() * 1000.0


class BarTail:
    """The last ``keep`` bars (BAR_DTYPE) of a series, appended in amortized O(1): a buffer of
    twice that, compacted when full (not a copy of everything kept on every close)."""

    def __init__(self, keep: int = RECENT_BARS):
        self.keep = keep
        self._buf = np.empty(2 * keep, dtype=BAR_DTYPE)
        self._n = 0

    def extend(self, bars: np.ndarray) -> None:
        k = len(bars)
        if k >= self.keep:
            self._buf[: self.keep] = bars[-self.keep :]
            self._n = self.keep
            return
        if self._n + k > len(self._buf):
            kept = self.keep - k
            self._buf[:kept] = self._buf[self._n - kept : self._n]
            self._n = kept
        self._buf[self._n : self._n + k] = bars
        self._n += k

    def last(self, n: int | None = None) -> np.ndarray:
        """A copy of the last ``n`` bars kept (all of them when None), oldest first."""
        view = self._buf[max(0, self._n - self.keep) : self._n]
        if n is not None:
            view = view[max(0, len(view) - n) :] if n > 0 else view[:0]
        return view.copy()


class FeedCore:
    """Bars, store writes and publish entries for the symbols of one connection."""

    def __init__(self, config: object, symbols: list[str], store: Store):
        self.symbols = list(symbols)
        self.store = store
        self._writes: list[tuple] = []  # (store method, args), applied by ``write``
        self.tf = config.analytics.timeframe
        self.timeframes = list(dict.fromkeys([self.tf, *config.timeframes]))
        lateness = int(config.feed.lateness_ms)
        self.lateness_ms = lateness
        self.builders = {
            (s, tf): BarBuilder(tf, lateness) for s in self.symbols for tf in self.timeframes
        }
        self.recent = {key: BarTail(RECENT_BARS) for key in self.builders}
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
            return
        starts = {}
        for tf in self.timeframes:
            bars = table_to_bars(self.store.read_bars(tf, symbol))
            starts[tf] = int(bars["ts"][-1]) + timeframe_ms(tf) if len(bars) else None
            keep = bars[-RECENT_BARS:]
            self.recent[(symbol, tf)].extend(keep)
            if tf == self.tf and len(keep):
                self._pending[symbol].append(keep[keep["ts"] >= keep["ts"][-1] - RESUME_REPEAT_MS])
        known = [v for v in starts.values() if v is not None]
        first = min(known) if len(known) == len(starts) else None
        ticks = table_to_ticks(self.store.read_ticks(symbol, start=first))
        wall = now_ms()
        for tf in self.timeframes:
            start = starts[tf]
            mine = ticks if start is None else ticks[ticks["ts"] >= start]
            self._apply(symbol, tf, self.builders[(symbol, tf)].add(mine), wall, count_late=False)
        log.info(
            "%s: resumed after agg id %s (%d stored ticks refed)",
            symbol,
            self.last_ids[symbol],
            len(ticks),
        )

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
        wall_ms: float,
        *,
        count_late: bool,
        clock_ms: float | None = None,
    ) -> None:
        if len(upd.closed):
            self._writes.append((self.store.write_bars, (tf, symbol, upd.closed)))
            self.recent[(symbol, tf)].extend(upd.closed)
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
        if (symbol, timeframe) not in self.recent:
            raise KeyError(f"no bars of {symbol} {timeframe} in this feed")
        return self.recent[(symbol, timeframe)].last(n)

    def recent_for(self, symbols: Iterable[str], timeframe: str) -> list[dict]:
        """Entries with the recent bars and current watermark of the given symbols (warm-up)."""
        out = []
        for s in symbols:
            if (s, timeframe) in self.recent:
                wm = self.builders[(s, timeframe)].watermark
                bars = self.recent[(s, timeframe)].last()
                out.append({"symbol": s, "wm": wm, "bars": bars, "advances": []})
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


def feed_row(s: FeedStats, late_ticks: int) -> dict:
    """One ``status()["feeds"]`` row (builtins only) from a client's stats and the late ticks,
    plus ``open_gaps`` (count), ``open_gap_list`` (``{"symbol", "first", "last", "why"}``,
    aggregate ids inclusive: trades REST could not refill), ``watchdog_recoveries``,
    ``connect_failures`` (failed connection attempts) and ``last_error`` (the latest one's text,
    "" when none)."""
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
    }


class FeedActor:
    """Ray actor body: one connection's FeedClient, its FeedCore, publishing to PairActors.

    ``config`` may be the Config or its ``to_dict()``. ``targets`` lists ``(pair actor, symbols
    it needs)``, the actor as a handle or as its name in ``namespace`` (looked up at the first
    publish, so a restart does not depend on handles passed by the driver). Everything runs in
    two threads of the actor: the client's event loop, which also takes each batch as it is
    cut, advances the clock and publishes, and the store writer; actor methods only read
    (under a lock).
    """

    def __init__(
        self,
        config: object,
        symbols: list[str],
        *,
        ws_url: str,
        rest_url: str,
        targets: list[tuple[object, list[str]]] = (),
        namespace: str | None = None,
        flush_interval_ms: int = 1000,
    ):
        config = as_config(config)
        self.symbols = list(symbols)
        self._namespace = namespace
        self._lock = threading.Lock()
        self.core = FeedCore(config, self.symbols, Store(config.store.path))
        resume = {s: i for s, i in self.core.last_ids.items() if i is not None}
        self.client = FeedClient(
            self.symbols,
            ws_url,
            rest_url,
            funding=config.feed.funding,
            watchdog_s=config.feed.watchdog_s,
            reconnect_after_s=config.feed.reconnect_after_h * 3600.0,
            resume_from=resume,
            on_batch=self._on_batch,
            **CLIENT_BATCHING,
        )
        self._asked_close = np.inf  # the clock time last asked of the client (cut_at_clock)
        # after a restart, hold the clock until the backfill has caught up (or watchdog_s)
        until = time.monotonic() + config.feed.watchdog_s
        self._catch_up = dict.fromkeys(resume, until)
        self._targets = [(h, set(syms) & set(self.symbols)) for h, syms in targets]
        self._in_flight: list[list] = [[] for _ in self._targets]
        self._stopping = threading.Event()
        self._closed = threading.Event()  # a bar close was published (the flusher's cue)
        self._client_thread = threading.Thread(target=self._run_client, daemon=True)
        self._flush_s = flush_interval_ms / 1000.0
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
        self._client_thread.start()
        self._flusher.start()

    def _run_client(self) -> None:
        try:
            asyncio.run(self.client.run())
        except Exception:
            log.exception("feed client of %s died; the actor restarts", self.symbols)
            os._exit(1)

    def _on_batch(self, batch: FeedBatch) -> None:
        """Each batch, in the client's event loop as it is cut."""
        try:
            self._cycle(batch)
        except Exception:
            log.exception("feed worker of %s died; the actor restarts", self.symbols)
            os._exit(1)

    def _cycle(self, batch: FeedBatch) -> None:
        # the clock is the batch's: what the client had received when it cut it (a client
        # that fell behind never closes bars on a later wall reading)
        for sym in batch.ticks:
            self._catch_up.pop(sym, None)
        held = self._held(time.monotonic())
        with self._lock:
            self.core.on_batches([batch], hold=held)
            entries = self.core.take_entries()
            due = self.core.next_close_ms([*batch.stats.pending_gaps, *held])
        if entries:
            self._publish(entries)
        # the next bar close: cut a batch when the clock gets there (not at the next periodic
        # cut); asked once per close, never for a time the clock has passed (a held symbol)
        if batch.clock_ms < due < np.inf and due != self._asked_close:
            if self._asked_close < due:  # the close asked for last time has been published
                self._closed.set()
            self._asked_close = due
            self.client.cut_at_clock(due)

    def _flush_loop(self) -> None:
        """Store writes in their own thread, so file I/O never delays bars and publishing; at
        most ``flush_s`` apart, and right after a bar close when one comes at least half of
        that after the last flush: the files are written while the next close is far."""
        try:
            last = time.monotonic()
            while not self._stopping.is_set():
                left = last + self._flush_s - time.monotonic()
                if left > 0 and self._closed.wait(left):
                    self._closed.clear()
                    if time.monotonic() - last < self._flush_s / 2:
                        continue
                with self._lock:
                    writes = self.core.take_writes()
                self.core.write(writes)
                last = time.monotonic()
        except Exception:
            log.exception("store writer of %s died; the actor restarts", self.symbols)
            os._exit(1)

    def _held(self, now_s: float) -> list[str]:
        """Symbols the feed resumed from the store for and that have not had their first batch
        yet (their bars must not close on the clock; holes being refilled are held by
        ``FeedCore.on_batches`` from the batch's own pending gaps)."""
        for sym in [s for s, deadline in self._catch_up.items() if now_s > deadline]:
            del self._catch_up[sym]
        return list(self._catch_up)

    def _publish(self, entries: list[dict]) -> None:
        import ray

        for k, (target, syms) in enumerate(self._targets):
            mine = [e for e in entries if e["symbol"] in syms]
            if not mine:
                continue
            handle = target
            if isinstance(target, str):
                handle = lookup_actor(target, self._namespace)
                if handle is None:
                    log.warning("pair actor %r not found: its bars are not published", target)
                    continue
                self._targets[k] = (handle, syms)
            pending = self._in_flight[k]
            pending.append(handle.on_bars.remote(packets.pack(mine)))
            if len(pending) > MAX_IN_FLIGHT:
                _, pending[:] = ray.wait(pending, num_returns=len(pending) - MAX_IN_FLIGHT)

    # -- actor methods ------------------------------------------------------------------------
    def stats(self) -> dict:
        """This connection's row of ``status()["feeds"]`` (plus a few extra keys)."""
        with self._lock:
            late = self.core.late_ticks
        return feed_row(self.client.stats, late)

    def recent_bars(self, symbol: str, timeframe: str, n: int) -> np.ndarray:
        with self._lock:
            return self.core.recent_bars(symbol, timeframe, n)

    def recent_for(self, symbols: list[str], timeframe: str) -> list[dict]:
        with self._lock:
            return self.core.recent_for(symbols, timeframe)

    def stop(self) -> dict:
        """Stop the client (its last batches are published as they are cut), flush the
        store."""
        self.client.stop()
        self._client_thread.join(10.0)
        self._stopping.set()
        self._closed.set()
        self._flusher.join(60.0)
        with self._lock:
            writes = self.core.take_writes()
        self.core.write(writes)
        import ray

        for pending in self._in_flight:
            ray.wait(pending, num_returns=len(pending), timeout=10.0)
        return self.stats()

    def ping(self) -> bool:
        return True
