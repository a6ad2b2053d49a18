"""Bars: batch builder against pandas resample, incremental builder against the batch one."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kit import assert_bars_equal, frame_bars, random_ticks

from engine.bars import (
    NO_WATERMARK,
    BarBuilder,
    BarUpdate,
    SortedBars,
    build_bar_records,
    build_bars,
)
from engine.errors import DataError
from engine.schemas import BAR_DTYPE, BAR_SCHEMA, TICK_DTYPE, TIMEFRAME_MS, table_to_bars

TIMEFRAMES = ["1s", "1m", "5m"]
PANDAS_FREQ = {"1s": "1s", "1m": "1min", "5m": "5min"}


def pandas_bars(ts: np.ndarray, price: np.ndarray, qty: np.ndarray, timeframe: str) -> np.ndarray:
    """Oracle: pandas resample (left-labelled, left-closed), empty intervals dropped."""
    index = pd.to_datetime(np.asarray(ts, dtype=np.int64), unit="ms", utc=True)
    df = pd.DataFrame({"price": price, "qty": qty, "quote": price * qty}, index=index)
    resampled = df.resample(PANDAS_FREQ[timeframe], label="left", closed="left")
    frame = resampled["price"].ohlc()
    frame["volume"] = resampled["qty"].sum()
    frame["quote_volume"] = resampled["quote"].sum()
    frame["trades"] = resampled["price"].count()
    return frame_bars(frame[frame["trades"] > 0])


def boundary_ticks(timeframe: str, seed: int) -> np.ndarray:
    """Trades exactly on, just before and just after interval boundaries, with equal times."""
    rng = np.random.default_rng(seed)
    tf = TIMEFRAME_MS[timeframe]
    start = 1_700_000_000_000 // tf * tf
    edges = start + tf * np.sort(rng.choice(40, 25, replace=False))
    ts = np.sort(np.concatenate([edges, edges - 1, edges + 1, edges[::3], edges[::4] - 1]))
    ticks = random_ticks(ts.size, seed=seed)
    ticks["ts"] = ts
    return ticks


# --- build_bars against pandas --------------------------------------------------------------


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mean_gap_ms", [20.0, 900.0, 40_000.0])
def test_build_bars_matches_pandas(timeframe: str, seed: int, mean_gap_ms: float) -> None:
    ticks = random_ticks(3000, mean_gap_ms=mean_gap_ms, seed=seed)
    expected = pandas_bars(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    table = build_bars(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    assert table.schema.equals(BAR_SCHEMA)
    assert_bars_equal(table_to_bars(table), expected)
    assert_bars_equal(
        build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], timeframe), expected
    )


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("seed", [3, 4])
def test_build_bars_boundaries_and_equal_times(timeframe: str, seed: int) -> None:
    ticks = boundary_ticks(timeframe, seed)
    assert np.any(np.diff(ticks["ts"]) == 0)
    ours = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    expected = pandas_bars(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    assert_bars_equal(ours, expected)
    assert np.any(ours["trades"] == 1)
    assert np.any(np.diff(ours["ts"]) > TIMEFRAME_MS[timeframe])  # empty intervals skipped


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_build_bars_before_1970_and_datetime_input(timeframe: str) -> None:
    ticks = random_ticks(2000, start_ms=-7_200_123, mean_gap_ms=500.0, seed=5)
    expected = pandas_bars(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    assert_bars_equal(
        build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], timeframe), expected
    )
    as_datetime = ticks["ts"].astype("datetime64[ms]").astype("datetime64[ns]")
    assert_bars_equal(
        build_bar_records(as_datetime, ticks["price"], ticks["qty"], timeframe), expected
    )


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_build_bars_empty(timeframe: str) -> None:
    table = build_bars(np.array([], dtype=np.int64), [], [], timeframe)
    assert table.num_rows == 0
    assert table.schema.equals(BAR_SCHEMA)


@settings(max_examples=80, deadline=None)
@given(
    timeframe=st.sampled_from(TIMEFRAMES),
    gaps=hnp.arrays(np.int64, st.integers(1, 150), elements=st.integers(0, 200_000)),
    data=st.data(),
)
def test_bar_properties(timeframe: str, gaps: np.ndarray, data: st.DataObject) -> None:
    n = gaps.size
    ts = 1_600_000_000_000 + np.cumsum(gaps)
    price = data.draw(hnp.arrays(np.float64, n, elements=st.floats(1e-4, 1e6)))
    qty = data.draw(hnp.arrays(np.float64, n, elements=st.floats(1e-6, 1e4)))
    bars = build_bar_records(ts, price, qty, timeframe)
    tf = TIMEFRAME_MS[timeframe]
    assert np.all(bars["low"] <= bars["open"]) and np.all(bars["open"] <= bars["high"])
    assert np.all(bars["low"] <= bars["close"]) and np.all(bars["close"] <= bars["high"])
    assert np.all(bars["ts"] % tf == 0) and np.all(np.diff(bars["ts"]) > 0)
    assert np.all(bars["trades"] >= 1) and bars["trades"].sum() == n
    np.testing.assert_allclose(bars["volume"].sum(), qty.sum(), rtol=1e-9)
    np.testing.assert_allclose(bars["quote_volume"].sum(), (price * qty).sum(), rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("mean_gap_ms", [20.0, 900.0, 40_000.0])
def test_sorted_bars_in_blocks_equal_each_timeframe_at_once(seed: int, mean_gap_ms: float) -> None:
    """All timeframes in one pass, blocks cut anywhere (inside a bar, between equal times, one
    trade, none): bit for bit the bars of each timeframe built at once (BarBuilder's, and so
    the live ones, are checked against those below), and pandas' bars."""
    ticks = random_ticks(4000, mean_gap_ms=mean_gap_ms, seed=seed)
    ticks["ts"][100:110] = ticks["ts"][100]  # equal times across a cut
    rng = np.random.default_rng(seed)
    cuts = np.unique(np.concatenate([rng.integers(0, len(ticks), 12), [105, 106, 106, 107]]))
    builder = SortedBars(tuple(TIMEFRAMES))
    got: list[list[np.ndarray]] = []
    for part in np.split(ticks, cuts):
        got.append(builder.add(part["ts"], part["price"], part["qty"]))
    got.append(builder.finish())
    for m, timeframe in enumerate(TIMEFRAMES):
        ours = np.concatenate([blocks[m] for blocks in got])
        args = (ticks["ts"], ticks["price"], ticks["qty"], timeframe)
        np.testing.assert_array_equal(ours, build_bar_records(*args))
        assert_bars_equal(ours, pandas_bars(*args))
    assert [len(b) for b in builder.finish()] == [0, 0, 0]  # finish started afresh


