"""Exchange simulator throughput: history generation and live websocket fan-out.

Cases:
- ``generate``: ``Market.trades`` over a span for every symbol (trades/s made; the numba
  kernels loaded first, about 0.15 s once per process), beside a peer
  that makes the same kind of trades (Poisson arrivals, AR(1) spread, tick rounding) with a
  plain-Python loop per step and per trade, as a straightforward simulator would.
- ``klines``: Binance 1m kline rows of a market's past (symbols x days at 5 trades/s) from a
  fresh market: every trade drawn, bars made by day straight from the draws, nothing cached
  beforehand (the numba kernels loaded first, on another market). Figures: seconds,
  klines/s and trades/s. No peer.
- ``fanout``: a live simulator on loopback pushing ``rate`` trades/s for each of ``symbols``
  to ``clients`` websocket clients in the same process; figures: frames delivered per second
  (the offered rate is a long-run mean: bursts make short windows vary)
  and process CPU seconds per 1000 frames (server and clients together). No peer.
"""

from __future__ import annotations

import asyncio
import math
import random
import time

from websockets.asyncio.client import connect

from engine.config import SimulatorConfig
from engine.simulator import Market, Simulator
from engine.simulator.klines import klines

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
T0 = 1_699_999_200_000  # on the hour


def _peer_generate(n_steps: int, rate: float, step_ms: int, seed: int) -> int:
    """Plain-Python model of a pair: leader random walk, follower AR(1) spread, trades."""
    rnd = random.Random(seed)
    phi = 0.5 ** (step_ms / 1000.0 / 60.0)
    lead, spread, trades = math.log(97_000.0), 0.0, []
    lam = rate * step_ms / 1000.0
    for step in range(n_steps):
        lead += rnd.gauss(0.0, 1.4e-4 * math.sqrt(step_ms / 1000.0))
        spread = phi * spread + rnd.gauss(0.0, 0.0015 * math.sqrt(1 - phi * phi))
        for log_price, tick in ((lead, 0.1), (0.9 * lead + 0.5 + spread, 0.01)):
            # Poisson count by inversion
            k, p, u = 0, math.exp(-lam), rnd.random()
            cdf = p
            while u > cdf:
                k += 1
                p *= lam / k
                cdf += p
            for _ in range(k):
                ts = T0 + step * step_ms + int(rnd.random() * step_ms) + 1
                price = round(math.floor(math.exp(log_price) / tick) * tick, 2)
                qty = max(round(2000.0 * math.exp(1.2 * rnd.gauss(0, 1)) / price, 3), 0.001)
                trades.append((ts, price, qty, rnd.random() < 0.5))
    return len(trades)


def _generate_rows(quick: bool) -> list[dict]:
    span_s = 3600 if quick else 4 * 3600  # whole hours: the market generates by UTC hour
    rate = 20.0
    Market(SYMBOLS[:1], seed=0, rate=rate).trades(SYMBOLS[0], T0, T0 + 10_000)  # load kernels
    started = time.perf_counter()
    market = Market(SYMBOLS, seed=1, rate=rate)
    made = [market.trades(s, T0, T0 + span_s * 1000) for s in SYMBOLS]
    ours = time.perf_counter() - started
    n_ours = sum(len(t) for t in made)
    started = time.perf_counter()
    n_peer = 2 * _peer_generate(span_s * 10, rate, 100, 1)  # two pairs = four symbols
    peer = time.perf_counter() - started
    return [
        {
            "case": f"generate {len(SYMBOLS)} symbols x {span_s} s at {rate:g}/s",
            "ours_s": ours,
            "peer": "plain-Python loop",
            "peer_s": peer,
            "ratio": peer / ours,
            "trades": n_ours,
            "peer_trades": n_peer,
            "trades_per_s": n_ours / ours,
        }
    ]


def _klines_row(symbols: int, days: int) -> dict:
    names = tuple(f"S{i:03d}USDT" for i in range(symbols))
    day_ms = 86_400_000
    start = T0 // day_ms * day_ms
    warm = Market(names[:1], seed=4, rate=5.0)
    klines(warm, names[0], 60_000, start, start + day_ms - 60_000, start, start + day_ms)
    market = Market(names, seed=3, rate=5.0)
    started = time.perf_counter()
    rows = sum(len(klines(market, s, 60_000, start, start + days * day_ms - 60_000, start,
                          start + days * day_ms)) for s in names)  # fmt: skip
    seconds = time.perf_counter() - started
    trades = market.per_block * 8640 * days * symbols
    return {
        "case": f"1m klines {symbols} symbols x {days} days at 5/s",
        "ours_s": seconds,
        "klines": rows,
        "klines_per_s": rows / seconds,
        "trades": trades,
        "trades_per_s": trades / seconds,
    }


async def _fanout(symbols: int, rate: float, clients: int, seconds: float) -> dict:
    names = tuple(f"S{i:03d}USDT" for i in range(symbols))
    settings = SimulatorConfig(seed=2, rate=rate)
    streams = "/".join(f"{s.lower()}@aggTrade" for s in names)
    counts = [0] * clients

    async def client(i: int, url: str, stop: asyncio.Event) -> None:
        async with connect(url, max_queue=None) as ws:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                counts[i] += 1

    async with Simulator(settings, names) as sim:
        stop = asyncio.Event()
        url = f"{sim.url_ws}/stream?streams={streams}"
        tasks = [asyncio.create_task(client(i, url, stop)) for i in range(clients)]
        await asyncio.sleep(0.5)  # connect and warm up
        before, cpu0, t0 = sum(counts), time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        frames, cpu, wall = (
            sum(counts) - before,
            time.process_time() - cpu0,
            time.perf_counter() - t0,
        )
        stop.set()
        await asyncio.gather(*tasks)
    return {
        "case": f"fanout {symbols} symbols x {rate:g}/s to {clients} clients",
        "ours_s": wall,
        "frames": frames,
        "frames_per_s": frames / wall,
        "mean_offered_per_s": symbols * rate * clients,
        "cpu_s_per_1k_frames": 1000.0 * cpu / max(frames, 1),
    }


def run(quick: bool) -> list[dict]:
    rows = _generate_rows(quick)
    rows.append(_klines_row(4, 2) if quick else _klines_row(20, 30))
    seconds = 2.0 if quick else 6.0
    for symbols, rate, clients in ((4, 5.0, 1), (20, 50.0, 2)):
        rows.append(asyncio.run(_fanout(symbols, rate, clients, seconds)))
    return rows
