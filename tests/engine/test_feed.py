"""FeedClient over real websockets on loopback: gaps, backfill, resume, switch-over, watchdog.

A scripted websocket server written here plays the exchange (each test says what every
connection sends); REST is the small loopback HTTP exchange of test_binance. End-to-end runs
against the real simulator are in test_feed_sim.py.
"""

from __future__ import annotations

import asyncio
import json
import socket

import numpy as np
import pytest
from websockets.asyncio.server import serve

from engine.errors import FeedError
from engine.feed import FeedClient, FeedThread
from engine.schemas import TICK_DTYPE
from tests.engine.test_binance import _Exchange, exchange  # noqa: F401 (fixture)

HISTORY = _Exchange.ticks  # the REST exchange's history (ids 100..2599)


def frame(t: np.void, symbol: str = "BTCUSDT", **over) -> str:
    d = {"e": "aggTrade", "E": int(t["ts"]) + 3, "s": symbol, "a": int(t["agg_id"]),
         "p": f"{t['price']:.2f}", "q": f"{t['qty']:.3f}", "f": int(t["first_id"]),
         "l": int(t["last_id"]), "T": int(t["ts"]), "m": bool(t["buyer_maker"])}  # fmt: skip
    d.update(over)
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": d})


def ids(lo: int, hi: int) -> list[int]:
    return list(range(lo, hi + 1))


class Script:
    """Per connection k, ``plans[k]`` is a list of frames (str) or ("sleep", s); after the last
    plan the connection stays open and silent. ``subscribes`` records control messages."""

    def __init__(self, plans: list[list]):
        self.plans = plans
        self.connections = 0
        self.controls: list[dict] = []
        self.paths: list[str] = []

    async def handler(self, ws) -> None:
        k = self.connections
        self.connections += 1
        self.paths.append(ws.request.path)
        reader = asyncio.create_task(self._controls(ws))
        for item in self.plans[k] if k < len(self.plans) else []:
            if isinstance(item, tuple) and item[0] == "sleep":
                await asyncio.sleep(item[1])
            elif item == "close":
                await ws.close()
                return
            else:
                await ws.send(item)
        await reader

    async def _controls(self, ws) -> None:
        async for msg in ws:
            body = json.loads(msg)
            self.controls.append(body)
            await ws.send(json.dumps({"result": None, "id": body["id"]}))


def by_id(lo_hi: list[int], symbol: str = "BTCUSDT", **over) -> list[str]:
    index = {int(t["agg_id"]): t for t in HISTORY}
    return [frame(index[i], symbol, **over) for i in lo_hi]


