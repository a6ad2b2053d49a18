"""FeedActor: the Ray shell around one websocket connection's ``engine.ingest.FeedCore``.

``FeedActor`` runs a ``FeedClient`` on an asyncio loop in its own thread and feeds the core in
that loop as each batch is cut (no hand-off to another thread), sending each PairActor one
``engine.packets.BarPacket`` per batch (``actors.publisher``: by the PairActor's bar lane, a
direct socket, once it is open, else by actor call).

It writes the store from a second thread, right after bar closes and at least once a second,
so file I/O never delays bars or publishing. Before going live it warms its symbols up
(``engine.warmup``: the window of ``analytics.warmup_bars`` from the store, REST for the rest);
its first publish repeats that window, so the pairs step it before their first live bar.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import numpy as np

from actors.args import as_config
from actors.gil import hand_over_quickly
from actors.publisher import Publisher
from engine.feed import FeedBatch, FeedClient
from engine.ingest import CLIENT_BATCHING, FeedCore, feed_row
from engine.store import Store
from engine.warmup import warm_up

log = logging.getLogger(__name__)

#: seconds between two compactions of the store's part files (FeedCore.compact)
COMPACT_EVERY_S = 60.0


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
        hand_over_quickly()  # bar closes wait for no writer thread (actors.gil)
        self.symbols = list(symbols)
        self._lock = threading.Lock()
        store = Store(config.store.path)
        n_warm = config.analytics.warmup_bar_count
        # history before going live: the first publish repeats the window to the PairActors
        warm = warm_up(self.symbols, store, rest_url, config.analytics.timeframe, n_warm,
                       lateness_ms=config.feed.lateness_ms)  # fmt: skip
        self.warm = {s: bool(s in warm and warm[s].full) for s in self.symbols}
        self.core = FeedCore(
            self.symbols,
            store,
            feed=config.feed,
            timeframe=config.analytics.timeframe,
            timeframes=config.timeframes,
            repeat_bars=n_warm,
        )
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
        self._publisher = Publisher(targets, self.symbols, namespace)
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
            self._publisher.publish(entries)
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
            last = compacted = time.monotonic()
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
                if last - compacted >= COMPACT_EVERY_S:
                    self.core.compact()
                    compacted = time.monotonic()
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

    # -- actor methods ------------------------------------------------------------------------
    def stats(self) -> dict:
        """This connection's row of ``status()["feeds"]`` (plus a few extra keys)."""
        with self._lock:
            late = self.core.late_ticks
        return feed_row(self.client.stats, late, self.warm)

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
        self._publisher.close(wait_s=10.0)
        return self.stats()

    def ping(self) -> bool:
        return True
