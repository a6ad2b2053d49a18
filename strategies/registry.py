"""Which class ``strategy.name`` names, and building it (docs/strategies.md).

``strategy.name`` is, looked up in this order:

1. a built-in strategy (``REGISTRY``: ``zscore``, ``zscore_timestop``);
2. a name registered by an installed distribution under the entry point group
   ``pairstack.strategies`` (``ENTRY_POINT_GROUP``), its value ``package.module:ClassName``;
   such names are lowercase identifiers (``engine.config.STRATEGY_NAME_PATTERN``);
3. ``package.module:ClassName``: that class, imported from the module (a name with a colon is
   always this: no entry point is looked up for it).

The class must be a subclass of ``strategies.Strategy`` with a name, an initial state and a
numba step kernel (``strategies.base.contract_problem``). Every failure is a ConfigError naming
``strategy.name`` (or the ``strategy.params`` key) and what to do; ``check_config`` runs all of
it once where a user's config is loaded, before anything starts.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from engine.config import StrategyConfig
from engine.errors import ConfigError
from strategies.base import Strategy, contract_problem
from strategies.timestop import TimeStopStrategy
from strategies.zscore import ZScoreStrategy

#: built-in strategy name -> class built from a StrategyConfig
REGISTRY: dict[str, type[Strategy]] = {cls.name: cls for cls in (ZScoreStrategy, TimeStopStrategy)}
#: the entry point group under which installed distributions register strategies
ENTRY_POINT_GROUP = "pairstack.strategies"


def registered() -> dict[str, EntryPoint]:
    """The strategies registered under ``ENTRY_POINT_GROUP`` by installed distributions
    (name -> entry point). ConfigError when two distributions register one name differently."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise ConfigError(
                f"strategy name {ep.name!r} is registered twice under {ENTRY_POINT_GROUP}, as "
                f"{other.value} and {ep.value}; uninstall one, or name the class as "
                "package.module:ClassName"
            )
        found[ep.name] = ep
    return found


def _import_class(spec: str) -> object:
    """The object ``package.module:Name`` names (ConfigError when it cannot be imported)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise ConfigError(
            f"strategy.name: cannot import module {module_name!r} for {spec}: "
            f"{type(exc).__name__}: {exc}; install the package or put it on PYTHONPATH"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(
            f"strategy.name: module {module_name!r} has no {attr!r} (from {spec}); expected "
            "package.module:ClassName of a strategies.Strategy subclass"
        ) from None


def _load_entry_point(ep: EntryPoint) -> object:
    try:
        return ep.load()
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise ConfigError(
            f"strategy.name: cannot load {ep.name!r} (registered under {ENTRY_POINT_GROUP} as "
            f"{ep.value}): {type(exc).__name__}: {exc}"
        ) from None


def resolve(name: str) -> type[Strategy]:
    """The strategy class ``name`` names: built-in, registered, or ``package.module:Class``."""
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:  # never a registered name (those are lowercase identifiers)
        obj, label = _import_class(name), name
    elif name in (eps := registered()):
        obj, label = _load_entry_point(eps[name]), f"{name} ({eps[name].value})"
    else:
        raise ConfigError(
            f"strategy.name: unknown strategy {name!r}; expected a built-in one "
            f"{sorted(REGISTRY)}, one registered under {ENTRY_POINT_GROUP} {sorted(eps)}, or a "
            "class as package.module:ClassName"
        )
    problem = contract_problem(obj)
    if problem is not None:
        raise ConfigError(f"strategy.name: {label} {problem}")
    return obj


def make_strategy(strategy_config: StrategyConfig) -> Strategy:
    """The strategy ``strategy_config.name`` names, built from it (its ``params`` validated
    into the class's ``params_type``); ConfigError when it cannot be.

    Only a StrategyConfig is taken: it is what guarantees checked thresholds."""
    if not isinstance(strategy_config, StrategyConfig):
        raise TypeError(
            "make_strategy: expected an engine.config.StrategyConfig (its thresholds are "
            f"checked there), got {type(strategy_config).__name__}; build one with "
            "StrategyConfig(name=..., entry=..., ...)"
        )
    return resolve(strategy_config.name)(strategy_config)


def check_config(strategy_config: StrategyConfig, source: str | None = None) -> None:
    """Refuse a strategy section that cannot be built (unknown or unimportable class, bad
    params) as ConfigError, naming ``source`` (the config file) when given: what every user
    entry point calls right after loading a config, before anything starts."""
    try:
        make_strategy(strategy_config)
    except ConfigError as exc:
        if source is None:
            raise
        raise ConfigError(f"{source}: {exc}") from None
