"""What the dashboard computes, as plain functions over NumPy arrays: views only render.

Every number comes from the engine (``engine.pairstep``, ``engine.stats``, ``engine.backtest``,
``strategies``); this module only shapes inputs and outputs for the views:

- ``PairFrame``: the columns on screen (ts ms, both legs' closes, Kalman and rolling-OLS beta,
  the beta in use, spread, z, position), from a live snapshot or recomputed from bars.
- ``recompute``: ``align_bars`` + ``run_pair`` + the strategy over recent or uploaded bars.
- ``spread_tests``: ADF, Engle-Granger and half-life with a plain-words verdict.
- ``run_backtest``, ``correlation``, ``screen``, ``quote_volume_1m``, ``export_bytes``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.align import align_bars
from engine.backtest import BacktestResult, Costs, run
from engine.backtest_data import PairData, stored_funding
from engine.config import StrategyConfig
from engine.errors import DataError, NumericalError
from engine.pairstep import PairParams, run_pair
from engine.schemas import timeframe_ms
from engine.screen import align_closes as screen_align
from engine.screen import load_bars, screen_bars
from engine.stats import adf, coint, half_life, log_return_corr
from strategies import make_strategy

#: columns of a PairFrame, in export order
COLUMNS = (
    "ts",
    "close_y",
    "close_x",
    "beta",
    "beta_kalman",
    "beta_ols",
    "spread",
    "z",
    "position",
)


@dataclass(frozen=True)
class PairFrame:
    """What the pair charts show: ``cols`` maps COLUMNS to equal-length arrays (ts in ms)."""

    pair: str
    timeframe: str
    cols: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.cols["ts"].size)

    def tail(self, n: int) -> PairFrame:
        return PairFrame(self.pair, self.timeframe, {k: v[-n:] for k, v in self.cols.items()})

    def last(self, name: str) -> float:
        col = self.cols[name]
        return float(col[-1]) if col.size else math.nan


def empty_frame(pair: str, timeframe: str) -> PairFrame:
    cols = {k: np.empty(0, dtype=np.int64 if k == "ts" else np.float64) for k in COLUMNS}
    return PairFrame(pair, timeframe, cols)


def params_for(live: PairParams, hedge: str, zscore_window: int) -> PairParams:
    """The live parameters with the user's hedge and z window (innovation z needs Kalman)."""
    zscore = live.zscore if hedge == "kalman" else "rolling"
    return dataclasses.replace(live, hedge=hedge, zscore_window=int(zscore_window), zscore=zscore)


def from_snapshot(
    pair: str, timeframe: str, snap: Mapping[str, np.ndarray], hedge: str
) -> PairFrame:
    """A PairActor snapshot (ring buffers) as a PairFrame; ``hedge`` is the live hedge."""
    beta = np.asarray(snap["beta"], dtype=np.float64)
    cols = {
        "ts": np.asarray(snap["ts"], dtype=np.int64),
        "close_y": np.asarray(snap["close_y"], dtype=np.float64),
        "close_x": np.asarray(snap["close_x"], dtype=np.float64),
        "beta": beta,
        "beta_kalman": beta if hedge == "kalman" else np.full(beta.size, np.nan),
        "beta_ols": np.asarray(snap["beta_ols"], dtype=np.float64),
        "spread": np.asarray(snap["spread"], dtype=np.float64),
        "z": np.asarray(snap["z"], dtype=np.float64),
        "position": np.asarray(snap["position"], dtype=np.float64),
    }
    return PairFrame(pair, timeframe, cols)


def recompute(
    pair: str,
    timeframe: str,
    bars_y: np.ndarray,
    bars_x: np.ndarray,
    params: PairParams,
    strategy_config: object,
) -> PairFrame:
    """The pair step and strategy over two legs' bars (BAR_DTYPE), as the engine runs them."""
    aligned = align_bars(bars_y, bars_x)
    if aligned.ts.size == 0:
        return empty_frame(pair, timeframe)
    series = run_pair(aligned.close_y, aligned.close_x, params)
    kalman = (
        series
        if params.hedge == "kalman"
        else run_pair(aligned.close_y, aligned.close_x, dataclasses.replace(params, hedge="kalman"))
    )
    ols_params = dataclasses.replace(params, hedge="rolling_ols", zscore="rolling")
    ols = series if params == ols_params else run_pair(aligned.close_y, aligned.close_x, ols_params)
    position = make_strategy(strategy_config).run(series.z, series.spread)
    cols = {
        "ts": aligned.ts.astype(np.int64),
        "close_y": aligned.close_y,
        "close_x": aligned.close_x,
        "beta": series.beta,
        "beta_kalman": kalman.beta,
        "beta_ols": ols.beta,
        "spread": series.spread,
        "z": series.z,
        "position": position.astype(np.float64),
    }
    return PairFrame(pair, timeframe, cols)


