"""Store write/read throughput of ticks and bars; peer: one plain ``pyarrow.parquet`` file.

Cases: ticks written in batches of 1,000 (buffered, one flush), in batches of 1,000 with a
flush every 100 batches (many part files, then compaction), as one batch, a full re-write of
the same ticks (every row a duplicate: the overlap path), and reads; 1s bars likewise; and the
feed's writer: 4 symbols' ticks in batches of 500 with the 1s/1m/5m bars they close (one
write per batch and timeframe with bars, as ``engine.ingest.FeedCore`` queues them), one flush,
durable (fsync) as in the feed; its peer writes the same ticks, one file per symbol. The
peer writes (reads) the same rows as one file with ``pq.write_table`` (``pq.read_table``) and
does no partitioning, no de-duplication and no atomic rename. The store runs with
``durable=False`` (no fsync, like the peer) except in the case that says fsync.
ratio = peer_s / ours_s.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench.timing import best_s
from engine.bars import BarBuilder, build_bars
from engine.schemas import ticks_to_table
from engine.store import Store


def _ticks(n: int) -> np.ndarray:
    from tests.kit import random_ticks

    return random_ticks(n, start_ms=1_717_200_000_000, mean_gap_ms=50.0, seed=7)


def _best(fn: Callable[[int], object], repeat: int) -> float:
    """Best wall time of `repeat` calls fn(0), fn(1), ... (each call may use its own paths)."""
    calls = iter(range(repeat))
    return best_s(lambda: fn(next(calls)), repeat)


def _feed_writes(n: int) -> tuple[list[tuple[str, tuple]], list[np.ndarray]]:
    """The store writes a feed of 4 symbols queues for `n` ticks in all (batches of 500 per
    symbol, bars of 1s/1m/5m), and each symbol's ticks."""
    from tests.kit import random_ticks

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
    per = n // len(symbols)
    ticks = [random_ticks(per, start_ms=1_717_200_000_000, mean_gap_ms=1.5, seed=k,
                          first_id=1 + k * per) for k in range(len(symbols))]
    builders = {(s, tf): BarBuilder(tf, 250) for s in symbols for tf in ("1s", "1m", "5m")}
    writes: list[tuple[str, tuple]] = []
    for i in range(0, per, 500):
        for s, t in zip(symbols, ticks, strict=True):
            batch = t[i:i + 500]
            writes.append(("write_ticks", (s, batch)))
            for tf in ("1s", "1m", "5m"):
                closed = builders[(s, tf)].add(batch).closed
                if len(closed):
                    writes.append(("write_bars", (tf, s, closed)))
    return writes, ticks


def _row(case: str, rows: int, ours_s: float, peer: str, peer_s: float) -> dict:
    return {"case": case, "rows": rows, "ours_s": ours_s, "rows_per_s": rows / ours_s,
            "peer": peer, "peer_s": peer_s, "ratio": peer_s / ours_s}


def run(quick: bool) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    repeat = 3
    flush_every = n // 1000 // 10  # ten part files per day partition
    ticks = _ticks(n)
    table = ticks_to_table(ticks)
    bars = build_bars(ticks["ts"], ticks["price"], ticks["qty"], "1s")
    nb = bars.num_rows
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))

    def batched(path: Path, every: int | None) -> None:
        store = Store(path, durable=False)
        for k, i in enumerate(range(0, n, 1000)):
            store.write_ticks("BTCUSDT", ticks[i:i + 1000])
            if every and k % every == every - 1:
                store.flush()
        store.flush()

    def one_batch(path: Path, durable: bool = False) -> None:
        store = Store(path, durable=durable)
        store.write_ticks("BTCUSDT", ticks)
        store.flush()

    def rewrite(_: int) -> None:
        store = Store(work / "one", durable=False)
        store.write_ticks("BTCUSDT", ticks)
        if store.flush()["ticks"].duplicates != n:
            raise AssertionError("re-write was expected to find only duplicates")

    def write_bars(_: int) -> None:
        store = Store(work / "one", durable=False)
        store.write_bars("1s", "BTCUSDT", bars)
        store.flush()

    def compact(r: int) -> None:
        Store(work / f"frag{r}", durable=False).compact()

    feed, feed_ticks = _feed_writes(n)
    nf = sum(len(t) for t in feed_ticks)

    def feed_writer(r: int) -> None:
        store = Store(work / f"feed{r}")
        for method, args in feed:
            getattr(store, method)(*args)
        store.flush()

    def feed_peer(r: int) -> None:
        for k, t in enumerate(feed_ticks):
            path = work / f"feedpeer{r}-{k}.parquet"
            pq.write_table(ticks_to_table(t), path)

    try:
        peer_w = _best(lambda r: pq.write_table(table, work / f"peer{r}.parquet"), repeat)
        peer_r = _best(lambda r: pq.read_table(work / "peer0.parquet"), repeat)
        peer_bw = _best(lambda r: pq.write_table(bars, work / f"bars{r}.parquet"), repeat)
        peer_br = _best(lambda r: pq.read_table(work / "bars0.parquet"), repeat)
        w, r_ = "pq.write_table", "pq.read_table"
        rows = [
            _row("write ticks, batches of 1000, one flush", n,
                 _best(lambda r: batched(work / f"a{r}", None), repeat), w, peer_w),
            _row(f"write ticks, batches of 1000, flush every {flush_every}", n,
                 _best(lambda r: batched(work / f"frag{r}", flush_every), repeat), w, peer_w),
            _row("compact that store (10 parts per partition)", n, _best(compact, repeat),
                 w, peer_w),
            _row("write ticks, one batch", n,
                 _best(lambda r: one_batch(work / ("one" if r == 0 else f"c{r}")), repeat),
                 w, peer_w),
            _row("write ticks, one batch, fsync (durable=True)", n,
                 _best(lambda r: one_batch(work / f"d{r}", durable=True), repeat), w, peer_w),
            _row("re-write same ticks (all duplicates)", n, _best(rewrite, repeat), w, peer_w),
            _row("read ticks", n,
                 _best(lambda r: Store(work / "one").read_ticks("BTCUSDT"), repeat), r_, peer_r),
        ]
        ours = _best(feed_writer, repeat)
        rows.append({**_row(f"feed writer: 4 symbols, {len(feed)} writes (500-tick batches + "
                            "bars), one flush, fsync", nf, ours, "pq.write_table per symbol",
                            _best(feed_peer, repeat)),
                     "us_per_tick": ours / nf * 1e6, "us_per_write": ours / len(feed) * 1e6})
        rows.append(_row("write 1s bars, one batch", nb, _best(write_bars, 1), w, peer_bw))
        rows.append(_row("upsert same 1s bars (all identical)", nb, _best(write_bars, repeat),
                         w, peer_bw))
        rows.append(_row("read 1s bars", nb,
                         _best(lambda r: Store(work / "one").read_bars("1s", "BTCUSDT"), repeat),
                         r_, peer_br))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows
