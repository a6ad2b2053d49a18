"""Signal/position logic, one class per strategy, used unchanged live and in backtests.

``make_strategy(strategy_config)`` builds the strategy named by ``strategy_config.name`` from
``REGISTRY``. The package imports nothing of the project but ``engine``; entry/exit/stop are
checked by ``engine.config.StrategyConfig`` (the one place), not again here.
"""

from __future__ import annotations

from engine.config import StrategyConfig
from engine.errors import ConfigError
from strategies.base import Strategy
from strategies.timestop import TimeStopStrategy
from strategies.zscore import ZScoreStrategy

#: strategy name -> class built from a StrategyConfig
REGISTRY: dict[str, type[Strategy]] = {cls.name: cls for cls in (ZScoreStrategy, TimeStopStrategy)}


def make_strategy(strategy_config: StrategyConfig) -> Strategy:
    """The strategy named by ``strategy_config.name``, built from it (ConfigError if unknown).

    Only a StrategyConfig is taken: it is what guarantees checked thresholds."""
    if not isinstance(strategy_config, StrategyConfig):
        raise TypeError(
            "make_strategy: expected an engine.config.StrategyConfig (its thresholds are "
            f"checked there), got {type(strategy_config).__name__}; build one with "
            "StrategyConfig(name=..., entry=..., ...)"
        )
    cls = REGISTRY.get(strategy_config.name)
    if cls is None:
        raise ConfigError(
            f"strategy.name: unknown strategy {strategy_config.name!r}; "
            f"expected one of {sorted(REGISTRY)}"
        )
    return cls(strategy_config)


__all__ = ["REGISTRY", "Strategy", "make_strategy"]