def test_sorted_bars_refuse_bad_trades_across_blocks() -> None:
    ticks = random_ticks(50, seed=4)
    builder = SortedBars(("1s", "1m"))
    builder.add(ticks["ts"][:20], ticks["price"][:20], ticks["qty"][:20])
    with pytest.raises(DataError, match=r"ts\[0\] = \d+ comes after the previous trade's \d+"):
        builder.add(ticks["ts"][:5], ticks["price"][:5], ticks["qty"][:5])
    price = ticks["price"][20:].copy()
    price[3] = np.nan
    with pytest.raises(DataError, match=r"price\[3\] = nan"):
        builder.add(ticks["ts"][20:], price, ticks["qty"][20:])
    with pytest.raises(DataError, match="same length"):
        builder.add(ticks["ts"][20:], ticks["price"][20:], ticks["qty"][21:])


# --- bad input ------------------------------------------------------------------------------


def _with_nat(ts: np.ndarray) -> np.ndarray:
    out = ts.astype("datetime64[ms]")
    out[4] = np.datetime64("NaT")
    return out


def _good() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ticks = random_ticks(50, seed=9)
    return ticks["ts"].copy(), ticks["price"].copy(), ticks["qty"].copy()


@pytest.mark.parametrize(
    ("column", "index", "value", "match"),
    [
        ("price", 7, np.nan, r"price\[7\] = nan"),
        ("price", 0, np.inf, r"price\[0\] = inf"),
        ("price", 3, -np.inf, r"price\[3\]"),
        ("price", 11, 0.0, r"price\[11\] = 0.0: prices must be finite and > 0"),
        ("price", 49, -1.5, r"price\[49\] = -1.5"),
        ("qty", 5, np.nan, r"qty\[5\] = nan"),
        ("qty", 6, 0.0, r"qty\[6\] = 0.0: quantities must be finite and > 0"),
        ("qty", 8, -2.0, r"qty\[8\]"),
        ("qty", 9, np.inf, r"qty\[9\] = inf"),
    ],
)
def test_build_bars_rejects_bad_values(column: str, index: int, value: float, match: str) -> None:
    ts, price, qty = _good()
    {"price": price, "qty": qty}[column][index] = value
    with pytest.raises(DataError, match=match):
        build_bars(ts, price, qty, "1s")


