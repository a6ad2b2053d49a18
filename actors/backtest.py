"""BacktestActor and parameter sweeps: one pair's stored bars, many parameter sets.

A ``BacktestActor`` owns one pair's bars (read from the store once, or given as Arrow tables:
uploaded or imported data), aligned once, and runs many parameter sets over them. The class is
plain; ``SweepPool`` wraps it with ``ray.remote`` and fans chunks of the grid out over several
of them, with a bounded number of calls in flight (``ray.wait``); ``sweep`` is the one call.

A parameter set is a mapping of overrides on top of a base ``PairParams`` (the ``analytics``
section: price, hedge, delta, obs_var, init_var, ols_window, zscore, zscore_window) and a base
``StrategyConfig`` (name, entry, exit, stop, notional, capital, fee_bps, slippage_bps,
max_hold_half_lives). ``capital`` keeps its configured value when ``notional`` is swept.

Full-period stats are exactly those of ``engine.backtest.backtest`` on the same bars. Within an
actor the pair step (hedge, spread, z) is computed once per distinct ``PairParams`` and reused
by every strategy/cost variation; a sweep groups the sets by ``PairParams`` and gives each
actor contiguous groups (``assign_chunks``), so that each pair series is computed once.

Walk-forward (``train_frac``): the aligned bars are split by time, the first
``floor(train_frac * n)`` bars are the train part, the rest the test part. The pair step runs
once over all bars, so the hedge and z-score state enters the test part warmed up on the train
part (no look-ahead: every value at t uses bars up to t only). Each part is then traded on its
own: the strategy starts flat (nothing blocked) at the part's first bar, the simulation starts
with fresh ``capital`` and no position, and a position still open at the part's end is marked
at its last close. In-sample stats are therefore exactly ``backtest`` over the train bars;
out-of-sample stats (``oos_*``) are the test part's. Columns are prefixed ``is_`` and ``oos_``.

Funding: stored funding rows are mark-price updates (ts, mark_price, funding_rate,
next_funding_time); ``engine.funding.funding_events`` turns them into settlement events once per
leg when the data is loaded (the exchange's announced funding times; the 8-hour grid only for
rows without one, counted in the ``funding_assumed`` stat), exactly as ``backtest`` does.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import msgspec
import numpy as np

from engine.align import Aligned, align_bars
from engine.backtest import BacktestResult, pair_series, trade_series
from engine.config import StrategyConfig
from engine.errors import ConfigError, DataError, NumericalError
from engine.funding import FundingEvents, funding_events
from engine.pairbook import parse_pair
from engine.pairstep import PairParams, PairSeries
from engine.schemas import TIMEFRAME_MS, as_bar_records
from engine.store import Store, to_ms

log = logging.getLogger(__name__)

#: sweepable keys of the analytics section (PairParams fields) and of the strategy section
ANALYTICS_KEYS: tuple[str, ...] = tuple(f.name for f in fields(PairParams))
STRATEGY_KEYS: tuple[str, ...] = tuple(StrategyConfig.__struct_fields__)
#: parameter sets whose pair step an actor keeps (keyed by PairParams)
SERIES_CACHE = 2

_INT_KEYS = ("ols_window", "zscore_window")
_STR_KEYS = ("price", "hedge", "zscore", "name")
_OPTIONAL_KEYS = ("stop", "capital", "max_hold_half_lives")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PairData:
    """One pair's bars (BAR_DTYPE), aligned once, and its funding events per leg (or None)."""

    y: str
    x: str
    timeframe: str
    bars_y: np.ndarray
    bars_x: np.ndarray
    aligned: Aligned
    funding: tuple[FundingEvents | None, FundingEvents | None] | None = None

    @property
    def pair(self) -> str:
        """ "Y/X"."""
        return f"{self.y}/{self.x}"

    @property
    def n(self) -> int:
        """Number of aligned bars."""
        return int(self.aligned.ts.shape[0])

    @classmethod
    def from_tables(
        cls,
        bars_y: Any,
        bars_x: Any,
        *,
        pair: str = "Y/X",
        timeframe: str = "1m",
        funding: tuple[Any, Any] | None = None,
    ) -> PairData:
        """From two legs' bars (BAR_SCHEMA tables or BAR_DTYPE records); ``funding`` (rows_y,
        rows_x): each leg's stored funding rows or None, as ``engine.backtest.backtest`` takes
        them (turned into settlement events here, once)."""
        y, x = parse_pair(pair)
        if timeframe not in TIMEFRAME_MS:
            raise DataError(f"timeframe {timeframe!r}: expected one of {list(TIMEFRAME_MS)}")
        by, bx = as_bar_records(f"{y} bars", bars_y), as_bar_records(f"{x} bars", bars_x)
        for symbol, bars in ((y, by), (x, bx)):
            if bars.size == 0:
                raise DataError(f"no {timeframe} bars for {symbol}")
        aligned = align_bars(by, bx)
        if aligned.ts.shape[0] < 2:
            raise DataError(
                f"{pair}: {aligned.ts.shape[0]} aligned {timeframe} bar(s); a backtest needs 2"
            )
        events = None
        if funding is not None:
            events = tuple(None if rows is None else funding_events(rows) for rows in funding)
        return cls(y, x, timeframe, by, bx, aligned, events)

    @classmethod
    def from_store(
        cls,
        path: str | os.PathLike,
        pair: str,
        timeframe: str,
        start: Any = None,
        end: Any = None,
        *,
        funding: bool = True,
    ) -> PairData:
        """Read both legs' bars with start <= ts < end (and their funding) from the store."""
        y, x = parse_pair(pair)
        if timeframe not in TIMEFRAME_MS:
            raise DataError(f"timeframe {timeframe!r}: expected one of {list(TIMEFRAME_MS)}")
        start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise DataError(f"empty range: end {end!r} is not after start {start!r}")
        store = Store(path)
        stored = store.symbols(timeframe)
        legs = []
        for symbol in (y, x):
            if symbol not in stored:
                raise DataError(
                    f"unknown symbol {symbol!r}: no {timeframe} bars stored in {path} "
                    f"(symbols with {timeframe} bars: {stored})"
                )
            bars = store.read_bars(timeframe, symbol, start_ms, end_ms)
            if bars.num_rows == 0:
                raise DataError(
                    f"no {timeframe} bars of {symbol} in the range start={start!r} end={end!r}"
                )
            legs.append(bars)
        rows = None
        if funding and set(store.symbols("funding")) & {y, x}:
            rows = tuple(store.read_funding(s, start_ms, end_ms) for s in (y, x))
        return cls.from_tables(legs[0], legs[1], pair=pair, timeframe=timeframe, funding=rows)


