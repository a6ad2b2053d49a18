"""ui.bridge against the real Hub of the test server's engine, and its merge rules against a
plain-Python replay of the whole history.

The bridge fetches the snapshots of watched pairs only, and after the first poll only the steps
(and bars) since the cached ones; what it caches must equal what the Hub returns in one full
call, up to the cached last ts.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from actors.hub import _since
from engine.bars import RECENT_BARS
from engine.feed import FeedStats
from engine.ingest import feed_row
from engine.schemas import BAR_DTYPE
from ui import bridge as bridge_mod
from ui.bridge import WANTED_BARS, Bridge, Cache, _merge_bars, _merge_snapshot, health
from ui.views.status import StatusView

FIELDS = ("ts", "z", "position")


def _history(n: int) -> dict[str, np.ndarray]:
    ts = 1_700_000_000_000 + 1_000 * np.arange(n, dtype=np.int64)
    return {"ts": ts, "z": np.sin(np.arange(n) / 7.0), "position": np.arange(n) % 3 - 1.0}


def _ring(hist: dict, upto: int) -> dict:
    """What the PairActor returns after ``upto`` steps: the last RECENT_BARS of them."""
    lo = max(0, upto - RECENT_BARS)
    return {k: v[lo:upto] for k, v in hist.items()}


@pytest.mark.parametrize(
    "cuts", [[1, 2, 3], [10, 10, 500], [100, 3_700, 3_701, 4_000], [3_600, 3_600, 3_610], [0, 5]]
)
def test_snapshot_since_merges_to_the_ring(cuts):
    hist = _history(max(cuts) + 1)
    cached = None
    for upto in cuts:
        since = None if cached is None or not len(cached["ts"]) else int(cached["ts"][-1])
        cached = _merge_snapshot(cached, _since(_ring(hist, upto), since))
        want = _ring(hist, upto)
        for k in FIELDS:
            np.testing.assert_array_equal(cached[k], want[k])


def test_snapshot_since_is_full_when_the_ring_moved_past_the_cache():
    hist = _history(5_000)
    got = _since(_ring(hist, 4_900), int(hist["ts"][10]))
    assert got["full"] and len(got["cols"]["ts"]) == RECENT_BARS
    got = _since(_ring(hist, 200), int(hist["ts"][150]))
    assert not got["full"]
    np.testing.assert_array_equal(got["cols"]["ts"], hist["ts"][151:200])


def _bars(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=BAR_DTYPE)
    out["ts"] = 1_700_000_000_000 + 1_000 * np.arange(n)
    out["close"] = 100.0 + np.arange(n)
    return out


@pytest.mark.parametrize(
    ("have", "now", "asked"),
    [(100, 103, 8), (3_600, 3_700, 105), (10, 12, 7), (3_000, 3_900, 905), (50, 50, 5)],
)
def test_bars_since_merge_to_the_last_wanted(have, now, asked):
    hist = _bars(now)
    old = hist[max(0, have - WANTED_BARS) : have]
    got = hist[-asked:]
    merged = _merge_bars(old, got, asked)
    want = hist[-WANTED_BARS:]
    np.testing.assert_array_equal(merged["ts"], want["ts"])
    np.testing.assert_array_equal(merged["close"], want["close"])


def test_bars_that_do_not_reach_the_cache_are_refetched():
    hist = _bars(200)
    assert _merge_bars(hist[:100], hist[150:160], 10) is None  # gap: next poll fetches all
    np.testing.assert_array_equal(_merge_bars(hist[:100], hist[:30], 40), hist[:30])  # all
    np.testing.assert_array_equal(_merge_bars(hist[:100], hist[50:], WANTED_BARS), hist[50:])


@pytest.fixture(scope="module")
def live_bridge(hub, ray_cluster):
    config = ray_cluster.get(hub.config.remote(), timeout=30)
    b = Bridge(hub, pairs=list(config.pair_names), symbols=[], timeframe="1s")
    deadline = time.monotonic() + 60
    while not any(p.get("last_bar") for p in b.cache.status.get("pairs", [])):
        b.poll()
        assert time.monotonic() < deadline, b.cache.error
        time.sleep(0.5)
    return b


def test_bridge_fetches_only_watched_pairs_and_equals_a_full_fetch(live_bridge, hub, ray_cluster):
    b = live_bridge
    watched, other = b.pairs[0], b.pairs[1]
    b.watch(watched)
    b.watch("NOTAPAIR/BTCUSDT")  # not live: ignored, never asked of the Hub
    sym = watched.split("/")[0]
    b.want(sym, "1s")
    for _ in range(6):  # the first poll fetches everything, the later ones only what is new
        b.poll()
        assert b.cache.error is None
        time.sleep(0.6)
    assert set(b.cache.snapshots) == {watched}
    assert other in {p["pair"] for p in b.cache.status["pairs"]}  # light rows of every pair
    cached = b.cache.snapshots[watched]
    full = ray_cluster.get(hub.snapshot.remote(watched), timeout=30)
    upto = full["ts"] <= cached["ts"][-1]
    assert len(cached["ts"]) > 3
    for k, v in full.items():
        np.testing.assert_array_equal(cached[k], v[upto], err_msg=k)
    bars = b.cache.bars[(sym, "1s")]
    recent = ray_cluster.get(hub.recent_bars.remote(sym, "1s", WANTED_BARS), timeout=30)
    np.testing.assert_array_equal(bars, recent[recent["ts"] <= bars["ts"][-1]])


def test_bridge_drops_pairs_no_session_looks_at(live_bridge, monkeypatch):
    b = live_bridge
    b.watch(b.pairs[2])
    b.poll()
    assert b.pairs[2] in b.cache.snapshots
    monkeypatch.setattr(bridge_mod, "WANT_TTL_S", 0.0)
    b.poll()
    assert b.cache.snapshots == {} and b.cache.bars == {}


def _feed_stats(connected: bool, **extra) -> FeedStats:
    return FeedStats(
        symbols=("BTCUSDT", "ETHUSDT"), connected=connected, ticks=0, ticks_per_s=0.0,
        rejected={"duplicate": 57, "bad_price": 0}, gaps_backfilled=0, backfilled_ticks=0,
        open_gaps=0, open_gap_list=(), reconnects=0, watchdog_recoveries=0, rest_backoffs=0,
        last_trade_ms={}, last_agg_id={}, pending_gaps=(), **extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "connected", "state", "said"),
    [
        ({}, True, "live", "Live: all feeds connected"),
        ({"ids_behind": {"BTCUSDT": (4_321, 10**9)}}, True, "feed-unhealthy",
         "ids went backwards on BTCUSDT: the stream is at id 4321, the store holds up to "
         "1000000000: the store was written from another source?"),
        ({"starved": True}, True, "feed-unhealthy",
         "no trade has been accepted for a while: every frame is rejected (duplicate: 57)"),
        ({"ids_behind": {"BTCUSDT": (4_321, 10**9)}}, False, "feed-down", "Feed down"),
    ],
)  # fmt: skip
def test_banner_never_live_for_an_unhealthy_feed(extra, connected, state, said):
    """Feed rows as the FeedActor makes them (``feed_row``): a connected feed whose ids went
    backwards, or whose frames are all rejected, is not shown live; the banner says why."""
    now = time.time()
    fresh = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 1))
    status = {
        "feeds": [feed_row(_feed_stats(connected, **extra), late_ticks=0)],
        "pairs": [{"pair": "ETHUSDT/BTCUSDT", "last_bar": fresh}],
        "latency_ms": {},
    }
    h = health(Cache(polled_at=now, status=status), now, 1000)
    assert h.state == state and said in h.message
    assert h.live == (state == "live") and (h.live or "NOT live" in h.message)
    view = StatusView()
    view.show(Cache(polled_at=now, status=status), h)
    assert view.banner.css_classes == ["ps-feed-banner", f"ps-state-{state}"]
    assert view.banner.alert_type == ("success" if h.live else "danger")
    healthy = "1/1" if h.live else "0/1"
    assert f"feeds healthy</span><span class='ps-stat-value'>{healthy}<" in view.table.object
