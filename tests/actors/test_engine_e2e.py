"""End to end on the real wire: simulator → FeedActors → store + PairActors → Hub, on Ray.

One run (module fixture): the engine runs on the simulator, a FeedActor and a PairActor are
killed mid-run and come back; then the store is checked against the exchange's own history and
an offline rebuild, and every pair's live state against a replay of the stored bars.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import numpy as np
import pytest
from cli_env import pairstack, scrubbed_env

from actors.engine import start_engine
from engine.alerts import AlertBook, rules_from_config
from engine.align import align_bars
from engine.bars import build_bar_records
from engine.config import parse_config
from engine.pairbook import parse_pair
from engine.pairstep import PairParams, run_pair
from engine.schemas import table_to_bars, table_to_ticks
from engine.store import Store
from strategies import make_strategy

pytestmark = pytest.mark.ray

SYMBOLS = ["ETHUSDT", "BTCUSDT", "SOLUSDT", "BNBUSDT"]
PAIRS = [("ETHUSDT", "BTCUSDT"), ("SOLUSDT", "BNBUSDT"), ("SOLUSDT", "BTCUSDT")]
NAMESPACE = "pairstack-test"


def engine_config(store_path) -> object:
    return parse_config(
        {
            "feed": {"source": "simulator", "symbols_per_connection": 2, "lateness_ms": 1500},
            "symbols": SYMBOLS,
            "timeframes": ["1s", "1m"],
            "pairs": [{"y": y, "x": x} for y, x in PAIRS],
            "analytics": {"ols_window": 10, "zscore_window": 8},
            "strategy": {"entry": 0.8, "exit": 0.0, "stop": 3.0},
            "alerts": [{"pair": "ETHUSDT/BTCUSDT", "abs_above": 0.8}],
            "store": {"path": str(store_path)},
            "ray": {"pairs_per_actor": 2},
            # history() from before the start: the warm-up stores the last 30 s of trades
            "simulator": {"rate": 8.0, "seed": 11, "history_s": 120.0},
        }
    )


def wait_for(pred, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def steps(handle) -> int:
    rows = handle.status()["pairs"]
    return min((0 if r["last_bar"] is None else 1 for r in rows), default=0) and len(rows)


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    ray = ray_cluster
    store_path = tmp_path_factory.mktemp("e2e-store")
    cfg = engine_config(store_path)
    hub_name = f"hub-{uuid.uuid4().hex[:8]}"
    handle = start_engine(cfg, hub_name=hub_name, namespace=NAMESPACE)
    try:
        wait_for(lambda: steps(handle), what="every pair to step")
        received_start = received(ray, handle)
        time.sleep(4.0)
        feed = handle.feeds[f"{hub_name}.feed-0"]
        pair_actor = handle.pair_actors[f"{hub_name}.pairs-0"]
        handle.hub.add_rule.remote({"pair": "SOLUSDT/BNBUSDT", "above": 9.0})
        alerts_before = ray.get(handle.hub.alerts.remote(), timeout=30)
        rules_before = ray.get(handle.hub.rules.remote(), timeout=30)
        received_before = received(ray, handle)
        ray.kill(feed, no_restart=False)
        ray.kill(pair_actor, no_restart=False)
        ray.kill(handle.hub, no_restart=False)  # the Hub restarts like the others
        ray.get([feed.ping.remote(), pair_actor.ping.remote(), handle.hub.ping.remote()],
                timeout=120)  # fmt: skip
        rules_after = ray.get(handle.hub.rules.remote(), timeout=30)
        killed_at = time.time() * 1000
        # run on until every pair has stepped well past the restarts
        wait_for(
            lambda: all(
                np.datetime64(r["last_bar"].rstrip("Z")).astype("datetime64[ms]").astype(np.int64)
                > killed_at + 4000
                for r in handle.status()["pairs"]
            ),
            what="pairs to step past the restarts",
        )
        status = handle.status()
        received_after = received(ray, handle)
        cli = subprocess.run(
            pairstack("status", "--json", "--address", ray.get_runtime_context().gcs_address,
                      "--namespace", NAMESPACE, "--hub", hub_name),
            capture_output=True, text=True, timeout=120, cwd=store_path, env=scrubbed_env(),
        )  # fmt: skip
        received_end = received(ray, handle)
        ray.get([f.stop.remote() for f in handle.feeds.values()], timeout=60)
        history = {s: ray.get(handle.simulator.history.remote(s)) for s in SYMBOLS}
        snaps = {f"{y}/{x}": ray.get(handle.hub.snapshot.remote(f"{y}/{x}")) for y, x in PAIRS}
        final_status = handle.status()
        alerts = ray.get(handle.hub.alerts.remote())
    finally:
        handle.stop()
    return {
        "cfg": cfg,
        "store": Store(store_path),
        "status": status,
        "final_status": final_status,
        "history": history,
        "snaps": snaps,
        "alerts": alerts,
        "alerts_before": alerts_before,
        "rules": (rules_before, rules_after),
        "cli": cli,
        "received": ((received_start, received_before), (received_after, received_end)),
    }


def received(ray, handle) -> dict[str, dict[str, int]]:
    """Per PairActor: packets taken by bar lane and by actor call."""
    return {n: ray.get(h.status.remote(), timeout=30)["received"]
            for n, h in handle.pair_actors.items()}  # fmt: skip


def test_bars_reach_the_pair_actors_by_their_lanes_also_after_restarts(run):
    """Calls only until a lane is open (the first publish, the warm-up, is one); seconds of
    packets later, every packet came by lane: before the kills, and after them, when the
    restarted PairActor and the PairActors the restarted feed publishes to opened new lanes."""
    for first, last in run["received"]:
        assert len(first) == 2
        for name, got in last.items():
            assert got["call"] == first[name]["call"] > 0, (name, first[name], got)
            assert got["lane"] > first[name]["lane"], (name, first[name], got)


def test_hub_restart_keeps_rules_and_alert_history(run):
    before, after = run["rules"]
    assert after == before and any(r.pair == "SOLUSDT/BNBUSDT" for r in after)
    kept = {(a["rule"], a["ts"]) for a in run["alerts"]}
    assert {(a["rule"], a["ts"]) for a in run["alerts_before"]} <= kept
    # the restarted Hub found every feed and pair actor again: status covers them all
    assert len(run["final_status"]["feeds"]) == 2 and len(run["final_status"]["pairs"]) == 3


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_store_ticks_are_the_exchange_trades_without_holes_or_duplicates(run, symbol):
    ticks = table_to_ticks(run["store"].read_ticks(symbol))
    assert len(ticks) > 50
    assert np.all(np.diff(ticks["agg_id"]) == 1)
    hist = run["history"][symbol]
    lo = np.searchsorted(hist["agg_id"], ticks["agg_id"][0])
    np.testing.assert_array_equal(ticks, hist[lo : lo + len(ticks)])


@pytest.mark.parametrize("timeframe", ["1s", "1m"])
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_store_bars_equal_offline_rebuild(run, symbol, timeframe):
    ticks = table_to_ticks(run["store"].read_ticks(symbol))
    want = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    got = table_to_bars(run["store"].read_bars(timeframe, symbol))
    # the last bar may still have been open when the feed stopped (not final: not stored)
    assert len(want) - len(got) in (0, 1)
    np.testing.assert_array_equal(got, want[: len(got)])


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_store_funding_rows_carry_the_exchange_funding_time(run, symbol):
    rows = run["store"].read_funding(symbol)
    assert rows.num_rows > 3
    ts = rows.column("ts").cast("int64").to_numpy()
    nxt = rows.column("next_funding_time").cast("int64").to_numpy()
    # the simulator settles on Binance's 8-hour grid (00:00, 08:00, 16:00 UTC)
    eight_h = 8 * 3_600_000
    np.testing.assert_array_equal(nxt, (ts // eight_h + 1) * eight_h)
    rate = rows.column("funding_rate").to_numpy()
    assert np.isfinite(rate).all() and (rows.column("mark_price").to_numpy() > 0).all()


def test_no_late_ticks_in_this_run(run):
    assert [f["late_ticks"] for f in run["final_status"]["feeds"]] == [0, 0]


@pytest.mark.parametrize("pair", [f"{y}/{x}" for y, x in PAIRS])
def test_live_state_equals_replay_of_stored_bars(run, pair):
    cfg, store = run["cfg"], run["store"]
    y, x = parse_pair(pair)
    snap = run["snaps"][pair]
    al = align_bars(
        table_to_bars(store.read_bars("1s", y)), table_to_bars(store.read_bars("1s", x))
    )
    keep = al.ts <= snap["ts"][-1]
    params = PairParams.from_config(cfg.analytics)
    series = run_pair(al.close_y[keep], al.close_x[keep], params)
    pos = make_strategy(cfg.strategy).run(series.z, series.spread)
    n = len(snap["ts"])
    assert n >= 10
    np.testing.assert_array_equal(snap["ts"], al.ts[keep][-n:])
    np.testing.assert_allclose(snap["beta"], series.beta[-n:], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(snap["spread"], series.spread[-n:], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(snap["z"], series.z[-n:], rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(snap["position"], pos[-n:])
    if pair == "ETHUSDT/BTCUSDT":
        book = AlertBook()
        book.set_rules(rules_from_config(cfg.alerts))
        want = [
            ev.to_dict()
            for t, z in zip(al.ts[keep], series.z, strict=True)
            for ev in book.check(pair, int(t), float(z))
        ]
        got = [{k: v for k, v in a.items() if k != "fired_at"} for a in run["alerts"]]
        assert got == want and want


def test_status_json_shape(run):
    status = run["status"]
    json.dumps(status, allow_nan=False)
    assert set(status) >= {"feeds", "pairs", "latency_ms"}
    assert sorted(s for f in status["feeds"] for s in f["symbols"]) == sorted(SYMBOLS)
    for f in status["feeds"]:
        assert f["connected"] is True
        assert isinstance(f["ticks_per_s"], float) and f["ticks"] > 0
        assert isinstance(f["rejected"], dict)
        for key in ("gaps_backfilled", "late_ticks", "reconnects"):
            assert isinstance(f[key], int)
    assert [p["pair"] for p in status["pairs"]] == sorted(f"{y}/{x}" for y, x in PAIRS)
    for p in status["pairs"]:
        assert p["last_bar"].endswith("Z") and isinstance(p["beta"], float)
        assert p["position"] in (-1, 0, 1)
    lat = status["latency_ms"]
    assert set(lat) == {"p50", "p99", "max"}
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"]


def test_status_cli_json_against_the_running_engine(run):
    cli = run["cli"]
    assert cli.returncode == 0, cli.stderr
    status = json.loads(cli.stdout)
    assert [p["pair"] for p in status["pairs"]] == [p["pair"] for p in run["status"]["pairs"]]
    assert [f["symbols"] for f in status["feeds"]] == [f["symbols"] for f in run["status"]["feeds"]]
    assert set(status["latency_ms"]) == {"p50", "p99", "max"}
