"""Screening many symbols for cointegrated pairs (no Ray): store -> universe -> closes -> rows.

The steps, each a function a caller may use alone:

- ``load_bars(store, timeframe, symbols, start, end)``: bars of one timeframe per symbol
  (``engine.resample.read_timeframe``: stored, or resampled from finer stored bars; start
  inclusive, end exclusive).
- ``choose_universe(bars, ...) -> Universe``: which symbols are screened. The rule, in order:
  a symbol without bars in the window, or with fewer than ``min_bars``, is left out; so is one
  listed late, whose first bar leaves less than ``min_coverage`` of the window (from the
  earliest first bar of the candidates to the latest bar end) after it, so that one young
  symbol never cuts everyone's history; then ``min_quote_volume`` (median daily quote volume,
  USDT, over the UTC days on which the symbol has bars: the sum of its bars' ``quote_volume``
  per day) and ``top`` (the N highest by that volume, ties by name). Every symbol left out is
  listed with its reason.
- ``align_closes(bars) -> Closes``: closes of many symbols on the union of their bar times
  from the first time every one of them has traded, each symbol's last close carried forward:
  the alignment rule of a pair's two legs, for N legs; pandas
  ``concat(...).sort_index().ffill().dropna()`` is its oracle.
- ``pair_index(k)``, ``plan_chunks(n_pairs, n_workers)``: every unordered pair ``i < j`` and
  its cut into contiguous chunks of balanced size (sizes differ by at most one).
- ``screen_series(closes, price)``, ``ScreenData.from_series(series)``: the tested series
  (symbols, bars) and their co-moments, from which ``hedge_half_life`` gives any pair's OLS
  hedge ``beta`` and the half-life (bars) of its spread ``y - beta*x - alpha`` in O(1) (the
  figures of ``engine.stats.ols_hedge`` and ``half_life``, the oracles of its tests).
- ``screen_chunk(data, pairs) -> ChunkRows``: the Engle-Granger test of each pair in both
  orders in one ``engine.unitroot.coint_pairs`` call, the order with the lower p-value kept
  (ties: ``i`` on ``j``), with that order's hedge and half-life. The unit of work of a
  screen's fan-out (actors/screen.py runs it on Ray actors).
- ``screen_table(closes, chunks) -> pa.Table``: one row per pair, ``y, x, stat, pvalue,
  qvalue, beta, half_life, corr, n`` sorted by p-value (pairs whose test is undefined last);
  ``corr`` of log returns (``engine.stats.log_return_corr``), ``qvalue`` Benjamini-Hochberg
  over every pair with a p-value (``bh_qvalues``; statsmodels' ``fdr_bh`` is its oracle).
- ``screen_bars(bars, ...) -> ScreenResult``: all of the above in one call, the chunks run by
  a caller-given ``runner`` (default: in this process, one after the other).
- ``config_for(table, top, base=None, ...)``: a pairs config (YAML text) of the best rows.
- ``save_screen(store_path, result)``, ``latest_screen(store_path)``: the screen kept in the
  store, ``<store>/screens/<UTC time>.parquet``, its parameters in the Parquet metadata.

Prices are tested as logs (``price="log"``, the default) or as they are (``"raw"``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from engine import unitroot
from engine.align import NO_CARRY_LIMIT, fresh, last_own, max_carry_ms
from engine.config import Config
from engine.errors import DataError
from engine.resample import read_timeframe, symbols_for
from engine.schemas import timeframe_ms
from engine.stats import log_return_corr
from engine.store import Store, to_ms

#: fewest bars a symbol needs in the window to be screened (default of ``min_bars``)
MIN_BARS = 100
#: share of the window a symbol's bars must cover from its first bar (default of ``min_coverage``)
MIN_COVERAGE = 0.8
#: chunks per worker that ``plan_chunks`` aims at (load balance and progress steps)
CHUNKS_PER_WORKER = 8
#: most pairs in one chunk (a chunk of 8,640-bar pairs takes about a second)
MAX_CHUNK = 4_000
#: the columns of a screen table, in order
COLUMNS = ("y", "x", "stat", "pvalue", "qvalue", "beta", "half_life", "corr", "n")
#: the store's directory of saved screens
SCREENS_DIR = "screens"
#: Parquet metadata key of a saved screen's parameters (JSON)
META_KEY = b"pairstack.screen"

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Universe:
    """Symbols kept (in the order given) and those left out, ``{symbol: reason}``;
    ``volume``: median daily quote volume (USDT) of every symbol that had bars."""

    kept: tuple[str, ...]
    excluded: Mapping[str, str]
    volume: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Closes:
    """Closes of many symbols aligned on the same bars: ``ts`` (ms, bar open times),
    ``values`` (bars, symbols) float64 raw prices, column ``j`` is ``symbols[j]``;
    ``carried``: bars on which some symbol carried its last close; ``dropped``: bar times left
    out because some symbol's last close was older than the carry limit."""

    ts: np.ndarray
    symbols: tuple[str, ...]
    values: np.ndarray
    carried: int = 0
    dropped: int = 0


