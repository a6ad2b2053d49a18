"""The two-leg backtest: one entry, ``run(data, params, strategy, costs)``.

``run`` is what the CLI, the sweeps (``actors.backtest``), train/test splits and the dashboard all
call: the pair step (``engine.pairstep.run_pair``) over a ``PairData``'s aligned bars, the
strategy object the caller built (engine/ never imports strategies/) on its z and spread, then
the private simulation step: target positions -> fills, equity, trades, funding, stats.

Semantics are docs/semantics.md "Pair and backtest semantics": the target decided at the close of
bar t fills at the open of bar t+1 (the aligned ``open_*`` arrays already carry a leg's last close
when it has no bar at t+1); a target on the last bar is not filled. Beta is taken at the decision
bar and held until exit. Signed quantities: qty_y = p*notional/fill_y, and qty_x =
-p*beta*notional/fill_x with log prices or -p*beta*|qty_y| with raw prices. Fills slip against the
trader (open*(1 +/- slippage_bps/1e4)), every leg of every fill pays fee_bps/1e4*|qty|*fill. Equity
= cash + sum(qty*close) at every close, starting at capital. Funding: at a funding time T each open
leg pays qty*mark*rate with mark = the leg's close of the last bar that opened before T (booked at
that bar's close); the times and rates come from the stored mark-price rows through
``engine.funding.funding_events`` (the exchange's announced next funding time, or the 8-hour grid
for rows without it, counted in ``funding_assumed``).

Sizing (``Costs.sizing``): ``fixed`` is the rule above with ``notional``; ``vol`` replaces
``notional`` by vol_target / sd_t with sd_t the sample std (ddof=1) of the spread's bar-to-bar
changes over the ``vol_window`` changes ending at the decision bar t (past data only), so the
position's spread PnL per bar has a std of about vol_target USDT (log prices: notional =
vol_target/sd_t USDT; raw prices: |qty_y| = vol_target/sd_t). No entry where sd_t is not yet
known or zero. ``max_gross``: an entry whose gross |qty_y|*fill_y + |qty_x|*fill_x exceeds it has
both quantities scaled down by max_gross/gross (a portfolio lowers the cap of each entry by the
gross its other pairs hold: ``engine.backtest_portfolio``); an entry with no gross left under
the cap is skipped. An entry that was skipped is not retried until the target changes.

Ruin: when equity at a bar close t is at or below ``ruin_equity * capital`` (default 0), the run
is ruined at t: an open position is closed at the open of bar t+1 like every fill (slippage
and fees as usual; on the last bar it stays open, marked at its close), and nothing is traded
after that; equity stays flat at its last value. Stats say ``ruined`` and ``ruined_at``.

A trade's ``pnl`` is its trading PnL before fees and funding (marked at the last close while
still open), so: final equity = capital + sum(pnl) - fees - funding (paid).
Units: prices USDT, times ms (Arrow ``timestamp[ms, UTC]``), quantities base units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from numba import njit

from engine.backtest_data import PairData, check_bars
from engine.backtest_stats import compute_stats
from engine.errors import ConfigError, DataError
from engine.funding import FundingEvents
from engine.pairstep import PairParams, PairSeries, run_pair
from engine.schemas import TIMEFRAME_MS, TS_TYPE

#: trades table: one row per round trip; exit columns are null while the trade is open
TRADE_SCHEMA = pa.schema(
    [
        ("entry_ts", TS_TYPE),  # fill time of the entry (open of the bar after the decision)
        ("exit_ts", TS_TYPE),
        ("side", pa.int8()),  # +1 long spread, -1 short spread
        ("beta", pa.float64()),
        ("qty_y", pa.float64()),
        ("qty_x", pa.float64()),
        ("entry_fill_y", pa.float64()),
        ("entry_fill_x", pa.float64()),
        ("exit_fill_y", pa.float64()),
        ("exit_fill_x", pa.float64()),
        ("fees", pa.float64()),  # entry + exit fees, USDT
        ("funding", pa.float64()),  # funding paid while open, USDT (negative: received)
        ("pnl", pa.float64()),  # trading PnL before fees and funding, USDT
    ]
)

# columns of the kernel's float trade matrix
T_BETA, T_QY, T_QX, T_EFY, T_EFX, T_XFY, T_XFX, T_FEES, T_FUNDING, T_PNL = range(10)
PRICE_MODES = ("log", "raw")


@njit(cache=True)
def _fill(price: float, qty: float, slip: float) -> float:
    """Fill price of a trade of signed ``qty``: slipped up when buying, down when selling."""
    if qty > 0.0:
        return price * (1.0 + slip)
    if qty < 0.0:
        return price * (1.0 - slip)
    return price


@njit(cache=True)
def simulate_kernel(
    open_y: np.ndarray,
    close_y: np.ndarray,
    open_x: np.ndarray,
    close_x: np.ndarray,
    target: np.ndarray,
    beta: np.ndarray,
    rate_y: np.ndarray,
    rate_x: np.ndarray,
    size: np.ndarray,
    size_is_qty: bool,
    max_gross: np.ndarray,
    capital: float,
    ruin_floor: float,
    halt_bar: int,
    fee_rate: float,
    slip: float,
    log_prices: bool,
):
    """Two-leg simulation from int8 targets (see the module docstring for the rules).

    ``size[t]``: the entry size decided at bar t, USDT of the y leg (or |qty_y| when
    ``size_is_qty``); a non-finite or non-positive size skips that entry. ``max_gross[t]``:
    cap on the gross USDT of an entry filled at the open of bar t (inf: none; <= 0 skips it).
    ``ruin_floor``: equity (USDT) at or below which, at a bar close, the run is ruined: the
    position closes at the next open and trading stops.
    Returns (equity[n], position[n] held during each bar, trade_bars[k, 2] (entry, exit bar of
    the fills; exit -1 while open), sides[k], trade_values[k, 10] (T_* columns; NaN exit fills
    while open), fees, funding paid, ruin bar or -1). Oracle: the plain-Python loop written
    from docs/semantics.md in tests/engine/test_backtest.py.
    """
    n = close_y.shape[0]
    equity = np.empty(n)
    position = np.zeros(n, dtype=np.int8)
    entries = 0  # at most: a non-zero target that differs from the one before it
    for t in range(n - 1):
        if target[t] != 0 and (t == 0 or target[t] != target[t - 1]):
            entries += 1
    trade_bars = np.full((entries, 2), -1, dtype=np.int64)
    sides = np.zeros(entries, dtype=np.int8)
    values = np.full((entries, 10), np.nan)
    cash = capital
    fees = 0.0
    funding = 0.0
    pos = 0
    qy = 0.0
    qx = 0.0
    k = -1
    ruin = -1
    for t in range(n):
        if ruin >= 0:
            want = 0
            act = pos != 0
        else:
            want = target[t - 1] if t > 0 else 0
            before = target[t - 2] if t > 1 else 0
            act = t > 0 and want != before
        if act:
            if pos != 0:
                fy = _fill(open_y[t], -qy, slip)
                fx = _fill(open_x[t], -qx, slip)
                fee = fee_rate * (abs(qy) * fy + abs(qx) * fx)
                cash += qy * fy + qx * fx - fee
                fees += fee
                trade_bars[k, 1] = t
                values[k, T_XFY] = fy
                values[k, T_XFX] = fx
                values[k, T_FEES] += fee
                values[k, T_PNL] = qy * (fy - values[k, T_EFY]) + qx * (fx - values[k, T_EFX])
                pos = 0
                qy = 0.0
                qx = 0.0
            s = size[t - 1]
            cap = max_gross[t]
            if want != 0 and s > 0.0 and math.isfinite(s) and cap > 0.0:
                b = beta[t - 1]
                fy = open_y[t] * (1.0 + slip * want)
                qy = want * s if size_is_qty else want * s / fy
                fx = _fill(open_x[t], -want * b, slip)
                qx = -want * b * (s / fx if log_prices else abs(qy))
                gross = abs(qy) * fy + abs(qx) * fx
                if gross > cap:
                    qy *= cap / gross
                    qx *= cap / gross
                fee = fee_rate * (abs(qy) * fy + abs(qx) * fx)
                cash -= qy * fy + qx * fx + fee
                fees += fee
                pos = want
                k += 1
                trade_bars[k, 0] = t
                sides[k] = want
                values[k, T_BETA] = b
                values[k, T_QY] = qy
                values[k, T_QX] = qx
                values[k, T_EFY] = fy
                values[k, T_EFX] = fx
                values[k, T_FEES] = fee
                values[k, T_FUNDING] = 0.0
        if pos != 0:
            pay = qy * close_y[t] * rate_y[t] + qx * close_x[t] * rate_x[t]
            cash -= pay
            funding += pay
            values[k, T_FUNDING] += pay
        equity[t] = cash + qy * close_y[t] + qx * close_x[t]
        position[t] = pos
        if ruin < 0 and (equity[t] <= ruin_floor or t >= halt_bar):
            ruin = t
    if pos != 0:
        values[k, T_PNL] = qy * (close_y[n - 1] - values[k, T_EFY]) + qx * (
            close_x[n - 1] - values[k, T_EFX]
        )
    return (
        equity,
        position,
        trade_bars[: k + 1],
        sides[: k + 1],
        values[: k + 1],
        fees,
        funding,
        ruin,
    )


SIZINGS = ("fixed", "vol")


@dataclass(frozen=True)
class Costs:
    """Sizing, costs and the ruin floor: ``notional``, ``capital``, ``vol_target`` and
    ``max_gross`` in USDT, fees and slippage in bps, ``ruin_equity`` a fraction of capital;
    ``sizing`` ``fixed`` or ``vol`` (see the module docstring)."""

    notional: float
    capital: float
    fee_bps: float = 0.0
    slippage_bps: float = 0.0
    sizing: str = "fixed"
    vol_target: float | None = None
    max_gross: float | None = None
    ruin_equity: float = 0.0

    def __post_init__(self) -> None:
        for name in ("notional", "capital", "vol_target", "max_gross"):
            value = getattr(self, name)
            if value is None and name in ("vol_target", "max_gross"):
                continue
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"strategy.{name}: expected a positive number, got {value!r}")
        if self.sizing not in SIZINGS:
            raise ConfigError(f"strategy.sizing: expected one of {SIZINGS}, got {self.sizing!r}")
        if self.sizing == "vol" and self.vol_target is None:
            raise ConfigError("strategy.vol_target: required by sizing 'vol' (USDT per bar)")
        if not (math.isfinite(self.ruin_equity) and 0.0 <= self.ruin_equity < 1.0):
            raise ConfigError(
                f"strategy.ruin_equity: expected a fraction of capital in [0, 1), "
                f"got {self.ruin_equity!r}"
            )
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 1e4):
                raise ConfigError(
                    f"strategy.{name}: expected a number in [0, 10000) bps, got {value!r}"
                )

    @classmethod
    def from_config(cls, config: Any) -> Costs:
        """From a StrategyConfig; capital None -> notional."""
        capital = getattr(config, "capital", None)
        return cls(
            notional=float(config.notional),
            capital=float(config.notional if capital is None else capital),
            fee_bps=float(getattr(config, "fee_bps", 0.0)),
            slippage_bps=float(getattr(config, "slippage_bps", 0.0)),
            sizing=str(getattr(config, "sizing", "fixed")),
            vol_target=getattr(config, "vol_target", None),
            max_gross=getattr(config, "max_gross", None),
            ruin_equity=float(getattr(config, "ruin_equity", 0.0)),
        )


def entry_sizes(costs: Costs, spread: np.ndarray | None, window: int, n: int) -> np.ndarray:
    """Per decision bar, the entry size the kernel takes: ``notional`` (fixed) or
    vol_target / sd_t (vol: sd_t = std, ddof=1, of the last ``window`` spread changes up to
    and including bar t; NaN until known)."""
    if costs.sizing == "fixed":
        return np.full(n, costs.notional)
    if spread is None:
        raise ConfigError(
            "strategy.sizing 'vol' needs the spread (run it through engine.backtest.run)"
        )
    if window < 2:
        raise ConfigError(f"sizing 'vol': expected a window of at least 2 changes, got {window}")
    diff = np.full(n, np.nan)
    diff[1:] = np.diff(np.asarray(spread, dtype=np.float64))
    sd = np.full(n, np.nan)
    if n > window:
        windows = np.lib.stride_tricks.sliding_window_view(diff[1:], window)
        sd[window:] = np.std(windows, axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, costs.vol_target / sd, np.nan)


@dataclass(frozen=True)
class EquityCurve:
    """Equity (USDT) at every bar close, labelled by the bar's open time ``ts`` (ms), and the
    position held during each bar."""

    ts: np.ndarray
    equity: np.ndarray
    position: np.ndarray


def _iso(ms: np.ndarray) -> list[str]:
    return [s + "Z" for s in np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")]


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class BacktestResult:
    """Stats (dict), trades (Arrow table, TRADE_SCHEMA) and the equity curve."""

    stats: dict[str, float | int]
    trades: pa.Table
    equity: EquityCurve

    def to_json_dict(self) -> dict[str, Any]:
        """``{"stats", "trades", "equity": {"ts", "equity"}}`` with ISO-8601 UTC times, JSON-safe
        (non-finite numbers become null)."""
        trades = []
        for row in self.trades.to_pylist():
            for key in ("entry_ts", "exit_ts"):
                if row[key] is not None:
                    row[key] = row[key].isoformat(timespec="milliseconds").replace("+00:00", "Z")
            trades.append({k: _json_number(v) for k, v in row.items()})
        return {
            "stats": {k: _json_number(v) for k, v in self.stats.items()},
            "trades": trades,
            "equity": {
                "ts": _iso(self.equity.ts),
                "equity": [_json_number(v) for v in self.equity.equity.tolist()],
            },
        }


def _series(name: str, values: Any, n: int, dtype: Any = np.float64) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{name} must be a 1-D array of {n} values (one per bar), got {arr.shape}")
    return arr


def _ms(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        arr = arr.astype("datetime64[ms]")
    return np.ascontiguousarray(arr.astype(np.int64))


def _funding_per_bar(ts: np.ndarray, funding: Any) -> tuple[np.ndarray, int, int]:
    """Per-bar funding rate of one leg: each settlement at T with ts[0] < T <= ts[-1] (the bar
    clock has passed it) lands on the last bar that opened before T; None -> zeros.

    ``funding`` is a ``FundingEvents`` (``engine.funding.funding_events``) or anything indexable
    by "ts" (ms) and "rate": an Arrow table, a dict of arrays or a NumPy record array.
    Returns (rates per bar, settlements inside the bars, of which assumed on the 8 h grid).
    """
    out = np.zeros(ts.shape[0])
    if funding is None:
        return out, 0, 0
    if isinstance(funding, FundingEvents):
        times, rates, assumed = funding.ts, funding.rate, funding.assumed
    else:
        try:
            times = _ms(funding["ts"])
            rates = np.asarray(funding["rate"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"funding must have columns 'ts' (ms) and 'rate' (fraction): {exc}"
            ) from None
        assumed = np.zeros(times.shape, dtype=bool)
    if times.shape != rates.shape or times.ndim != 1:
        raise DataError(f"funding 'ts' and 'rate' lengths differ: {times.shape} vs {rates.shape}")
    if not np.all(np.isfinite(rates)):
        raise DataError("funding 'rate' has non-finite values")
    inside = (times > ts[0]) & (times <= ts[-1])
    np.add.at(out, np.searchsorted(ts, times[inside], side="left") - 1, rates[inside])
    return out, int(np.count_nonzero(inside)), int(np.count_nonzero(assumed[inside]))


def _bar_ms(ts: np.ndarray, timeframe: str | None) -> int:
    if timeframe is not None:
        if timeframe not in TIMEFRAME_MS:
            raise DataError(
                f"unknown timeframe {timeframe!r}: expected one of {list(TIMEFRAME_MS)}"
            )
        return TIMEFRAME_MS[timeframe]
    return int(np.min(np.diff(ts)))


def _simulate(
    ts: Any,
    open_y: Any,
    close_y: Any,
    open_x: Any,
    close_x: Any,
    target: Any,
    beta: Any,
    costs: Costs,
    price_mode: str,
    funding: tuple[Any, Any] | None = None,
    timeframe: str | None = None,
    spread: Any = None,
    vol_window: int = 60,
    halt_ts: int | None = None,
    own_ruin: bool = True,
    gross_cap: Any = None,
) -> BacktestResult:
    """The simulation step of ``run``: the pair from target positions decided at each close
    (docs/semantics.md semantics).

    ``ts`` bar open times (ms, strictly increasing); prices raw USDT (aligned, last close carried
    into the open of a leg without a bar); ``target`` -1/0/+1 per bar; ``beta`` hedge ratio per
    bar (log or raw prices as ``price_mode``); ``funding`` (events_y, events_x), each None, a
    ``FundingEvents`` or with "ts"/"rate" columns; ``timeframe`` sets the annualisation
    (default: the smallest ts step); ``gross_cap``: per bar, the gross USDT an entry filled at
    its open may take (default: ``costs.max_gross`` on every bar, or none).
    """
    if price_mode not in PRICE_MODES:
        raise ConfigError(f"analytics.price: expected one of {PRICE_MODES}, got {price_mode!r}")
    ts_arr = _ms(ts)
    n = ts_arr.shape[0]
    if ts_arr.ndim != 1 or n < 2:
        raise DataError(f"a backtest needs at least 2 bars, got {n}")
    if np.any(np.diff(ts_arr) <= 0):
        raise DataError("ts must be strictly increasing (one row per bar)")
    prices = {
        name: _series(name, values, n)
        for name, values in (
            ("open_y", open_y),
            ("close_y", close_y),
            ("open_x", open_x),
            ("close_x", close_x),
        )
    }
    for name, arr in prices.items():
        if not np.all(np.isfinite(arr) & (arr > 0)):
            raise DataError(
                f"{name} must be finite positive prices; bar {np.argmin(arr > 0)} is not"
            )
    tgt = np.asarray(target)
    if tgt.ndim != 1 or tgt.shape[0] != n:
        raise DataError(f"target must be a 1-D array of {n} values (one per bar), got {tgt.shape}")
    if not np.all(np.isin(tgt, (-1, 0, 1))):
        raise DataError("target positions must be -1, 0 or +1")
    tgt = np.ascontiguousarray(tgt, dtype=np.int8)
    beta_arr = _series("beta", beta, n)
    opens = np.flatnonzero((tgt[:-1] != 0) & (tgt[:-1] != np.concatenate(([0], tgt[:-2]))))
    bad = opens[~np.isfinite(beta_arr[opens])]
    if bad.size:
        raise DataError(f"beta is not finite at decision bar {bad[0]} where a position opens")
    rates_y, n_y, assumed_y = _funding_per_bar(ts_arr, None if funding is None else funding[0])
    rates_x, n_x, assumed_x = _funding_per_bar(ts_arr, None if funding is None else funding[1])
    spread_arr = None if spread is None else _series("spread", spread, n)
    if gross_cap is None:
        cap = np.full(n, math.inf if costs.max_gross is None else costs.max_gross)
    else:
        cap = _series("gross_cap", gross_cap, n)
    equity, position, bars, sides, vals, fees, funding_paid, ruin = simulate_kernel(
        prices["open_y"],
        prices["close_y"],
        prices["open_x"],
        prices["close_x"],
        tgt,
        beta_arr,
        rates_y,
        rates_x,
        entry_sizes(costs, spread_arr, vol_window, n),
        costs.sizing == "vol" and price_mode == "raw",
        cap,
        costs.capital,
        costs.ruin_equity * costs.capital if own_ruin else -math.inf,
        n if halt_ts is None else max(0, int(np.searchsorted(ts_arr, halt_ts, "right")) - 1),
        costs.fee_bps / 1e4,
        costs.slippage_bps / 1e4,
        price_mode == "log",
    )
    closed = bars[:, 1] >= 0
    entry_ts = ts_arr[bars[:, 0]]
    exit_ts = np.where(closed, ts_arr[bars[:, 1]], 0)
    trades = pa.Table.from_arrays(
        [
            pa.array(entry_ts, type=pa.int64()).cast(TS_TYPE),
            pa.array(exit_ts, type=pa.int64(), mask=~closed).cast(TS_TYPE),
            pa.array(sides, type=pa.int8()),
            *(
                pa.array(vals[:, col], mask=~closed if col in (T_XFY, T_XFX) else None)
                for col in range(vals.shape[1])
            ),
        ],
        schema=TRADE_SCHEMA,
    )
    exit_notional = np.where(
        closed, np.abs(vals[:, T_QY]) * vals[:, T_XFY] + np.abs(vals[:, T_QX]) * vals[:, T_XFX], 0
    )
    entry_notional = np.abs(vals[:, T_QY]) * vals[:, T_EFY] + np.abs(vals[:, T_QX]) * vals[:, T_EFX]
    stats = compute_stats(
        ts_arr,
        equity,
        costs.capital,
        _bar_ms(ts_arr, timeframe),
        entry_ts=entry_ts,
        exit_ts=exit_ts,
        closed=closed,
        net_pnl=vals[:, T_PNL] - vals[:, T_FEES] - vals[:, T_FUNDING],
        traded_notional=float(np.sum(entry_notional) + np.sum(exit_notional)),
        fees=fees,
        funding=funding_paid,
        funding_events=n_y + n_x,
        funding_assumed=assumed_y + assumed_x,
        ruin_bar=int(ruin),
    )
    return BacktestResult(stats=stats, trades=trades, equity=EquityCurve(ts_arr, equity, position))


class PositionRule(Protocol):
    """What ``run`` needs of a strategy (``strategies.base.Strategy`` is one): ``reset`` to flat
    with nothing blocked, ``run`` over many bars' z and spread -> int8 targets (-1/0/+1)."""

    def reset(self) -> None: ...

    def run(self, z: np.ndarray, spread: np.ndarray | None = None) -> np.ndarray: ...


