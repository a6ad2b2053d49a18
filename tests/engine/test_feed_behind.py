"""Feed health against the real simulator: a store written from another source (its ids far
above what the stream serves) is said at once, in stats, status, log and one-line status; a
stream whose frames are all rejected is never healthy; a normal run, reconnects included, stays
healthy and never reports ids behind."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import numpy as np
import pytest

from actors.cli.run import one_line
from actors.hub import Hub
from engine.config import FaultsConfig, SimulatorConfig, parse_config
from engine.feed import FeedClient, FeedStats
from engine.ingest import feed_row
from engine.simulator import Simulator
from engine.status import iso_ms
from engine.validate import BEHIND_MARGIN

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
#: the other source's last id: far above what the simulator serves (its ids count every
#: 10 s block since 2019 at the rate: about 5e9 at 20 trades/s)
STORED = 10**15


async def run_until(client: FeedClient, done, timeout_s: float, samples: list | None = None):
    """Run ``client`` until ``done(stats)`` or ``timeout_s``; every 50 ms stats sample is
    appended to ``samples``. The stats at the end."""
    runner = asyncio.create_task(client.run())
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            stats = client.stats
            if samples is not None:
                samples.append(stats)
            if done(stats):
                break
        return client.stats
    finally:
        client.stop()
        await runner


def client_for(sim: Simulator, batches: list, **kwargs) -> FeedClient:
    kwargs = {"batch_ms": 20, "watchdog_s": 2.0, "backoff_s": (0.05, 0.2), **kwargs}
    return FeedClient(SYMBOLS, sim.url_ws, sim.url_rest, on_batch=batches.append, **kwargs)


def test_stream_below_the_store_is_said_at_once_and_never_stored(caplog) -> None:
    caplog.set_level(logging.INFO)

    async def go():
        sim = Simulator(SimulatorConfig(seed=21, rate=20.0, history_s=5.0), SYMBOLS)
        await sim.start()
        batches: list = []
        client = client_for(sim, batches, resume_from={"BTCUSDT": STORED})
        started, behind_at = time.monotonic(), []

        def done(stats: FeedStats) -> bool:  # BTCUSDT said behind, and the others flowed
            if "BTCUSDT" in stats.ids_behind and not behind_at:
                behind_at.append(time.monotonic())
            return bool(behind_at) and any("ETHUSDT" in b.ticks for b in batches)

        stats = await run_until(client, done, 5.0)
        took = (behind_at[0] if behind_at else time.monotonic()) - started
        await sim.stop()
        return sim, batches, stats, took

    sim, batches, stats, took = asyncio.run(go())
    assert took < 3.0  # at once: the first BTCUSDT frames
    stream, stored = stats.ids_behind["BTCUSDT"]
    ids = sim.history("BTCUSDT")["agg_id"]
    assert stored == STORED and ids[0] <= stream <= ids[-1]  # the simulator's own id
    assert list(stats.ids_behind) == ["BTCUSDT"]
    assert stats.connected and not stats.healthy
    assert stats.rejected["duplicate"] >= 1
    assert all("BTCUSDT" not in b.ticks for b in batches)  # nothing of it mixed into a store
    assert sum(len(b.ticks.get("ETHUSDT", ())) for b in batches) > 0  # the others flow
    said = [r for r in caplog.records if "ids went backwards" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert said[0].getMessage() == (
        f"ids went backwards on BTCUSDT: the stream is at id {said[0].args[1]}, the store holds "
        f"up to {STORED}: the store was written from another source?"
    )
    assert said[0].args[1] < STORED - BEHIND_MARGIN

    row = json.loads(json.dumps(feed_row(stats, late_ticks=0)))
    assert row["ids_behind"] == {"BTCUSDT": {"stream": stream, "store": STORED}}
    assert row["healthy"] is False and row["connected"] is True
    assert list(row)[:8] == ["symbols", "connected", "ticks_per_s", "ticks", "rejected",
                             "gaps_backfilled", "late_ticks", "reconnects"]  # fmt: skip


@pytest.mark.parametrize("timeframe", ["1s", "1m"])
def test_hub_status_and_one_line_say_feed_down_and_pairs_stalled(
    ray_cluster, tmp_path, timeframe
) -> None:
    """The Hub's status over real Ray actors: a feed row that is behind counts as down in the
    one-line status, a pair whose last bar opened longer than max(60 s, 3 bars) ago is stale
    and not stepping; one within that window is."""
    ray = ray_cluster
    cfg = parse_config({
        "feed": {"source": "simulator"}, "symbols": SYMBOLS,
        "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}, {"y": "SOLUSDT", "x": "BTCUSDT"}],
        "analytics": {"timeframe": timeframe}, "store": {"path": str(tmp_path)},
    })  # fmt: skip
    window_ms = max(60_000, 3 * {"1s": 1_000, "1m": 60_000}[timeframe])
    behind = FeedStats(
        symbols=tuple(SYMBOLS), connected=True, ticks=40, ticks_per_s=8.0,
        rejected={"duplicate": 120}, gaps_backfilled=0, backfilled_ticks=0, open_gaps=0,
        open_gap_list=(), reconnects=0, watchdog_recoveries=0, rest_backoffs=0,
        last_trade_ms={}, last_agg_id={}, pending_gaps=(), ids_behind={"BTCUSDT": (900, STORED)},
    )  # fmt: skip
    now = time.time() * 1000.0
    rows = [("ETHUSDT/BTCUSDT", int(now - window_ms - 5_000)),
            ("SOLUSDT/BTCUSDT", int(now - window_ms + 20_000))]  # fmt: skip

    @ray.remote(num_cpus=0)
    class Feed:
        def stats(self) -> dict:
            return feed_row(behind, late_ticks=0)

    @ray.remote(num_cpus=0)
    class Pairs:
        def status(self) -> dict:
            pairs = [{"pair": p, "last_bar": ts, "beta": 1.0, "z": 0.5, "position": 0}
                     for p, ts in rows]  # fmt: skip
            return {"pairs": pairs, "latency_ms": np.array([1.0, 2.0])}

    ns, tag = "pairstack-test", uuid.uuid4().hex[:8]
    actors = [Feed.options(name=f"feed-{tag}", namespace=ns).remote(),
              Pairs.options(name=f"pairs-{tag}", namespace=ns).remote()]  # fmt: skip
    try:
        hub = Hub(cfg.to_dict(), tmp_path, feeds={f"feed-{tag}": SYMBOLS},
                  pair_actors={f"pairs-{tag}": [p for p, _ in rows]}, namespace=ns)  # fmt: skip
        status = json.loads(json.dumps(hub.status()))
    finally:
        for actor in actors:
            ray.kill(actor)
    assert [(p["pair"], p["last_bar"], p["stale"]) for p in status["pairs"]] == [
        ("ETHUSDT/BTCUSDT", iso_ms(rows[0][1]), True),
        ("SOLUSDT/BTCUSDT", iso_ms(rows[1][1]), False),
    ]
    (feed,) = status["feeds"]
    assert feed["healthy"] is False and feed["connected"] is True
    line = one_line(status)
    assert line.startswith("feeds 0/1 up, 8.0 ticks/s, 40 ticks; pairs 1/2 stepping, 0 open;")
    assert line.endswith(f"; ids went backwards: BTCUSDT stream at 900, store at {STORED}")


def test_all_frames_rejected_is_starved_not_healthy(caplog) -> None:
    """Every trade frame corrupt: connected, nothing accepted, so within ``starved_s`` the feed
    is starved, not healthy, and says so once (no ids behind: nothing was that far back)."""
    faults = FaultsConfig(corrupt_rate=1.0, corrupt_kinds=("bad_price",))

    async def go():
        sim = Simulator(SimulatorConfig(seed=22, rate=20.0, faults=faults), SYMBOLS)
        await sim.start()
        batches: list = []
        client = client_for(sim, batches, starved_s=1.0, funding=False)
        samples: list = []
        stats = await run_until(client, lambda s: s.starved, 6.0, samples)
        await sim.stop()
        return batches, stats, samples

    batches, stats, samples = asyncio.run(go())
    assert stats.starved and stats.connected and not stats.healthy
    assert stats.ids_behind == {} and stats.ticks == 0 and stats.rejected["bad_price"] > 0
    assert all(not b.ticks for b in batches)
    assert any(s.connected and s.healthy for s in samples)  # healthy before starved_s passed
    said = [r for r in caplog.records if "no trade accepted" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert feed_row(stats, 0)["starved"] is True and feed_row(stats, 0)["healthy"] is False


def test_normal_runs_stay_healthy_across_reconnects_and_restart(caplog) -> None:
    """A restart resuming from the stream's own last ids, with the server dropping every
    connection each second and the client switching connections (new one first: an overlap
    of duplicates): healthy whenever connected, never behind, nothing said."""
    caplog.set_level(logging.INFO)
    faults = FaultsConfig(disconnect_every_s=1.0, duplicate_rate=0.05)

    async def go():
        sim = Simulator(SimulatorConfig(seed=23, rate=30.0, history_s=5.0, faults=faults),
                        SYMBOLS)  # fmt: skip
        await sim.start()
        first: list = []
        s1 = await run_until(client_for(sim, first), lambda s: False, 1.5)
        second: list = []
        samples: list = []
        client = client_for(sim, second, resume_from=s1.last_agg_id, reconnect_after_s=0.7,
                            starved_s=1.0)  # fmt: skip
        s2 = await run_until(client, lambda s: False, 4.0, samples)
        await sim.stop()
        return s1, s2, samples, second

    s1, s2, samples, second = asyncio.run(go())
    assert s2.reconnects >= 3 and s2.rejected["duplicate"] > 0 and s2.ticks > 0
    for s in [s1, s2, *samples]:
        assert s.ids_behind == {} and not s.starved
        assert s.healthy == s.connected
    assert sum(s.connected for s in samples) > len(samples) // 2
    for sym in SYMBOLS:
        ids = np.concatenate([b.ticks[sym]["agg_id"] for b in second if sym in b.ticks])
        assert ids[0] == s1.last_agg_id[sym] + 1
        np.testing.assert_array_equal(np.diff(ids), 1)
    assert "ids went backwards" not in caplog.text and "no trade accepted" not in caplog.text