class ChunkRows(NamedTuple):
    """``screen_chunk``'s figures, one entry per pair: ``y``/``x`` symbol indices of the order
    kept, Engle-Granger ``stat`` and ``pvalue``, OLS ``beta`` and spread ``half_life`` (bars);
    NaN where the test (or the hedge) is undefined."""

    y: np.ndarray
    x: np.ndarray
    stat: np.ndarray
    pvalue: np.ndarray
    beta: np.ndarray
    half_life: np.ndarray


@dataclass(frozen=True)
class ScreenResult:
    """A screen: ``table`` (``COLUMNS``, sorted by p-value), the ``universe`` and the
    ``params`` it ran with (timeframe, window, filters, bars; JSON-able)."""

    table: pa.Table
    universe: Universe
    params: Mapping[str, Any]


#: runs every chunk of pairs over the data and yields its rows, in chunk order
RunChunks = Callable[["ScreenData", Sequence[np.ndarray]], Iterable[ChunkRows]]
#: given the number of pairs, the workers to plan chunks for and what runs them
Runner = Callable[[int], tuple[int, RunChunks]]


# ----------------------------------------------------------------------------- store -> bars


def load_bars(
    store: str | os.PathLike | Store,
    timeframe: str,
    symbols: Sequence[str] | None = None,
    start: object = None,
    end: object = None,
) -> dict[str, np.ndarray]:
    """BAR_DTYPE bars with start <= ts < end of each symbol (default: every symbol the store
    has bars of ``timeframe``, or finer ones, for); a symbol without bars there maps to an
    empty array."""
    timeframe_ms(timeframe)
    st = store if isinstance(store, Store) else Store(store)
    if not isinstance(store, Store) and not st.path.is_dir():
        raise DataError(f"store {st.path}: no such directory; give the --store of your data")
    names = list(dict.fromkeys(symbols)) if symbols else symbols_for(st, timeframe)
    return {s: read_timeframe(st, timeframe, s, start, end).bars for s in names}


# ----------------------------------------------------------------------------- universe


def daily_quote_volume(bars: np.ndarray) -> float:
    """Median over the UTC days with bars of the day's summed ``quote_volume`` (USDT; NaN
    quote volumes count as 0). 0.0 without bars."""
    if bars.size == 0:
        return 0.0
    days = bars["ts"] // DAY_MS
    first = np.r_[True, days[1:] != days[:-1]]  # bars are sorted by time
    sums = np.add.reduceat(np.nan_to_num(bars["quote_volume"]), np.flatnonzero(first))
    return float(np.median(sums))


