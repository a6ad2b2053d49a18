"""Performance statistics of a backtest, from its equity curve and trades.

Conventions: per-bar return r_t = equity_t / equity_{t-1} - 1 (t >= 1); annualisation by
sqrt(bars per 365 days) with the bar length of the timeframe (crypto trades around the clock);
drawdown as a positive fraction of the running peak; times in ms.

Ruin: a run whose equity reached its ruin floor (``engine.backtest``) has ``ruined`` true,
``ruined_at`` the ruin bar's time (ISO-8601 UTC) and no Sharpe or Sortino (NaN, null in JSON):
returns on a wiped-out account mean nothing, and a ratio over the bars before ruin could still
be positive. Sorting by Sharpe (NaN last) therefore puts ruined runs after every other.

Small samples: a Sharpe or Sortino is annualised only with confidence from at least
``MIN_RETURNS`` returns spanning at least ``MIN_SPAN_MS`` (one day); below either, ``warning``
says so (the ratios are still given, for what they are); otherwise ``warning`` is None.
"""

from __future__ import annotations

import math

import numpy as np

MS_PER_YEAR = 365 * 86_400_000
#: fewest per-bar returns, and shortest span of bars (ms), for an annualised ratio without warning
MIN_RETURNS = 30
MIN_SPAN_MS = 86_400_000


def sample_warning(n_returns: int, span_ms: int) -> str | None:
    """Why ``n_returns`` returns over ``span_ms`` are too few to annualise, or None."""
    if n_returns >= MIN_RETURNS and span_ms >= MIN_SPAN_MS:
        return None
    return (
        f"small sample: {n_returns} returns over {span_ms / 3_600_000:.3g} h (annualised "
        f"ratios need >= {MIN_RETURNS} returns and >= {MIN_SPAN_MS // 3_600_000} h)"
    )


def iso_ms(ms: int) -> str:
    """ISO-8601 UTC string of a time in ms (``...Z``)."""
    return str(np.datetime64(int(ms), "ms")) + "Z"


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
    ruin_bar: int = -1,
) -> dict[str, float | int | str | bool | None]:
    """The stats dict of a backtest.

    ``entry_ts``/``exit_ts`` are fill times (ms) per trade, ``closed`` marks round trips that
    were closed, ``net_pnl`` is each trade's PnL after fees and funding; ``traded_notional`` is
    the sum of |qty| * fill over all fills (USDT); ``fees`` and ``funding`` are paid amounts;
    ``funding_events`` counts the settlements inside the bars (per leg), ``funding_assumed``
    those of them placed on the 8-hour grid because the stored rows carried no funding time;
    ``ruin_bar`` the bar at whose close the run was ruined (-1: not ruined).
    """
    returns = bar_returns(equity)
    ruined = ruin_bar >= 0
    bars_per_year = MS_PER_YEAR / bar_ms
    scale = math.sqrt(bars_per_year)
    if returns.size >= 2 and not ruined:
        mean = float(np.mean(returns))
        std = float(np.std(returns, ddof=1))
        downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    else:
        mean = std = downside = math.nan
    max_dd, max_dd_ms = drawdown(ts, equity)
    n_closed = int(np.count_nonzero(closed))
    holding = (exit_ts[closed] - entry_ts[closed]).astype(np.float64)
    span_ms = int(ts[-1] - ts[0]) + int(bar_ms)
    return {
        "bars": int(equity.shape[0]),
        "returns": int(returns.size),
        "warning": sample_warning(int(returns.size), span_ms),
        "ruined": ruined,
        "ruined_at": iso_ms(ts[ruin_bar]) if ruined else None,
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
