"""What the dashboard computes, as plain functions over NumPy arrays: views only render.

Every number comes from the engine (``engine.pairstep``, ``engine.stats``, ``engine.backtest``,
``strategies``); this module only shapes inputs and outputs for the views:

- ``PairFrame``: the columns on screen (ts ms, both legs' closes, Kalman and rolling-OLS beta,
  the beta in use, spread, z, position), from a live snapshot or recomputed from bars.
- ``recompute``: ``align_bars`` (with ``analytics.max_carry``) + ``run_pair`` + the strategy
  over recent or uploaded bars.
- ``spread_tests``: ADF, Engle-Granger and half-life with a plain-words verdict.
- ``drawdown``, ``symbol_grid`` (a screen column as a heatmap grid), ``quote_volume_1m``,
  ``liquid_pairs``, ``export_bytes``.

Backtests and screens started from the dashboard run on Ray (``actors.backtest.backtest_bars``,
``actors.screen.ScreenJob``), submitted by the bridge; never here, in a session.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.align import align_bars, max_carry_ms
from engine.errors import DataError
from engine.pairstep import PairParams, run_pair
from engine.stats import adf, coint, half_life
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
    max_carry: int | str = "auto",
) -> PairFrame:
    """The pair step and strategy over two legs' bars (BAR_DTYPE), as the engine runs them:
    a leg's last close is carried at most ``max_carry`` bars (``analytics.max_carry``)."""
    aligned = align_bars(bars_y, bars_x, max_carry_ms(max_carry, timeframe))
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


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Drawdown from the running peak, as a fraction (<= 0)."""
    if equity.size == 0:
        return equity
    peak = np.maximum.accumulate(equity)
    return equity / peak - 1.0


def symbol_grid(
    table: pd.DataFrame, column: str, top: int, diagonal: float = math.nan
) -> tuple[list[str], pd.DataFrame]:
    """One column of a screen's rows (``actors.screen.screen_frame``: pairs "Y/X", best first)
    as a symmetric symbol x symbol grid for a heatmap: the first ``top`` symbols met going down
    the rows, and the long form ``a``, ``b``, ``column`` over every (a, b) of them ((a, a) is
    ``diagonal``; a pair without a row is NaN)."""
    symbols: list[str] = []
    for pair in table["pair"]:
        for s in pair.split("/"):
            if s not in symbols and len(symbols) < top:
                symbols.append(s)
    value = {}
    for pair, v in zip(table["pair"], table[column], strict=True):
        y, x = pair.split("/")
        value[(y, x)] = value[(x, y)] = float(v)
    a = [s for s in symbols for _ in symbols]
    b = [t for _ in symbols for t in symbols]
    vals = [diagonal if i == j else value.get((i, j), math.nan) for i, j in zip(a, b, strict=True)]
    return symbols, pd.DataFrame({"a": a, "b": b, column: vals})


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