def choose_universe(
    bars: Mapping[str, np.ndarray],
    timeframe: str,
    *,
    min_bars: int = MIN_BARS,
    min_coverage: float = MIN_COVERAGE,
    min_quote_volume: float | None = None,
    top: int | None = None,
) -> Universe:
    """The symbols to screen and why the others are left out (the rule is in the module doc)."""
    if min_bars < 1 or not 0.0 <= min_coverage <= 1.0:
        raise DataError(
            f"min_bars >= 1 and 0 <= min_coverage <= 1 expected, got {min_bars}, {min_coverage}"
        )
    if top is not None and top < 2:
        raise DataError(f"top: a screen needs at least 2 symbols, got {top}")
    if min_quote_volume is not None and not min_quote_volume >= 0.0:
        raise DataError(f"min_quote_volume: expected USDT >= 0, got {min_quote_volume}")
    tf = timeframe_ms(timeframe)
    excluded: dict[str, str] = {}
    present = {s: b for s, b in bars.items() if b.size}
    for s in bars:
        if s not in present:
            excluded[s] = f"no {timeframe} bars in the window"
    volume = {s: daily_quote_volume(b) for s, b in present.items()}
    candidates = []
    for s, b in present.items():
        if b.size < min_bars:
            excluded[s] = f"{b.size} bars (< {min_bars})"
        else:
            candidates.append(s)
    if candidates:
        lo = min(int(present[s]["ts"][0]) for s in candidates)
        hi = max(int(present[s]["ts"][-1]) + tf for s in candidates)
        for s in list(candidates):
            first = int(present[s]["ts"][0])
            cover = (hi - first) / (hi - lo)
            if cover < min_coverage:
                excluded[s] = (
                    f"first bar {_iso(first)} covers {cover:.0%} of the window "
                    f"(< {min_coverage:.0%}): listed late"
                )
                candidates.remove(s)
    if min_quote_volume is not None:
        for s in list(candidates):
            if volume[s] < min_quote_volume:
                excluded[s] = (
                    f"median daily quote volume {volume[s]:,.0f} USDT (< {min_quote_volume:,.0f})"
                )
                candidates.remove(s)
    if top is not None and len(candidates) > top:
        ranked = sorted(candidates, key=lambda s: (-volume[s], s))
        for rank, s in enumerate(ranked[top:], start=top + 1):
            excluded[s] = f"rank {rank} by median daily quote volume (--top {top})"
        chosen = set(ranked[:top])
        candidates = [s for s in candidates if s in chosen]
    return Universe(tuple(candidates), excluded, volume)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# ----------------------------------------------------------------------------- alignment


def align_closes(bars: Mapping[str, np.ndarray], limit_ms: int = NO_CARRY_LIMIT) -> Closes:
    """Closes of every symbol on the union of their bar times (ms), from the first time all of
    them have traded; a symbol without a bar at a time carries its last close forward, up to
    the carry limit ``limit_ms`` (``engine.align.max_carry_ms``). A time where any symbol's last
    own bar is older is dropped for every pair (``engine.align.fresh``, the pair rule applied
    to all symbols at once: stricter than per pair, but the pairs keep one common bar grid, so
    the screen's shared co-moments stay exact). Symbols without bars are refused
    (``choose_universe`` leaves them out first)."""
    names = tuple(bars)
    empty = [s for s in names if bars[s].size == 0]
    if empty:
        raise DataError(f"align_closes: no bars for {empty}; leave those symbols out")
    if not names:
        return Closes(np.empty(0, np.int64), (), np.empty((0, 0)))
    start = max(int(bars[s]["ts"][0]) for s in names)
    ts = np.unique(np.concatenate([bars[s]["ts"][bars[s]["ts"] >= start] for s in names]))
    values = np.empty((ts.size, len(names)))
    keep = np.ones(ts.size, dtype=bool)
    carried = np.zeros(ts.size, dtype=bool)
    for j, s in enumerate(names):
        idx = last_own(ts, bars[s]["ts"])  # >= 0: ts >= its first bar
        own = bars[s]["ts"][idx]
        values[:, j] = bars[s]["close"][idx]
        keep &= fresh(ts, own, limit_ms)
        carried |= own != ts
    dropped = int(ts.size - np.count_nonzero(keep))
    return Closes(ts[keep].astype(np.int64), names, values[keep],
                  int(np.count_nonzero(carried[keep])), dropped)  # fmt: skip


# ----------------------------------------------------------------------------- pairs and chunks


def pair_index(k: int) -> np.ndarray:
    """Every pair ``(i, j)`` with ``0 <= i < j < k``, row-major: shape (k*(k-1)/2, 2) int64."""
    i, j = np.triu_indices(k, 1)
    return np.ascontiguousarray(np.column_stack([i, j]), dtype=np.int64)


