"""Signal/position logic, one class per strategy, used unchanged live and in backtests.

``make_strategy(strategy_config)`` builds the strategy ``strategy_config.name`` names: a
built-in one (``REGISTRY``), one an installed distribution registered under the entry point
group ``pairstack.strategies``, or a class given as ``package.module:ClassName``
(``strategies.registry``; writing one: docs/strategies.md). ``check_config`` does it once where
a config is loaded. The package imports nothing of the project but ``engine``; entry/exit/stop
are checked by ``engine.config.StrategyConfig`` (the one place), not again here.
"""

from __future__ import annotations

from strategies.base import Strategy
from strategies.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    check_config,
    make_strategy,
    registered,
    resolve,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Strategy",
    "check_config",
    "make_strategy",
    "registered",
    "resolve",
]
