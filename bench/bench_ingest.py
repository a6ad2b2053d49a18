"""Ingest throughput: aggTrade frames/s from a loopback websocket to the store, steady state.

A blaster in a child process plays the exchange at full speed: it answers the websocket
handshake itself and then writes pre-encoded combined aggTrade frames straight to the socket
(no per-frame work on the sending side, so the receiver is what is measured). The count of
frames per connection rides in the URL path (``/n<count>/market/stream?streams=...``); the
symbols come from ``streams=``. Trade times start a day ahead of the wall clock, so bars close
on later trades (as live) and never on the clock while the run lasts.

Receivers, each on one connection, in the same run:

- ``bare``: the websockets receive loop doing nothing with the frames (the ceiling).
- ``naive``: ``json.loads``, per-message checks, per-message Python bar dicts (1s/1m/5m), one
  Parquet file written per closed bar, ticks written once a second.
- ``ours``: the whole live pipeline: ``engine.feed.FeedClient`` (parse, strict validation, gap
  check; batches cut as the FeedActor cuts them, ``engine.ingest.CLIENT_BATCHING``) and the
  FeedActor's core (``engine.ingest.FeedCore``: ``BarBuilder`` 1s/1m/5m per
  symbol, Store writes batched and flushed once a second in a worker thread, as FeedActor does).

Every receiver first takes ``warm`` frames (connection set-up, first batches, JIT caches), then
the clock runs over the next ``n`` frames: figures are messages/s in steady state. The final
store flush after the last frame is outside the window (periodic flushes are inside it).
Scaling: 1 and 2 connections, each in its own process with the ``ours`` pipeline (what a
FeedActor per connection does on more cores), started together after a warm-up run;
aggregate msgs/s = all measured frames / (last end - first start).
Reported: ratio = peer_s / ours_s for the same frame count, and ours/bare.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import multiprocessing as mp
import re
import struct
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from websockets.asyncio.client import connect

from engine.config import parse_config
from engine.feed import FeedClient
from engine.ingest import CLIENT_BATCHING, FeedCore
from engine.store import Store
from tests.kit import random_ticks

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
           "LTCUSDT"]  # fmt: skip
PER_CONNECTION = 4
TIMEFRAMES = {"1s": 1_000, "1m": 60_000, "5m": 300_000}
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CLOSE = b"\x88\x02\x03\xe8"  # server close frame, code 1000


# -- the blaster ---------------------------------------------------------------------------------


def _ws_frame(text: bytes) -> bytes:
    """One unmasked server-to-client text frame."""
    n = len(text)
    if n < 126:
        return bytes((0x81, n)) + text
    if n < 65_536:
        return b"\x81\x7e" + struct.pack("!H", n) + text
    return b"\x81\x7f" + struct.pack("!Q", n) + text


def _symbol_frames(symbol: str, n: int, seed: int, start_ms: int) -> list[bytes]:
    out = []
    for t in random_ticks(n, seed=seed, first_id=1000, start_ms=start_ms, mean_gap_ms=2.0):
        d = {"e": "aggTrade", "E": int(t["ts"]) + 2, "s": symbol, "a": int(t["agg_id"]),
             "p": f"{t['price']:.2f}", "q": f"{t['qty']:.3f}", "f": int(t["first_id"]),
             "l": int(t["last_id"]), "T": int(t["ts"]), "m": bool(t["buyer_maker"])}  # fmt: skip
        body = {"stream": f"{symbol.lower()}@aggTrade", "data": d}
        out.append(_ws_frame(json.dumps(body, separators=(",", ":")).encode()))
    return out


async def _drain_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the client's masked frames until it closes; answer its close frame."""
    while True:
        head = await reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        await reader.readexactly(n + (4 if head[1] & 0x80 else 0))
        if head[0] & 0x0F == 0x8:
            writer.write(_CLOSE)
            await writer.drain()
            return