@dataclass(frozen=True)
class SpreadTests:
    """ADF of the spread, Engle-Granger of the legs, half-life (bars) and a verdict in words."""

    adf_stat: float
    adf_pvalue: float
    eg_stat: float
    eg_pvalue: float
    half_life: float
    nobs: int
    verdict: str


def spread_tests(frame: PairFrame, price: str, alpha: float = 0.05) -> SpreadTests:
    """Tests on the frame's finite spread and the legs' (log or raw) prices."""
    spread = frame.cols["spread"]
    ok = np.isfinite(spread)
    y = frame.cols["close_y"][ok]
    x = frame.cols["close_x"][ok]
    if price == "log":
        y, x = np.log(y), np.log(x)
    a = adf(spread[ok])
    eg = coint(y, x)
    hl = half_life(spread[ok])
    stationary = a.pvalue < alpha
    cointegrated = eg.pvalue < alpha
    if stationary and cointegrated:
        verdict = "Mean-reverting: the spread looks stationary and the legs cointegrated"
    elif stationary:
        verdict = "The spread looks stationary, but Engle-Granger does not confirm cointegration"
    elif cointegrated:
        verdict = "The legs look cointegrated, but this spread (hedge) is not clearly stationary"
    else:
        verdict = "Not mean-reverting: no evidence of a stationary spread"
    hl_words = f"{hl:.1f} bars" if math.isfinite(hl) else "undefined (AR(1) fit: no reversion)"
    verdict += f" at the {alpha:.0%} level; half-life {hl_words}."
    return SpreadTests(a.stat, a.pvalue, eg.stat, eg.pvalue, hl, int(ok.sum()), verdict)


def run_backtest(
    bars_y: np.ndarray,
    bars_x: np.ndarray,
    params: PairParams,
    strategy_config: StrategyConfig,
    timeframe: str,
    *,
    legs: tuple[str, str] = ("Y", "X"),
    store: str | os.PathLike | None = None,
) -> BacktestResult:
    """``engine.backtest.run`` over the given bars (BAR_DTYPE) with the current settings, as the
    CLI runs it: ``legs`` (y, x) are the symbols, and each leg's funding stored in ``store``
    over the bars' range (first bar's open to last bar's end) is charged (none without a store).
    """
    y, x = legs
    funding = None
    if store is not None and bars_y.size and bars_x.size:
        start = int(min(bars_y["ts"][0], bars_x["ts"][0]))
        end = int(max(bars_y["ts"][-1], bars_x["ts"][-1])) + timeframe_ms(timeframe)
        funding = stored_funding(store, y, x, start, end)
    data = PairData.from_tables(bars_y, bars_x, y=y, x=x, timeframe=timeframe, funding=funding)
    costs = Costs.from_config(strategy_config)
    return run(data, params, make_strategy(strategy_config), costs)


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Drawdown from the running peak, as a fraction (<= 0)."""
    if equity.size == 0:
        return equity
    peak = np.maximum.accumulate(equity)
    return equity / peak - 1.0


def align_closes(bars: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Closes of the symbols with bars on the union of their bar times, from the time all have
    traded, last close carried forward (``engine.screen.align_closes``); {} below 2 symbols."""
    bars = {s: b for s, b in bars.items() if b.size}
    if len(bars) < 2:
        return {}
    closes = screen_align(bars)
    return {s: closes.values[:, j] for j, s in enumerate(closes.symbols)}


def correlation(bars: Mapping[str, np.ndarray]) -> tuple[tuple[str, ...], np.ndarray]:
    """Correlation of log returns across symbols (``engine.stats.log_return_corr``)."""
    closes = align_closes(bars)
    if not closes:
        raise NumericalError("correlation: needs bars of at least 2 symbols")
    return log_return_corr(closes)