# ----------------------------------------------------------------------------- parameter sets


def warmup_bars(params: PairParams) -> int:
    """Bars until the first finite z-score (its bar included)."""
    warm = params.zscore_window if params.zscore == "rolling" else 1
    if params.hedge != "kalman":
        warm += params.ols_window - 1
    return warm


def split_index(n: int, train_frac: float | None) -> int | None:
    """First bar of the test part: floor(train_frac * n); None without a split."""
    if train_frac is None:
        return None
    if not (isinstance(train_frac, (int, float)) and 0.0 < train_frac < 1.0):
        raise ConfigError(
            f"train_frac: expected a fraction strictly between 0 and 1, got {train_frac!r}"
        )
    return math.floor(train_frac * n)


def check_bars(n: int, params: PairParams, train_frac: float | None = None) -> None:
    """NumericalError unless ``n`` aligned bars give the z-score time to warm up and trade."""
    need = warmup_bars(params) + 1
    k = split_index(n, train_frac)
    have, where = (n, "") if k is None else (k, f" in the train part (train_frac {train_frac})")
    if have < need:
        raise NumericalError(
            f"too few bars: {have} aligned bars{where}, but hedge {params.hedge!r} with "
            f"zscore_window {params.zscore_window}"
            + (f" and ols_window {params.ols_window}" if params.hedge != "kalman" else "")
            + f" needs at least {need} (the z-score warms up on {need - 1}); widen the range "
            "or shorten the windows"
        )
    if k is not None and n - k < 2:
        raise NumericalError(
            f"too few bars: the test part has {n - k} bar(s) of {n} (train_frac {train_frac}); "
            "it needs at least 2"
        )