@pytest.mark.parametrize("index", [1, 17, 49])
def test_build_bars_rejects_unsorted_naming_first_index(index: int) -> None:
    ts, price, qty = _good()
    ts[index:] -= 10_000_000
    with pytest.raises(ValueError, match=rf"not sorted by time: ts\[{index}\]"):
        build_bars(ts, price, qty, "1m")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (lambda ts, p, q: (ts, p[:-1], q, "1s"), "same length, got 50, 49 and 50"),
        (lambda ts, p, q: (ts, p, q[:10], "1s"), "same length"),
        (lambda ts, p, q: (ts, p, q, "7m"), "unknown timeframe '7m'"),
        (lambda ts, p, q: (ts, p, q, 60), "timeframe must be a string"),
        (lambda ts, p, q: (ts.astype(float), p, q, "1s"), "integer Unix milliseconds"),
        (lambda ts, p, q: (_with_nat(ts), p, q, "1s"), r"ts_ms\[4\] is NaT"),
        (lambda ts, p, q: (ts.reshape(5, 10), p, q, "1s"), "one-dimensional"),
        (lambda ts, p, q: (ts, p.astype(str), q, "1s"), "price must be numeric"),
    ],
)
def test_build_bars_rejects_bad_shapes_and_types(args, match: str) -> None:
    with pytest.raises(DataError, match=match):
        build_bars(*args(*_good()))


# --- BarBuilder -----------------------------------------------------------------------------


def _collect(updates: list[BarUpdate]) -> np.ndarray:
    """Final bars from a run of updates: closed bars upserted with corrections, by open time."""
    final: dict[int, np.void] = {}
    for update in updates:
        for bar in update.closed:
            assert int(bar["ts"]) not in final, "a bar was closed twice"
            final[int(bar["ts"])] = bar
        for bar in update.corrected:
            final[int(bar["ts"])] = bar
    return np.array([final[t] for t in sorted(final)], dtype=BAR_DTYPE)


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("lateness_ms", [0, 250, 5_000])
@pytest.mark.parametrize("seed", [0, 1])
def test_incremental_equals_batch(timeframe: str, lateness_ms: int, seed: int) -> None:
    """Random batch sizes with clock calls in between that never make a trade late."""
    rng = np.random.default_rng(seed)
    tf = TIMEFRAME_MS[timeframe]
    ticks = random_ticks(6000, mean_gap_ms=float(rng.choice([30.0, 2_000.0])), seed=seed)
    builder = BarBuilder(timeframe, lateness_ms)
    updates, last_watermark, j = [], NO_WATERMARK, 0
    while j < ticks.size:
        batch = ticks[j : j + int(rng.integers(1, 300))]
        j += batch.size
        updates.append(builder.add(batch))
        if j < ticks.size and rng.random() < 0.5:
            # any clock reading in [last trade, next trade's bar end + lateness) keeps it on time
            next_end = ticks["ts"][j] // tf * tf + tf
            updates.append(
                builder.advance(int(rng.integers(batch["ts"][-1], next_end + lateness_ms)))
            )
        update = updates[-1]
        assert update.late == 0 and update.corrected.size == 0
        assert builder.watermark >= last_watermark
        last_watermark = builder.watermark
        assert np.all(update.closed["ts"] + tf <= builder.watermark)
        assert builder.open_bar is None or builder.open_bar["ts"] == builder.watermark
    updates.append(builder.advance(int(ticks["ts"][-1]) + tf + lateness_ms))
    assert builder.open_bar is None
    closed = np.concatenate([u.closed for u in updates])
    expected = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    np.testing.assert_array_equal(closed, expected)


@settings(max_examples=40, deadline=None)
@given(
    gaps=hnp.arrays(np.int64, st.integers(1, 120), elements=st.integers(0, 3_000)),
    cuts=st.lists(st.integers(0, 120), max_size=12),
)
def test_incremental_equals_batch_any_split(gaps: np.ndarray, cuts: list[int]) -> None:
    ticks = random_ticks(gaps.size, seed=gaps.size)
    ticks["ts"] = 1_650_000_000_000 + np.cumsum(gaps)
    builder = BarBuilder("1s", 100)
    bounds = [0, *sorted(c for c in cuts if c < gaps.size), gaps.size]
    closed = [builder.add(ticks[a:b]).closed for a, b in itertools.pairwise(bounds)]
    closed.append(builder.advance(2**62).closed)
    expected = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], "1s")
    np.testing.assert_array_equal(np.concatenate(closed), expected)