def plan_chunks(
    n_pairs: int, n_workers: int, *, per_worker: int = CHUNKS_PER_WORKER, max_size: int = MAX_CHUNK
) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges cutting ``n_pairs`` into contiguous chunks of balanced size (sizes
    differ by at most one): ``per_worker`` chunks per worker, more when a chunk would exceed
    ``max_size`` pairs, never an empty chunk."""
    if n_workers < 1 or per_worker < 1 or max_size < 1:
        raise DataError(
            f"plan_chunks: n_workers, per_worker and max_size must be >= 1, got "
            f"{n_workers}, {per_worker}, {max_size}"
        )
    if n_pairs <= 0:
        return []
    n = min(n_pairs, max(n_workers * per_worker, math.ceil(n_pairs / max_size)))
    bounds = (np.arange(n + 1) * n_pairs) // n
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def screen_series(closes: Closes, price: str = "log") -> np.ndarray:
    """The series a screen tests: (symbols, bars) C-contiguous log (or raw) closes."""
    if price not in ("log", "raw"):
        raise DataError(f"price: expected 'log' or 'raw', got {price!r}")
    values = closes.values
    if values.size and not (np.isfinite(values).all() and (values > 0.0).all()):
        raise DataError("closes must be finite and > 0")
    return np.ascontiguousarray((np.log(values) if price == "log" else values).T)


@dataclass(frozen=True)
class ScreenData:
    """What every chunk of a screen reads (built once, shared by the workers).

    ``series``: (symbols, bars) tested series; ``cov``: co-moments ``sum_t c_i c_j`` of the
    series centred on their means (every bar); ``lag_cov``: the same over bars ``0..n-2``
    centred on their means there; ``lead_lag``: ``sum_t (c_i,t+1 - m_i) (c_j,t - m_j)`` with
    each window's means. From these the OLS hedge of any pair and the AR(1) fit of its spread
    are a few products: O(1) per pair after two matrix products.
    """

    series: np.ndarray
    cov: np.ndarray
    lag_cov: np.ndarray
    lead_lag: np.ndarray

    @classmethod
    def from_series(cls, series: np.ndarray) -> ScreenData:
        s = np.ascontiguousarray(series, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] < 3:
            raise DataError(f"series: expected (symbols, bars >= 3), got shape {s.shape}")
        n = s.shape[1]
        c = s - s.mean(axis=1, keepdims=True)
        cov = c @ c.T
        first, last = c[:, 0], c[:, -1]
        mean_lag = -last / (n - 1)  # sum over 0..n-2 of a centred series is minus its last
        mean_lead = -first / (n - 1)
        lag_cov = cov - np.outer(last, last) - (n - 1) * np.outer(mean_lag, mean_lag)
        lead_lag = c[:, 1:] @ c[:, :-1].T - (n - 1) * np.outer(mean_lead, mean_lag)
        return cls(s, cov, lag_cov, lead_lag)


def hedge_half_life(data: ScreenData, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(beta, half_life)`` of pairs ``series[y]`` on ``series[x]``: the OLS hedge
    ``y = beta*x + alpha`` and the half-life (bars) of the spread ``y - beta*x - alpha`` from
    the AR(1) fit ``ds_t = a + b*s_{t-1}``, ``-ln 2 / ln(1+b)``, ``inf`` unless ``-1 < b < 0``.
    Same figures as ``engine.stats.ols_hedge`` and ``engine.stats.half_life`` (the oracles of
    the tests); NaN where ``x`` or the spread is constant (those raise there)."""
    cov, lag, ll = data.cov, data.lag_cov, data.lead_lag
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(cov[x, x] > 0.0, cov[y, x] / cov[x, x], np.nan)
        var = lag[y, y] - 2.0 * beta * lag[y, x] + beta * beta * lag[x, x]
        ac = ll[y, y] - beta * (ll[y, x] + ll[x, y]) + beta * beta * ll[x, x]
        b = np.where(var > 0.0, ac / var - 1.0, np.nan)
        hl = np.where((b > -1.0) & (b < 0.0), -math.log(2.0) / np.log1p(b), np.inf)
    return beta, np.where(np.isnan(b), np.nan, hl)


def screen_chunk(data: ScreenData, pairs: np.ndarray) -> ChunkRows:
    """Figures of each ``(i, j)`` row of ``pairs`` (indices into ``data.series``): both orders
    tested, the lower p-value kept (ties: ``i`` on ``j``), with that order's hedge and the
    spread's half-life in bars (module doc)."""
    pairs = np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = pairs.shape[0]
    batch = unitroot.coint_pairs(data.series, np.concatenate([pairs, pairs[:, ::-1]]))
    flip = batch.pvalue[m:] < batch.pvalue[:m]
    pick = np.where(flip, np.arange(m) + m, np.arange(m))
    y = np.where(flip, pairs[:, 1], pairs[:, 0])
    x = np.where(flip, pairs[:, 0], pairs[:, 1])
    beta, hl = hedge_half_life(data, y, x)
    return ChunkRows(y, x, batch.stat[pick], batch.pvalue[pick], beta, hl)


def run_in_process(data: ScreenData, chunks: Sequence[np.ndarray]) -> Iterable[ChunkRows]:
    """Every chunk in this process, one after the other (the default ``RunChunks``)."""
    return (screen_chunk(data, c) for c in chunks)