def resolve_set(
    overrides: Mapping[str, Any], params: PairParams, strategy: StrategyConfig
) -> tuple[PairParams, StrategyConfig]:
    """The base params and strategy with ``overrides`` applied and validated (ConfigError)."""
    unknown = [k for k in overrides if k not in ANALYTICS_KEYS and k not in STRATEGY_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown}: expected analytics keys {list(ANALYTICS_KEYS)} "
            f"or strategy keys {list(STRATEGY_KEYS)}"
        )
    a_over = {k: v for k, v in overrides.items() if k in ANALYTICS_KEYS}
    s_over = {k: v for k, v in overrides.items() if k in STRATEGY_KEYS}
    label = ", ".join(f"{k}={v}" for k, v in overrides.items())
    try:
        new_params = replace(params, **a_over) if a_over else params
    except ConfigError as exc:
        raise ConfigError(f"parameter set ({label}): {exc}") from None
    if not s_over:
        return new_params, strategy
    try:
        new_strategy = msgspec.convert({**msgspec.to_builtins(strategy), **s_over}, StrategyConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"parameter set ({label}): strategy.{exc}") from None
    from strategies import make_strategy  # strategies import engine; checked here, not at run

    try:
        make_strategy(new_strategy)
    except ConfigError as exc:
        raise ConfigError(f"parameter set ({label}): {exc}") from None
    return new_params, new_strategy


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of ``grid`` (key -> values) as a list of override dicts.

    Analytics keys vary slowest (so consecutive sets share a pair step), then strategy keys,
    each group in the grid's key order.
    """
    keys = [k for k in grid if k in ANALYTICS_KEYS] + [k for k in grid if k not in ANALYTICS_KEYS]
    for key in keys:
        values = grid[key]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"sweep {key}: expected a non-empty list of values, got {values!r}")
    combos = itertools.product(*(grid[k] for k in keys))
    return [dict(zip(keys, combo, strict=True)) for combo in combos]


def _parse_value(key: str, text: str) -> Any:
    text = text.strip()
    if key in _OPTIONAL_KEYS and text.lower() in ("none", "null"):
        return None
    if key in _STR_KEYS:
        if not text:
            raise ValueError("empty value")
        return text
    if key in _INT_KEYS:
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_sweep(specs: Iterable[str]) -> dict[str, list[Any]]:
    """``["entry=1.5,2", "zscore_window=30,60"]`` -> ``{"entry": [1.5, 2.0], ...}``.

    Windows are integers, price/hedge/zscore/name strings, stop/capital/max_hold_half_lives
    numbers or ``none``, everything else numbers. ConfigError names the bad spec.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--sweep {spec!r}: expected KEY=V1,V2,... (e.g. entry=1.5,2,2.5)")
        if key not in ANALYTICS_KEYS and key not in STRATEGY_KEYS:
            raise ConfigError(
                f"--sweep {spec!r}: unknown key {key!r}; expected one of "
                f"{sorted(ANALYTICS_KEYS + STRATEGY_KEYS)}"
            )
        if key in grid:
            raise ConfigError(f"--sweep {spec!r}: {key} is swept twice; list its values once")
        try:
            parsed = [_parse_value(key, v) for v in values.split(",")]
        except ValueError as exc:
            kind = "integers" if key in _INT_KEYS else "values" if key in _STR_KEYS else "numbers"
            raise ConfigError(
                f"--sweep {spec!r}: {key} takes comma-separated {kind} ({exc})"
            ) from None
        if len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError(f"--sweep {spec!r}: a value is listed twice")
        grid[key] = parsed
    if not grid:
        raise ConfigError("--sweep: no parameters given")
    return grid


# ----------------------------------------------------------------------------- the actor


