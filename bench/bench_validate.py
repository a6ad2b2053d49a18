"""Frame validation: ``FrameValidator.decode_frames`` on batches of 2000 combined aggTrade
frames (4 symbols interleaved, compact JSON as Binance sends it), in us per frame.

Peers on the same batches: msgspec's strict typed decode per frame (``binance.CombinedFrame``,
the fallback of the column pass; decoding alone, no rules, no columns) and ``orjson.loads`` per
frame (parsing alone, nothing validated, no columns). Cases: aggTrades only, and with 1%
markPrice frames mixed in (those go through msgspec). Every aggTrade is checked accepted.
Times are the best of several runs over all batches (the machine is shared), each run with a
fresh validator.
"""

from __future__ import annotations

import json

import msgspec
import numpy as np
import orjson

from bench.timing import best_of
from engine import binance
from engine.validate import FrameValidator
from tests.kit import random_ticks

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
BATCH = 2000


def _frames(n: int, marks: float, seed: int = 3) -> list[bytes]:
    """``n`` combined frames, symbols in turn; a share ``marks`` of markPrice frames."""
    rng = np.random.default_rng(seed)
    per = {s: random_ticks(n // len(SYMBOLS) + 1, seed=k, first_id=1000, mean_gap_ms=2.0)
           for k, s in enumerate(SYMBOLS)}  # fmt: skip
    out = []
    for i in range(n):
        s = SYMBOLS[i % len(SYMBOLS)]
        t = per[s][i // len(SYMBOLS)]
        if rng.random() < marks:
            d = {
                "e": "markPriceUpdate",
                "E": int(t["ts"]),
                "s": s,
                "p": f"{t['price']:.2f}",
                "i": "1.0",
                "P": "1.0",
                "r": "0.00010000",
                "T": int(t["ts"]) + 28_800_000,
            }
            stream = binance.mark_price_stream(s)
        else:
            d = {
                "e": "aggTrade",
                "E": int(t["ts"]) + 2,
                "s": s,
                "a": int(t["agg_id"]),
                "p": f"{t['price']:.2f}",
                "q": f"{t['qty']:.3f}",
                "f": int(t["first_id"]),
                "l": int(t["last_id"]),
                "T": int(t["ts"]),
                "m": bool(t["buyer_maker"]),
            }
            stream = binance.agg_trade_stream(s)
        out.append(json.dumps({"stream": stream, "data": d}, separators=(",", ":")).encode())
    return out  # fmt: skip


def _decode_all(frames: list[bytes]) -> list:
    v = FrameValidator(SYMBOLS)
    return [v.decode_frames(frames[i : i + BATCH]) for i in range(0, len(frames), BATCH)]


def _msgspec_all(frames: list[bytes]) -> int:
    decode = msgspec.json.Decoder(binance.CombinedFrame).decode
    batches = range(0, len(frames), BATCH)
    return sum(len([decode(f) for f in frames[i : i + BATCH]]) for i in batches)


def _orjson_all(frames: list[bytes]) -> int:
    loads = orjson.loads
    return sum(len([loads(f) for f in frames[i : i + BATCH]]) for i in range(0, len(frames), BATCH))


def _check_all_accepted(ours: list, frames: list[bytes]) -> None:
    trades = sum(b'"aggTrade"' in f for f in frames)
    assert sum(b.n_ticks for b in ours) == trades and not any(b.rejects for b in ours)


def run(quick: bool) -> list[dict]:
    n = 40_000 if quick else 320_000
    repeat = 3 if quick else 5
    FrameValidator(SYMBOLS).decode_frames(_frames(10, 0.0))  # compile / load the numba cache
    rows = []
    for case, marks in (("aggTrade", 0.0), ("aggTrade + 1% markPrice", 0.01)):
        frames = _frames(n, marks)
        ours_s, ours = best_of(lambda f=frames: _decode_all(f), repeat)
        _check_all_accepted(ours, frames)
        each_s = best_of(lambda f=frames: _msgspec_all(f), repeat)[0]
        orjson_s = best_of(lambda f=frames: _orjson_all(f), repeat)[0]
        for peer, peer_s in (("msgspec decode per frame", each_s), ("orjson.loads", orjson_s)):
            rows.append({"case": case, "frames": n, "batch": BATCH,
                         "ours_us_per_frame": ours_s / n * 1e6, "ours_s": ours_s, "peer": peer,
                         "peer_s": peer_s, "peer_us_per_frame": peer_s / n * 1e6,
                         "ratio": peer_s / ours_s})  # fmt: skip
    return rows