def in_process(n_pairs: int) -> tuple[int, RunChunks]:
    """The default ``Runner``: one worker, this process."""
    return 1, run_in_process


# ----------------------------------------------------------------------------- rows


def bh_qvalues(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) over the finite p-values; NaN stays NaN.

    ``q_(i) = min_{k >= i} p_(k) * m / k`` over the ascending p-values, capped at 1 (the
    oracle: statsmodels ``multipletests(p, method="fdr_bh")[1]``).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = p[order] * ok.size / np.arange(1, ok.size + 1)
        q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def screen_table(closes: Closes, rows: Sequence[ChunkRows]) -> pa.Table:
    """One row per pair (``COLUMNS``) from the chunks' figures, sorted by p-value, then y, x;
    pairs with a NaN p-value last."""
    names = np.asarray(closes.symbols, dtype=object)
    cat = {
        f: np.concatenate([getattr(r, f) for r in rows]) if rows else np.empty(0)
        for f in ChunkRows._fields
    }
    y = cat["y"].astype(np.int64)
    x = cat["x"].astype(np.int64)
    if len(closes.symbols) >= 2:
        _, corr = log_return_corr(closes.values, closes.symbols)
        pair_corr = corr[y, x]
    else:
        pair_corr = np.empty(0)
    pvalue = cat["pvalue"]
    order = np.lexsort((names[x].astype(str), names[y].astype(str), pvalue, np.isnan(pvalue)))
    cols = {
        "y": names[y][order].tolist(),
        "x": names[x][order].tolist(),
        "stat": cat["stat"][order],
        "pvalue": pvalue[order],
        "qvalue": bh_qvalues(pvalue)[order],
        "beta": cat["beta"][order],
        "half_life": cat["half_life"][order],
        "corr": pair_corr[order],
        "n": np.full(order.size, closes.ts.size, dtype=np.int64),
    }
    return pa.table(
        {k: cols[k] for k in COLUMNS},
        schema=pa.schema(
            [
                (k, pa.string() if k in ("y", "x") else pa.int64() if k == "n" else pa.float64())
                for k in COLUMNS
            ]
        ),
    )


def screen_bars(
    bars: Mapping[str, np.ndarray],
    timeframe: str,
    *,
    min_bars: int = MIN_BARS,
    min_coverage: float = MIN_COVERAGE,
    min_quote_volume: float | None = None,
    top: int | None = None,
    price: str = "log",
    runner: Runner | None = None,
    window: tuple[object, object] = (None, None),
    max_carry: int | str = "auto",
) -> ScreenResult:
    """Screen the bars of many symbols (BAR_DTYPE per symbol, one ``timeframe``): the universe,
    the aligned closes, every pair's figures, the table. ``runner(n_pairs) -> (n_workers,
    run_chunks)`` says who runs the chunks (planned for ``n_workers``; default: this process);
    ``window`` (start, end) is only recorded in ``params``; ``max_carry``: bars a symbol's last
    close may be carried (``analytics.max_carry``; ``align_closes``), the bars carried and
    dropped are in ``params`` (``carried_bars``, ``dropped_bars``). DataError when fewer than 2
    symbols are kept (the reasons are in the message) or fewer than ``min_bars`` aligned bars
    remain."""
    universe = choose_universe(
        bars,
        timeframe,
        min_bars=min_bars,
        min_coverage=min_coverage,
        min_quote_volume=min_quote_volume,
        top=top,
    )
    if len(universe.kept) < 2:
        why = "; ".join(f"{s}: {r}" for s, r in universe.excluded.items()) or "none given"
        raise DataError(
            f"a screen needs at least 2 symbols, {len(universe.kept)} kept "
            f"(left out: {why}); widen the window or relax the filters"
        )
    closes = align_closes(
        {s: bars[s] for s in universe.kept}, max_carry_ms(max_carry, timeframe)
    )
    if closes.ts.size < max(min_bars, unitroot.MIN_OBS):
        start = f" from {_iso(int(closes.ts[0]))}" if closes.ts.size else ""
        raise DataError(
            f"only {closes.ts.size} aligned {timeframe} bars{start} where all "
            f"{len(closes.symbols)} symbols have traded (< {max(min_bars, unitroot.MIN_OBS)}; "
            f"{closes.dropped} dropped where a symbol's last close was more than max_carry "
            f"{max_carry} bars old); widen the window or raise analytics.max_carry"
        )
    series = screen_series(closes, price)
    pairs = pair_index(len(closes.symbols))
    n_workers, run_chunks = (runner or in_process)(len(pairs))
    chunks = [pairs[lo:hi] for lo, hi in plan_chunks(len(pairs), n_workers)]
    table = screen_table(closes, list(run_chunks(ScreenData.from_series(series), chunks)))
    start, end = window
    params = {
        "timeframe": timeframe,
        "start": to_ms(start, "start"),
        "end": to_ms(end, "end"),
        "first_bar": int(closes.ts[0]),
        "last_bar": int(closes.ts[-1]),
        "bars": int(closes.ts.size),
        "max_carry": max_carry,
        "carried_bars": closes.carried,
        "dropped_bars": closes.dropped,
        "price": price,
        "min_bars": min_bars,
        "min_coverage": min_coverage,
        "min_quote_volume": min_quote_volume,
        "top": top,
        "symbols": list(universe.kept),
        "excluded": dict(universe.excluded),
        "pairs": len(pairs),
    }
    return ScreenResult(table, universe, params)


