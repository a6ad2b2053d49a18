"""Alignment of two legs: the batch rule (align_bars) on hand-made cases, and the streaming form
(LiveAlign) fed bar by bar gives exactly align_bars' rows."""

from __future__ import annotations

import numpy as np
import pytest

from engine.align import AUTO_MAX_CARRY, NO_CARRY_LIMIT, LiveAlign, align_bars, max_carry_ms
from engine.errors import ConfigError, DataError
from engine.schemas import BAR_DTYPE, TIMEFRAME_MS, bars_to_table
from engine.unitroot import coint_pairs


def _bars(ts: list[int], close: list[float]) -> np.ndarray:
    out = np.zeros(len(ts), dtype=BAR_DTYPE)
    out["ts"] = ts
    out["close"] = close
    out["open"] = np.asarray(close) - 0.5
    out["high"] = out["close"] + 1
    out["low"] = out["open"] - 1
    out["volume"] = 1.0
    out["trades"] = 1
    return out


@pytest.mark.parametrize("as_table", [False, True])
def test_align_missing_bars_and_late_start(as_table: bool) -> None:
    # y trades at 0,1,2,4,5 (no bar at 3); x starts later, at 2, and misses 5
    y = _bars([0, 1000, 2000, 4000, 5000], [10.0, 11.0, 12.0, 14.0, 15.0])
    x = _bars([2000, 3000, 4000], [20.0, 21.0, 22.0])
    if as_table:
        y, x = bars_to_table(y), bars_to_table(x)
    a = align_bars(y, x)
    np.testing.assert_array_equal(a.ts, [2000, 3000, 4000, 5000])
    np.testing.assert_array_equal(a.close_y, [12.0, 12.0, 14.0, 15.0])
    np.testing.assert_array_equal(a.open_y, [11.5, 12.0, 13.5, 14.5])
    np.testing.assert_array_equal(a.has_y, [True, False, True, True])
    np.testing.assert_array_equal(a.close_x, [20.0, 21.0, 22.0, 22.0])
    np.testing.assert_array_equal(a.open_x, [19.5, 20.5, 21.5, 22.0])
    np.testing.assert_array_equal(a.has_x, [True, True, True, False])


def test_align_earlier_leg_carries_its_last_close_into_the_start() -> None:
    y = _bars([0, 1000], [10.0, 11.0])
    x = _bars([3000, 4000], [20.0, 21.0])
    a = align_bars(y, x)
    np.testing.assert_array_equal(a.ts, [3000, 4000])
    np.testing.assert_array_equal(a.close_y, [11.0, 11.0])
    np.testing.assert_array_equal(a.has_y, [False, False])


def test_align_empty_leg_gives_nothing() -> None:
    a = align_bars(_bars([0], [1.0]), _bars([], []))
    assert a.ts.size == 0 and a.close_y.size == 0 and a.has_x.dtype == bool


@pytest.mark.parametrize(
    ("y", "x", "match"),
    [
        (_bars([1000, 0], [1.0, 2.0]), _bars([0], [1.0]), "strictly increasing"),
        (_bars([0, 0], [1.0, 2.0]), _bars([0], [1.0]), "strictly increasing"),
        (_bars([0], [np.nan]), _bars([0], [1.0]), "finite"),
        (np.zeros(3), _bars([0], [1.0]), "BAR_DTYPE"),
    ],
)
def test_align_bad_input(y, x, match: str) -> None:
    with pytest.raises(DataError, match=match):
        align_bars(y, x)


