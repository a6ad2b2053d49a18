"""The simulated market's bars, made by day straight from the generator, equal the bars of its
own trades; klines print them as Python would.

Oracles: pandas ``resample`` of the day's aggTrades as the archive serves them (CSV in a zip),
``trade_minute_bars`` of ``chunk_trades`` (the bars of the trades, to the bit), NumPy's own
Generator for the draws, and Python's float format for decimal strings.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from engine.simulator.archive import Archive
from engine.simulator.klines import INTERVALS, klines
from engine.simulator.market import (
    BAR_FIELDS,
    BLOCK_MS,
    BURST_MEAN_S,
    BURST_PER_BLOCK,
    DAY_MS,
    Market,
    brownian_bridge,
    chunk_draws,
    chunk_minute_bars,
    chunk_trades,
    trade_minute_bars,
)
from engine.simulator.wire import fixed_decimals

T0 = 1_700_000_000_000
LISTING = T0 + 5 * DAY_MS + 37_123_456  # mid-day, mid-minute
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XYZUSDT")
EXACT = ("open_time", "open", "high", "low", "close", "count")
SUMS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")


def _market() -> Market:
    return Market(SYMBOLS, seed=11, rate=3.0, listings={"XYZUSDT": LISTING})


def _archived_trades(market: Market, symbol: str, day: int) -> pd.DataFrame:
    """The day's aggTrades CSV from the simulator's archive, parsed by pandas."""
    date = pd.Timestamp(day * DAY_MS, unit="ms").strftime("%Y-%m-%d")
    name = f"{symbol}-aggTrades-{date}"
    resp = Archive(market, lambda: 0).handle(
        f"/data/futures/um/daily/aggTrades/{symbol}/{name}.zip", (day + 2) * DAY_MS
    )
    assert resp.status == 200
    with zipfile.ZipFile(io.BytesIO(resp.body)) as zf:
        return pd.read_csv(io.BytesIO(zf.read(f"{name}.csv")))


def _resample(trades: pd.DataFrame, rule: str) -> pd.DataFrame:
    """OHLC, count and sums per ``rule`` bar of aggTrades rows; bars without trades dropped."""
    price, qty = trades["price"], trades["quantity"]
    buy = ~trades["is_buyer_maker"]
    frame = pd.DataFrame(
        {"open": price, "high": price, "low": price, "close": price, "count": price,
         "volume": qty, "quote_volume": price * qty, "taker_buy_volume": qty.where(buy, 0.0),
         "taker_buy_quote_volume": (price * qty).where(buy, 0.0)},
    ).set_index(pd.to_datetime(trades["transact_time"], unit="ms"))  # fmt: skip
    out = frame.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "count": "count",
         **dict.fromkeys(SUMS, "sum")}
    )  # fmt: skip
    out = out[out["count"] > 0]
    out.insert(0, "open_time", out.index.as_unit("ms").asi8)
    return out


def _assert_bars(got: dict[str, np.ndarray], want: pd.DataFrame) -> None:
    for name in EXACT:
        np.testing.assert_array_equal(got[name], want[name].to_numpy(), err_msg=name)
    for name in SUMS:  # pandas sums with compensation, ours in trade order
        np.testing.assert_allclose(got[name], want[name].to_numpy(), rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("pick", [0, 1, 2])
def test_day_bars_equal_pandas_resample_of_the_days_archived_agg_trades(pick):
    rng = np.random.default_rng(pick)
    symbol = SYMBOLS[pick]
    day = int(LISTING // DAY_MS) if symbol == "XYZUSDT" else int(T0 // DAY_MS + rng.integers(30))
    market = _market()
    got = market.minute_bars(symbol, day * DAY_MS, (day + 1) * DAY_MS)
    want = _resample(_archived_trades(market, symbol, day), "1min")
    assert len(want) == (1440 if symbol != "XYZUSDT" else 1440 - (LISTING % DAY_MS) // 60_000)
    _assert_bars(got, want)
    ticks = _market().trades(symbol, day * DAY_MS, (day + 1) * DAY_MS)
    exact = trade_minute_bars(ticks["ts"], ticks["price"], ticks["qty"], ticks["buyer_maker"])
    for name, col in zip(BAR_FIELDS, exact, strict=True):
        np.testing.assert_array_equal(got[name], col, err_msg=name)


@pytest.mark.parametrize("interval", ["5m", "4h", "1d"])
def test_klines_of_longer_intervals_equal_pandas_resample(interval):
    market, tf = _market(), INTERVALS[interval]
    day = int(T0 // DAY_MS + 3)
    rows = klines(market, "ETHUSDT", tf, day * DAY_MS, (day + 1) * DAY_MS - tf, day * DAY_MS,
                  (day + 1) * DAY_MS)  # fmt: skip
    want = _resample(_archived_trades(market, "ETHUSDT", day), f"{tf // 60_000}min")
    assert len(rows) == len(want) == DAY_MS // tf
    got = {name: np.array([float(r[i]) for r in rows])
           for i, name in enumerate(("open_time", "open", "high", "low", "close", "volume"))}
    got |= {name: np.array([float(r[i]) for r in rows])
            for i, name in ((7, "quote_volume"), (8, "count"), (9, "taker_buy_volume"),
                            (10, "taker_buy_quote_volume"))}  # fmt: skip
    spec = market.specs["ETHUSDT"]
    for name in SUMS:  # printed at fixed decimals: compare at the last printed digit
        decimals = spec.quantity_precision + ("quote" in name) * spec.price_precision
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=0.6 * 10.0**-decimals)
    for name in EXACT:
        np.testing.assert_array_equal(got[name], want[name].to_numpy(), err_msg=name)


def test_minute_bars_with_part_minutes_across_a_day_equal_the_bars_of_the_trades():
    market = _market()
    start = (T0 // DAY_MS + 2) * DAY_MS - 3_600_000 + 12_345
    end = start + 2 * 3_600_000 + 40_001
    got = market.minute_bars("BTCUSDT", start, end)
    ticks = _market().trades("BTCUSDT", start, end)
    want = trade_minute_bars(ticks["ts"], ticks["price"], ticks["qty"], ticks["buyer_maker"])
    for name, col in zip(BAR_FIELDS, want, strict=True):
        np.testing.assert_array_equal(got[name], col, err_msg=name)
    assert got["open_time"][0] == start // 60_000 * 60_000
    assert got["count"][0] < 6 * market.per_block  # a part minute
    inside = market.minute_bars("BTCUSDT", start + 1, start + 30_000)  # one part minute
    assert inside["count"].tolist() == [int(np.sum((ticks["ts"] > start) &
                                                   (ticks["ts"] < start + 30_000)))]  # fmt: skip


@pytest.mark.parametrize(("c", "skip", "tick", "lot", "decimals"),
                         [(1, 0, 0.1, 0.001, (1, 3)), (7, 3, 0.0001, 1.0, (4, 0)),
                          (30, 355, 0.01, 0.01, (2, 2))])  # fmt: skip
def test_chunk_minute_bars_kernel_equals_the_bars_of_chunk_trades(c, skip, tick, lot, decimals):
    rng = np.random.default_rng(c)
    chunk_ms = 1_764_547_200_000
    gaps, cuts, b_start, b_len, side_u, size_z = chunk_draws(rng, 360 - skip, c)
    log_mid = np.log(100.0) + np.cumsum(rng.standard_normal(3600)) * 1e-3
    got = chunk_minute_bars(gaps, b_start, b_len, side_u, size_z, log_mid, chunk_ms, skip, tick,
                            lot, *decimals)  # fmt: skip
    ts, _, price, qty, _, _, maker = chunk_trades(gaps, cuts, b_start, b_len, side_u, size_z,
                                                  log_mid, chunk_ms, skip, 0, 0, tick, lot,
                                                  *decimals)  # fmt: skip
    for name, want, col in zip(BAR_FIELDS, trade_minute_bars(ts, price, qty, maker), got,
                               strict=True):  # fmt: skip
        assert col.dtype == want.dtype
        np.testing.assert_array_equal(col, want, err_msg=name)
    assert got[0][0] == chunk_ms + skip // 6 * 60_000 and got[7].sum() == (360 - skip) * c


@pytest.mark.parametrize(("nb", "c"), [(1, 1), (360, 50), (17, 3)])
def test_chunk_draws_equal_numpy_generator_calls(nb, c):
    got = chunk_draws(np.random.default_rng([4, nb, c]), nb, c)
    rng = np.random.default_rng([4, nb, c])
    gaps = rng.standard_exponential((nb, c + 1))
    burst = rng.random(nb) < BURST_PER_BLOCK
    b_start = rng.random(nb) * BLOCK_MS
    b_len = np.where(burst, np.minimum(rng.standard_exponential(nb) * BURST_MEAN_S * 1000,
                                       BLOCK_MS - b_start), 0.0)  # fmt: skip
    want = (gaps, rng.standard_exponential((nb, c + 1)), b_start, b_len, rng.random(nb * c),
            rng.standard_normal(nb * c))  # fmt: skip
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(("start", "end", "sigma", "n"),
                         [(0.0, 0.3, 1e-4, 3600), (4.6, 4.5, 6e-3, 24), (-1.0, -1.0, 0.1, 2)])
def test_brownian_bridge_equals_numpy(start, end, sigma, n):
    got = brownian_bridge(np.random.default_rng([7, n]), start, end, sigma, n)
    walk = np.cumsum(np.random.default_rng([7, n]).standard_normal(n) * sigma)
    t = np.arange(1, n + 1) / n
    want = np.concatenate(([start], (start + walk - t * (walk[-1] - (end - start)))[:-1]))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("decimals", [0, 1, 2, 5, 8])
def test_fixed_decimals_equal_python_format(decimals):
    rng = np.random.default_rng(decimals)
    exact = np.rint(rng.random(2000) * 10.0 ** rng.integers(0, 13, 2000)) / 10.0**decimals
    summed = np.cumsum(exact[:200])  # sums of decimals: near, not at, the decimal grid
    for values in (exact, summed, np.array([0.0, 10.0**-decimals, 123.0]), np.empty(0),
                   rng.random(50) * 1e6):  # the last off the grid: Python's format itself
        got = fixed_decimals(values, decimals).to_pylist()
        assert got == [f"{v:.{decimals}f}" for v in values.tolist()]
