"""The notebook API: a store's bars, screens, backtests and sweeps as pandas objects.

>>> from ui.research import open_store
>>> research = open_store("data/demo")
>>> research.bars("ETHUSDT", "1m").tail()

``open_store(path)`` returns a :class:`Research` over a pairstack store (the directory of
``store.path``). Every method calls the engine's one entry for its job: bars are
``engine.store.Store.read_bars``, closes ``engine.screen.align_closes``, screens
``engine.screen.screen_bars``, backtests ``engine.backtest.run`` (through
``actors.backtest.BacktestActor``, in this process), sweeps ``actors.backtest.sweep`` (Ray
actors: a local Ray starts on first use unless one is initialised or ``RAY_ADDRESS`` names
one), and ``history_plot`` draws ``engine.history.pair_history`` as the dashboard's History tab
does (the same HoloViews Layout, ``ui.history_plot.history_layout``).

Parameters: ``config`` is a pairstack YAML file or a loaded ``engine.config.Config`` (its
``analytics``, including ``max_carry`` for every alignment, and ``strategy``), or None for the
defaults; keyword overrides take the keys of
``pairstack backtest --sweep`` (analytics: ``hedge``, ``zscore_window``, ``ols_window``, ...;
strategy: ``entry``, ``exit``, ``stop``, ``notional``, ``fee_bps``, ...). Times: ``start``
inclusive, ``end`` exclusive, as ISO strings, datetimes, dates or ms; frames are indexed by
the bar open time (UTC). Walkthrough: docs/notebook.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from actors.backtest import BacktestActor
from engine.align import max_carry_ms
from engine.backtest import BacktestResult, Costs
from engine.backtest_data import PairData
from engine.config import AnalyticsConfig, Config, StrategyConfig, load_config
from engine.errors import DataError
from engine.history import PairHistory, pair_history, store_catalog
from engine.pairbook import parse_pair
from engine.pairstep import PairParams
from engine.screen import align_closes, load_bars, screen_bars
from engine.store import Store
from engine.sweep import parse_sweep, resolve_set
from strategies import make_strategy

ConfigLike = str | os.PathLike | Config | None


def _times(ms: Any) -> pd.DatetimeIndex:
    """Bar open times (ms) as a UTC DatetimeIndex named ``ts``."""
    return pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="ts")


@dataclass(frozen=True)
class Backtest:
    """A backtest as pandas: ``stats`` (Series), ``trades`` (one row per round trip; exit
    columns empty while open), ``equity`` (columns ``equity`` USDT and ``position``, indexed by
    bar time); ``result`` is the engine's ``BacktestResult``."""

    stats: pd.Series
    trades: pd.DataFrame
    equity: pd.DataFrame
    result: BacktestResult


def open_store(path: str | os.PathLike) -> Research:
    """A :class:`Research` over the store at ``path`` (DataError when it holds no bars)."""
    research = Research(path)
    if not research.timeframes():
        raise DataError(
            f"{path}: expected a pairstack store with bars (bars/timeframe=.../), found none; "
            "give the directory of store.path, or fill it with `pairstack download`/`import`"
        )
    return research


