"""Alignment of two legs: the batch rule (align_bars) on hand-made cases, and the streaming form
(LiveAlign) fed bar by bar gives exactly align_bars' rows."""

from __future__ import annotations

import numpy as np
import pytest

from engine.align import LiveAlign, align_bars
from engine.errors import DataError
from engine.schemas import BAR_DTYPE, bars_to_table


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
