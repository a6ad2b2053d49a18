"""Performance statistics of a backtest, from its equity curve and trades.

Conventions: per-bar return r_t = equity_t / equity_{t-1} - 1 (t >= 1); annualisation by
sqrt(bars per 365 days) with the bar length of the timeframe (crypto trades around the clock);
drawdown as a positive fraction of the running peak; times in ms.
"""

from __future__ import annotations

import math

import numpy as np

MS_PER_YEAR = 365 * 86_400_000


def _ratio(num: float, den: float, scale: float) -> float:
    return num / den * scale if den > 0 and math.isfinite(den) else math.nan


def bar_returns(equity: np.ndarray) -> np.ndarray:
    """Per-bar simple returns equity_t / equity_{t-1} - 1 (length n - 1)."""
    return equity[1:] / equity[:-1] - 1.0


def drawdown(ts: np.ndarray, equity: np.ndarray) -> tuple[float, int]:
    """(max drawdown as a fraction of the peak, its duration in ms).

    The duration runs from the peak before the deepest trough to the first bar back at or
    above that peak, or to the last bar when equity never recovers.
    """
    peak = np.maximum.accumulate(equity)
    dd = 1.0 - equity / peak
    trough = int(np.argmax(dd))
    depth = float(dd[trough])
    if depth <= 0.0:
        return 0.0, 0
    peak_bar = int(np.flatnonzero(equity[: trough + 1] == peak[trough])[-1])
    recovered = np.flatnonzero(equity[trough:] >= peak[trough])
    end_bar = trough + int(recovered[0]) if recovered.size else equity.shape[0] - 1
    return depth, int(ts[end_bar] - ts[peak_bar])


def compute_stats(
    ts: np.ndarray,
    equity: np.ndarray,
    capital: float,
    bar_ms: int,
    *,
    entry_ts: np.ndarray,
    exit_ts: np.ndarray,
    closed: np.ndarray,
    net_pnl: np.ndarray,
    traded_notional: float,
    fees: float,
    funding: float,
    funding_events: int = 0,
    funding_assumed: int = 0,
) -> dict[str, float | int]:
    """The stats dict of a backtest.

    ``entry_ts``/``exit_ts`` are fill times (ms) per trade, ``closed`` marks round trips that
    were closed, ``net_pnl`` is each trade's PnL after fees and funding; ``traded_notional`` is
    the sum of |qty| * fill over all fills (USDT); ``fees`` and ``funding`` are paid amounts;
    ``funding_events`` counts the settlements inside the bars (per leg), ``funding_assumed``
    those of them placed on the 8-hour grid because the stored rows carried no funding time.
    """
    returns = bar_returns(equity)
    bars_per_year = MS_PER_YEAR / bar_ms
    scale = math.sqrt(bars_per_year)
    if returns.size >= 2:
        mean = float(np.mean(returns))
        std = float(np.std(returns, ddof=1))
        downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    else:
        mean = std = downside = math.nan
    max_dd, max_dd_ms = drawdown(ts, equity)
    n_closed = int(np.count_nonzero(closed))
    holding = (exit_ts[closed] - entry_ts[closed]).astype(np.float64)
    return {
        "bars": int(equity.shape[0]),
        "bars_per_year": bars_per_year,
        "capital": float(capital),
        "final_equity": float(equity[-1]),
        "total_return": float(equity[-1] / capital - 1.0),
        "sharpe": _ratio(mean, std, scale),
        "sortino": _ratio(mean, downside, scale),
        "max_drawdown": max_dd,
        "max_drawdown_duration_ms": max_dd_ms,
        "trades": int(entry_ts.shape[0]),
        "closed_trades": n_closed,
        "win_rate": float(np.mean(net_pnl[closed] > 0.0)) if n_closed else math.nan,
        "mean_holding_ms": float(np.mean(holding)) if n_closed else math.nan,
        "turnover": traded_notional / capital,
        "fees_paid": float(fees),
        "funding_paid": float(funding),
        "funding_events": int(funding_events),
        "funding_assumed": int(funding_assumed),
    }