def _ticks(rows: list[tuple[int, int, float, float]]) -> np.ndarray:
    """(ts ms, agg_id, price, qty) rows -> TICK_DTYPE records."""
    out = np.zeros(len(rows), dtype=TICK_DTYPE)
    for k, (ts, agg_id, price, qty) in enumerate(rows):
        out[k] = (ts, agg_id, price, qty, agg_id, agg_id, False)
    return out


def _bar(ts: int, o: float, h: float, lo: float, c: float, v: float, qv: float, n: int):
    return np.array([(ts, o, h, lo, c, v, qv, n)], dtype=BAR_DTYPE)


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("lateness_ms", [0, 250, 3_000])
def test_clock_closes_bar_after_lateness(timeframe: str, lateness_ms: int) -> None:
    tf = TIMEFRAME_MS[timeframe]
    start = 1_700_000_000_000 // tf * tf
    builder = BarBuilder(timeframe, lateness_ms)
    assert builder.watermark == NO_WATERMARK and builder.open_bar is None
    update = builder.add(_ticks([(start + 1, 1, 10.0, 2.0), (start + tf - 1, 2, 12.0, 1.0)]))
    assert update.closed.size == 0 and builder.watermark == start
    np.testing.assert_array_equal(builder.open_bar, _bar(start, 10, 12, 10, 12, 3, 32, 2)[0])
    update = builder.advance(start + tf + lateness_ms - 1)
    assert update.closed.size == 0 and builder.open_bar is not None
    assert builder.watermark == max(start, (start + tf + lateness_ms - 1 - lateness_ms) // tf * tf)
    update = builder.advance(start + tf + lateness_ms)
    np.testing.assert_array_equal(update.closed, _bar(start, 10, 12, 10, 12, 3, 32, 2))
    assert builder.open_bar is None and builder.watermark == start + tf
    assert builder.advance(start + tf + lateness_ms + 1).closed.size == 0


def test_watermark_follows_trades_and_clock() -> None:
    builder = BarBuilder("1s", 250)
    builder.add(_ticks([(1_500, 1, 10.0, 1.0)]))
    assert builder.watermark == 1_000
    builder.advance(1_100)  # the clock behind the trades never moves the watermark back
    assert builder.watermark == 1_000
    update = builder.advance(5_000)
    assert builder.watermark == 4_000
    np.testing.assert_array_equal(update.closed, _bar(1_000, 10, 10, 10, 10, 1, 10, 1))
    builder.add(_ticks([(4_100, 2, 11.0, 1.0)]))
    assert builder.watermark == 4_000 and builder.open_bar["ts"] == 4_000
    builder.add(_ticks([(9_999, 3, 11.0, 1.0)]))
    assert builder.watermark == 9_000
    builder.reset()
    assert builder.watermark == NO_WATERMARK and builder.open_bar is None


def test_late_trades_correct_their_bars() -> None:
    builder = BarBuilder("1s", 250)
    update = builder.add(
        _ticks([(1_000, 10, 10.0, 1.0), (1_500, 11, 11.0, 2.0), (2_100, 12, 12.0, 1.0)])
    )
    np.testing.assert_array_equal(update.closed, _bar(1_000, 10, 11, 10, 11, 3, 32, 2))
    # a refilled trade with an earlier id at the same time becomes the open; one in the middle
    # changes only low/volume; one in an interval without a bar makes a new bar
    update = builder.add(_ticks([(1_000, 9, 8.0, 1.0), (1_200, 13, 5.0, 1.0), (900, 8, 7.0, 2.0)]))
    assert update.late == 3 and update.closed.size == 0
    expected = np.concatenate([_bar(0, 7, 7, 7, 7, 2, 14, 1), _bar(1_000, 8, 11, 5, 11, 5, 45, 4)])
    np.testing.assert_array_equal(update.corrected, expected)
    # the open bar is untouched by late trades
    np.testing.assert_array_equal(builder.open_bar, _bar(2_000, 12, 12, 12, 12, 1, 12, 1)[0])
    # a late trade for a bar closed in the same batch lands in `closed`, not in `corrected`
    update = builder.add(_ticks([(3_000, 14, 13.0, 1.0), (2_999, 15, 14.0, 1.0)]))
    assert update.late == 1 and update.corrected.size == 0
    np.testing.assert_array_equal(update.closed, _bar(2_000, 12, 14, 12, 14, 2, 26, 2))
    # a late trade after a clock close, in the interval the clock closed
    builder.advance(4_250)
    update = builder.add(_ticks([(3_500, 16, 12.5, 2.0)]))
    assert update.late == 1
    np.testing.assert_array_equal(update.corrected, _bar(3_000, 13, 13, 12.5, 12.5, 3, 38, 2))


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_late_trades_rebuild_offline_bars(timeframe: str, seed: int) -> None:
    """Delayed trades (REST refills) with clock calls: closed + corrections == offline bars."""
    rng = np.random.default_rng(seed)
    tf = TIMEFRAME_MS[timeframe]
    ticks = random_ticks(5000, mean_gap_ms=tf / 8, seed=seed)
    delay = np.where(rng.random(ticks.size) < 0.05, rng.integers(1, 400, ticks.size), 0)
    arrival = ticks[np.argsort(np.arange(ticks.size) + delay, kind="stable")]
    builder = BarBuilder(timeframe, 250)
    updates, j, expected_late = [], 0, 0
    watermark = NO_WATERMARK  # plain-Python oracle of the definition of "late"
    while j < arrival.size:
        batch = arrival[j : j + int(rng.integers(1, 200))]
        j += batch.size
        for t in batch["ts"].tolist():
            if t // tf * tf < watermark:
                expected_late += 1
            else:
                watermark = t // tf * tf
        updates.append(builder.add(batch))
        now = int(arrival["ts"][:j].max() + rng.integers(0, 2 * tf))
        updates.append(builder.advance(now))
        watermark = max(watermark, (now - 250) // tf * tf)
        assert builder.watermark == watermark
    updates.append(builder.advance(2**62))
    assert sum(u.late for u in updates) == expected_late > 0
    assert builder.uncorrected == 0
    expected = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    assert_bars_equal(_collect(updates), expected)


def test_late_trade_beyond_kept_bars_is_counted_not_guessed(caplog) -> None:
    builder = BarBuilder("1s", 0, keep=2)
    builder.add(_ticks([(1_000 * k, k, 10.0 + k, 1.0) for k in range(1, 10)]))
    update = builder.add(_ticks([(1_500, 20, 1.0, 1.0), (7_500, 21, 100.0, 1.0)]))
    assert update.late == 2 and builder.uncorrected == 1
    np.testing.assert_array_equal(update.corrected, _bar(7_000, 17, 100, 17, 100, 2, 117, 2))
    assert "cannot be corrected" in caplog.text


def _delayed(ticks: np.ndarray, seed: int, share: float = 0.05) -> np.ndarray:
    """Ticks in arrival order when a share of them comes 1-400 positions late (REST refills)."""
    rng = np.random.default_rng(seed)
    delay = np.where(rng.random(ticks.size) < share, rng.integers(1, 400, ticks.size), 0)
    return ticks[np.argsort(np.arange(ticks.size) + delay, kind="stable")]


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_sizes_views_and_work_array_growth(timeframe: str, seed: int) -> None:
    """Batches of 1 tick up to more than the work arrays hold (4096 rows), as strided views and
    np.recarray, with late trades: closed + corrections == offline bars, one builder vs one
    whole-stream add."""
    rng = np.random.default_rng(seed)
    tf = TIMEFRAME_MS[timeframe]
    ticks = random_ticks(20_000, mean_gap_ms=tf / 20, seed=seed)
    arrival = _delayed(ticks, seed)
    builder = BarBuilder(timeframe, 250)
    updates, j = [], 0
    while j < arrival.size:
        size = int(rng.choice([1, 2, 5, 63, 64, 65, 500, 4095, 4096, 6000]))
        batch = arrival[j : j + size]
        j += batch.size
        form = rng.integers(3)
        if form == 1:  # a strided view of the same records
            batch = np.repeat(batch, 2)[::2]
            assert not batch.flags.c_contiguous or batch.size < 2
        elif form == 2:
            batch = batch.view(np.recarray)
        updates.append(builder.add(batch))
        updates.append(builder.advance(int(arrival["ts"][:j].max())))
    updates.append(builder.advance(2**62))
    assert sum(u.late for u in updates) > 0 and builder.uncorrected == 0
    expected = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], timeframe)
    assert_bars_equal(_collect(updates), expected)
    whole = BarBuilder(timeframe, 250)
    assert_bars_equal(_collect([whole.add(arrival), whole.advance(2**62)]), expected)


