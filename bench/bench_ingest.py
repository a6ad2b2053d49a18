"""Ingest throughput: frames/s through parse + validate + gap check on one loopback connection.

A blaster in a child process serves pre-encoded combined aggTrade frames as fast as it can
(one connection, N frames, then close). Three receivers, each timed from connect to the last
frame handled: ``bare`` (websockets receive loop that does nothing: the ceiling), ``naive``
(json.loads, a Python dict per message, per-message checks and appends) and ``ours``
(``engine.feed.FeedClient``: msgspec decode, strict validation, gap check, batches).
Reported: ratio = peer_s / ours_s, and ours/bare.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from engine.feed import FeedClient
from tests.kit import random_ticks

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]


def _frames(n: int) -> list[str]:
    out = []
    per = n // len(SYMBOLS)
    for k, sym in enumerate(SYMBOLS):
        for t in random_ticks(per, seed=k, first_id=1000):
            d = {
                "e": "aggTrade", "E": int(t["ts"]) + 2, "s": sym, "a": int(t["agg_id"]),
                "p": f"{t['price']:.2f}", "q": f"{t['qty']:.3f}", "f": int(t["first_id"]),
                "l": int(t["last_id"]), "T": int(t["ts"]), "m": bool(t["buyer_maker"])}
            out.append(json.dumps({"stream": f"{sym.lower()}@aggTrade", "data": d},
                                  separators=(",", ":")))  # fmt: skip
    # interleave symbols as a live stream would
    return [out[i * per + j] for j in range(per) for i in range(len(SYMBOLS))]


def _blaster(n: int, port_q: mp.Queue) -> None:
    frames = _frames(n)

    async def handler(ws) -> None:
        for f in frames:
            await ws.send(f)
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port_q.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


async def _bare(url: str, n: int) -> None:
    async with connect(url, compression=None, proxy=None, max_queue=None) as ws:
        for _ in range(n):
            await ws.recv(decode=False)


async def _naive(url: str, n: int) -> None:
    last: dict[str, int] = {}
    rows: dict[str, list] = {}
    async with connect(url, compression=None, proxy=None, max_queue=None) as ws:
        for _ in range(n):
            msg = json.loads(await ws.recv())
            d = msg["data"]
            price, qty = float(d["p"]), float(d["q"])
            if price > 0 and qty > 0 and d["a"] > last.get(d["s"], -1):
                last[d["s"]] = d["a"]
                rows.setdefault(d["s"], []).append(
                    {"ts": d["T"], "agg_id": d["a"], "price": price, "qty": qty,
                     "first_id": d["f"], "last_id": d["l"], "buyer_maker": d["m"]})  # fmt: skip


async def _ours(base: str, n: int) -> None:
    done = asyncio.Event()
    client: FeedClient | None = None

    def on_batch(batch) -> None:
        if client.stats.ticks >= n:
            done.set()

    client = FeedClient(SYMBOLS, base, "http://127.0.0.1:1", funding=False, on_batch=on_batch)
    runner = asyncio.create_task(client.run())
    await done.wait()
    client.stop()
    await runner


def _time(coro_fn, url: str, n: int) -> float:
    started = time.perf_counter()
    asyncio.run(coro_fn(url, n))
    return time.perf_counter() - started


def run(quick: bool) -> list[dict]:
    n = 20_000 if quick else 200_000
    n -= n % len(SYMBOLS)
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    proc = ctx.Process(target=_blaster, args=(n, port_q), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=120)
        base = f"ws://127.0.0.1:{port}/market"
        url = base + "/stream?streams=" + "/".join(f"{s.lower()}@aggTrade" for s in SYMBOLS)
        _time(_bare, url, min(n, 2000))  # warm-up
        bare_s = _time(_bare, url, n)
        naive_s = _time(_naive, url, n)
        ours_s = _time(_ours, base, n)
    finally:
        proc.terminate()
        proc.join()
    common = {"messages": n, "ours_s": ours_s, "ours_msg_per_s": n / ours_s}
    return [
        {"case": "ingest", **common, "peer": "bare websockets recv loop (ceiling)",
         "peer_s": bare_s, "ratio": bare_s / ours_s, "peer_msg_per_s": n / bare_s},
        {"case": "ingest", **common, "peer": "naive json.loads + dict per message",
         "peer_s": naive_s, "ratio": naive_s / ours_s, "peer_msg_per_s": n / naive_s},
    ]  # fmt: skip
