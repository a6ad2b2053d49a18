"""Async websocket feed client: one combined-stream connection for many symbols.

``FeedClient`` connects to ``{ws_url}/stream?streams=...``, validates frames
(``engine.validate``), checks every symbol's aggregate ids for gaps and refills them over REST
before releasing later trades, so each symbol's ticks reach the consumer contiguous, in id order
and without duplicates. It reconnects with exponential back-off and jitter, switches to a fresh
connection before Binance's 24-hour limit (new one first, then the old one closes; ids dedupe
the overlap), and watches every stream: a stream silent for ``watchdog_s`` while others flow is
resubscribed, then the connection is replaced. Gaps REST cannot fill (older than its 48 h
history, or refused) are recorded as open gaps, counted in the stats, never hidden.

Health (``FeedStats.healthy``): a connected feed is healthy unless a symbol's ids went backwards
(``FeedStats.ids_behind``: the stream is far below the ids the store holds, see
``engine.validate``; its frames stay rejected, the store is never mixed, and the warning is
logged at once) or it is starved (``FeedStats.starved``: frames kept being rejected and no
trade was accepted for ``starved_s``).

Output is batches (``FeedBatch``) every ``batch_ms`` (or ``batch_frames`` frames), empty ones
too, handed to ``on_batch`` (a function or coroutine function) or, without it, read with
``async for batch in client``. With ``cut_gap_ms`` a batch is instead cut as soon as frames
have arrived (what was read by then, at least ``cut_gap_ms`` after the previous cut), and
``batch_ms`` is only the longest wait when nothing comes; ``cut_at_clock(ms)`` asks for a cut
as soon as the feed's clock reaches a time (a bar's end + lateness), so bars close on the clock
without waiting for the next periodic cut. ``FeedThread`` runs a client in its own thread and
event loop for synchronous owners such as Ray actors: ``start()``, then ``drain()`` now and
then, ``stop()``.

Times are Unix milliseconds unless named ``_s``.

The feed's clock (``FeedBatch.clock_ms``) is a clock of what has been received, not a later wall
reading: a batch is cut at wall time ``cut_ms`` and holds every frame read before the cut, and
its clock is ``cut_ms`` bounded by the exchange's own clock, the largest event time ``E`` read
so far, plus the wall time since the batch that carried it only when the client waited for this
cut (its loop polled the socket meanwhile: nothing had arrived unread); it never goes back.
Frames still unread (socket buffer, a consumer that fell behind) were sent later than every
frame read, so their event time is at least that bound: bars closed on this clock are not
reopened by trades already on their way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from engine import binance
from engine.errors import FeedError
from engine.schemas import TICK_DTYPE
from engine.validate import DecodedBatch, FrameValidator, MarkUpdate

log = logging.getLogger(__name__)

_EMPTY = np.empty(0, dtype=TICK_DTYPE)
#: default seconds of rejected frames without an accepted trade before a feed is starved: a
#: liquid symbol trades several times a second and a reconnect takes well under a second
STARVED_S = 5.0


@dataclass(frozen=True)
class OpenGap:
    """Aggregate ids ``first..last`` (inclusive) of ``symbol`` that could not be refilled."""

    symbol: str
    first: int
    last: int
    why: str


@dataclass(frozen=True)
class FeedStats:
    """Counters of one feed connection (a snapshot; ``ticks_per_s`` over the last 5 s).

    ``reconnects`` counts connections made after the first one; ``connect_failures`` counts
    connection attempts that failed (exchange unreachable, refused handshake), ``last_error``
    is the text of the latest such failure ("" when none failed yet). ``ids_behind`` maps a
    symbol whose stream ids fell far below the store's to (stream id, stored id);
    ``starved``: rejected frames arrived and no trade was accepted for the client's
    ``starved_s``. ``healthy`` is connected, nothing behind and not starved."""

    symbols: tuple[str, ...]
    connected: bool
    ticks: int
    ticks_per_s: float
    rejected: dict[str, int]
    gaps_backfilled: int
    backfilled_ticks: int
    open_gaps: int
    open_gap_list: tuple[OpenGap, ...]
    reconnects: int
    watchdog_recoveries: int
    rest_backoffs: int
    last_trade_ms: dict[str, int]
    last_agg_id: dict[str, int]
    pending_gaps: tuple[str, ...]
    connect_failures: int = 0
    last_error: str = ""
    ids_behind: dict[str, tuple[int, int]] = field(default_factory=dict)
    starved: bool = False

    @property
    def healthy(self) -> bool:
        """Connected, no symbol behind and trades accepted: what "up" means in status."""
        return self.connected and not self.ids_behind and not self.starved


@dataclass(frozen=True)
class FeedBatch:
    """Ticks released since the last batch (per symbol, TICK_DTYPE, contiguous ids), mark
    prices/funding, the stats at the moment the batch was cut, ``cut_ms`` (wall ms of the cut:
    every frame read before it is in this batch or an earlier one) and ``clock_ms`` (the feed's
    clock at the cut: ``cut_ms`` bounded by the exchange clock, see the module docstring; bars
    may close when it passes their end + lateness). ``stats.pending_gaps`` are the symbols
    whose bars must not close on the clock (a hole is being refilled)."""

    ticks: dict[str, np.ndarray]
    marks: list[MarkUpdate]
    stats: FeedStats
    cut_ms: float
    clock_ms: float


@dataclass
class _SymbolState:
    next_id: int | None  # next aggregate id to deliver; None until the first trade
    held: np.ndarray = field(default_factory=lambda: _EMPTY)  # ids > next_id, waiting
    skips: dict[int, int] = field(default_factory=dict)  # open gap first -> last
    backfill: asyncio.Task | None = None
    last_trade_ms: int = 0


@dataclass
class _StreamWatch:
    deadline: float  # monotonic s when the stream counts as silent
    stage: int = 0  # 0 quiet; 1 resubscribed; 2+ reconnected (back-off doubles)


class FeedClient:
    """Live aggTrade (+ markPrice) feed of ``symbols`` over one combined websocket connection.

    ``resume_from`` maps a symbol to the last aggregate id already stored: the client delivers
    from the next id on and backfills whatever lies between. ``rest`` may be given to share or
    configure a ``binance.RestClient``; otherwise one is made for ``rest_url``.
    ``starved_s``: seconds without an accepted trade, while frames are rejected, after which
    the feed is reported starved (not healthy).
    """

    def __init__(
        self,
        symbols: Iterable[str],
        ws_url: str,
        rest_url: str,
        *,
        funding: bool = True,
        watchdog_s: float = 10.0,
        reconnect_after_s: float = 23.5 * 3600,
        resume_from: Mapping[str, int] | None = None,
        on_batch: Callable[[FeedBatch], Any] | None = None,
        batch_ms: float = 50.0,
        batch_frames: int = 2000,
        cut_gap_ms: float | None = None,
        backoff_s: tuple[float, float] = (0.2, 30.0),
        control_interval_s: float = 0.15,
        rest: binance.RestClient | None = None,
        starved_s: float = STARVED_S,
    ):
        self.symbols = [str(s) for s in symbols]
        if len(set(self.symbols)) != len(self.symbols):
            raise FeedError(f"duplicate symbols in {self.symbols}")
        if not watchdog_s > 0:
            raise FeedError(f"watchdog_s must be > 0, got {watchdog_s}")
        if not 0 < reconnect_after_s <= binance.WS_MAX_LIFETIME_S:
            raise FeedError(
                f"reconnect_after_s must be in (0, {binance.WS_MAX_LIFETIME_S}], "
                f"got {reconnect_after_s}"
            )
        if batch_ms <= 0 or batch_frames < 1:
            raise FeedError(f"batch_ms must be > 0 and batch_frames >= 1, got {batch_ms}, "
                            f"{batch_frames}")  # fmt: skip
        if cut_gap_ms is not None and not 0 <= cut_gap_ms <= batch_ms:
            raise FeedError(f"cut_gap_ms must be in [0, batch_ms={batch_ms}], got {cut_gap_ms}")
        if not 0 < backoff_s[0] <= backoff_s[1]:
            raise FeedError(f"backoff_s must be (first, max) with 0 < first <= max: {backoff_s}")
        if control_interval_s < 1.0 / binance.WS_MAX_MESSAGES_PER_S:
            raise FeedError(
                f"control_interval_s {control_interval_s} would exceed Binance's "
                f"{binance.WS_MAX_MESSAGES_PER_S} messages/s"
            )
        if not starved_s > 0:
            raise FeedError(f"starved_s must be > 0, got {starved_s}")
        resume = dict(resume_from or {})
        self._validator = FrameValidator(self.symbols, resume)  # checks symbols and ids
        self.streams = [binance.agg_trade_stream(s) for s in self.symbols]
        if funding:
            self.streams += [binance.mark_price_stream(s) for s in self.symbols]
        self.url = binance.combined_stream_url(ws_url, self.streams)
        self.rest_url = rest_url
        self.watchdog_s = float(watchdog_s)
        self.reconnect_after_s = float(reconnect_after_s)
        self.batch_s = batch_ms / 1000.0
        self.batch_frames = batch_frames
        self.cut_gap_s = None if cut_gap_ms is None else cut_gap_ms / 1000.0
        self._cut_clock = math.inf  # cut once the clock reaches this (ms; see cut_at_clock)
        self._last_cut = 0.0  # monotonic s of the last cut
        self.backoff_s = backoff_s
        self.control_interval_s = control_interval_s
        self._on_batch = on_batch
        self._rest = rest
        self._own_rest = rest is None
        self._states = {
            s: _SymbolState(next_id=resume[s] + 1 if s in resume else None) for s in self.symbols
        }
        # counters
        self._connected = False
        self._ticks = 0
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._gaps_backfilled = 0
        self._backfilled_ticks = 0
        self._open_gaps: list[OpenGap] = []
        self._event_ms = -1  # largest exchange event time E read so far
        self._event_at_ms = 0.0  # cut_ms of the batch that carried it
        self._clock_ms = -math.inf  # the last batch's clock (it never goes back)
        self._reconnects = 0
        self._connect_failures = 0
        self._last_error = ""
        self._watchdog_recoveries = 0
        self.starved_s = float(starved_s)
        self._rejecting_since: float | None = None  # monotonic s: first reject after an accept
        self._starved_said = False
        # runtime (made in run())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._reconnect: asyncio.Event | None = None
        self._queue: asyncio.Queue[FeedBatch | None] | None = None
        self._inbox: list[bytes] = []
        self._backfilled: list[tuple[str, int, int, np.ndarray, str]] = []
        self._watch: dict[str, _StreamWatch] = {}
        self._conn: ClientConnection | None = None
        self._control_lock: asyncio.Lock | None = None
        self._control_last = 0.0
        self._control_id = 0
        self._stop_requested = False

    # ---------------------------------------------------------------- public API

    async def run(self) -> None:
        """Connect and deliver batches until ``stop()``."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._queue = asyncio.Queue(maxsize=1000)
        self._control_lock = asyncio.Lock()
        if self._stop_requested:
            self._stop.set()
        if self._rest is None:
            self._rest = binance.RestClient(self.rest_url)
        now = time.monotonic()
        self._watch = {s: _StreamWatch(now + self.watchdog_s) for s in self.streams}
        tasks = [
            asyncio.create_task(self._supervise(), name="feed-supervise"),
            asyncio.create_task(self._pump(), name="feed-pump"),
            asyncio.create_task(self._watchdog(), name="feed-watchdog"),
        ]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for st in self._states.values():
                if st.backfill is not None:
                    st.backfill.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    log.error("feed task %s failed", task.get_name(), exc_info=task.exception())
            self._connected = False
            if self._conn is not None:  # a clean close, not a socket left to time out
                closing = (websockets.WebSocketException, OSError, asyncio.TimeoutError)
                with contextlib.suppress(*closing):
                    await asyncio.wait_for(self._conn.close(), 2.0)
            if self._own_rest:
                await self._rest.aclose()  # kept for its counters; run() is run once
            await self._queue.put(None)

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe to call from any thread, before or during run)."""
        self._stop_requested = True
        if self._stop is not None:
            self._in_loop(self._stop.set)

    def cut_at_clock(self, clock_ms: float) -> None:
        """Cut a batch as soon as the feed's clock (``FeedBatch.clock_ms``) reaches ``clock_ms``
        (the earliest of the times asked for wins until it is reached). Safe from any thread."""
        self._in_loop(self._ask_cut, clock_ms)

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the client's event loop: now when called from it, else soon
        (from another thread); nothing when the loop has not started or is closed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _ask_cut(self, clock_ms: float) -> None:
        if clock_ms < self._cut_clock:
            self._cut_clock = float(clock_ms)
            self._wake.set()  # the pump recomputes its wait

    def __aiter__(self) -> AsyncIterator[FeedBatch]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[FeedBatch]:
        if self._on_batch is not None:
            raise FeedError("this FeedClient hands batches to on_batch; it cannot be iterated")
        while self._queue is None:
            await asyncio.sleep(0.01)
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            yield batch

    def pending_gap(self, symbol: str) -> bool:
        """True while ``symbol`` has a hole being refilled (bars must not close on the clock)."""
        st = self._states.get(symbol)
        if st is None:
            raise FeedError(f"{symbol!r} is not one of this feed's symbols {self.symbols}")
        return st.held.size > 0 or st.backfill is not None

    @property
    def stats(self) -> FeedStats:
        now = time.monotonic()
        while self._rate and now - self._rate[0][0] > 5.0:
            self._rate.popleft()
        span = now - self._rate[0][0] if len(self._rate) > 1 else 0.0
        rate = sum(n for _, n in list(self._rate)[1:]) / span if span > 0 else 0.0
        return FeedStats(
            symbols=tuple(self.symbols),
            connected=self._connected,
            ticks=self._ticks,
            ticks_per_s=rate,
            rejected=dict(self._validator.rejected),
            gaps_backfilled=self._gaps_backfilled,
            backfilled_ticks=self._backfilled_ticks,
            open_gaps=len(self._open_gaps),
            open_gap_list=tuple(self._open_gaps),
            reconnects=self._reconnects,
            watchdog_recoveries=self._watchdog_recoveries,
            rest_backoffs=self._rest.backoffs if self._rest is not None else 0,
            last_trade_ms={s: st.last_trade_ms for s, st in self._states.items()},
            last_agg_id={
                s: st.next_id - 1 for s, st in self._states.items() if st.next_id is not None
            },
            pending_gaps=tuple(s for s in self.symbols if self.pending_gap(s)),
            connect_failures=self._connect_failures,
            last_error=self._last_error,
            ids_behind=dict(self._validator.ids_behind),
            starved=self._starved(now),
        )

    def _starved(self, now: float) -> bool:
        """Rejected frames arrived and no trade was accepted for ``starved_s`` (monotonic s);
        said once per episode, the first time it is found (by a batch or a stats reading)."""
        since = self._rejecting_since
        starved = since is not None and now - since >= self.starved_s
        if starved and not self._starved_said:
            self._starved_said = True
            log.warning("no trade accepted for %.0f s although frames arrive: all rejected "
                        "(totals %s); the feed is not healthy", self.starved_s,
                        self._validator.rejected)  # fmt: skip
        return starved

    # ---------------------------------------------------------------- connections

    def _backoff(self, attempt: int) -> float:
        first, cap = self.backoff_s
        return min(cap, first * 2.0**attempt) * random.uniform(0.5, 1.0)

    async def _open(self) -> ClientConnection | None:
        """Connect, retrying with exponential back-off and jitter; None when stopping."""
        attempt = 0
        while not self._stop.is_set():
            try:
                return await connect(
                    self.url, compression=None, proxy=None, max_queue=None,
                    ping_interval=20.0, ping_timeout=60.0, open_timeout=10.0,
                    max_size=2**22,
                )  # fmt: skip
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake,
                    websockets.InvalidURI) as exc:  # fmt: skip
                self._connect_failures += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                delay = self._backoff(attempt)
                log.warning("connect %s failed (%r); retrying in %.2f s", self.url, exc, delay)
                attempt += 1
                await self._sleep(delay)
        return None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _supervise(self) -> None:
        attempt = 0
        ever_connected = False
        while not self._stop.is_set():
            conn = await self._open()
            if conn is None:
                return
            if ever_connected:
                self._reconnects += 1
            ever_connected = True
            self._set_current(conn)
            first = asyncio.Event()
            reader = asyncio.create_task(self._read(conn, first))
            while True:
                outcome = await self._wait_for_change(reader, self.reconnect_after_s)
                if outcome == "switch":  # proactive: open the new one first, then switch
                    new = await self._open()
                    if new is None:
                        break
                    new_first = asyncio.Event()
                    new_reader = asyncio.create_task(self._read(new, new_first))
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(new_first.wait(), 10.0)
                    self._reconnects += 1
                    self._set_current(new)
                    await conn.close()
                    await reader
                    conn, reader, first = new, new_reader, new_first
                    continue
                break
            if first.is_set():
                attempt = 0
            self._connected = False
            await conn.close()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if outcome == "closed" and not self._stop.is_set():
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("connection closed; reconnecting in %.2f s", delay)
                await self._sleep(delay)

    def _set_current(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._connected = True
        self._reconnect.clear()
        floor = time.monotonic() + self.watchdog_s
        for watch in self._watch.values():
            watch.deadline = max(watch.deadline, floor)

    async def _wait_for_change(self, reader: asyncio.Task, switch_after_s: float) -> str:
        """'closed' (reader ended), 'reconnect' (watchdog asked), 'switch' (age), 'stop'."""
        waiters = {
            asyncio.create_task(self._stop.wait()): "stop",
            asyncio.create_task(self._reconnect.wait()): "reconnect",
        }
        try:
            done, _ = await asyncio.wait(
                [reader, *waiters], timeout=switch_after_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in waiters:
                task.cancel()
        if reader in done:
            return "closed"
        for task in done:
            return waiters[task]
        return "switch"

    async def _read(self, conn: ClientConnection, first: asyncio.Event) -> None:
        # eager (cut_gap_s set): wake the pump on the first frame of a batch, which it cuts once
        # the frames read by then are in; else only when the inbox is full
        inbox_limit = 1 if self.cut_gap_s is not None else self.batch_frames
        recv, wake = conn.recv, self._wake
        try:
            frame = await recv(decode=False)
            self._inbox.append(frame)
            wake.set()
            first.set()
            while True:
                frame = await recv(decode=False)  # the pump swaps the inbox while we wait
                inbox = self._inbox
                inbox.append(frame)
                if len(inbox) == inbox_limit:
                    wake.set()
        except websockets.ConnectionClosed as exc:
            log.info("websocket closed: %s", exc)

    # ---------------------------------------------------------------- batches

    async def _pump(self) -> None:
        while True:
            waited = await self._until_cut()
            self._last_cut = time.monotonic()
            batch = self._process(waited)
            if batch.clock_ms >= self._cut_clock:
                self._cut_clock = math.inf
            if self._on_batch is not None:
                result = self._on_batch(batch)
                if inspect.isawaitable(result):
                    await result
            else:
                await self._queue.put(batch)

    async def _until_cut(self) -> bool:
        """Wait until the next batch is due: ``batch_s`` after the last cut; at once when a
        backfill finished or (periodic mode) the inbox filled up; ``cut_gap_s`` after the last
        cut when frames wait (eager mode); when the clock reaches ``_cut_clock``. True when it
        waited (the loop polled the socket meanwhile: the reader is caught up)."""
        wake = self._wake
        waited = False
        while True:
            now = time.monotonic()
            due = min(self._last_cut + self.batch_s, self._clock_due(now))
            woken = wake.is_set()
            wake.clear()
            if self._backfilled or (woken and self._inbox and self.cut_gap_s is None):
                due = now
            elif self._inbox and self.cut_gap_s is not None:
                due = min(due, self._last_cut + self.cut_gap_s)
            if due <= now:
                if waited or self._inbox or self._backfilled:
                    return waited
                # a timed cut (clock or idle tick) and the loop has not polled the socket since
                # the last one: poll first, briefly, or longer after a slow consumer (frames
                # may be on their way), so the clock can run on without passing unread frames
                slow = now - self._last_cut >= self.batch_s
                due = now + (min(self.batch_s, 0.02) if slow else 0.0002)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), due - now)
            waited = True

    def _clock_due(self, now: float) -> float:
        """Monotonic s at which the clock reaches ``_cut_clock`` (inf when none is asked): the
        clock is min(wall, E + wall - at), so the wall time is max(c, c - E + at)."""
        c = self._cut_clock
        if c == math.inf:
            return math.inf
        wall = c if self._event_ms < 0 else max(c, c - self._event_ms + self._event_at_ms)
        return now + (wall - time.time() * 1000.0) / 1000.0

    def _process(self, waited: bool) -> FeedBatch:
        """Cut a batch now. ``waited``: the pump waited for this cut, the loop polling the
        socket meanwhile, so the reader had taken everything that had arrived (see the clock
        in the module docstring)."""
        cut_ms = time.time() * 1000.0
        frames, self._inbox = self._inbox, []
        released: dict[str, list[np.ndarray]] = {}
        marks: list[MarkUpdate] = []
        if frames:
            decoded = self._validator.decode_frames(frames)
            if decoded.event_ms > self._event_ms:
                self._event_ms, self._event_at_ms = decoded.event_ms, cut_ms
            now = time.monotonic()
            for stream in decoded.streams:
                watch = self._watch.get(stream)
                if watch is not None:
                    watch.deadline = now + self.watchdog_s
                    watch.stage = 0
            for reply in decoded.controls:
                if reply.error is not None:
                    log.warning("control message %s refused: %s", reply.id, reply.error)
            self._watch_starving(decoded, now)
            marks = decoded.marks
            for sym, ticks in decoded.ticks.items():
                self._take(sym, ticks, released)
        backfilled, self._backfilled = self._backfilled, []
        for sym, first, last, ticks, why in backfilled:
            self._take_backfill(sym, first, last, ticks, why, released)
        clock_ms = cut_ms
        if self._event_ms >= 0:
            ahead = cut_ms - self._event_at_ms if waited else 0.0
            clock_ms = min(cut_ms, self._event_ms + ahead)
        clock_ms = self._clock_ms = max(clock_ms, self._clock_ms)
        out: dict[str, np.ndarray] = {}
        n = 0
        for sym, parts in released.items():
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts)
            out[sym] = arr
            n += len(arr)
            st = self._states[sym]
            st.last_trade_ms = max(st.last_trade_ms, int(arr["ts"].max()))
        if n:
            self._ticks += n
            self._rate.append((time.monotonic(), n))
        return FeedBatch(ticks=out, marks=marks, stats=self.stats, cut_ms=cut_ms,
                         clock_ms=clock_ms)  # fmt: skip

    def _watch_starving(self, decoded: DecodedBatch, now: float) -> None:
        """Note when frames began to be rejected without a trade accepted since; say it once
        when that has lasted ``starved_s``."""
        if decoded.n_ticks:
            self._rejecting_since = None
            self._starved_said = False
            return
        if decoded.rejects and self._rejecting_since is None:
            self._rejecting_since = now
        self._starved(now)

    def _take(self, sym: str, ticks: np.ndarray, released: dict[str, list[np.ndarray]]) -> None:
        st = self._states[sym]
        ids = ticks["agg_id"]
        if st.next_id is None:
            st.next_id = int(ids[0])
        if st.held.size == 0 and ids[0] == st.next_id and ids[-1] - ids[0] == len(ids) - 1:
            released.setdefault(sym, []).append(ticks)
            st.next_id = int(ids[-1]) + 1
            return
        st.held = np.concatenate((st.held, ticks)) if st.held.size else ticks
        self._release(sym, st, released)

    def _take_backfill(self, sym: str, first: int, last: int, ticks: np.ndarray, why: str,
                       released: dict[str, list[np.ndarray]]) -> None:  # fmt: skip
        st = self._states[sym]
        st.backfill = None
        got = ticks[(ticks["agg_id"] >= first) & (ticks["agg_id"] <= last)]
        if got.size:
            self._gaps_backfilled += 1
            self._backfilled_ticks += int(got.size)
        expected = np.arange(first, last + 1, dtype=np.int64)
        missing = expected[~np.isin(expected, got["agg_id"])]
        if missing.size:
            breaks = np.flatnonzero(np.diff(missing) != 1)
            starts = np.concatenate(([missing[0]], missing[breaks + 1]))
            ends = np.concatenate((missing[breaks], [missing[-1]]))
            for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
                gap = OpenGap(sym, lo, hi, why or "REST returned no trades for these ids")
                log.error("open gap %s", gap)
                self._open_gaps.append(gap)
                st.skips[lo] = hi
        if got.size:
            merged = np.concatenate((st.held, got))
            st.held = merged[np.argsort(merged["agg_id"], kind="stable")]
        self._release(sym, st, released)

    def _release(self, sym: str, st: _SymbolState, released: dict[str, list[np.ndarray]]) -> None:
        """Move the contiguous run from ``next_id`` out of ``held``; start a backfill if a hole
        is left."""
        while st.held.size:
            ids = st.held["agg_id"]
            if ids[0] != st.next_id:
                skip_to = st.skips.pop(st.next_id, None)
                if skip_to is not None:
                    st.next_id = skip_to + 1
                    continue
                if ids[0] < st.next_id:  # already delivered (REST overlap): drop
                    st.held = st.held[ids >= st.next_id]
                    continue
                break
            breaks = np.flatnonzero(np.diff(ids) != 1)
            run = int(breaks[0]) + 1 if breaks.size else len(ids)
            released.setdefault(sym, []).append(st.held[:run])
            st.next_id = int(ids[run - 1]) + 1
            st.held = st.held[run:]
        if st.held.size and st.backfill is None:
            first, last = st.next_id, int(st.held["agg_id"][0]) - 1
            st.backfill = asyncio.create_task(self._backfill(sym, first, last))

    async def _backfill(self, sym: str, first: int, last: int) -> None:
        attempt = 0
        why = ""
        ticks = _EMPTY
        while not self._stop.is_set():
            try:
                ticks = await self._rest.fetch_agg_trades_range(sym, first, last)
                break
            except FeedError as exc:  # BinanceError (an HTTP answer) or a transport failure
                status = getattr(exc, "status", None)
                if status is not None and status not in (418, 429) and status < 500:
                    why = str(exc)  # refused for good (e.g. history out of reach)
                    break
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("backfill %s %d..%d failed (%s); retry in %.2f s",
                            sym, first, last, exc, delay)  # fmt: skip
                await self._sleep(delay)
        self._backfilled.append((sym, first, last, ticks, why))
        self._wake.set()

    # ---------------------------------------------------------------- watchdog

    async def _watchdog(self) -> None:
        period = min(1.0, self.watchdog_s / 4)
        while True:
            await asyncio.sleep(period)
            if not self._connected:
                continue
            now = time.monotonic()
            silent = [s for s, w in self._watch.items() if now >= w.deadline]
            if not silent or len(silent) == len(self._watch):
                continue  # nothing silent, or everything silent (the reader handles that)
            for stream in silent:
                watch = self._watch[stream]
                self._watchdog_recoveries += 1
                watch.stage += 1  # 1: resubscribed; 2: reconnected; 3+: resubscribed again
                if watch.stage == 2:
                    log.warning("%s still silent after resubscribe: reconnecting", stream)
                    watch.deadline = now + 2 * self.watchdog_s
                    self._reconnect.set()
                    continue
                watch.deadline = now + self.watchdog_s * 2.0 ** max(0, watch.stage - 2)
                log.warning("%s silent for %.1f s while others flow: resubscribing",
                            stream, self.watchdog_s)  # fmt: skip
                await self._resubscribe(stream)

    async def _resubscribe(self, stream: str) -> None:
        conn = self._conn
        if conn is None:
            return
        for method in ("UNSUBSCRIBE", "SUBSCRIBE"):
            async with self._control_lock:
                wait = self._control_last + self.control_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._control_id += 1
                try:
                    await conn.send(binance.control_message(method, [stream], self._control_id),
                                    text=True)  # fmt: skip
                except websockets.ConnectionClosed:
                    return
                self._control_last = time.monotonic()


class FeedThread:
    """Runs a ``FeedClient`` in its own thread and event loop, for synchronous owners.

    Takes the same arguments as ``FeedClient`` (except ``on_batch``). ``drain()`` returns the
    batches received since the last call (a Ray actor calls it from a method); ``stats`` and
    ``pending_gap`` read the client's counters.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        if "on_batch" in kwargs:
            raise FeedError("FeedThread collects batches itself; do not pass on_batch")
        self._batches: collections.deque[FeedBatch] = collections.deque()
        self.client = FeedClient(*args, on_batch=self._batches.append, **kwargs)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise FeedError("FeedThread already started")
        self._thread = threading.Thread(target=self._main, name="feed-thread", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self.client.run())
        except BaseException as exc:  # handed to the owner by stop()
            self._error = exc

    def drain(self) -> list[FeedBatch]:
        """Batches received since the last call, oldest first."""
        out = []
        while self._batches:
            out.append(self._batches.popleft())
        return out

    @property
    def stats(self) -> FeedStats:
        return self.client.stats

    def pending_gap(self, symbol: str) -> bool:
        return self.client.pending_gap(symbol)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the client and join its thread; re-raises what the client died of, if anything."""
        self.client.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise FeedError(f"feed thread did not stop within {timeout_s} s")
        if self._error is not None:
            raise FeedError(f"feed thread failed: {self._error!r}") from self._error


__all__ = ["FeedBatch", "FeedClient", "FeedStats", "FeedThread", "OpenGap"]