def test_a_batch_larger_than_the_work_arrays_inside_the_open_bar() -> None:
    """10,000 trades within one second, in batches of 1, 5999 and 4000: one bar, as offline."""
    ticks = random_ticks(10_000, mean_gap_ms=0.05, seed=5)
    assert ticks["ts"][-1] // 1000 == ticks["ts"][0] // 1000
    builder = BarBuilder("1s", 0)
    updates = [builder.add(ticks[:1]), builder.add(ticks[1:6000]), builder.add(ticks[6000:])]
    assert all(u.closed.size == 0 for u in updates)
    updates.append(builder.advance(2**62))
    expected = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], "1s")
    assert expected.size == 1
    assert_bars_equal(_collect(updates), expected)


def _snapshot(builder: BarBuilder) -> tuple:
    bar = builder.open_bar
    return builder.watermark, None if bar is None else bar.tolist(), builder.next_close_ms


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("lateness_ms", [0, 250, 3_000])
@pytest.mark.parametrize("seed", [0, 1])
def test_next_close_ms_is_the_first_clock_reading_that_does_anything(
    timeframe: str, lateness_ms: int, seed: int
) -> None:
    """In every state met (fresh, open bar, after clock closes, after late trades, after
    reset): advance(next_close_ms - 1) changes nothing; advance(next_close_ms) moves the
    watermark and closes the open bar if there is one."""
    rng = np.random.default_rng(seed)
    tf = TIMEFRAME_MS[timeframe]
    arrival = _delayed(random_ticks(600, mean_gap_ms=tf / 4, seed=seed), seed, share=0.1)
    builder = BarBuilder(timeframe, lateness_ms)
    j, checked = 0, 0
    while j < arrival.size:
        state = _snapshot(builder)
        nxt = builder.next_close_ms
        assert nxt == (builder.watermark // tf + 1) * tf + lateness_ms  # the documented formula
        if builder.open_bar is not None:  # = the documented close: bar end + lateness
            assert nxt == builder.open_bar["ts"] + tf + lateness_ms
        below = copy.deepcopy(builder)
        update = below.advance(nxt - 1)
        assert update.closed.size == 0 and _snapshot(below) == state
        at = copy.deepcopy(builder)
        update = at.advance(nxt)
        assert at.watermark > builder.watermark
        if builder.open_bar is None:
            assert update.closed.size == 0
        else:
            assert update.closed["ts"].tolist() == [builder.open_bar["ts"]]
            assert at.open_bar is None
        checked += 1
        if rng.random() < 0.4:  # a clock reading somewhere around the next close
            builder.advance(int(nxt + rng.integers(-2 * tf, 2 * tf)))
        else:
            batch = arrival[j : j + int(rng.integers(1, 8))]
            j += batch.size
            builder.add(batch)
        if rng.random() < 0.01:
            builder.reset()
    assert checked > arrival.size // 4


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_skipping_clock_readings_below_next_close_ms_changes_nothing(
    timeframe: str, seed: int
) -> None:
    """A caller that calls advance only when now >= next_close_ms gets the same bars and
    watermarks as one that calls it on every clock reading (late trades included)."""
    rng = np.random.default_rng(seed)
    tf = TIMEFRAME_MS[timeframe]
    arrival = _delayed(random_ticks(3000, mean_gap_ms=tf / 6, seed=seed), seed)
    every, skipping = BarBuilder(timeframe, 250), BarBuilder(timeframe, 250)
    got_every, got_skipping, j, skipped = [], [], 0, 0
    while j < arrival.size:
        batch = arrival[j : j + int(rng.integers(1, 20))]
        j += batch.size
        got_every.append(every.add(batch))
        got_skipping.append(skipping.add(batch))
        for _ in range(int(rng.integers(0, 4))):
            now = int(arrival["ts"][:j].max() + rng.integers(-tf, 2 * tf))
            got_every.append(every.advance(now))
            if now >= skipping.next_close_ms:
                got_skipping.append(skipping.advance(now))
            else:
                skipped += 1
            assert skipping.watermark == every.watermark
    assert skipped > 0
    for name in ("closed", "corrected"):
        a = np.concatenate([getattr(u, name) for u in got_every])
        b = np.concatenate([getattr(u, name) for u in got_skipping])
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: BarBuilder("2m", 250), "unknown timeframe '2m'"),
        (lambda: BarBuilder("1s", -1), "lateness_ms must be >= 0"),
        (lambda: BarBuilder("1s", 0.5), "lateness_ms must be an integer"),
        (lambda: BarBuilder("1s", 0, keep=0), "keep must be a positive integer"),
        (lambda: BarBuilder("1s", 0).advance(1.5), "now_ms must be an integer"),
        (lambda: BarBuilder("1s", 0).add(np.zeros(3, dtype=BAR_DTYPE)), "TICK_DTYPE"),
        (lambda: BarBuilder("1s", 0).add([(1, 1, 1.0, 1.0, 1, 1, False)]), "TICK_DTYPE"),
        (lambda: BarBuilder("1s", 0).add(_ticks([(1, 1, np.nan, 1.0)])), r"price\[0\] = nan"),
        (
            lambda: BarBuilder("1s", 0).add(_ticks([(1, 1, 1.0, 1.0), (2, 2, 1.0, -1.0)])),
            r"qty\[1\] = -1.0",
        ),
    ],
)
def test_bar_builder_rejects_bad_input(make, match: str) -> None:
    with pytest.raises(DataError, match=match):
        make()