async def collect(script: Script, rest_url: str, until, *, timeout_s: float = 15.0, **kwargs):
    async with serve(script.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        batches = []
        client = FeedClient(kwargs.pop("symbols", ["BTCUSDT"]), f"ws://127.0.0.1:{port}/market",
                            rest_url, funding=False, batch_ms=20, backoff_s=(0.05, 0.2),
                            on_batch=batches.append, **kwargs)  # fmt: skip
        runner = asyncio.create_task(client.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not until(client, batches) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        client.stop()
        await runner
    return client, batches


def delivered(batches, symbol: str = "BTCUSDT") -> np.ndarray:
    parts = [b.ticks[symbol] for b in batches if symbol in b.ticks]
    return np.concatenate(parts) if parts else np.empty(0, TICK_DTYPE)


def assert_equals_history(got: np.ndarray, lo: int, hi: int) -> None:
    want = HISTORY[(HISTORY["agg_id"] >= lo) & (HISTORY["agg_id"] <= hi)]
    np.testing.assert_array_equal(got["agg_id"], want["agg_id"])
    np.testing.assert_array_equal(got["ts"], want["ts"])
    np.testing.assert_allclose(got["price"], np.round(want["price"], 2), rtol=1e-12)
    np.testing.assert_allclose(got["qty"], np.round(want["qty"], 3), rtol=1e-12)
    np.testing.assert_array_equal(got["buyer_maker"], want["buyer_maker"])


def reached(last: int, symbol: str = "BTCUSDT"):
    return lambda client, batches: client.stats.last_agg_id.get(symbol, -1) >= last


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaps_rejects_duplicates_and_reconnect(exchange, seed: int) -> None:  # noqa: F811
    _, rest_url = exchange
    rng = np.random.default_rng(seed)
    first = ids(100, 300)
    kept = [i for i in first if rng.random() > 0.1]  # drops
    frames = by_id(kept)
    corrupt = 0
    for j in rng.choice(len(frames), 8, replace=False):  # corrupt some: bad price
        frames[j] = frames[j].replace('"p": "', '"p": "-')
        corrupt += 1
    for j in rng.choice(len(frames) - 1, 5, replace=False):  # duplicates of earlier frames
        frames.insert(j + 1, frames[j])
    second = by_id(ids(330, 450))  # 301..329 lost across the reconnect
    script = Script([[*frames, ("sleep", 0.1), "close"], second])
    client, batches = asyncio.run(collect(script, rest_url, reached(450)))
    got = delivered(batches)
    assert_equals_history(got, 100, 450)
    s = client.stats
    assert s.ticks == len(got) and s.open_gaps == 0 and not s.pending_gaps
    assert s.reconnects == 1 and script.connections == 2
    assert s.rejected["bad_price"] == corrupt
    assert s.rejected["duplicate"] >= 5 - corrupt  # a duplicated corrupt frame stays bad_price
    assert s.gaps_backfilled >= 2
    assert script.paths[0] == "/market/stream?streams=btcusdt@aggTrade"


@pytest.mark.parametrize("resume", [99, 149, 300])
def test_resume_from_backfills_to_stream(exchange, resume: int) -> None:  # noqa: F811
    _, rest_url = exchange
    script = Script([by_id(ids(320, 400))])
    client, batches = asyncio.run(
        collect(script, rest_url, reached(400), resume_from={"BTCUSDT": resume})
    )
    assert_equals_history(delivered(batches), resume + 1, 400)
    assert client.stats.rejected["duplicate"] == 0


def test_gap_beyond_rest_history_is_an_open_gap(exchange) -> None:  # noqa: F811
    handler, rest_url = exchange
    handler.ticks = HISTORY[HISTORY["agg_id"] >= 250]  # REST only reaches back to id 250
    try:
        script = Script([by_id(ids(300, 350))])
        client, batches = asyncio.run(
            collect(script, rest_url, reached(350), resume_from={"BTCUSDT": 120})
        )
    finally:
        handler.ticks = HISTORY
    assert_equals_history(delivered(batches), 250, 350)
    s = client.stats
    assert s.open_gaps == 1
    gap = s.open_gap_list[0]
    assert (gap.symbol, gap.first, gap.last) == ("BTCUSDT", 121, 249)
    assert gap.why  # the status says why it stays open


def test_pending_gap_holds_later_trades(exchange) -> None:  # noqa: F811
    _, rest_url = exchange
    seen_pending = []

    def until(client, batches):
        seen_pending.append(client.pending_gap("BTCUSDT"))
        return client.stats.last_agg_id.get("BTCUSDT", -1) >= 260

    script = Script([[*by_id(ids(100, 200)), ("sleep", 0.3), *by_id(ids(240, 260))]])
    client, batches = asyncio.run(collect(script, rest_url, until))
    got = delivered(batches)
    assert_equals_history(got, 100, 260)
    assert all(np.all(np.diff(b.ticks["BTCUSDT"]["agg_id"]) == 1) for b in batches
               if "BTCUSDT" in b.ticks)  # fmt: skip
    assert not client.pending_gap("BTCUSDT")
    with pytest.raises(FeedError, match="not one of"):
        client.pending_gap("XRPUSDT")


def test_proactive_switch_loses_nothing(exchange) -> None:  # noqa: F811
    _, rest_url = exchange
    # every connection replays from a shared cursor: overlapping connections send the same ids
    cursor = {"i": 100}

    class Live(Script):
        async def handler(self, ws) -> None:
            self.connections += 1
            try:
                i = max(100, cursor["i"] - 5)  # a little overlap, as a fresh connection would see
                while i <= 600:
                    await ws.send(by_id([i])[0])
                    cursor["i"] = max(cursor["i"], i)
                    i += 1
                    await asyncio.sleep(0.004)
                await ws.wait_closed()
            except Exception:
                return

    script = Live([])
    client, batches = asyncio.run(
        collect(script, rest_url, reached(600), reconnect_after_s=0.6, timeout_s=20)
    )
    assert_equals_history(delivered(batches), 100, 600)
    assert client.stats.reconnects >= 1 and script.connections >= 2


def test_watchdog_resubscribes_silent_stream(exchange) -> None:  # noqa: F811
    _, rest_url = exchange

    class Silent(Script):
        async def handler(self, ws) -> None:
            self.connections += 1
            subscribed = asyncio.Event()

            async def controls():
                async for msg in ws:
                    body = json.loads(msg)
                    self.controls.append(body)
                    await ws.send(json.dumps({"result": None, "id": body["id"]}))
                    if body["method"] == "SUBSCRIBE":
                        subscribed.set()

            task = asyncio.create_task(controls())
            for i in range(100, 400):  # ETH flows; BTC only after it was subscribed again
                await ws.send(by_id([i], "ETHUSDT")[0])
                if subscribed.is_set():
                    await ws.send(by_id([i])[0])
                await asyncio.sleep(0.01)
            await task

    script = Silent([])
    client, batches = asyncio.run(collect(
        script, rest_url, reached(200), symbols=["BTCUSDT", "ETHUSDT"], watchdog_s=0.4))
    s = client.stats
    assert s.watchdog_recoveries >= 1
    methods = [c["method"] for c in script.controls]
    assert methods[:2] == ["UNSUBSCRIBE", "SUBSCRIBE"]
    assert script.controls[1]["params"] == ["btcusdt@aggTrade"]
    got = delivered(batches)
    assert got["agg_id"][-1] >= 200 and np.all(np.diff(got["agg_id"]) == 1)


def test_feed_thread_and_iterator(exchange) -> None:  # noqa: F811
    _, rest_url = exchange
    script = Script([by_id(ids(100, 180))])

    async def serve_and_iterate():
        async with serve(script.handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/market"
            client = FeedClient(["BTCUSDT"], url, rest_url, funding=False, batch_ms=10)
            runner = asyncio.create_task(client.run())
            got = []
            async for batch in client:
                got.append(batch.ticks.get("BTCUSDT"))
                if client.stats.last_agg_id.get("BTCUSDT") == 180:
                    client.stop()
            await runner
            return np.concatenate([g for g in got if g is not None])

    assert_equals_history(asyncio.run(serve_and_iterate()), 100, 180)


def test_bad_arguments() -> None:
    url = "ws://127.0.0.1:1/market"
    with pytest.raises(FeedError, match="duplicate symbols"):
        FeedClient(["BTCUSDT", "BTCUSDT"], url, "http://x")
    with pytest.raises(FeedError, match="watchdog_s"):
        FeedClient(["BTCUSDT"], url, "http://x", watchdog_s=0)
    with pytest.raises(FeedError, match="reconnect_after_s"):
        FeedClient(["BTCUSDT"], url, "http://x", reconnect_after_s=25 * 3600)
    with pytest.raises(FeedError, match="messages/s"):
        FeedClient(["BTCUSDT"], url, "http://x", control_interval_s=0.01)
    with pytest.raises(FeedError, match="backoff_s"):
        FeedClient(["BTCUSDT"], url, "http://x", backoff_s=(1.0, 0.5))
    with pytest.raises(FeedError, match="on_batch"):
        FeedThread(["BTCUSDT"], url, "http://x", on_batch=print)
    with pytest.raises(ValueError, match="int >= -1"):
        FeedClient(["BTCUSDT"], url, "http://x", resume_from={"BTCUSDT": "7"})


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once to pick it, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("symbols", [["BTCUSDT"], ["BTCUSDT", "ETHUSDT"]])
@pytest.mark.parametrize("funding", [False, True])
def test_unreachable_exchange_counts_failed_connects(symbols: list[str], funding: bool) -> None:
    port = _closed_port()

    async def run_until_failures(want: int):
        client = FeedClient(symbols, f"ws://127.0.0.1:{port}/market", f"http://127.0.0.1:{port}",
                            funding=funding, batch_ms=20, backoff_s=(0.01, 0.05))  # fmt: skip
        runner = asyncio.create_task(client.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15.0
        while client.stats.connect_failures < want and loop.time() < deadline:
            await asyncio.sleep(0.02)
        stats = client.stats
        client.stop()
        await runner
        return stats

    s = asyncio.run(run_until_failures(3))
    assert s.connect_failures >= 3
    assert not s.connected and s.reconnects == 0 and s.ticks == 0
    assert "ConnectionRefusedError" in s.last_error and str(port) in s.last_error
