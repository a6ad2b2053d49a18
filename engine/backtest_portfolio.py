"""Several pairs on one capital: per-pair and total stats, correlation of the pairs' PnL.

Each pair is traded by ``engine.backtest.run`` exactly as alone (its own bars, strategy, fills,
fees, funding and sizing), with the portfolio's ``capital`` as its account; its PnL at time t is
its equity at its last bar opening at or before t minus capital (0 before its first bar). The
portfolio lives on the union of the pairs' bar times: equity_t = capital + sum of the pairs'
PnL_t, so fees, funding and PnL add up across pairs, and the per-pair stats are each pair's
contribution (total_return = its PnL / capital).

Ruin is the portfolio's, not a pair's: no pair has a floor of its own; when the portfolio equity
at a close T is at or below ``ruin_equity * capital``, every pair is ruined at its last bar
opening at or before T (positions closed at each pair's next open, no trading after), and the
portfolio stats say ``ruined``.

Gross cap (``max_gross``, USDT) is the portfolio's: the gross of an open position is its entry
gross |qty_y|*fill_y + |qty_x|*fill_x (at its entry fills), and an entry filled at time T may
take at most max_gross minus the gross of the positions the other pairs hold at T (scaled down
to it like a single pair's entry; skipped when less than ``LEFT_EPS`` of max_gross is left,
which is rounding of a cap already used up). At one T, exits come before
entries, and entries are taken in the order the pairs are listed. So the sum of the open
positions' entry gross never exceeds max_gross. The pairs are simulated together by repeating
their runs with the caps each one's predecessors leave (``_gross_caps``) until nothing changes:
every run after the first settles at least the next entry in time, so this ends.

Carry: the total stats' ``carried_bars`` and ``dropped_bars`` are the sums over the pairs (each
pair's own alignment, ``analytics.max_carry``); the per-pair rows keep their own.

Correlation: Pearson correlation of the pairs' per-bar PnL changes on the union time line
(NaN where a pair's PnL never changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.backtest import BacktestResult, Costs, EquityCurve, PositionRule, run
from engine.backtest_data import PairData
from engine.backtest_stats import compute_stats
from engine.errors import ConfigError, NumericalError
from engine.pairstep import PairParams, PairSeries, run_pair
from engine.schemas import TIMEFRAME_MS

#: a gross cap left below this fraction of max_gross is used up (rounding of sums of USDT)
LEFT_EPS = 1e-9


@dataclass(frozen=True)
class PortfolioResult:
    """Total stats and equity (union time line), each pair's result, and the (k, k)
    correlation of the pairs' per-bar PnL in ``pairs`` order."""

    stats: dict
    equity: EquityCurve
    pairs: dict[str, BacktestResult]
    correlation: np.ndarray


def _pnl_on(ts: np.ndarray, result: BacktestResult, capital: float) -> np.ndarray:
    """A pair's PnL (USDT) carried onto ``ts``: 0 before its first bar."""
    idx = np.searchsorted(result.equity.ts, ts, side="right") - 1
    pnl = result.equity.equity[np.maximum(idx, 0)] - capital
    return np.where(idx >= 0, pnl, 0.0)


def _gross_caps(
    legs: Sequence[tuple[PairData, PositionRule]], results: Sequence[BacktestResult], cap: float
) -> list[np.ndarray]:
    """Per pair and aligned bar: ``cap`` minus the entry gross (USDT) of the positions the
    other pairs hold at the bar's open once exits there are done (a pair listed earlier that
    enters at that open counts, a later one does not)."""
    held = []  # (pair index, entry ms, exit ms or int64 max while open, entry gross)
    for j, r in enumerate(results):
        t = r.trades
        gross = np.abs(t["qty_y"].to_numpy()) * t["entry_fill_y"].to_numpy() + np.abs(
            t["qty_x"].to_numpy()
        ) * t["entry_fill_x"].to_numpy()
        exits = t["exit_ts"].cast("int64").fill_null(np.iinfo(np.int64).max).to_numpy()
        held.append((j, t["entry_ts"].cast("int64").to_numpy(), exits, gross))
    caps = []
    for k, (data, _) in enumerate(legs):
        ts = data.aligned.ts
        change = np.zeros(ts.shape[0] + 1)
        for j, entry, exits, gross in held:
            if j == k:
                continue
            lo = np.searchsorted(ts, entry, side="left" if j < k else "right")
            hi = np.searchsorted(ts, exits, side="left")
            np.add.at(change, lo, gross)
            np.add.at(change, hi, -gross)
        left = cap - np.cumsum(change)[:-1]
        caps.append(np.where(left > LEFT_EPS * cap, left, 0.0))
    return caps


