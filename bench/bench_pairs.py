"""The live engine end to end: simulator → FeedActors → PairActors, 1s bars, on local Ray.

Cases: 10/100/1,000 pairs over 10/30/100 symbols (quick: 10 pairs over 10 symbols, shorter).
Each case starts the engine on the in-cluster simulator (5 trades/s per symbol), lets it run,
reads the Hub's status, stops it, then replays the stored bars to count missed steps.

The engine runs with the default sizing (``ray.pairs_per_actor`` and
``feed.symbols_per_connection`` "auto", from the cluster's CPUs: on this 2-core machine one
PairActor and one FeedActor, the simulator and Ray's own processes beside them); the result
records the actors it chose. Figures (no peer: nothing else does this job on this machine):
latency p50/p99/max (ms, the docs/semantics.md definition, samples of the measured window after
warm-up), pair steps per second, CPU of the engine's actor processes (% of one core, from
/proc), their resident memory (MB), late ticks, and missed steps (aligned bars in the store, up
to each pair's last step, that the pair did not step on), and the packets the PairActors took
by bar lane and by actor call (calls only until a lane is open). Each case records the 1-minute
load average when its measured window started (``load_1m``): the machine is shared.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

CASES_FULL = [(10, 10), (100, 30), (1000, 100)]
CASES_QUICK = [(10, 10)]
WARM_S = 8.0
RUN_S_FULL = 40.0
RUN_S_QUICK = 12.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _symbols(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(n)]


def _pairs(symbols: list[str], n: int, seed: int = 0) -> list[tuple[str, str]]:
    combos = list(itertools.combinations(symbols, 2))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(combos), size=min(n, len(combos)), replace=False)
    return [combos[i] for i in sorted(pick)]


def _proc(pid: int) -> tuple[float, float]:
    """(CPU seconds used, resident MB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu_s, rss_kb / 1024.0


def _config(n_pairs: int, n_symbols: int, store: str):
    from engine.config import parse_config

    symbols = _symbols(n_symbols)
    return parse_config(
        {
            "feed": {
                "source": "simulator",
                "lateness_ms": 250,
                "funding": False,
            },
            "symbols": symbols,
            "timeframes": ["1s"],
            "pairs": [{"y": y, "x": x} for y, x in _pairs(symbols, n_pairs)],
            "store": {"path": store},
            "simulator": {"rate": 5.0, "seed": 1},
        }
    )


def _missed_steps(cfg, handle) -> int:
    import ray

    from engine.align import align_bars
    from engine.schemas import table_to_bars
    from engine.store import Store

    store = Store(cfg.store.path)
    bars = {s: table_to_bars(store.read_bars("1s", s)) for s in cfg.symbols}
    missed = 0
    for name in cfg.pair_names:
        y, x = name.split("/")
        snap = ray.get(handle.hub.snapshot.remote(name))
        if len(snap["ts"]) == 0 or len(bars[y]) == 0 or len(bars[x]) == 0:
            continue
        al = align_bars(bars[y], bars[x])
        want = al.ts[(al.ts >= snap["ts"][0]) & (al.ts <= snap["ts"][-1])]
        missed += len(np.setdiff1d(want, snap["ts"]))
    return missed


def _case(n_pairs: int, n_symbols: int, run_s: float) -> dict:
    import ray

    from actors.engine import start_engine
    from engine.status import latency_summary

    with tempfile.TemporaryDirectory(prefix="bench-pairs-") as tmp:
        cfg = _config(n_pairs, n_symbols, tmp)
        handle = start_engine(cfg, hub_name=f"bench-{uuid.uuid4().hex[:6]}", namespace="bench")
        try:
            actors = [*handle.feeds.values(), *handle.pair_actors.values()]
            pids = ray.get([a.__ray_call__.remote(lambda self: os.getpid()) for a in actors])
            time.sleep(WARM_S)
            load = os.getloadavg()[0]
            cpu0 = sum(_proc(p)[0] for p in pids)
            since = time.time() * 1000.0
            t0 = time.monotonic()
            steps0 = _steps(handle)
            time.sleep(run_s)
            status = handle.status()
            rows = ray.get([p.status.remote(since) for p in handle.pair_actors.values()])
            lat = latency_summary(np.concatenate([r["latency_ms"] for r in rows]))
            received = {way: sum(r["received"][way] for r in rows) for way in ("lane", "call")}
            elapsed = time.monotonic() - t0
            cpu1 = sum(_proc(p)[0] for p in pids)
            rss = sum(_proc(p)[1] for p in pids)
            steps = _steps(handle) - steps0
            n_pair_actors, n_feeds = len(handle.pair_actors), len(handle.feeds)
            ray.get([f.stop.remote() for f in handle.feeds.values()])
            missed = _missed_steps(cfg, handle)
        finally:
            handle.stop()
    return {
        "case": f"{n_pairs} pairs / {n_symbols} symbols",
        "pairs": len(cfg.pairs),
        "symbols": n_symbols,
        "run_s": round(elapsed, 1),
        "ticks_per_s": sum(f["ticks_per_s"] for f in status["feeds"]),
        "pair_steps_per_s": steps / elapsed,
        "latency_p50_ms": lat["p50"],
        "latency_p99_ms": lat["p99"],
        "latency_max_ms": lat["max"],
        "cpu_pct_of_core": 100.0 * (cpu1 - cpu0) / elapsed,
        "rss_mb": rss,
        "late_ticks": sum(f["late_ticks"] for f in status["feeds"]),
        "missed_steps": missed,
        "pair_actors": n_pair_actors,
        "feed_actors": n_feeds,
        "packets_by_lane": received["lane"],
        "packets_by_call": received["call"],
        "load_1m": load,
    }


def _steps(handle) -> int:
    """Pair steps held in the ring buffers (runs are shorter than a ring)."""
    import ray

    names = handle.config.pair_names
    return sum(len(s["ts"]) for s in ray.get([handle.hub.snapshot.remote(n) for n in names]))


def run(quick: bool) -> list[dict]:
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, namespace="bench",
                 log_to_driver=False)  # fmt: skip
    try:
        cases = CASES_QUICK if quick else CASES_FULL
        run_s = RUN_S_QUICK if quick else RUN_S_FULL
        return [_case(p, s, run_s) for p, s in cases]
    finally:
        if started:
            ray.shutdown()