def _blaster(max_frames: int, port_q: mp.Queue) -> None:
    start_ms = int(time.time() * 1000) + 86_400_000  # a day ahead: bars never close on the clock
    per_symbol = -(-max_frames // PER_CONNECTION)
    frames = {s: _symbol_frames(s, per_symbol, k, start_ms) for k, s in enumerate(SYMBOLS)}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readuntil(b"\r\n\r\n")).decode()
            target = request.split(" ", 2)[1]
            key = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", request).group(1)
            accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                          ).encode())  # fmt: skip
            parts = urlsplit(target)
            count = int(re.search(r"/n(\d+)/", parts.path).group(1))
            streams = dict(parse_qsl(parts.query))["streams"].split("/")
            mine = [frames[s.split("@")[0].upper()] for s in streams]
            order = [mine[i % len(mine)][i // len(mine)] for i in range(count)]
            for i in range(0, count, 4096):
                writer.write(b"".join(order[i : i + 4096]))
                await writer.drain()
            await _drain_client(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port_q.put(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


# -- receivers: each returns (frames in the window, window start, window end), perf_counter s --


def _url(port: int, count: int, symbols: list[str]) -> str:
    streams = "/".join(f"{s.lower()}@aggTrade" for s in symbols)
    return f"ws://127.0.0.1:{port}/n{count}/market/stream?streams={streams}"


async def _bare(port: int, symbols: list[str], warm: int, n: int,
                _: Path) -> tuple[int, float, float]:  # fmt: skip
    async with connect(_url(port, warm + n, symbols), compression=None, proxy=None,
                       max_queue=None) as ws:  # fmt: skip
        for _ in range(warm):
            await ws.recv(decode=False)
        started = time.perf_counter()
        for _ in range(n):
            await ws.recv(decode=False)
        return n, started, time.perf_counter()


class _NaiveBars:
    """Per-message Python bar dicts; one Parquet file per closed bar."""

    def __init__(self, out: Path):
        self.out = out
        self.bars: dict[tuple[str, str], dict] = {}
        self.files = 0

    def add(self, sym: str, ts: int, price: float, qty: float) -> None:
        for tf, ms in TIMEFRAMES.items():
            start = ts - ts % ms
            bar = self.bars.get((sym, tf))
            if bar is not None and bar["ts"] != start:
                self.files += 1
                pq.write_table(pa.Table.from_pylist([bar]), self.out / f"bar-{self.files}.parquet")
                bar = None
            if bar is None:
                self.bars[(sym, tf)] = {"ts": start, "open": price, "high": price, "low": price,
                                        "close": price, "volume": qty, "quote_volume": price * qty,
                                        "trades": 1}  # fmt: skip
            else:
                bar["high"] = max(bar["high"], price)
                bar["low"] = min(bar["low"], price)
                bar["close"] = price
                bar["volume"] += qty
                bar["quote_volume"] += price * qty
                bar["trades"] += 1


async def _naive(port: int, symbols: list[str], warm: int, n: int,
                 out: Path) -> tuple[int, float, float]:  # fmt: skip
    last: dict[str, int] = {}
    rows: list[dict] = []
    bars = _NaiveBars(out)
    next_write = time.monotonic() + 1.0
    started = 0.0
    async with connect(_url(port, warm + n, symbols), compression=None, proxy=None,
                       max_queue=None) as ws:  # fmt: skip
        for k in range(warm + n):
            if k == warm:
                started = time.perf_counter()
            d = json.loads(await ws.recv())["data"]
            price, qty = float(d["p"]), float(d["q"])
            if d["s"] in symbols and price > 0 and qty > 0 and d["a"] > last.get(d["s"], -1):
                last[d["s"]] = d["a"]
                rows.append({"ts": d["T"], "agg_id": d["a"], "price": price, "qty": qty,
                             "first_id": d["f"], "last_id": d["l"],
                             "buyer_maker": d["m"]})  # fmt: skip
                bars.add(d["s"], d["T"], price, qty)
            if time.monotonic() >= next_write and rows:
                pq.write_table(pa.Table.from_pylist(rows), out / f"ticks-{k}.parquet")
                rows = []
                next_write = time.monotonic() + 1.0
        return n, started, time.perf_counter()


def _config(symbols: list[str], store: Path):
    return parse_config({
        "feed": {"source": "simulator", "funding": False},
        "symbols": symbols,
        "pairs": [{"y": symbols[1], "x": symbols[0]}],
        "timeframes": list(TIMEFRAMES),
        "store": {"path": str(store)},
    })  # fmt: skip


async def _ours(port: int, symbols: list[str], warm: int, n: int,
                out: Path) -> tuple[int, float, float]:  # fmt: skip
    """FeedClient + FeedCore (bars 1s/1m/5m, store writes flushed once a second in a thread)."""
    cfg = _config(symbols, out)
    core = FeedCore(symbols, Store(out), feed=cfg.feed, timeframe=cfg.analytics.timeframe,
                    timeframes=cfg.timeframes)  # fmt: skip
    total = warm + n
    marks: list[tuple[float, int]] = []
    writer: asyncio.Task | None = None
    next_flush = time.monotonic() + 1.0
    done = asyncio.Event()

    def on_batch(batch) -> None:
        nonlocal writer, next_flush
        core.on_batches([batch])
        core.take_entries()  # what a FeedActor publishes to its PairActors
        if time.monotonic() >= next_flush and (writer is None or writer.done()):
            writer = asyncio.ensure_future(asyncio.to_thread(core.write, core.take_writes()))
            next_flush = time.monotonic() + 1.0
        marks.append((time.perf_counter(), core.ticks))
        if core.ticks >= total:
            done.set()

    base = f"ws://127.0.0.1:{port}/n{total}/market"
    client = FeedClient(symbols, base, "http://127.0.0.1:1", funding=False, on_batch=on_batch,
                        **CLIENT_BATCHING)  # fmt: skip
    runner = asyncio.create_task(client.run())
    await done.wait()
    client.stop()
    await runner
    if writer is not None:
        await writer
    core.flush()
    t0, c0 = next((t, c) for t, c in marks if c >= warm)
    t1, c1 = marks[-1]
    return c1 - c0, t0, t1


def _measure(fn, port: int, symbols: list[str], warm: int, n: int) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        return asyncio.run(fn(port, symbols, warm, n, Path(tmp)))


def _ours_process(port: int, symbols: list[str], warm: int, n: int, barrier, out_q) -> None:
    _measure(_ours, port, symbols, warm, warm)  # warm this process up
    barrier.wait()
    out_q.put(_measure(_ours, port, symbols, warm, n))


def _scaling(ctx, port: int, k: int, warm: int, n: int) -> dict:
    barrier = ctx.Barrier(k)
    out_q = ctx.Queue()
    procs = [ctx.Process(target=_ours_process, daemon=True,
                         args=(port, SYMBOLS[i * PER_CONNECTION:(i + 1) * PER_CONNECTION],
                               warm, n, barrier, out_q)) for i in range(k)]  # fmt: skip
    for p in procs:
        p.start()
    results = [out_q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    frames = sum(r[0] for r in results)
    # perf_counter is the system-wide monotonic clock: the windows of all processes compare
    span = max(r[2] for r in results) - min(r[1] for r in results)
    per_conn = [r[0] / (r[2] - r[1]) for r in results]
    return {"case": f"ours, {k} connection(s) x 1 process each", "connections": k,
            "messages": frames, "aggregate_msg_per_s": frames / span,
            "per_connection_msg_per_s": per_conn}  # fmt: skip


def _seconds(window: tuple[int, float, float]) -> float:
    return window[2] - window[1]


def run(quick: bool) -> list[dict]:
    warm, n = (10_000, 80_000) if quick else (20_000, 300_000)
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    blaster = ctx.Process(target=_blaster, args=(warm + n, port_q), daemon=True)
    blaster.start()
    try:
        port = port_q.get(timeout=120)
        symbols = SYMBOLS[:PER_CONNECTION]
        _measure(_ours, port, symbols, warm, warm)  # imports, JIT caches, first Parquet writes
        got, t0, t1 = _measure(_ours, port, symbols, warm, n)
        ours_s = (t1 - t0) * n / got  # per n frames, as the peers (the window starts on a batch)
        bare_s = _seconds(_measure(_bare, port, symbols, warm, n))
        naive_s = _seconds(_measure(_naive, port, symbols, warm, n))
        scaling = [_scaling(ctx, port, k, warm, n) for k in (1, 2)]
    finally:
        blaster.terminate()
        blaster.join()
    common = {"messages": n, "ours_s": ours_s, "ours_msg_per_s": n / ours_s,
              "ours_over_bare": bare_s / ours_s}  # fmt: skip
    rows = [
        {"case": "ingest 1 connection", **common, "peer": "bare websockets recv loop (ceiling)",
         "peer_s": bare_s, "ratio": bare_s / ours_s, "peer_msg_per_s": n / bare_s},
        {"case": "ingest 1 connection", **common,
         "peer": "naive json.loads + bar dicts + a write per bar",
         "peer_s": naive_s, "ratio": naive_s / ours_s, "peer_msg_per_s": n / naive_s},
    ]  # fmt: skip
    one = scaling[0]["aggregate_msg_per_s"]
    for row in scaling:
        row["speedup_vs_1"] = row["aggregate_msg_per_s"] / one
    return rows + scaling