def _runs(
    legs: Sequence[tuple[PairData, PositionRule]],
    series: Sequence[PairSeries],
    params: PairParams,
    costs: Costs,
    halt_ts: int | None,
) -> dict[str, BacktestResult]:
    """Every pair's run; with ``costs.max_gross``, repeated under the caps the other pairs'
    positions leave until the caps no longer change (module docstring)."""

    def once(caps: Sequence[np.ndarray | None]) -> list[BacktestResult]:
        return [
            run(
                data,
                params,
                strategy,
                costs,
                series=s,
                halt_ts=halt_ts,
                own_ruin=False,
                gross_cap=cap,
            )
            for (data, strategy), s, cap in zip(legs, series, caps, strict=True)
        ]

    names = [data.pair for data, _ in legs]
    if costs.max_gross is None:
        return dict(zip(names, once([None] * len(legs)), strict=True))
    caps = [np.full(data.n, costs.max_gross) for data, _ in legs]
    results = once(caps)
    for _ in range(sum(data.n for data, _ in legs) + 1):  # each round settles an entry
        new = _gross_caps(legs, results, costs.max_gross)
        if all(np.array_equal(a, b) for a, b in zip(caps, new, strict=True)):
            return dict(zip(names, results, strict=True))
        caps = new
        results = once(caps)
    raise NumericalError("portfolio gross cap: the pairs' runs did not settle; please report")


def run_portfolio(
    legs: Sequence[tuple[PairData, PositionRule]], params: PairParams, costs: Costs
) -> PortfolioResult:
    """Backtest several pairs (``(data, strategy)`` each, one strategy object per pair) of one
    timeframe on one capital; see the module docstring."""
    if not legs:
        raise ConfigError("a portfolio needs at least one pair")
    names = [data.pair for data, _ in legs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a pair is listed twice: {names}; list each pair once")
    timeframes = {data.timeframe for data, _ in legs}
    if len(timeframes) != 1:
        raise ConfigError(f"a portfolio trades one timeframe, got {sorted(timeframes)}")
    ts = np.unique(np.concatenate([data.aligned.ts for data, _ in legs]))
    floor = costs.ruin_equity * costs.capital
    series = [run_pair(d.aligned.close_y, d.aligned.close_x, params) for d, _ in legs]
    results = _runs(legs, series, params, costs, None)
    pnl = np.stack([_pnl_on(ts, r, costs.capital) for r in results.values()])
    equity = costs.capital + pnl.sum(axis=0)
    below = np.flatnonzero(equity <= floor)
    ruin_bar = int(below[0]) if below.size else -1
    if ruin_bar >= 0:  # every pair stops at the portfolio's ruin
        results = _runs(legs, series, params, costs, int(ts[ruin_bar]))
        pnl = np.stack([_pnl_on(ts, r, costs.capital) for r in results.values()])
        equity = costs.capital + pnl.sum(axis=0)
    trades = [r.trades for r in results.values()]
    entry_ts = np.concatenate([t["entry_ts"].cast("int64").to_numpy() for t in trades])
    exit_col = [t["exit_ts"].cast("int64") for t in trades]
    closed = np.concatenate([c.is_valid().to_numpy(zero_copy_only=False) for c in exit_col])
    exit_ts = np.concatenate([c.fill_null(0).to_numpy() for c in exit_col])
    net_pnl = np.concatenate(
        [(t["pnl"].to_numpy() - t["fees"].to_numpy() - t["funding"].to_numpy()) for t in trades]
    )
    per = list(results.values())
    stats = compute_stats(
        ts,
        equity,
        costs.capital,
        TIMEFRAME_MS[timeframes.pop()],
        entry_ts=entry_ts,
        exit_ts=exit_ts,
        closed=closed,
        net_pnl=net_pnl,
        traded_notional=sum(r.stats["turnover"] for r in per) * costs.capital,
        fees=sum(r.stats["fees_paid"] for r in per),
        funding=sum(r.stats["funding_paid"] for r in per),
        funding_events=sum(r.stats["funding_events"] for r in per),
        funding_assumed=sum(r.stats["funding_assumed"] for r in per),
        ruin_bar=ruin_bar,
    )
    for key in ("carried_bars", "dropped_bars"):
        stats[key] = sum(r.stats[key] for r in per)
    stats["pairs"] = len(per)
    changes = np.diff(pnl, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(changes) if changes.shape[1] >= 2 else np.full((len(per),) * 2, np.nan)
    corr = np.atleast_2d(corr)
    position = np.zeros(ts.shape[0], dtype=np.int8)  # pairs in a position during each bar
    for r in per:
        idx = np.searchsorted(r.equity.ts, ts, side="right") - 1
        position += np.where(idx >= 0, r.equity.position[np.maximum(idx, 0)] != 0, 0).astype(
            np.int8
        )
    return PortfolioResult(stats, EquityCurve(ts, equity, position), results, corr)


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def portfolio_json(result: PortfolioResult) -> dict:
    """``{"stats", "pairs": {pair: stats}, "correlation": {"pairs", "matrix"}, "trades" (each
    with its "pair"), "equity": {"ts", "equity"}}``, JSON-safe (non-finite numbers: null)."""
    total = BacktestResult(
        result.stats, result.pairs[next(iter(result.pairs))].trades[:0], result.equity
    ).to_json_dict()
    docs = {pair: r.to_json_dict() for pair, r in result.pairs.items()}
    trades = [{"pair": pair, **row} for pair, doc in docs.items() for row in doc["trades"]]
    return {
        "stats": total["stats"],
        "pairs": {pair: doc["stats"] for pair, doc in docs.items()},
        "correlation": {
            "pairs": list(result.pairs),
            "matrix": [[_json_float(v) for v in row] for row in result.correlation],
        },
        "trades": trades,
        "equity": total["equity"],
    }