def _random_legs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two legs trading on random seconds, with different starts and gaps."""
    rng = np.random.default_rng(seed)
    legs = []
    for p, start in ((0.6, int(rng.integers(0, 20))), (0.3, int(rng.integers(0, 20)))):
        secs = np.flatnonzero(rng.random(400) < p)
        secs = secs[secs >= start]
        legs.append(_bars((secs * 1000).tolist(), (50.0 + rng.normal(0, 1, secs.size)).tolist()))
    return legs[0], legs[1]


@pytest.mark.parametrize("seed", range(6))
def test_streaming_bar_by_bar_equals_align_bars(seed: int) -> None:
    y, x = _random_legs(seed)
    # symbols [other, x, y]: the pair's legs are looked up by index, a third symbol is noise
    live = LiveAlign(np.array([2]), np.array([1]))
    by_y = dict(zip(y["ts"].tolist(), y["close"].tolist(), strict=True))
    by_x = dict(zip(x["ts"].tolist(), x["close"].tolist(), strict=True))
    never = np.array([np.iinfo(np.int64).min]), np.array([np.iinfo(np.int64).max])
    rows = []
    for t in sorted(set(by_y) | set(by_x) | {500, 1500}):  # 500/1500: only the third symbol
        closes = np.array([1.0, by_x.get(t, np.nan), by_y.get(t, np.nan)])
        if live.step(t, closes, *never):
            assert live.mask.tolist() == [True]
            rows.append((t, live.last_y[0], live.last_x[0]))
    a = align_bars(y, x)
    assert len(rows) == a.ts.size > 50
    np.testing.assert_array_equal([r[0] for r in rows], a.ts)
    np.testing.assert_array_equal([r[1] for r in rows], a.close_y)
    np.testing.assert_array_equal([r[2] for r in rows], a.close_x)


def _reference(y: np.ndarray, x: np.ndarray, max_carry: int, tf: int):
    """Plain-Python carry rule: walk the union of bar times from the first time both legs have
    traded; a leg without a bar carries its last close (as open and close) while its last own
    bar is at most max_carry bars old, else the time is dropped. Returns (rows, carried,
    dropped), rows (ts, open_y, close_y, open_x, close_x, has_y, has_x)."""
    by = {int(t): (o, c) for t, o, c in zip(y["ts"], y["open"], y["close"], strict=True)}
    bx = {int(t): (o, c) for t, o, c in zip(x["ts"], x["open"], x["close"], strict=True)}
    rows, dropped = [], 0
    last = {"y": None, "x": None}  # (own bar time, close)
    for t in sorted(set(by) | set(bx)):
        row = [t]
        for leg, bars in (("y", by), ("x", bx)):
            if t in bars:
                last[leg] = (t, bars[t][1])
        if last["y"] is None or last["x"] is None:
            continue
        if any(t - last[leg][0] > max_carry * tf for leg in ("y", "x")):
            dropped += 1
            continue
        for leg, bars in (("y", by), ("x", bx)):
            o, c = bars[t] if t in bars else (last[leg][1], last[leg][1])
            row += [o, c]
        rows.append((*row, t in by, t in bx))
    carried = sum(1 for r in rows if not (r[5] and r[6]))
    return rows, carried, dropped


def _sparse_legs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two legs on random seconds, each falling silent for random stretches of 1 to 30 s."""
    rng = np.random.default_rng(seed)
    legs = []
    for p in (0.7, 0.4):
        on = rng.random(600) < p
        for start in rng.integers(0, 600, 8):
            on[start : start + int(rng.integers(1, 31))] = False
        secs = np.flatnonzero(on)
        legs.append(_bars((secs * 1000).tolist(), (50.0 + rng.normal(0, 1, secs.size)).tolist()))
    return legs[0], legs[1]


def _stream(y: np.ndarray, x: np.ndarray, limit_ms: int) -> list[tuple]:
    live = LiveAlign(np.array([2]), np.array([1]), limit_ms)
    by = dict(zip(y["ts"].tolist(), y["close"].tolist(), strict=True))
    bx = dict(zip(x["ts"].tolist(), x["close"].tolist(), strict=True))
    never = np.array([np.iinfo(np.int64).min]), np.array([np.iinfo(np.int64).max])
    rows = []
    for t in sorted(set(by) | set(bx)):
        if live.step(t, np.array([1.0, bx.get(t, np.nan), by.get(t, np.nan)]), *never):
            rows.append((t, live.last_y[0], live.last_x[0]))
    return rows


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_carry", [0, 1, 3, 10, 10**9])
def test_carry_limit_batch_and_streaming_equal_the_reference(seed: int, max_carry: int) -> None:
    y, x = _sparse_legs(seed)
    rows, carried, dropped = _reference(y, x, max_carry, 1000)
    a = align_bars(y, x, max_carry_ms(max_carry, "1s"))
    got = list(zip(*(c.tolist() for c in (a.ts, a.open_y, a.close_y, a.open_x, a.close_x,
                                          a.has_y, a.has_x)), strict=True))  # fmt: skip
    assert got == rows and len(rows) > 20
    assert (a.carried, a.dropped) == (carried, dropped)
    assert int(a.dropped_before.sum()) <= a.dropped
    if max_carry == 0:
        assert carried == 0 and dropped > 0
    if max_carry == 10**9:
        assert dropped == 0
    assert _stream(y, x, max_carry_ms(max_carry, "1s")) == [(r[0], r[2], r[4]) for r in rows]


