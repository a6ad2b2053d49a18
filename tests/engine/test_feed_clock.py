"""The feed's clock is a clock of what has been received: a slow consumer closes no bar early.

A websocket server written here plays a busy exchange: trades of two symbols stamped with the
wall time they are sent (``T`` = ``E`` = now, as on Binance within its 100 ms push), every
couple of milliseconds. The consumer is deliberately slow: it blocks the client's event loop
for ``slow_s`` on every batch, so frames pile up in the socket while it works (what a worker
or a GIL-starved client loop does on a busy 2-core machine). A ``FeedCore`` fed through
``on_batches`` (the batch's own clock, as the FeedActor does) must see no late tick and store
the bars an offline rebuild makes; a control core on the same ticks, advanced with a wall
reading taken after the slow work (what the FeedActor did before), does see late ticks, which
shows the run exercises the problem.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time

import numpy as np
import pytest
from websockets.asyncio.server import serve

from engine.bars import build_bar_records
from engine.config import parse_config
from engine.feed import FeedClient
from engine.ingest import FeedCore
from engine.schemas import table_to_bars, table_to_ticks
from engine.store import Store

SYMS = ["ETHUSDT", "BTCUSDT"]


def make_core(cfg, store: Store) -> FeedCore:
    return FeedCore(SYMS, store, feed=cfg.feed, timeframe=cfg.analytics.timeframe,
                    timeframes=cfg.timeframes)  # fmt: skip


def core_config(path, lateness_ms: int):
    return parse_config({
        "feed": {"source": "simulator", "lateness_ms": lateness_ms, "funding": False},
        "symbols": SYMS,
        "timeframes": ["1s"],
        "pairs": [{"y": SYMS[0], "x": SYMS[1]}],
        "store": {"path": str(path)},
    })  # fmt: skip


async def busy_exchange(ws, run_s: float, every_s: float) -> None:
    """Both symbols trade every ``every_s`` for ``run_s``; T = E = wall ms at sending."""
    next_id = dict.fromkeys(SYMS, 1)
    end = time.monotonic() + run_s
    while time.monotonic() < end:
        now = int(time.time() * 1000)
        for k, sym in enumerate(SYMS):
            d = {"e": "aggTrade", "E": now, "s": sym, "a": next_id[sym], "p": f"{100 + k}.5",
                 "q": "0.010", "f": next_id[sym], "l": next_id[sym], "T": now, "m": False}
            next_id[sym] += 1
            await ws.send(json.dumps({"stream": f"{sym.lower()}@aggTrade", "data": d}))
        await asyncio.sleep(every_s)
    await ws.wait_closed()  # stay open and silent


class ExchangeThread:
    """``busy_exchange`` served from its own thread and event loop (a consumer that blocks the
    client's loop must not stop the exchange)."""

    def __init__(self, run_s: float, every_s: float):
        self.run_s, self.every_s = run_s, every_s
        self.port: int | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        handler = lambda ws: busy_exchange(ws, self.run_s, self.every_s)  # noqa: E731
        async with serve(handler, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ExchangeThread:
        self._thread.start()
        assert self._ready.wait(10.0)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10.0)


async def consume(port: int, on_batch, wait_s: float, **batching) -> None:
    batching = batching or {"batch_ms": 20}
    client = FeedClient(SYMS, f"ws://127.0.0.1:{port}/market", "http://127.0.0.1:1",
                        funding=False, on_batch=on_batch, **batching)  # fmt: skip
    runner = asyncio.create_task(client.run())
    await asyncio.sleep(wait_s)
    client.stop()
    await runner


async def slow_run(
    ours: FeedCore, wall: FeedCore, slow_s: float, lateness_ms: int, run_s: float, **batching
) -> list:
    batches = []

    def on_batch(batch) -> None:
        batches.append(batch)
        ours.on_batches([batch])
        for sym, ticks in batch.ticks.items():
            wall.on_ticks(sym, ticks, batch.cut_ms)
        if batch.ticks:
            # the slow consumer: the loop is blocked, frames pile up. The block always spans
            # the next 1s bar boundary plus the lateness, so frames sent meanwhile belong to a
            # bar that a wall reading taken afterwards closes: the control below is certain
            now = time.time()
            time.sleep(max(slow_s, math.floor(now) + 1.0 + lateness_ms / 1000.0 + 0.05 - now))
        wall.advance(time.time() * 1000.0)  # the old way: a wall reading after the work

    with ExchangeThread(run_s, 0.002) as exchange:
        await consume(exchange.port, on_batch, run_s + 1.5, **batching)
    return batches


EAGER = {"batch_ms": 100, "cut_gap_ms": 1}  # what a FeedActor uses (engine.ingest.CLIENT_BATCHING)


@pytest.mark.parametrize(
    ("slow_s", "lateness_ms", "batching"),
    [(0.3, 50, {}), (0.6, 250, {}), (0.45, 0, {}), (0.3, 50, EAGER), (0.45, 0, EAGER)],
)
def test_slow_consumer_closes_no_bar_early(tmp_path, slow_s, lateness_ms, batching):
    cfg = core_config(tmp_path / "ours", lateness_ms)
    ours = make_core(cfg, Store(tmp_path / "ours", durable=False))
    wall_cfg = core_config(tmp_path / "wall", lateness_ms)
    wall = make_core(wall_cfg, Store(tmp_path / "wall", durable=False))
    batches = asyncio.run(slow_run(ours, wall, slow_s, lateness_ms, run_s=3.0, **batching))

    # the clock never runs ahead of what was received: every later tick is at or after it
    clocks = np.array([b.clock_ms for b in batches])
    assert np.all(clocks <= np.array([b.cut_ms for b in batches]))
    assert np.all(np.diff(clocks) >= 0)
    first_after = np.full(len(batches), np.inf)
    seen = np.inf
    for i in range(len(batches) - 1, -1, -1):
        first_after[i] = seen
        for t in batches[i].ticks.values():
            seen = min(seen, float(t["ts"].min()))
    assert np.all(first_after >= clocks)

    assert ours.late_ticks == 0
    assert wall.late_ticks > 0  # control: a wall reading after slow work closes bars early
    ours.advance(clocks[-1] + 5_000 + lateness_ms)
    ours.flush()
    store = Store(tmp_path / "ours")
    for s in SYMS:
        t = table_to_ticks(store.read_ticks(s))
        assert len(t) > 100 and np.all(np.diff(t["agg_id"]) == 1)
        want = build_bar_records(t["ts"], t["price"], t["qty"], "1s")
        np.testing.assert_array_equal(table_to_bars(store.read_bars("1s", s)), want)


def test_quiet_market_clock_moves_on_empty_batches(tmp_path):
    """No trades: the client still cuts (empty) batches, so bars close on the clock."""
    cfg = core_config(tmp_path, 100)
    core = make_core(cfg, Store(tmp_path, durable=False))

    got = []

    def on_batch(batch):
        got.append(batch)
        core.on_batches([batch])

    with ExchangeThread(0.3, 0.01) as exchange:
        asyncio.run(consume(exchange.port, on_batch, 2.0))
    last_tick = max(float(t["ts"].max()) for b in got for t in b.ticks.values())
    assert sum(1 for b in got if not b.ticks) > 20
    assert got[-1].clock_ms > last_tick + 1000 + 100  # kept moving while quiet
    for s in SYMS:
        closed = core.recent_bars(s, "1s", 100)
        assert closed["ts"][-1] + 1000 > last_tick  # the last bar closed on the clock


def test_eager_batches_are_cut_as_frames_arrive():
    """With ``cut_gap_ms`` a trade reaches the consumer within milliseconds of its sending,
    not at the next periodic cut (``batch_ms`` = 300 here)."""
    delays = []

    def on_batch(batch):
        for t in batch.ticks.values():  # T = E = wall ms at sending (same machine)
            delays.extend((batch.cut_ms - t["ts"]).tolist())

    with ExchangeThread(1.0, 0.05) as exchange:
        asyncio.run(consume(exchange.port, on_batch, 1.5, batch_ms=300, cut_gap_ms=1))
    assert len(delays) > 20
    assert np.median(delays) < 20  # periodic cuts every 300 ms would give ~150


def test_cut_at_clock_cuts_when_the_clock_gets_there():
    """A quiet feed with a long idle period still cuts a batch as soon as its clock reaches a
    time asked for with ``cut_at_clock``, once per time asked."""
    got: list = []
    targets: list[float] = []

    async def run(port: int) -> None:
        client = FeedClient(SYMS, f"ws://127.0.0.1:{port}/market", "http://127.0.0.1:1",
                            funding=False, batch_ms=1000, cut_gap_ms=1,
                            on_batch=got.append)  # fmt: skip
        runner = asyncio.create_task(client.run())
        await asyncio.sleep(0.8)  # trades for 0.3 s, then silence
        for _ in range(3):
            targets.append(time.time() * 1000.0 + 120.0)
            client.cut_at_clock(targets[-1])
            await asyncio.sleep(0.3)
        client.stop()
        await runner

    with ExchangeThread(0.3, 0.01) as exchange:
        asyncio.run(run(exchange.port))
    for target in targets:
        first = next(b for b in got if b.clock_ms >= target)
        assert first.cut_ms - target < 30  # the idle cut would come up to 1 s later
    quiet = [b for b in got if b.cut_ms > targets[0] - 100]
    assert len(quiet) <= len(targets) + 2  # one cut per time asked (and the idle ticks)