def run(
    data: PairData,
    params: PairParams,
    strategy: PositionRule,
    costs: Costs,
    *,
    series: PairSeries | None = None,
    lo: int = 0,
    hi: int | None = None,
    halt_ts: int | None = None,
    own_ruin: bool = True,
    gross_cap: np.ndarray | None = None,
) -> BacktestResult:
    """The backtest, the one entry: the pair step over ``data``'s aligned bars, ``strategy`` on
    its z and spread, fills, equity, funding and stats (docs/semantics.md semantics).

    ``data``: the pair's bars aligned once and each leg's funding settlements (``PairData``:
    stored funding is charged wherever it is stored); ``params``: the pair step
    (``PairParams``); ``strategy``: built by the caller (``strategies.make_strategy``), reset
    here so it starts flat; ``costs``: sizing and costs (``Costs.from_config``).
    ``lo``/``hi`` trade only aligned bars [lo, hi) (a train/test part): the pair step still
    runs over all bars (its state enters the part warmed up, no look-ahead), the strategy starts
    flat at ``lo`` and the simulation with fresh capital and no position. ``series``: the pair
    step of ``params`` over all of ``data``'s bars when the caller keeps it (a sweep reuses one
    for many strategies); computed here by default. ``halt_ts``/``own_ruin``/``gross_cap`` (per
    aligned bar, the gross USDT an entry filled at its open may take): how a portfolio
    (``engine.backtest_portfolio``) imposes its ruin and its gross cap on a pair (``_simulate``).
    NumericalError when the bars are too few for the z-score to warm up (``check_bars``).
    """
    check_bars(data.n, params)
    a = data.aligned
    if series is None:
        series = run_pair(a.close_y, a.close_x, params)
    elif series.z.shape[0] != data.n:
        raise DataError(
            f"series has {series.z.shape[0]} bars, data {data.n}: pass the pair step of all of "
            "data's aligned bars (or none)"
        )
    part = slice(lo, hi)
    strategy.reset()
    target = strategy.run(series.z[part], series.spread[part])
    result = _simulate(
        a.ts[part],
        a.open_y[part],
        a.close_y[part],
        a.open_x[part],
        a.close_x[part],
        target,
        series.beta[part],
        costs,
        params.price,
        funding=data.funding,
        timeframe=data.timeframe,
        spread=series.spread[part],
        vol_window=params.zscore_window,
        halt_ts=halt_ts,
        own_ruin=own_ruin,
        gross_cap=None if gross_cap is None else gross_cap[part],
    )
    result.stats.update(data.carry_counts(lo, hi))
    return result