def test_max_carry_ms_auto_and_refusals() -> None:
    assert set(AUTO_MAX_CARRY) == set(TIMEFRAME_MS)
    assert max_carry_ms("auto", "1s") == 60_000 and max_carry_ms("auto", "1m") == 30 * 60_000
    assert max_carry_ms(0, "1d") == 0 and max_carry_ms(10**30, "1d") == NO_CARRY_LIMIT
    for bad in (-1, 1.5, True, "never"):
        with pytest.raises(ConfigError, match="max_carry"):
            max_carry_ms(bad, "1m")
    with pytest.raises(DataError, match="timeframe"):
        max_carry_ms(3, "7m")


def test_daily_against_monthly_drops_the_monthly_only_stretches() -> None:
    """The issue: one leg daily, the other daily in 2013 and then monthly to 2024. Without a
    limit the monthly leg's close is carried across every month; with the daily default
    (2 bars) only the days next to a monthly bar are kept, the counts say so, and the
    Engle-Granger test on what remains of two independent walks is not significant."""
    day = 86_400_000
    t0 = 1_356_998_400_000  # 2013-01-01
    rng = np.random.default_rng(3)
    days = np.arange(12 * 365)
    y = _bars((t0 + days * day).tolist(), np.exp(4 + np.cumsum(rng.normal(0, 0.02, days.size))))
    x_days = np.r_[days[:365], days[365::30]]  # daily in 2013, then one bar a month
    walk = np.exp(3 + np.cumsum(rng.normal(0, 0.02, days.size)))
    x = _bars((t0 + x_days * day).tolist(), walk[x_days])
    free = align_bars(y, x)
    assert free.ts.size == days.size and free.dropped == 0
    assert free.carried == days.size - x_days.size
    a = align_bars(y, x, max_carry_ms("auto", "1d"))
    rows, carried, dropped = _reference(y, x, 2, day)
    assert a.ts.tolist() == [r[0] for r in rows]
    assert (a.carried, a.dropped) == (carried, dropped)
    monthly = x_days.size - 365  # each monthly bar keeps its day and the 2 after it
    assert a.ts.size == 365 + 3 * monthly and a.dropped == days.size - a.ts.size
    # every kept day has x's own bar at most 2 days before it
    idx = np.searchsorted(x["ts"], a.ts, side="right") - 1
    assert (a.ts - x["ts"][idx] <= 2 * day).all()
    closes = np.column_stack([np.log(a.close_y), np.log(a.close_x)])
    res = coint_pairs(np.ascontiguousarray(closes.T), np.array([[0, 1]]))
    assert res.pvalue[0] > 0.05


def test_streaming_steps_only_inside_each_pairs_window() -> None:
    # two pairs on the same legs; pair 1 has consumed up to 2000 and may step up to 3000
    live = LiveAlign(np.array([0, 0]), np.array([1, 1]))
    next_t, limit = np.array([0, 2001]), np.array([10_000, 3000])
    got = []
    bars = [(0, 1.0, np.nan), (1000, np.nan, 2.0), (3000, 3.0, np.nan), (4000, 4.0, 5.0)]
    for t, cy, cx in bars:
        live.step(t, np.array([cy, cx]), next_t, limit)
        got.append(live.mask.tolist())
    # pair 1 looked only at 3000: it never saw x's bar (at 1000), so it has no x close to carry
    # and cannot step; 4000 is past its limit
    assert got == [[False, False], [True, False], [True, False], [True, False]]
    assert live.last_y.tolist() == [4.0, 3.0] and live.last_x[0] == 5.0
    assert np.isnan(live.last_x[1])