# ----------------------------------------------------------------------------- config out


def config_for(
    table: pa.Table,
    top: int,
    base: Config | None = None,
    *,
    timeframe: str | None = None,
    store: str | os.PathLike | None = None,
) -> str:
    """YAML text of a pairs config of the ``top`` best rows (pairs ``y``/``x`` as screened).

    Without ``base``: ``feed.source: binance``, the rows' symbols and pairs, and, when given,
    ``analytics.timeframe: timeframe`` (half-lives are in its bars) and ``store.path: store``;
    every other key takes its default. With ``base`` (a loaded config): all of it, with its
    symbols, pairs, alerts on other pairs and simulator groups replaced or dropped.
    """
    if top < 1:
        raise DataError(f"top: expected at least 1 pair for the config, got {top}")
    rows = table.slice(0, top).to_pylist()
    rows = [r for r in rows if r["pvalue"] is not None and math.isfinite(r["pvalue"])]
    if not rows:
        raise DataError("config_for: the screen has no pair with a p-value to put in a config")
    pairs = [{"y": r["y"], "x": r["x"]} for r in rows]
    symbols = list(dict.fromkeys(s for p in pairs for s in (p["y"], p["x"])))
    doc: dict[str, Any] = base.to_dict() if base is not None else {"feed": {"source": "binance"}}
    doc["symbols"] = symbols
    doc["pairs"] = pairs
    names = {f"{p['y']}/{p['x']}" for p in pairs}
    if "alerts" in doc:
        doc["alerts"] = [a for a in doc["alerts"] if a["pair"] in names]
    if "simulator" in doc:
        doc["simulator"]["groups"] = None
        if doc["simulator"]["faults"].get("silent_symbol") not in symbols:
            doc["simulator"]["faults"]["silent_symbol"] = None
    if timeframe is not None:
        doc.setdefault("analytics", {})["timeframe"] = timeframe
        frames = doc.get("timeframes", ["1s", "1m", "5m"])
        doc["timeframes"] = frames if timeframe in frames else [*frames, timeframe]
    if store is not None and base is None:
        doc["store"] = {"path": str(store)}
    return yaml.safe_dump(doc, sort_keys=False)


# ----------------------------------------------------------------------------- saved screens


def save_screen(store_path: str | os.PathLike, result: ScreenResult) -> Path:
    """Write ``result`` to ``<store>/screens/<UTC time>.parquet`` (atomically, the parameters
    as JSON under the metadata key ``pairstack.screen``); the path written."""
    folder = Path(store_path) / SCREENS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time_ns() // 1000 % 10**6:06d}Z"
    final = folder / f"{stamp}.parquet"
    meta = {**(result.table.schema.metadata or {}), META_KEY: json.dumps(result.params).encode()}
    tmp = folder / f".{stamp}.parquet.tmp"
    pq.write_table(result.table.replace_schema_metadata(meta), tmp)
    os.replace(tmp, final)
    return final


def latest_screen(store_path: str | os.PathLike) -> tuple[pa.Table, dict[str, Any]] | None:
    """The newest saved screen of a store and its parameters, or None when there is none."""
    folder = Path(store_path) / SCREENS_DIR
    files = sorted(folder.glob("[0-9]*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    table = pq.read_table(files[-1])
    params = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    return table.replace_schema_metadata(None), params