class BacktestActor:
    """One pair's bars, loaded and aligned once; runs many parameter sets over them.

    ``source`` is a store directory (then ``pair``, ``timeframe``, ``start``, ``end`` select the
    bars) or a ready ``PairData`` (uploaded/imported tables: ``PairData.from_tables``).
    """

    def __init__(
        self,
        source: str | os.PathLike | PairData,
        pair: str | None = None,
        timeframe: str | None = None,
        start: Any = None,
        end: Any = None,
    ):
        if isinstance(source, PairData):
            self.data = source
        else:
            if pair is None or timeframe is None:
                raise ConfigError("BacktestActor on a store needs pair and timeframe")
            self.data = PairData.from_store(source, pair, timeframe, start, end)
        self._series: OrderedDict[PairParams, PairSeries] = OrderedDict()

    def info(self) -> dict[str, Any]:
        """Pair, timeframe, number of aligned bars, first and last bar time (ms)."""
        ts = self.data.aligned.ts
        return {
            "pair": self.data.pair,
            "timeframe": self.data.timeframe,
            "bars": self.data.n,
            "first_ts": int(ts[0]),
            "last_ts": int(ts[-1]),
        }

    def series(self, params: PairParams) -> PairSeries:
        """The pair step over all aligned bars (cached for the last few PairParams)."""
        if params in self._series:
            self._series.move_to_end(params)
            return self._series[params]
        out = pair_series(self.data.aligned, params)
        self._series[params] = out
        if len(self._series) > SERIES_CACHE:
            self._series.popitem(last=False)
        return out

    def result(self, params: PairParams, strategy_config: StrategyConfig) -> BacktestResult:
        """The full backtest of one parameter set (equals ``engine.backtest.backtest``)."""
        check_bars(self.data.n, params)
        return self._trade(params, strategy_config)

    def _trade(
        self,
        params: PairParams,
        strategy_config: StrategyConfig,
        lo: int = 0,
        hi: int | None = None,
    ) -> BacktestResult:
        """Trade bars [lo, hi) on the cached pair step (``engine.backtest.trade_series``)."""
        d = self.data
        return trade_series(
            d.aligned,
            self.series(params),
            params.price,
            strategy_config,
            funding=d.funding,
            timeframe=d.timeframe,
            lo=lo,
            hi=hi,
        )

    def stats(
        self,
        params: PairParams,
        strategy_config: StrategyConfig,
        train_frac: float | None = None,
    ) -> dict[str, Any]:
        """Stats of one set: full period, or ``is_*``/``oos_*`` with a walk-forward split."""
        n = self.data.n
        check_bars(n, params, train_frac)
        k = split_index(n, train_frac)
        if k is None:
            return self._trade(params, strategy_config).stats
        out: dict[str, Any] = {}
        for prefix, lo, hi in (("is_", 0, k), ("oos_", k, n)):
            part = self._trade(params, strategy_config, lo, hi)
            out.update({prefix + key: value for key, value in part.stats.items()})
        return out

    def run(
        self,
        sets: Sequence[tuple[PairParams, StrategyConfig]],
        train_frac: float | None = None,
    ) -> list[dict[str, Any]]:
        """Stats of many resolved parameter sets, in order."""
        return [self.stats(p, s, train_frac) for p, s in sets]

    def warm(self, params: PairParams, strategy_config: StrategyConfig) -> dict[str, Any]:
        """Run one set (result dropped; its pair step stays cached) so that the kernels are
        loaded; returns ``info()``. A sweep calls it while starting, outside its per-set time."""
        self.stats(params, strategy_config)
        return self.info()


# ----------------------------------------------------------------------------- the sweep

#: upper bound on the default chunk (sets per actor call)
MAX_CHUNK = 32
#: default chunks per actor: enough for the last ones to even out the actors' finishing times
CHUNKS_PER_ACTOR = 8


def plan_sweep(
    data: PairData,
    grid: Mapping[str, Sequence[Any]],
    params: PairParams | None = None,
    strategy: StrategyConfig | None = None,
    train_frac: float | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[PairParams, StrategyConfig]]]:
    """The grid's override dicts and their resolved, checked sets (ConfigError,
    NumericalError), before any actor starts."""
    overrides = expand_grid(grid)
    base_params, base_strategy = params or PairParams(), strategy or StrategyConfig()
    sets = [resolve_set(o, base_params, base_strategy) for o in overrides]
    for p in dict.fromkeys(p for p, _ in sets):
        check_bars(data.n, p, train_frac)
    return overrides, sets


def assign_chunks(
    sets: Sequence[tuple[PairParams, StrategyConfig]], n_actors: int, chunk_size: int | None = None
) -> list[list[list[int]]]:
    """Each actor's queue of chunks (lists of set indices).

    Sets are grouped by ``PairParams`` (first appearance order), the grouped order is cut into
    ``n_actors`` contiguous shares of near-equal size and each share into chunks, so an actor
    meets the sets of one pair step consecutively and computes that pair series once (twice at
    most where shares meet a group). ``chunk_size`` defaults to a share / ``CHUNKS_PER_ACTOR``
    (at most ``MAX_CHUNK``).
    """
    groups: dict[PairParams, list[int]] = {}
    for j, (p, _) in enumerate(sets):
        groups.setdefault(p, []).append(j)
    order = [j for members in groups.values() for j in members]
    n = len(order)
    size = chunk_size or max(1, min(MAX_CHUNK, math.ceil(n / (CHUNKS_PER_ACTOR * n_actors))))
    bounds = [round(i * n / n_actors) for i in range(n_actors + 1)]
    queues = []
    for lo, hi in itertools.pairwise(bounds):
        queues.append([order[k : min(k + size, hi)] for k in range(lo, hi, size)])
    return queues


def _check_actors(n_actors: Any) -> None:
    if isinstance(n_actors, bool) or not isinstance(n_actors, int) or n_actors < 1:
        raise ConfigError(f"actors: expected a positive integer, got {n_actors!r}")


