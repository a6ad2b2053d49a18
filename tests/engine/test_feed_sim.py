"""End to end: FeedClient against the real simulator on loopback, every fault on, into the Store."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from engine.config import FaultsConfig, SimulatorConfig
from engine.feed import FeedClient
from engine.simulator import Simulator
from engine.store import Store

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
FAULTS = FaultsConfig(drop_rate=0.05, corrupt_rate=0.1, duplicate_rate=0.05,
                      disconnect_every_s=1.5, silent_symbol="SOLUSDT", silent_after_s=0.4,
                      slow_consumer=0.2, slow_every_s=1.0, rest_429_every=2,
                      retry_after_s=0)  # fmt: skip


def joined(batches, symbol):
    parts = [b.ticks[symbol] for b in batches if symbol in b.ticks]
    return np.concatenate(parts)


def assert_is_history(got: np.ndarray, history: np.ndarray) -> None:
    assert got.size > 0
    np.testing.assert_array_equal(np.diff(got["agg_id"]), 1)  # contiguous, no doubles
    i0 = int(np.searchsorted(history["agg_id"], got["agg_id"][0]))
    want = history[i0 : i0 + len(got)]
    for name in got.dtype.names:
        np.testing.assert_allclose(got[name].astype(float), want[name].astype(float), rtol=1e-12)


async def run_client(sim, seconds, batches, store=None, **kwargs):
    def on_batch(batch):
        batches.append(batch)
        if store is not None:
            for sym, ticks in batch.ticks.items():
                store.write_ticks(sym, ticks)

    kwargs = {"batch_ms": 20, "watchdog_s": 0.5, "backoff_s": (0.05, 0.2), **kwargs}
    client = FeedClient(SYMBOLS, sim.url_ws, sim.url_rest, on_batch=on_batch, **kwargs)
    runner = asyncio.create_task(client.run())
    await asyncio.sleep(seconds)
    return client, runner


@pytest.mark.parametrize("seed", [1, 2])
def test_all_faults_nothing_lost_nothing_doubled(tmp_path, seed: int) -> None:
    async def go():
        sim = Simulator(SimulatorConfig(seed=seed, rate=60.0, history_s=5.0, faults=FAULTS),
                        SYMBOLS)
        await sim.start()
        batches: list = []
        store = Store(tmp_path / "store")
        client, runner = await run_client(sim, 4.0, batches, store)
        await sim.stop()
        await asyncio.sleep(0.5)  # let the client take in what was sent
        client.stop()
        await runner
        store.flush()
        return sim, client, batches, store

    sim, client, batches, store = asyncio.run(go())
    s = client.stats
    for sym in SYMBOLS:
        got = joined(batches, sym)
        assert_is_history(got, sim.history(sym))
        stored = store.read_ticks(sym)
        np.testing.assert_array_equal(np.asarray(stored["agg_id"]), got["agg_id"])
    for reason in ("not_json", "missing_field", "bad_type", "bad_price", "bad_qty",
                   "unknown_symbol", "duplicate"):  # fmt: skip
        assert s.rejected[reason] == sim.injected[reason], reason
        assert sim.injected[reason] > 0, reason
    assert s.reconnects >= 1 and sim.fault_events["disconnects"] >= 1
    assert s.watchdog_recoveries >= 1
    assert s.gaps_backfilled >= 1 and s.rest_backoffs >= 1
    assert s.open_gaps == 0


def test_restart_with_resume_from(tmp_path) -> None:
    async def go():
        sim = Simulator(SimulatorConfig(seed=5, rate=40.0, history_s=5.0), SYMBOLS)
        await sim.start()
        first: list = []
        client, runner = await run_client(sim, 1.5, first)
        client.stop()
        await runner
        resume = client.stats.last_agg_id
        await asyncio.sleep(0.7)  # trades made while no client runs: refilled over REST
        second: list = []
        client2, runner2 = await run_client(sim, 1.5, second, resume_from=resume)
        client2.stop()
        await runner2
        await sim.stop()
        return sim, first, second, resume, client2.stats

    sim, first, second, resume, stats2 = asyncio.run(go())
    for sym in SYMBOLS:
        a, b = joined(first, sym), joined(second, sym)
        assert b["agg_id"][0] == resume[sym] + 1
        assert_is_history(np.concatenate([a, b]), sim.history(sym))
    assert stats2.gaps_backfilled >= len(SYMBOLS)


@pytest.mark.parametrize("seed", [3, 4])
def test_watchdog_escalates_to_reconnect_for_a_wedged_stream(caplog, seed: int) -> None:
    """BTCUSDT wedges on the exchange side (resubscribing does not revive it, a new connection
    does): the watchdog resubscribes, then reconnects, and the silent stretch is refilled."""
    faults = FaultsConfig(silent_symbol="BTCUSDT", silent_after_s=1.0, silent_until="reconnect")

    async def go():
        sim = Simulator(SimulatorConfig(seed=seed, rate=40.0, faults=faults), SYMBOLS)
        await sim.start()
        batches: list = []
        client, runner = await run_client(sim, 0.0, batches, watchdog_s=0.4, funding=False)
        for _ in range(300):  # until the watchdog has reconnected (at most 15 s)
            await asyncio.sleep(0.05)
            if client.stats.reconnects >= 1:
                break
        made = int(sim.history("BTCUSDT")["agg_id"][-1])  # every trade so far, silent ones too
        for _ in range(300):  # ... and everything made until then has been delivered
            await asyncio.sleep(0.05)
            if client.stats.last_agg_id.get("BTCUSDT", -1) >= made:
                break
        client.stop()
        await runner
        await sim.stop()
        return sim, client, batches, made

    with caplog.at_level(logging.WARNING, logger="engine.feed"):
        sim, client, batches, made = asyncio.run(go())
    s = client.stats
    assert s.reconnects >= 1 and sim.fault_events["disconnects"] == 0  # the client reconnected
    assert s.watchdog_recoveries >= 2 and sim.fault_events["silenced"] > 0
    said = [r.getMessage() for r in caplog.records if "btcusdt@aggTrade" in r.getMessage()]
    assert "resubscribing" in said[0] and "reconnecting" in said[1]  # escalated in that order
    btc = joined(batches, "BTCUSDT")
    assert btc["agg_id"][-1] >= made
    assert_is_history(btc, sim.history("BTCUSDT"))  # nothing lost, nothing doubled
    assert s.gaps_backfilled >= 1 and s.open_gaps == 0
    for sym in SYMBOLS[1:]:
        assert_is_history(joined(batches, sym), sim.history(sym))
