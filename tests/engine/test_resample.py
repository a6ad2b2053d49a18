"""Resampling bars to coarser timeframes (pandas resample is the oracle) and the store read of a
timeframe (stored bars, else resampled from finer stored ones)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kit import assert_bars_equal, pandas_resample, random_ticks

from engine.bars import build_bar_records
from engine.errors import DataError
from engine.resample import read_timeframe, resample_bars, source_timeframe, symbols_for
from engine.schemas import BAR_DTYPE, TIMEFRAME_MS
from engine.store import Store

GRID = [("1m", "3m"), ("1m", "15m"), ("1m", "1h"), ("1m", "4h"), ("1m", "1d"), ("5m", "1h"),
        ("5m", "1d"), ("1s", "1m"), ("1s", "5m"), ("15m", "4h"), ("1h", "12h")]
#: 2023-11-14 22:13:20 UTC: not on any coarse boundary
T0 = 1_700_000_000_000


def fine_bars(timeframe: str, n: int, seed: int, span: int | None = None) -> np.ndarray:
    """``n`` random bars on the ``timeframe`` grid, some intervals empty, OHLC consistent."""
    rng = np.random.default_rng(seed)
    tf = TIMEFRAME_MS[timeframe]
    slots = np.sort(rng.choice(span or 3 * n, n, replace=False))
    out = np.empty(n, dtype=BAR_DTYPE)
    out["ts"] = T0 // tf * tf + slots * tf
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    out["open"] = close * np.exp(rng.normal(0, 5e-4, n))
    out["close"] = close
    out["high"] = np.maximum(out["open"], close) * (1 + rng.random(n) * 1e-3)
    out["low"] = np.minimum(out["open"], close) * (1 - rng.random(n) * 1e-3)
    out["volume"] = rng.lognormal(0, 1, n)
    out["quote_volume"] = out["volume"] * close
    out["trades"] = rng.integers(1, 50, n)
    return out


@pytest.mark.parametrize("fine,coarse", GRID)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resample_matches_pandas(fine: str, coarse: str, seed: int) -> None:
    ratio = TIMEFRAME_MS[coarse] // TIMEFRAME_MS[fine]
    bars = fine_bars(fine, 400, seed, span=max(600, 6 * ratio))
    ours = resample_bars(bars, fine, coarse, complete_until=np.iinfo(np.int64).max)
    expected = pandas_resample(bars, coarse)
    assert len(expected) > 1
    assert_bars_equal(ours, expected)


@pytest.mark.parametrize("fine,coarse", GRID)
def test_partial_last_interval_dropped(fine: str, coarse: str) -> None:
    bars = fine_bars(fine, 300, seed=5)
    f, c = TIMEFRAME_MS[fine], TIMEFRAME_MS[coarse]
    last_open = bars["ts"][-1] // c * c
    expected = pandas_resample(bars, coarse)
    ours = resample_bars(bars, fine, coarse)
    if bars["ts"][-1] + f == last_open + c:  # the last fine interval is there: complete
        assert_bars_equal(ours, expected)
    else:
        assert_bars_equal(ours, expected[:-1])
        # a later fine bar proves it complete
        assert_bars_equal(resample_bars(bars, fine, coarse, complete_until=last_open + c),
                          expected)
    # the last fine interval of the coarse one present: kept without a hint
    whole = bars.copy()
    whole["ts"][-1] = last_open + c - f
    if np.all(np.diff(whole["ts"]) > 0):
        assert resample_bars(whole, fine, coarse)["ts"][-1] == last_open


def test_intervals_are_utc_aligned() -> None:
    bars = fine_bars("1m", 3000, seed=3, span=4000)
    for coarse, hours in (("1d", 24), ("4h", 4), ("1h", 1)):
        out = resample_bars(bars, "1m", coarse)
        stamps = pd.to_datetime(out["ts"], unit="ms", utc=True)
        assert (stamps.minute == 0).all() and (stamps.hour % hours == 0).all()
    daily = resample_bars(bars, "1m", "1d", complete_until=np.iinfo(np.int64).max)
    assert str(pd.Timestamp(daily["ts"][0], unit="ms", tz="UTC")) == "2023-11-14 00:00:00+00:00"


@pytest.mark.parametrize("coarse", ["15m", "1h", "4h"])
def test_resampled_equals_bars_built_from_the_trades(coarse: str) -> None:
    ticks = random_ticks(60_000, mean_gap_ms=1500.0, seed=7)
    ts, price, qty = ticks["ts"], ticks["price"], ticks["qty"]
    minute = build_bar_records(ts, price, qty, "1m")
    direct = build_bar_records(ts, price, qty, coarse)
    ours = resample_bars(minute, "1m", coarse, complete_until=int(ts[-1]) + 1)
    assert_bars_equal(ours, direct[: len(ours)])
    assert len(ours) >= len(direct) - 1  # only the interval still open at the end may be left


def test_resample_refuses_bad_input() -> None:
    bars = fine_bars("1m", 50, seed=0)
    with pytest.raises(DataError, match="not a multiple of 5m"):
        resample_bars(fine_bars("5m", 10, seed=0), "5m", "3m")
    with pytest.raises(DataError, match="ascending"):
        resample_bars(bars[::-1], "1m", "1h")
    shifted = bars.copy()
    shifted["ts"] += 1
    with pytest.raises(DataError, match="grid"):
        resample_bars(shifted, "1m", "1h")
    with pytest.raises(DataError, match="BAR_DTYPE"):
        resample_bars(bars["ts"], "1m", "1h")
    with pytest.raises(DataError, match="unknown timeframe"):
        resample_bars(bars, "1m", "7m")
    assert resample_bars(bars[:0], "1m", "1h").size == 0


# ----------------------------------------------------------------------------- store reads


def _store(tmp_path, **bars_by_tf) -> Store:
    store = Store(tmp_path / "store")
    for tf, bars in bars_by_tf.items():
        store.write_bars(tf.removeprefix("tf"), "BTCUSDT", bars)
    store.flush()
    return store


def test_read_resamples_the_finest_stored_source(tmp_path) -> None:
    minute = fine_bars("1m", 3000, seed=11, span=4000)
    store = _store(tmp_path, tf1m=minute, tf5m=resample_bars(minute, "1m", "5m"))
    assert source_timeframe(store, "1h", "BTCUSDT") == "1m"
    assert source_timeframe(store, "5m", "BTCUSDT") == "1m"
    assert source_timeframe(store, "1m", "BTCUSDT") is None
    assert symbols_for(store, "4h") == ["BTCUSDT"] and symbols_for(store, "1s") == []
    got = read_timeframe(store.path, "1h", "BTCUSDT")
    assert got.sources == ("1m",)
    assert_bars_equal(got.bars, resample_bars(minute, "1m", "1h"))
    # start inside an interval: the next whole one; end inside one: the one opening before it
    start, end = int(minute["ts"][500]) + 1, int(minute["ts"][2000]) + 1
    part = read_timeframe(store, "1h", "BTCUSDT", start, end).bars
    expected = resample_bars(minute, "1m", "1h")
    expected = expected[(expected["ts"] >= start) & (expected["ts"] < end)]
    assert part["ts"][0] % 3_600_000 == 0 and part["ts"][0] >= start
    assert_bars_equal(part, expected)


def test_read_prefers_stored_bars_and_resamples_around_them(tmp_path) -> None:
    minute = fine_bars("1m", 3000, seed=12, span=4000)
    hourly = resample_bars(minute, "1m", "1h")
    held = hourly[10:20].copy()
    held["volume"] += 1.0  # marks the stored ones
    store = _store(tmp_path, tf1m=minute, tf1h=held)
    got = read_timeframe(store, "1h", "BTCUSDT")
    assert got.sources == ("1h", "1m")
    np.testing.assert_array_equal(got.bars["ts"], hourly["ts"])
    assert_bars_equal(got.bars[10:20], held)
    assert_bars_equal(got.bars[:10], hourly[:10])
    assert_bars_equal(got.bars[20:], hourly[20:])
    # stored only: nothing to resample from
    alone = Store(tmp_path / "alone")
    alone.write_bars("1h", "BTCUSDT", held)
    alone.flush()
    only = read_timeframe(alone, "1h", "BTCUSDT")
    assert only.sources == ("1h",)
    assert_bars_equal(only.bars, held)
    assert read_timeframe(alone, "4h", "ETHUSDT").bars.size == 0


def test_read_keeps_an_interval_cut_by_end_when_later_bars_are_stored(tmp_path) -> None:
    minute = fine_bars("1m", 3000, seed=13, span=4000)
    store = _store(tmp_path, tf1m=minute)
    hourly = resample_bars(minute, "1m", "1h")
    end = int(hourly["ts"][5]) + 1  # the interval opening at hourly[5] opens before end
    got = read_timeframe(store, "1h", "BTCUSDT", None, end).bars
    assert_bars_equal(got, hourly[:6])
    # the store's last hour is open: dropped
    assert read_timeframe(store, "1h", "BTCUSDT").bars["ts"][-1] == hourly["ts"][-1]
    assert hourly["ts"][-1] + 3_600_000 <= minute["ts"][-1] + 60_000


def test_backtest_data_drops_a_resampled_first_bar_the_recording_began_in(tmp_path) -> None:
    """A recording that starts mid-hour makes the first 1h bar partial: PairData.from_store
    drops it, as it drops a partial first stored bar."""
    from engine.backtest_data import PairData

    store = Store(tmp_path / "store")
    bars = {}
    for seed, symbol in enumerate(("ETHUSDT", "BTCUSDT")):
        ticks = random_ticks(20_000, mean_gap_ms=1500.0, seed=20 + seed)  # starts 22:13:20
        store.write_ticks(symbol, ticks)
        bars[symbol] = build_bar_records(ticks["ts"], ticks["price"], ticks["qty"], "1m")
        store.write_bars("1m", symbol, bars[symbol])
    store.flush()
    data = PairData.from_store(store.path, "ETHUSDT", "BTCUSDT", "1h", funding=False)
    assert data.dropped == ("ETHUSDT", "BTCUSDT")
    assert_bars_equal(data.bars_y, resample_bars(bars["ETHUSDT"], "1m", "1h")[1:])
    first_whole = T0 // 3_600_000 * 3_600_000 + 3_600_000
    assert data.bars_y["ts"][0] == first_whole
    # a start after the recording began: nothing dropped
    later = PairData.from_store(store.path, "ETHUSDT", "BTCUSDT", "1h", first_whole,
                                funding=False)
    assert later.dropped == ()
    assert_bars_equal(later.bars_y, data.bars_y)
