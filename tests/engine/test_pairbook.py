"""PairBook without Ray: live stepping on watermarks equals the batch pair step + strategy over
the same bars (align_bars, run_pair, Strategy.run), with warm-up, repeats and alerts; packets
step like their entries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine import legs as legs_mod
from engine import packets
from engine import pairbook as pairbook_mod
from engine.alerts import AlertBook, AlertRule
from engine.align import align_bars, max_carry_ms
from engine.bars import build_bar_records
from engine.config import parse_config
from engine.errors import ConfigError
from engine.pairbook import PairBook, Ring, parse_pair
from engine.pairstep import PairParams, run_pair
from strategies import make_strategy
from tests.kit import random_ticks

PAIRS = ["ETHUSDT/BTCUSDT", "SOLUSDT/BTCUSDT"]
SYMS = ["ETHUSDT", "BTCUSDT", "SOLUSDT"]
LATENESS = 250


# the legs end at different times (BTC after ~270 s, SOL after ~1350 s): by default the last
# closes are carried to the end (a limit far beyond the data); the limit is tested on its own
def make_config(hedge="kalman", zscore="rolling", price="log", max_carry=100_000):
    return parse_config(
        {
            "feed": {"source": "simulator", "lateness_ms": LATENESS},
            "symbols": SYMS,
            "pairs": [{"y": p.split("/")[0], "x": p.split("/")[1]} for p in PAIRS],
            "analytics": {
                "hedge": hedge,
                "zscore": zscore,
                "price": price,
                "ols_window": 20,
                "zscore_window": 15,
                "max_carry": max_carry,
            },
            "strategy": {"entry": 1.0, "exit": 0.0, "stop": 3.0},
        }
    )


def new_book(cfg, pairs: list[str]) -> PairBook:
    """A PairBook as the PairActor builds it: analytics section, strategy object, pairs."""
    return PairBook(cfg.analytics, make_strategy(cfg.strategy), pairs)


def legs(seed: int) -> dict[str, np.ndarray]:
    out = {}
    for i, s in enumerate(SYMS):
        t = random_ticks(
            900, mean_gap_ms=[700.0, 300.0, 1500.0][i], seed=seed + i, price0=50.0 * (i + 1)
        )
        out[s] = build_bar_records(t["ts"], t["price"], t["qty"], "1s")
    return out


def batch_oracle(cfg, bars_y, bars_x):
    params = PairParams.from_config(cfg.analytics)
    al = align_bars(bars_y, bars_x, max_carry_ms(cfg.analytics.max_carry, "1s"))
    series = run_pair(al.close_y, al.close_x, params)
    ols = run_pair(
        al.close_y, al.close_x, dataclasses.replace(params, hedge="rolling_ols", zscore="rolling")
    )
    pos = make_strategy(cfg.strategy).run(series.z, series.spread)
    return al, series, ols, pos


def entries_at(bars: dict, c: int, lag: dict) -> list[dict]:
    """The batch at wall time c (ms): symbol s final up to wm = c - lag[s], with all its bars
    final by then (a book skips the bars it has consumed)."""
    entries = []
    for s, b in bars.items():
        wm = int(c - lag[s])
        done = b[b["ts"] + 1000 <= wm]
        entries.append({"symbol": s, "wm": wm, "bars": done, "advances": [(wm, float(c))]})
    return entries


def deliver(book: PairBook, bars: dict, cuts, lag: dict, live=True, packed=False, extra=()):
    """At each wall time c, the batch ``entries_at(bars, c, lag)``; with ``packed`` each batch
    goes as one BarPacket; ``extra`` entries are added to every batch."""
    finals = []
    for c in cuts:
        entries = [*entries_at(bars, c, lag), *extra]
        finals.extend(book.feed(packets.pack(entries) if packed else entries, live=live)[1])
    return finals


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize(
    ("hedge", "zscore", "price"),
    [
        ("kalman", "rolling", "log"),
        ("kalman", "innovation", "log"),
        ("rolling_ols", "rolling", "raw"),
        ("static_ols", "rolling", "log"),
    ],
)
@pytest.mark.parametrize("warm_up_until", [None, 0.4])
@pytest.mark.parametrize("max_carry", [100_000, "auto", 0])
def test_live_equals_batch(seed, hedge, zscore, price, warm_up_until, max_carry):
    cfg = make_config(hedge, zscore, price, max_carry)
    bars = legs(seed)
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 2000
    cuts = np.arange(t0, t1 + 5000, 370)
    lag = {"ETHUSDT": 0, "BTCUSDT": 900, "SOLUSDT": 2500}
    book = new_book(cfg, PAIRS)
    if warm_up_until is not None:
        # a restarted actor: stored bars replayed first, then the feed repeats some of them
        k = int(len(cuts) * warm_up_until)
        deliver(book, bars, cuts[k : k + 1], lag, live=False)
        deliver(book, bars, cuts[k - 5 :], lag)
    else:
        deliver(book, bars, cuts, lag)
    for pair in PAIRS:
        y, x = parse_pair(pair)
        al, series, ols, pos = batch_oracle(cfg, bars[y], bars[x])
        assert (al.dropped > 0) == (max_carry != 100_000)  # BTC stops after ~270 s
        snap = book.snapshot(pair)
        np.testing.assert_array_equal(snap["ts"], al.ts)
        np.testing.assert_array_equal(snap["close_y"], al.close_y)
        np.testing.assert_array_equal(snap["close_x"], al.close_x)
        np.testing.assert_allclose(snap["beta"], series.beta, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(snap["beta_ols"], ols.beta, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(snap["spread"], series.spread, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(snap["z"], series.z, rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(snap["position"], pos)
        assert np.any(pos != 0) or zscore == "innovation"  # obs_var dwarfs these moves
        (row,) = [r for r in book.rows() if r["pair"] == pair]
        assert row["last_bar"] == al.ts[-1] and row["position"] == pos[-1]


def test_steps_wait_for_both_watermarks_and_latency_is_the_later_leg():
    cfg = make_config()
    book = new_book(cfg, PAIRS[:1])
    bar = np.zeros(
        1, dtype=build_bar_records(np.array([0]), np.array([1.0]), np.array([1.0]), "1s").dtype
    )

    def bars_at(ts, close):
        b = bar.copy()
        b["ts"], b["open"], b["high"], b["low"], b["close"] = ts, close, close, close, close
        b["volume"], b["quote_volume"], b["trades"] = 1.0, close, 1
        return b

    y, x = "ETHUSDT", "BTCUSDT"
    e = lambda s, b, wm, wall: {"symbol": s, "wm": wm, "bars": b, "advances": [(wm, wall)]}  # noqa: E731
    _, finals = book.feed([e(y, bars_at(0, 2.0), 1000, 1010.0), e(x, bars_at(0, 1.0), 0, 1010.0)])
    assert finals == [] and book.rows()[0]["last_bar"] is None
    # x's watermark passes 1000 at wall 1200 (a trade closed it before the lateness clock)
    _, finals = book.feed([e(x, bars_at(1000, 1.1)[:0], 1000, 1200.0)])
    assert finals == [1200.0] and book.rows()[0]["last_bar"] == 0
    # y's bar 1000 closes by the clock: the feed records the wall time its clock passed
    # 2000 + lateness; x's at wall 2100 (a trade): the later leg counts
    _, finals = book.feed(
        [e(y, bars_at(1000, 2.1), 2000, 2000.0 + LATENESS), e(x, bars_at(1000, 1.1), 2000, 2100.0)]
    )
    assert finals == [2000.0 + LATENESS]
    snap = book.snapshot("ETHUSDT/BTCUSDT")
    np.testing.assert_array_equal(snap["ts"], [0, 1000])
    np.testing.assert_array_equal(snap["close_x"], [1.0, 1.1])


def test_alerts_fire_like_an_alert_book_over_batch_z():
    cfg = make_config()
    bars = legs(2)
    book = new_book(cfg, PAIRS)
    rules = [AlertRule(PAIRS[0], "above", 1.5), AlertRule(PAIRS[0], "abs_above", 1.0, rearm=0.2)]
    book.alerts.set_rules(rules)
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 3000
    events = []
    for c in np.arange(t0, t1, 500):
        entries = [
            {"symbol": s, "wm": int(c), "bars": b[b["ts"] + 1000 <= c], "advances": []}
            for s, b in bars.items()
        ]
        events.extend(book.feed(entries)[0])
    al, series, _, _ = batch_oracle(cfg, bars["ETHUSDT"], bars["BTCUSDT"])
    oracle = AlertBook()
    oracle.set_rules(rules)
    want = [
        ev.to_dict()
        for t, z in zip(al.ts, series.z, strict=True)
        for ev in oracle.check(PAIRS[0], int(t), float(z))
    ]
    assert events == want and len(want) >= 4


def test_ring_keeps_the_last_steps_in_order():
    ring = Ring(capacity=5)
    for i in range(12):
        ring.append(ts=i, close_y=i, close_x=i, beta=i, beta_ols=i, spread=i, z=i, position=i % 2)
    np.testing.assert_array_equal(ring.arrays()["ts"], np.arange(7, 12))
    assert Ring(3).arrays()["z"].shape == (0,)


@pytest.mark.parametrize("name", ["ETHUSDT", "ETHUSDT/", "/BTCUSDT", "A/B/C", "ETHUSDT/ETHUSDT"])
def test_bad_pair_names(name):
    with pytest.raises(ConfigError, match="Y/X"):
        parse_pair(name)


def test_bad_inputs():
    cfg = make_config()
    with pytest.raises(ConfigError, match="listed twice"):
        new_book(cfg, [PAIRS[0], PAIRS[0]])
    book = new_book(cfg, PAIRS)
    with pytest.raises(ConfigError, match="BAR_DTYPE"):
        book.feed([{"symbol": "ETHUSDT", "wm": 0, "bars": np.zeros(2), "advances": []}])
    with pytest.raises(KeyError, match="unknown pair"):
        book.snapshot("XRPUSDT/BTCUSDT")


def assert_books_equal(a: PairBook, b: PairBook):
    for pair in a.names:
        sa, sb = a.snapshot(pair), b.snapshot(pair)
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{pair} {key}")
    np.testing.assert_equal(a.rows(), b.rows())


@pytest.mark.parametrize("seed", [1, 6])
def test_packets_step_like_their_entries(seed):
    cfg = make_config()
    bars = legs(seed)
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 2000
    cuts = np.arange(t0, t1 + 5000, 410)
    lag = {"ETHUSDT": 300, "BTCUSDT": 0, "SOLUSDT": 1700}
    # a symbol no pair here uses is skipped, with its bars and advances
    stray = bars["SOLUSDT"][:3].copy()
    other = {"symbol": "XRPUSDT", "wm": int(t1), "bars": stray, "advances": [(int(t1), 5.0)]}
    books, finals = [], []
    for packed in (False, True):
        book = new_book(cfg, PAIRS)
        k = len(cuts) // 3
        deliver(book, bars, cuts[k : k + 1], lag, live=False, packed=packed, extra=[other])
        finals.append(deliver(book, bars, cuts[k - 4 :], lag, packed=packed, extra=[other]))
        books.append(book)
    assert_books_equal(*books)
    assert finals[0] == finals[1] and len(finals[0]) > 100
    y, x = parse_pair(PAIRS[1])
    al, series, _, pos = batch_oracle(cfg, bars[y], bars[x])
    snap = books[1].snapshot(PAIRS[1])
    np.testing.assert_array_equal(snap["ts"], al.ts)
    np.testing.assert_allclose(snap["z"], series.z, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(snap["position"], pos)
    with pytest.raises(ConfigError, match="BAR_DTYPE"):
        bad = packets.pack([{"symbol": "ETHUSDT", "wm": 0, "bars": stray, "advances": []}])
        books[0].feed(dataclasses.replace(bad, bars=np.zeros(3)))


def test_small_chunks_trims_and_capacity_equal_batch(monkeypatch):
    """Chunk boundaries, frequent trims, growth and shrinking of the leg rows change nothing."""
    monkeypatch.setattr(pairbook_mod, "TIMES_PER_CHUNK", 7)
    monkeypatch.setattr(legs_mod, "TRIM_AT", 5)
    monkeypatch.setattr(legs_mod, "_LEG_CAPACITY", 2)
    cfg = make_config()
    bars = legs(3)
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 2000
    cuts = np.arange(t0, t1 + 5000, 530)
    lag = {"ETHUSDT": 0, "BTCUSDT": 900, "SOLUSDT": 2500}
    book = new_book(cfg, PAIRS)
    k = len(cuts) // 2
    # replay: the rows grow to hold every bar, many chunks are stepped in one call, then the
    # rows are trimmed and shrunk
    deliver(book, bars, cuts[k : k + 1], lag, live=False)
    assert book.legs.ts.shape[1] <= 8 and book.legs.n.max() <= 2
    deliver(book, bars, cuts[k - 3 :], lag)
    for pair in PAIRS:
        y, x = parse_pair(pair)
        al, series, ols, pos = batch_oracle(cfg, bars[y], bars[x])
        snap = book.snapshot(pair)
        np.testing.assert_array_equal(snap["ts"], al.ts)
        np.testing.assert_array_equal(snap["close_x"], al.close_x)
        np.testing.assert_allclose(snap["beta_ols"], ols.beta, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(snap["z"], series.z, rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(snap["position"], pos)


@pytest.mark.parametrize("seed", [2, 9])
@pytest.mark.parametrize("hedge", ["kalman", "rolling_ols"])
def test_pairs_added_at_runtime_step_like_pairs_there_from_the_start(seed, hedge):
    """A book that gets a pair after part of the data (warmed up on the bars delivered so far,
    as the store and the feeds give them) steps it exactly like a book built with it."""
    cfg = make_config(hedge)
    bars = legs(seed)
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 2000
    cuts = np.arange(t0, t1 + 5000, 390)
    lag = {"ETHUSDT": 200, "BTCUSDT": 0, "SOLUSDT": 1100}
    every = [*PAIRS, "SOLUSDT/ETHUSDT"]
    whole = new_book(cfg, every)
    deliver(whole, bars, cuts, lag)
    grown = new_book(cfg, PAIRS)
    k = len(cuts) // 2
    deliver(grown, bars, cuts[:k], lag)
    # the history a PairActor passes: stored bars up to some time, then the feeds' recent ones
    # (overlapping them, reaching the book's watermarks)
    c = cuts[k - 1]
    history = [
        {"symbol": s, "wm": int(c - lag[s]), "bars": b[b["ts"] + 1000 <= c - lag[s]],
         "advances": []}
        for s, b in bars.items()
    ]  # fmt: skip
    stored = [{**e, "bars": e["bars"][: len(e["bars"]) // 2]} for e in history]
    assert grown.add_pairs(["SOLUSDT/ETHUSDT", PAIRS[0]], stored + history) == ["SOLUSDT/ETHUSDT"]
    assert grown.names == every
    deliver(grown, bars, cuts[k:], lag)
    assert_books_equal(whole, grown)
    np.testing.assert_equal(grown.checkpoint(), whole.checkpoint())
    # the grown book's checkpoint restores into a book built with every pair
    fresh = new_book(cfg, every)
    fresh.restore(grown.checkpoint())
    assert_books_equal(whole, fresh)
    with pytest.raises(ConfigError, match="XRPUSDT not among this book's symbols"):
        grown.add_pairs(["XRPUSDT/BTCUSDT"])
