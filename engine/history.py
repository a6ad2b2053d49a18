"""A pair over a stored range, as plain arrays: what the dashboard's History tab and the
notebook API (``ui.research``) draw.

``pair_history(data, params, strategy, costs)`` runs the one pair step
(``engine.pairstep.run_pair`` over the bars aligned by ``engine.align.align_bars``, held in
``data``) and the one backtest entry (``engine.backtest.run``, on that same pair step) and
returns a :class:`PairHistory`: per aligned bar the closes of both legs, the hedge, the spread
and its z, the position held and the equity. ``store_catalog(store)`` says which symbols the
store holds bars of, per timeframe. No Ray, no Panel; the strategy object is built by the
caller. Times in ms (bar open time), prices raw (closes), spread in ``params.price`` units
(log or raw), equity in USDT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.backtest import Costs, PositionRule, run
from engine.backtest_data import PairData
from engine.pairstep import PairParams, run_pair
from engine.schemas import TIMEFRAME_MS
from engine.store import Store


@dataclass(frozen=True)
class PairHistory:
    """One pair over a range: arrays of one length (the aligned bars), oldest first.

    ``ts`` bar open time (ms); ``close_y``/``close_x`` raw closes (last close carried where a
    leg had no bar); ``beta``/``alpha`` the hedge known at the bar; ``spread`` and ``z`` the
    pair step's; ``position`` held during the bar (-1/0/+1, int8); ``equity`` USDT at the
    bar's close. ``stats``: the backtest's stats dict; ``trades``: its closed and open round
    trips (rows of the backtest's ``TRADE_SCHEMA`` as a dict of columns).
    """

    pair: str
    timeframe: str
    ts: np.ndarray
    close_y: np.ndarray
    close_x: np.ndarray
    beta: np.ndarray
    alpha: np.ndarray
    spread: np.ndarray
    z: np.ndarray
    position: np.ndarray
    equity: np.ndarray
    stats: dict[str, Any]
    trades: dict[str, list]

    @property
    def n(self) -> int:
        """Number of aligned bars."""
        return int(self.ts.shape[0])


def pair_history(
    data: PairData, params: PairParams, strategy: PositionRule, costs: Costs
) -> PairHistory:
    """The pair step and the backtest of ``data``'s aligned bars (the pair step computed once
    and handed to ``engine.backtest.run``). NumericalError when the bars are too few for the
    z-score to warm up."""
    a = data.aligned
    series = run_pair(a.close_y, a.close_x, params)
    result = run(data, params, strategy, costs, series=series)
    return PairHistory(
        pair=data.pair,
        timeframe=data.timeframe,
        ts=a.ts,
        close_y=a.close_y,
        close_x=a.close_x,
        beta=series.beta,
        alpha=series.alpha,
        spread=series.spread,
        z=series.z,
        position=result.equity.position,
        equity=result.equity.equity,
        stats=dict(result.stats),
        trades=result.trades.to_pydict(),
    )


def store_catalog(store: Store | str | os.PathLike) -> dict[str, list[str]]:
    """{timeframe: symbols with bars of it} for every timeframe the store holds (in
    ``TIMEFRAME_MS`` order, shortest first); timeframes without bars left out."""
    store = store if isinstance(store, Store) else Store(store)
    found = {tf: store.symbols(tf) for tf in TIMEFRAME_MS}
    return {tf: symbols for tf, symbols in found.items() if symbols}
