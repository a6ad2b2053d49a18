"""ResearchActor: the dashboard's History computations, off the Panel server's sessions.

A plain class (``ray.remote`` is applied by its caller, ``ui.history_jobs``) that reads a
store: ``catalog()`` says which symbols it holds per timeframe, ``history(...)`` reads a pair's
bars over a range (``engine.backtest_data.PairData.from_store``, aligned once by
``engine.align.align_bars`` with the config's ``analytics.max_carry``) and returns
``engine.history.pair_history`` of them: the one pair step and the one backtest entry, the
strategy built here (``strategies.make_strategy``).
"""

from __future__ import annotations

import os
from typing import Any

from engine.backtest import Costs
from engine.backtest_data import PairData
from engine.config import StrategyConfig
from engine.history import PairHistory, pair_history, store_catalog
from engine.pairbook import parse_pair
from engine.pairstep import PairParams
from strategies import make_strategy


class ResearchActor:
    """History of pairs over one store (a directory path); ``max_carry``: the served config's
    ``analytics.max_carry`` (bars a leg's last close may be carried)."""

    def __init__(self, store: str | os.PathLike, max_carry: int | str = "auto"):
        self.store = str(store)
        self.max_carry = max_carry

    def catalog(self) -> dict[str, list[str]]:
        """{timeframe: symbols with bars of it} (``engine.history.store_catalog``)."""
        return store_catalog(self.store)

    def history(
        self,
        pair: str,
        timeframe: str,
        params: PairParams,
        strategy_config: StrategyConfig,
        start: Any = None,
        end: Any = None,
    ) -> PairHistory:
        """``pair`` ("Y/X") over the stored ``timeframe`` bars with start <= ts < end (None:
        all the store holds), funding charged where stored."""
        y, x = parse_pair(pair)
        data = PairData.from_store(
            self.store, y, x, timeframe, start, end, max_carry=self.max_carry
        )
        strategy = make_strategy(strategy_config)
        return pair_history(data, params, strategy, Costs.from_config(strategy_config))