class SweepPool:
    """``n_actors`` BacktestActors on one ``PairData`` (Ray must be initialised).

    ``start()`` (or ``with``) is the one-off cost: the data is ``ray.put`` once, the uniquely
    named actors (``pairstack-backtest-<run>-<i>``) start, fetch it and load their kernels;
    ``run_sets`` then fans chunks out; ``close()`` kills the actors.
    """

    def __init__(self, data: PairData, n_actors: int = 2):
        _check_actors(n_actors)
        self.data = data
        self.n_actors = n_actors
        self.actors: list[Any] = []

    def start(self, warm: tuple[PairParams, StrategyConfig] | None = None) -> SweepPool:
        """Start the actors and wait until each holds the data and has run ``warm`` (a set, by
        default the base one) over a few bars, so that kernels are loaded before timing."""
        import ray

        data_ref = ray.put(self.data)
        run_id = uuid.uuid4().hex[:8]
        remote = ray.remote(BacktestActor)
        self.actors = [
            remote.options(name=f"pairstack-backtest-{run_id}-{i}").remote(data_ref)
            for i in range(self.n_actors)
        ]
        p, s = warm or (PairParams(), StrategyConfig())
        try:
            ray.get([actor.warm.remote(p, s) for actor in self.actors])
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill the actors."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def __enter__(self) -> SweepPool:
        return self if self.actors else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_sets(
        self,
        sets: Sequence[tuple[PairParams, StrategyConfig]],
        train_frac: float | None = None,
        *,
        chunk_size: int | None = None,
        max_in_flight: int = 2,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """Stats of every set, in order. Each actor works through its own queue
        (``assign_chunks``) with at most ``max_in_flight`` calls pending; an actor whose queue
        is empty takes the last chunk of the longest other queue."""
        import ray
        from tqdm import tqdm

        if not self.actors:
            raise ConfigError("SweepPool.run_sets: start() the pool first")
        queues = assign_chunks(sets, len(self.actors), chunk_size)
        results: list[dict[str, Any] | None] = [None] * len(sets)
        pending: dict[Any, tuple[int, list[int]]] = {}
        load = [0] * len(self.actors)
        with tqdm(total=len(sets), unit="set", disable=not progress, desc=self.data.pair) as bar:
            while pending or any(queues):
                for i, actor in enumerate(self.actors):
                    while load[i] < max_in_flight and any(queues):
                        own = queues[i]
                        chunk = own.pop(0) if own else max(queues, key=len).pop()
                        pending[actor.run.remote([sets[j] for j in chunk], train_frac)] = (i, chunk)
                        load[i] += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                i, chunk = pending.pop(done[0])
                load[i] -= 1
                for j, row in zip(chunk, ray.get(done[0]), strict=True):
                    results[j] = row
                bar.update(len(chunk))
        return results


def sweep(
    source: str | os.PathLike | PairData,
    pair: str | None,
    grid: Mapping[str, Sequence[Any]],
    n_actors: int = 2,
    *,
    timeframe: str | None = None,
    start: Any = None,
    end: Any = None,
    params: PairParams | None = None,
    strategy: StrategyConfig | None = None,
    train_frac: float | None = None,
    chunk_size: int | None = None,
    max_in_flight: int = 2,
    progress: bool = False,
) -> Any:
    """Run the cartesian product of ``grid`` over ``n_actors`` BacktestActors (Ray must be
    initialised); returns a pandas DataFrame, one row per set: the swept keys, then the stats.

    ``source`` is a store directory (with ``pair``, ``timeframe``, ``start``, ``end``) or a
    ``PairData``. The bars are read and the sets checked here once, before any actor starts;
    the data goes to Ray's object store once and is shared by the actors (``SweepPool``).
    """
    import pandas as pd

    _check_actors(n_actors)
    if isinstance(source, PairData):
        data = source
    else:
        if pair is None or timeframe is None:
            raise ConfigError("sweep over a store needs pair and timeframe")
        data = PairData.from_store(source, pair, timeframe, start, end)
    overrides, sets = plan_sweep(data, grid, params, strategy, train_frac)
    with SweepPool(data, min(n_actors, len(sets))).start(sets[0]) as pool:
        results = pool.run_sets(
            sets,
            train_frac,
            chunk_size=chunk_size,
            max_in_flight=max_in_flight,
            progress=progress,
        )
    return pd.DataFrame([{**o, **r} for o, r in zip(overrides, results, strict=True)])


def run_backtest(data: PairData, params: PairParams, strategy: StrategyConfig) -> BacktestResult:
    """One backtest of ``data`` in-process: the steps of ``engine.backtest.backtest`` on its
    aligned bars and funding events."""
    check_bars(data.n, params)
    return trade_series(
        data.aligned,
        pair_series(data.aligned, params),
        params.price,
        strategy,
        funding=data.funding,
        timeframe=data.timeframe,
    )
