"""FeedCore without network or Ray: live bars and store equal an offline rebuild, restarts
leave no hole and no duplicate, publish entries carry every closed bar once."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from engine.bars import build_bar_records
from engine.config import parse_config
from engine.ingest import FeedCore, feed_row
from engine.schemas import BAR_DTYPE, table_to_bars, table_to_ticks
from engine.store import Store
from tests.kit import random_ticks

SYMS = ["ETHUSDT", "BTCUSDT"]


def make_config(path, lateness_ms=250, timeframes=("1s", "1m")):
    return parse_config(
        {
            "feed": {"source": "simulator", "lateness_ms": lateness_ms},
            "symbols": SYMS,
            "timeframes": list(timeframes),
            "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
            "store": {"path": str(path)},
        }
    )


def make_core(cfg, store: Store) -> FeedCore:
    return FeedCore(SYMS, store, feed=cfg.feed, timeframe=cfg.analytics.timeframe,
                    timeframes=cfg.timeframes)  # fmt: skip


def stream(seed: int, n: int = 1500) -> dict[str, np.ndarray]:
    return {
        s: random_ticks(n, mean_gap_ms=90.0 + 60 * i, seed=seed + 10 * i, price0=100.0 * (i + 1))
        for i, s in enumerate(SYMS)
    }


def play(core: FeedCore, ticks: dict[str, np.ndarray], cuts: np.ndarray, published: dict):
    """Deliver ticks in batches cut at times ``cuts``; the clock reads each cut."""
    for lo, hi in itertools.pairwise(cuts):
        for s, t in ticks.items():
            part = t[(t["ts"] >= lo) & (t["ts"] < hi)]
            core.on_ticks(s, part, float(hi))
        core.advance(float(hi))
        for e in core.take_entries():
            published.setdefault(e["symbol"], []).append(e["bars"])
            assert all(wm <= e["wm"] for wm, _ in e["advances"])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("lateness_ms", [0, 250])
@pytest.mark.parametrize("restart_at", [None, 0.3, 0.7])
def test_store_and_published_bars_equal_offline_rebuild(tmp_path, seed, lateness_ms, restart_at):
    cfg = make_config(tmp_path, lateness_ms)
    ticks = stream(seed)
    t0 = min(int(t["ts"][0]) for t in ticks.values())
    t1 = max(int(t["ts"][-1]) for t in ticks.values()) + 1
    cuts = np.unique(np.r_[np.arange(t0, t1, 137), t1])
    published: dict[str, list[np.ndarray]] = {}
    core = make_core(cfg, Store(tmp_path, durable=False))
    if restart_at is None:
        play(core, ticks, cuts, published)
    else:
        k = int(len(cuts) * restart_at)
        play(core, ticks, cuts[: k + 1], published)
        core.flush()  # what a feed flushed before it died; the rest is lost with it
        core = make_core(cfg, Store(tmp_path, durable=False))
        resumed = {s: t[t["agg_id"] > core.last_ids[s]] for s, t in ticks.items()}
        play(core, resumed, cuts[k:], published)
    core.advance(float(t1) + 400_000.0)
    for e in core.take_entries():
        published.setdefault(e["symbol"], []).append(e["bars"])
    core.flush()
    store = Store(tmp_path)
    for s, t in ticks.items():
        stored_ticks = table_to_ticks(store.read_ticks(s))
        np.testing.assert_array_equal(stored_ticks, t)
        for tf in ("1s", "1m"):
            want = build_bar_records(t["ts"], t["price"], t["qty"], tf)
            got = table_to_bars(store.read_bars(tf, s))
            np.testing.assert_array_equal(got, want)
        # every 1s bar published; repeats after a restart are allowed (pairs drop them)
        pub = np.concatenate(published[s])
        _, first = np.unique(pub["ts"], return_index=True)
        np.testing.assert_array_equal(
            pub[np.sort(first)], build_bar_records(t["ts"], t["price"], t["qty"], "1s")
        )
        assert np.all(np.diff(pub["ts"][np.sort(first)]) > 0)


def test_recent_bars_and_recent_for(tmp_path):
    cfg = make_config(tmp_path)
    ticks = stream(3, 400)
    core = make_core(cfg, Store(tmp_path, durable=False))
    t1 = max(int(t["ts"][-1]) for t in ticks.values()) + 1
    play(core, ticks, np.array([0, t1]), {})
    core.advance(float(t1) + 5_000)
    want = build_bar_records(
        ticks["ETHUSDT"]["ts"], ticks["ETHUSDT"]["price"], ticks["ETHUSDT"]["qty"], "1s"
    )
    np.testing.assert_array_equal(core.recent_bars("ETHUSDT", "1s", 5), want[-5:])
    assert core.recent_bars("ETHUSDT", "1m", 0).dtype == BAR_DTYPE
    (entry,) = core.recent_for(["ETHUSDT", "XRPUSDT"], "1s")
    np.testing.assert_array_equal(entry["bars"], want)
    assert entry["wm"] >= want["ts"][-1] + 1000
    with pytest.raises(KeyError, match="no bars of XRPUSDT"):
        core.recent_bars("XRPUSDT", "1s", 3)


def test_pending_gap_holds_the_clock(tmp_path):
    cfg = make_config(tmp_path, lateness_ms=0)
    core = make_core(cfg, Store(tmp_path, durable=False))
    t = random_ticks(50, seed=4)
    core.on_ticks("ETHUSDT", t, float(t["ts"][-1]))
    core.take_entries()
    core.advance(float(t["ts"][-1]) + 60_000, hold=["ETHUSDT"])
    assert core.take_entries() == [] or all(e["symbol"] != "ETHUSDT" for e in core.take_entries())
    core.advance(float(t["ts"][-1]) + 60_000)
    (e,) = [e for e in core.take_entries() if e["symbol"] == "ETHUSDT"]
    assert len(e["bars"]) == 1 and e["wm"] > t["ts"][-1]


@pytest.mark.parametrize("n_gaps", [0, 1, 4])
def test_status_row_and_run_log_list_open_gaps(n_gaps):
    from actors.cli.run import one_line
    from engine.feed import FeedStats, OpenGap
    from engine.status import build_status

    gaps = tuple(
        OpenGap("ETHUSDT", 100 + 10 * k, 104 + 10 * k, "HTTP 400: beyond 48 h")
        for k in range(n_gaps)
    )
    stats = FeedStats(
        symbols=tuple(SYMS), connected=True, ticks=10, ticks_per_s=2.0, rejected={"not_json": 1},
        gaps_backfilled=1, backfilled_ticks=5, open_gaps=len(gaps), open_gap_list=gaps,
        reconnects=0, watchdog_recoveries=0, rest_backoffs=0, last_trade_ms={}, last_agg_id={},
        pending_gaps=(),
    )  # fmt: skip
    row = feed_row(stats, late_ticks=3)
    status = build_status([row], [], np.empty(0))
    (feed,) = json.loads(json.dumps(status, allow_nan=False))["feeds"]
    assert feed["open_gaps"] == n_gaps and feed["late_ticks"] == 3
    assert feed["open_gap_list"] == [
        {"symbol": "ETHUSDT", "first": g.first, "last": g.last, "why": g.why} for g in gaps
    ]
    line = one_line(status)
    if n_gaps == 0:
        assert "open gaps" not in line
    else:
        assert f"open gaps {n_gaps}: ETHUSDT 100..104 (HTTP 400: beyond 48 h)" in line
        assert line.count("ETHUSDT ") == min(n_gaps, 3) and line.endswith("...") == (n_gaps > 3)


@pytest.mark.parametrize(
    ("failures", "error"),
    [(0, ""), (1, "ConnectionRefusedError: [Errno 111] refused"), (7, "TimeoutError: ")],
)
def test_status_row_carries_failed_connects(failures, error):
    from engine.feed import FeedStats
    from engine.status import build_status

    stats = FeedStats(
        symbols=tuple(SYMS), connected=False, ticks=0, ticks_per_s=0.0, rejected={},
        gaps_backfilled=0, backfilled_ticks=0, open_gaps=0, open_gap_list=(), reconnects=2,
        watchdog_recoveries=0, rest_backoffs=0, last_trade_ms={}, last_agg_id={},
        pending_gaps=(), connect_failures=failures, last_error=error,
    )  # fmt: skip
    row = feed_row(stats, late_ticks=0)
    assert list(row)[:8] == ["symbols", "connected", "ticks_per_s", "ticks", "rejected",
                             "gaps_backfilled", "late_ticks", "reconnects"]  # fmt: skip
    (feed,) = json.loads(json.dumps(build_status([row], [], np.empty(0))))["feeds"]
    assert feed["connect_failures"] == failures and feed["last_error"] == error
    assert feed["reconnects"] == 2 and feed["connected"] is False


def test_clock_close_records_when_the_clock_passed_end_plus_lateness(tmp_path):
    """A bar closed on the clock became final when the feed's clock passed its end + lateness:
    the wall time of that moment (not of the later reading) goes with the watermark advance,
    and ``next_close_ms`` names the clock time at which that happens."""
    from engine.schemas import TICK_DTYPE

    cfg = make_config(tmp_path, lateness_ms=250, timeframes=("1s",))
    core = make_core(cfg, Store(tmp_path, durable=False))
    t0 = 1_700_000_000_000
    for k, s in enumerate(SYMS):
        tick = np.zeros(1, dtype=TICK_DTYPE)
        tick["ts"], tick["agg_id"], tick["price"], tick["qty"] = t0 + 100 + k, 7, 10.0, 1.0
        core.on_ticks(s, tick, wall_ms=t0 + 150.0)
    core.take_entries()
    assert core.next_close_ms() == t0 + 1000 + 250
    assert core.next_close_ms(hold=SYMS) == np.inf
    core.advance(t0 + 1249.0, wall_ms=t0 + 1300.0)
    assert core.take_entries() == []  # not yet: the clock is 1 ms short
    # the clock reading (a lagging exchange clock) is 20 ms behind the wall at the cut
    core.advance(t0 + 1400.0, hold=["BTCUSDT"], wall_ms=t0 + 1420.0)
    (e,) = core.take_entries()
    assert e["symbol"] == "ETHUSDT" and e["wm"] == t0 + 1000 and len(e["bars"]) == 1
    assert e["advances"] == [(t0 + 1000, t0 + 1420.0 - (1400.0 - 1250.0))]
    assert core.next_close_ms(hold=["BTCUSDT"]) == t0 + 2000 + 250
    assert core.next_close_ms() == t0 + 1000 + 250  # the held symbol still waits


def test_compact_keeps_files_few_and_rows_whole(tmp_path):
    """A feed that flushes every batch (one part file per partition each time) and compacts
    now and then: today's partitions stay small; once the day is over, one file each."""
    cfg = make_config(tmp_path)
    ticks = stream(4, n=3000)
    t0 = min(int(t["ts"][0]) for t in ticks.values())
    t1 = max(int(t["ts"][-1]) for t in ticks.values()) + 1
    core = make_core(cfg, Store(tmp_path, durable=False))
    cuts = np.unique(np.r_[np.arange(t0, t1, 500), t1])
    for k, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        play(core, ticks, np.array([lo, hi]), {})
        core.flush()
        if k % 50 == 49:
            core.compact(now_ms=t0)  # all of it is "today"
    parts = [d for d in tmp_path.glob("**/date=*") if d.is_dir()]
    assert max(len(list(d.iterdir())) for d in parts) < 16 + 50
    core.compact(now_ms=t1 + 2 * 86_400_000)  # every day closed
    assert all(len(list(d.iterdir())) == 1 for d in parts)
    store = Store(tmp_path)
    for s, t in ticks.items():
        np.testing.assert_array_equal(table_to_ticks(store.read_ticks(s)), t)
        for tf in cfg.timeframes:
            offline = build_bar_records(t["ts"], t["price"], t["qty"], tf)
            stored = table_to_bars(store.read_bars(tf, s))  # bars still open are not stored
            assert len(offline) - 2 <= len(stored) <= len(offline)
            np.testing.assert_array_equal(stored, offline[: len(stored)])


def test_resumed_history_moves_the_watermark_but_records_no_advance(tmp_path):
    """Stored trades refed at a (re)start close bars that were final before it: the first
    entries carry their watermark, but no advance (a wall time of becoming final), so the
    pairs take no latency sample of history; the first live close records one again."""
    cfg = make_config(tmp_path)
    ticks = stream(3, n=400)
    t1 = max(int(t["ts"][-1]) for t in ticks.values()) + 1
    core = make_core(cfg, Store(tmp_path, durable=False))
    play(core, ticks, np.array([min(int(t["ts"][0]) for t in ticks.values()), t1]), {})
    core.flush()
    resumed = make_core(cfg, Store(tmp_path, durable=False))
    first = {e["symbol"]: e for e in resumed.take_entries()}
    assert set(first) == set(SYMS)
    for s, e in first.items():
        assert e["wm"] > int(ticks[s]["ts"][0]) and e["advances"] == []
    resumed.advance(float(t1) + 5_000.0)
    later = resumed.take_entries()
    assert later and all(len(e["advances"]) == 1 for e in later)