#: bars of the analytics timeframe a dashboard screen reads back from the store (at most)
SCREEN_BARS = 20_000


@dataclass(frozen=True)
class ScreenOutcome:
    """A dashboard screen: ``table`` (pair, corr, eg_pvalue, qvalue, half_life, beta, bars),
    ``bars`` of the symbols screened (stored + in memory), ``excluded`` {symbol: reason}."""

    table: pd.DataFrame
    bars: Mapping[str, np.ndarray]
    excluded: Mapping[str, str]


def _with_stored(
    bars: Mapping[str, np.ndarray], timeframe: str, store: str | os.PathLike | None
) -> dict[str, np.ndarray]:
    """Each symbol's bars in memory preceded by its stored bars, over the last ``SCREEN_BARS``
    bars of ``timeframe`` (the memory copy wins where both hold a bar time)."""
    held = {s: b for s, b in bars.items() if b.size}
    if store is None or not held or not os.path.isdir(store):
        return dict(bars)
    end = max(int(b["ts"][-1]) for b in held.values()) + timeframe_ms(timeframe)
    start = end - SCREEN_BARS * timeframe_ms(timeframe)
    stored = load_bars(store, timeframe, list(bars), start, end)
    out = {}
    for s, b in bars.items():
        old = stored[s]
        if b.size:
            old = old[old["ts"] < b["ts"][0]]
        out[s] = np.concatenate([old, b]) if old.size else b
    return out


def screen(
    bars: Mapping[str, np.ndarray],
    price: str,
    timeframe: str,
    *,
    store: str | os.PathLike | None = None,
    min_bars: int = 100,
) -> ScreenOutcome:
    """``engine.screen.screen_bars`` (the CLI's screen) over the symbols of ``bars``: the bars
    in memory with the store's before them (up to ``SCREEN_BARS``), as the screening table."""
    merged = _with_stored(bars, timeframe, store)
    result = screen_bars(merged, timeframe, min_bars=min_bars, price=price)
    t = result.table
    table = pd.DataFrame(
        {
            "pair": [
                f"{y}/{x}" for y, x in zip(t["y"].to_pylist(), t["x"].to_pylist(), strict=True)
            ],
            "corr": t["corr"].to_numpy(),
            "eg_pvalue": t["pvalue"].to_numpy(),
            "qvalue": t["qvalue"].to_numpy(),
            "half_life": t["half_life"].to_numpy(),
            "beta": t["beta"].to_numpy(),
            "bars": t["n"].to_numpy(),
        }
    )
    kept = {s: merged[s] for s in result.universe.kept}
    return ScreenOutcome(table, kept, dict(result.universe.excluded))


def quote_volume_1m(bars: np.ndarray, tf_ms: int) -> float:
    """USDT traded in the last minute of closed bars (sum of ``quote_volume``)."""
    if bars.size == 0:
        return 0.0
    end = int(bars["ts"][-1]) + tf_ms
    recent = bars[bars["ts"] >= end - 60_000]
    return float(np.nansum(recent["quote_volume"]))


def liquid_pairs(pairs: list[str], volume: Mapping[str, float], minimum: float) -> list[str]:
    """Pairs whose both legs traded at least ``minimum`` USDT in the last minute."""
    out = []
    for p in pairs:
        y, x = p.split("/")
        if min(volume.get(y, 0.0), volume.get(x, 0.0)) >= minimum:
            out.append(p)
    return out


def export_table(frame: PairFrame) -> pd.DataFrame:
    """The frame as a table: ISO-8601 UTC bar times, pair, timeframe, then the columns."""
    df = pd.DataFrame({k: frame.cols[k] for k in COLUMNS})
    df["position"] = df["position"].astype("int8")
    df.insert(0, "timeframe", frame.timeframe)
    df.insert(0, "pair", frame.pair)
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True)
    return df


def export_bytes(frame: PairFrame, fmt: str) -> io.BytesIO:
    """The frame as CSV or Parquet bytes."""
    df = export_table(frame)
    buf = io.BytesIO()
    if fmt == "csv":
        df.to_csv(buf, index=False, float_format="%.17g", date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    elif fmt == "parquet":
        df.to_parquet(buf, index=False)
    else:
        raise DataError(f"export format {fmt!r}: expected 'csv' or 'parquet'")
    buf.seek(0)
    return buf