def test_bad_batch_leaves_builder_unchanged() -> None:
    builder = BarBuilder("1s", 0)
    builder.add(_ticks([(1_000, 1, 10.0, 1.0)]))
    with pytest.raises(DataError):
        builder.add(_ticks([(2_000, 2, 11.0, 1.0), (2_001, 3, 0.0, 1.0)]))
    assert builder.watermark == 1_000
    np.testing.assert_array_equal(builder.open_bar, _bar(1_000, 10, 10, 10, 10, 1, 10, 1)[0])
    assert builder.add(np.empty(0, dtype=TICK_DTYPE)).closed.size == 0


def test_recent_keeps_the_last_closed_bars_like_a_rebuild():
    """The kept closed bars (``recent``) equal the newest ``keep`` bars of an offline rebuild
    of the trades so far (the open bar left out), whatever the batch sizes."""
    rng = np.random.default_rng(3)
    ticks = random_ticks(3000, mean_gap_ms=700.0, seed=3)
    builder, done = BarBuilder("1s", 0, keep=50), 0
    for step in range(400):
        k = int(rng.choice([0, 1, 2, 7, 49, 50, 51, 130])) if step % 37 else 0
        builder.add(ticks[done : done + k])
        done = min(done + k, len(ticks))
        part = ticks[:done]
        closed = build_bar_records(part["ts"], part["price"], part["qty"], "1s")[:-1]
        np.testing.assert_array_equal(builder.recent(), closed[-50:])
        n = int(rng.integers(0, 60))
        np.testing.assert_array_equal(builder.recent(n), closed[-50:][-n:] if n else closed[:0])
    got = builder.recent(5)
    got["close"] = 0.0  # a copy: the builder is untouched
    assert not np.array_equal(builder.recent(5), got)


def test_seeded_bars_are_recent_and_corrected_by_late_trades():
    """Seeded (stored) bars come back from ``recent``, move the watermark past them, and a late
    trade in one of them changes its high, low, volume and trades, not its open and close."""
    ticks = random_ticks(400, mean_gap_ms=300.0, seed=5)
    bars = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], "1s")
    builder = BarBuilder("1s", 0)
    builder.seed(bars)
    np.testing.assert_array_equal(builder.recent(), bars)
    assert builder.watermark == bars["ts"][-1] + 1000
    late = ticks[200:201].copy()
    late["price"] = bars["high"].max() + 5.0
    upd = builder.add(late)
    want = bars[bars["ts"] == (late["ts"][0] // 1000) * 1000][0].copy()
    want["high"], want["trades"] = late["price"][0], want["trades"] + 1
    want["volume"] += late["qty"][0]
    want["quote_volume"] += late["price"][0] * late["qty"][0]
    assert upd.late == 1 and len(upd.closed) == 0
    np.testing.assert_allclose(upd.corrected[0].tolist(), want.tolist())
    with pytest.raises(DataError, match="fresh builder"):
        builder.seed(bars)