class Research:
    """A pairstack store, read for research (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- what the store holds -------------------------------------------------------------------
    def timeframes(self) -> dict[str, list[str]]:
        """{timeframe: symbols with bars of it}."""
        return store_catalog(self.path)

    def bars(self, symbol: str, timeframe: str = "1m", start: Any = None, end: Any = None):
        """One symbol's stored bars: open, high, low, close, volume, quote_volume, trades."""
        table = Store(self.path).read_bars(timeframe, symbol, start, end)
        frame = table.to_pandas()
        return frame.set_index(_times(table.column("ts").cast("int64").to_numpy())).drop(
            columns="ts"
        )

    def closes(
        self,
        symbols: Sequence[str],
        timeframe: str = "1m",
        start: Any = None,
        end: Any = None,
        config: ConfigLike = None,
    ) -> pd.DataFrame:
        """Closes of ``symbols`` aligned as pairs are (union of bar times from the first time
        all have traded, a missing bar's close carried forward at most ``analytics.max_carry``
        bars of ``config``; older, the time is left out), one column per symbol."""
        limit = max_carry_ms(_analytics(config).max_carry, timeframe)
        c = align_closes(load_bars(self.path, timeframe, list(symbols), start, end), limit)
        return pd.DataFrame(c.values, index=_times(c.ts), columns=list(c.symbols))

    def screen(
        self,
        timeframe: str = "5m",
        symbols: Sequence[str] | None = None,
        start: Any = None,
        end: Any = None,
        config: ConfigLike = None,
        **options: Any,
    ) -> pd.DataFrame:
        """Every pair of the symbols tested for cointegration (``pairstack screen``'s rows:
        y, x, stat, pvalue, qvalue, beta, half_life, corr, n; sorted by p-value), closes
        carried at most ``analytics.max_carry`` bars of ``config``. ``options``:
        ``engine.screen.screen_bars``' (min_bars, min_coverage, min_quote_volume, top, price,
        max_carry: overrides the config's)."""
        bars = load_bars(self.path, timeframe, symbols, start, end)
        options.setdefault("max_carry", _analytics(config).max_carry)
        return screen_bars(bars, timeframe, window=(start, end), **options).table.to_pandas()

    # -- backtests ------------------------------------------------------------------------------
    def backtest(
        self,
        pair: str,
        timeframe: str = "1m",
        start: Any = None,
        end: Any = None,
        config: ConfigLike = None,
        **overrides: Any,
    ) -> Backtest:
        """``pair`` ("Y/X") backtested over its stored bars, as ``pairstack backtest`` does."""
        params, strategy, max_carry = _settings(config, overrides)
        actor = BacktestActor(self.path, pair, timeframe, start, end, max_carry=max_carry)
        res = actor.result(params, strategy)
        eq = res.equity
        equity = pd.DataFrame({"equity": eq.equity, "position": eq.position}, index=_times(eq.ts))
        return Backtest(pd.Series(res.stats, name=pair), res.trades.to_pandas(), equity, res)

    def sweep(
        self,
        pair: str,
        grid: Mapping[str, Sequence[Any]] | Sequence[str],
        timeframe: str = "1m",
        start: Any = None,
        end: Any = None,
        config: ConfigLike = None,
        *,
        actors: int = 2,
        train_frac: float | None = None,
        **overrides: Any,
    ) -> pd.DataFrame:
        """Every set of ``grid`` ({key: [values]} or ``["entry=1.5,2", ...]`` as ``--sweep``)
        on Ray actors: one row per set, the swept keys, then the stats (``is_*``/``oos_*``
        with ``train_frac``), then ``error``."""
        from actors.backtest import sweep
        from actors.ray_init import init_ray

        if not isinstance(grid, Mapping):
            grid = parse_sweep(grid)
        params, strategy, max_carry = _settings(config, overrides)
        init_ray(None, log_to_driver=False)
        return sweep(
            self.path, pair, grid, actors, timeframe=timeframe, start=start, end=end,
            params=params, strategy=strategy, train_frac=train_frac, max_carry=max_carry,
        )  # fmt: skip

    # -- the History tab's chart ----------------------------------------------------------------
    def history(
        self,
        pair: str,
        timeframe: str = "1m",
        start: Any = None,
        end: Any = None,
        config: ConfigLike = None,
        **overrides: Any,
    ) -> PairHistory:
        """The arrays the History tab draws (``engine.history.pair_history``)."""
        params, strategy, max_carry = _settings(config, overrides)
        data = PairData.from_store(
            self.path, *parse_pair(pair), timeframe, start, end, max_carry=max_carry
        )
        return pair_history(data, params, make_strategy(strategy), Costs.from_config(strategy))

    def history_plot(
        self,
        pair: str,
        timeframe: str = "1m",
        start: Any = None,
        end: Any = None,
        config: ConfigLike = None,
        *,
        dynamic: bool = True,
        **overrides: Any,
    ):
        """The History tab's HoloViews Layout of ``pair`` (in Jupyter, after
        ``hv.extension("bokeh")``; ``dynamic=False`` downsamples once, for ``hv.save``)."""
        from ui.history_plot import history_layout

        h = self.history(pair, timeframe, start, end, config, **overrides)
        _, strategy, _ = _settings(config, overrides)
        return history_layout(
            h, entry=strategy.entry, exit=strategy.exit, stop=strategy.stop, dynamic=dynamic
        )


def _analytics(config: ConfigLike) -> AnalyticsConfig:
    """The ``analytics`` section of ``config`` (the defaults when None)."""
    if config is None:
        return AnalyticsConfig()
    return (config if isinstance(config, Config) else load_config(config)).analytics


def _settings(
    config: ConfigLike, overrides: Mapping[str, Any]
) -> tuple[PairParams, StrategyConfig, int | str]:
    """(PairParams, StrategyConfig, analytics.max_carry) of ``config`` (defaults when None)
    with ``overrides`` applied and checked (``engine.sweep.resolve_set``: ConfigError names a
    bad key)."""
    if config is None:
        analytics, strategy = AnalyticsConfig(), StrategyConfig()
    else:
        cfg = config if isinstance(config, Config) else load_config(config)
        analytics, strategy = cfg.analytics, cfg.strategy
    params, strategy = resolve_set(overrides, PairParams.from_config(analytics), strategy)
    return params, strategy, analytics.max_carry
