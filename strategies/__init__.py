"""Signal/position logic, one class per strategy, used unchanged live and in backtests.

``make_strategy(strategy_config)`` builds the strategy named by ``strategy_config.name`` from
``REGISTRY``.
"""

from __future__ import annotations

from typing import Any

from engine.errors import ConfigError
from strategies.base import Strategy
from strategies.timestop import TimeStopStrategy
from strategies.zscore import ZScoreStrategy

#: strategy name -> class with ``from_config(strategy_config)``
REGISTRY: dict[str, type[Strategy]] = {cls.name: cls for cls in (ZScoreStrategy, TimeStopStrategy)}


def make_strategy(strategy_config: Any) -> Strategy:
    """The strategy named by ``strategy_config.name``, built from it (ConfigError if unknown)."""
    name = getattr(strategy_config, "name", None)
    try:
        cls = REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"strategy.name: unknown strategy {name!r}; expected one of {sorted(REGISTRY)}"
        ) from None
    return cls.from_config(strategy_config)


__all__ = ["REGISTRY", "Strategy", "make_strategy"]
