"""BacktestActor and the sweep's fan-out over Ray: one pair's data, many parameter sets.

A ``BacktestActor`` owns one pair's ``PairData`` (read from the store once, or given: uploaded
or imported tables) and runs many resolved parameter sets over it, each through the one
backtest entry ``engine.backtest.run``. The class is plain; ``SweepPool`` wraps it with
``ray.remote`` and fans chunks of the grid (``engine.sweep.assign_chunks``) out over several of
them, with a bounded number of calls in flight (``ray.wait``); ``sweep`` is the one call. The
grammar, the grid and the checks of a sweep live in ``engine.sweep``, the data in
``engine.backtest_data``.

Within an actor the pair step (hedge, spread, z) is computed once per distinct ``PairParams``
and passed to ``run`` for every strategy/cost variation on it; a sweep groups the sets by
``PairParams`` and gives each actor contiguous groups, so that each pair series is computed
once. Full-period stats are exactly those of ``run`` on the same data.

Rolling walk-forward (``walk_forward``): windows of ``train_bars`` to choose the best set and
the next ``test_bars`` to trade it, stepping by ``test_bars`` (``engine.sweep.walk_windows``).

Train/test split (``train_frac``, one split): the aligned bars are split by time
(``engine.backtest_data.split_index``), the first ``floor(train_frac * n)`` bars are the train
part, the rest the test part. The pair step runs once over all bars, so the hedge and z-score
state enters the test part warmed up on the train part (no look-ahead: every value at t uses
bars up to t only). Each part is then traded on its own (``run`` with ``lo``/``hi``): the
strategy starts flat (nothing blocked) at the part's first bar, the simulation starts with
fresh ``capital`` and no position, and a position still open at the part's end is marked at its
last close. In-sample stats are therefore exactly ``run`` over the train bars; out-of-sample
stats (``oos_*``) are the test part's. Columns are prefixed ``is_`` and ``oos_``.

The dashboard's backtest (``backtest_bars``: the bars on screen, the legs' stored funding) runs
as a Ray task submitted by the UI bridge, never in a browser session.
"""

from __future__ import annotations

import math
import os
import sys
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.backtest import BacktestResult, Costs, run
from engine.backtest_data import PairData, check_bars, split_index, stored_funding
from engine.config import StrategyConfig
from engine.errors import ConfigError
from engine.pairbook import parse_pair
from engine.pairstep import PairParams, PairSeries, run_pair
from engine.schemas import timeframe_ms
from engine.sweep import ParamSet, assign_chunks, plan_sweep
from strategies import Strategy, make_strategy

#: parameter sets whose pair step an actor keeps (keyed by PairParams)
SERIES_CACHE = 2


# ----------------------------------------------------------------------------- the actor


class BacktestActor:
    """One pair's bars, loaded and aligned once; runs many parameter sets over them.

    ``source`` is a store directory (then ``pair``, ``timeframe``, ``start``, ``end`` select the
    bars and ``max_carry``, ``analytics.max_carry``, limits the carry of a leg's last close) or
    a ready ``PairData`` (uploaded/imported tables: ``PairData.from_tables``, aligned already).
    """

    def __init__(
        self,
        source: str | os.PathLike | PairData,
        pair: str | None = None,
        timeframe: str | None = None,
        start: Any = None,
        end: Any = None,
        *,
        max_carry: int | str = "auto",
    ):
        if isinstance(source, PairData):
            self.data = source
        else:
            if pair is None or timeframe is None:
                raise ConfigError("BacktestActor on a store needs pair and timeframe")
            self.data = PairData.from_store(
                source, *parse_pair(pair), timeframe, start, end, max_carry=max_carry
            )
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
        a = self.data.aligned
        out = run_pair(a.close_y, a.close_x, params)
        self._series[params] = out
        if len(self._series) > SERIES_CACHE:
            self._series.popitem(last=False)
        return out

    def result(self, params: PairParams, strategy_config: StrategyConfig) -> BacktestResult:
        """The full backtest of one parameter set (``engine.backtest.run`` on the data)."""
        return self._trade(params, strategy_config)

    def _trade(
        self,
        params: PairParams,
        strategy_config: StrategyConfig,
        lo: int = 0,
        hi: int | None = None,
    ) -> BacktestResult:
        """Trade bars [lo, hi) on the cached pair step: ``engine.backtest.run``."""
        strategy: Strategy = make_strategy(strategy_config)
        return run(
            self.data,
            params,
            strategy,
            Costs.from_config(strategy_config),
            series=self.series(params),
            lo=lo,
            hi=hi,
        )

    def stats(
        self,
        params: PairParams,
        strategy_config: StrategyConfig,
        train_frac: float | None = None,
    ) -> dict[str, Any]:
        """Stats of one set: full period, or ``is_*``/``oos_*`` with a train/test split."""
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

    def part_stats(
        self, params: PairParams, strategy_config: StrategyConfig, parts: Sequence[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """Stats of one set traded on each part [lo, hi) of the aligned bars on its own
        (fresh strategy, capital and no position; the pair step over all bars)."""
        return [self._trade(params, strategy_config, lo, hi).stats for lo, hi in parts]

    def run(
        self,
        sets: Sequence[ParamSet],
        train_frac: float | None = None,
        parts: Sequence[tuple[int, int]] | None = None,
    ) -> list[Any]:
        """Stats of many resolved parameter sets, in order (with ``parts``: a list of stats
        per set, one per part)."""
        if parts is not None:
            return [self.part_stats(p, s, parts) for p, s in sets]
        return [self.stats(p, s, train_frac) for p, s in sets]

    def warm(self, params: PairParams, strategy_config: StrategyConfig) -> dict[str, Any]:
        """Run one set (result dropped; its pair step stays cached) so that the kernels are
        loaded; returns ``info()``. A sweep calls it while starting, outside its per-set time."""
        self.stats(params, strategy_config)
        return self.info()


# ----------------------------------------------------------------------------- the sweep


def backtest_bars(
    bars_y: np.ndarray,
    bars_x: np.ndarray,
    params: PairParams,
    strategy_config: StrategyConfig,
    timeframe: str,
    *,
    legs: tuple[str, str] = ("Y", "X"),
    store: str | os.PathLike | None = None,
    max_carry: int | str = "auto",
) -> BacktestResult:
    """The backtest of two legs' bars (BAR_DTYPE) with the given settings, as the CLI runs it
    (``BacktestActor.result``, i.e. ``engine.backtest.run``): ``legs`` (y, x) are the symbols,
    and each leg's funding stored in ``store`` over the bars' range (first bar's open to last
    bar's end) is charged (none without a store); ``max_carry``: ``analytics.max_carry`` (bars
    a leg's last close may be carried). The dashboard runs it as a Ray task."""
    y, x = legs
    funding = None
    if store is not None and bars_y.size and bars_x.size:
        start = int(min(bars_y["ts"][0], bars_x["ts"][0]))
        end = int(max(bars_y["ts"][-1], bars_x["ts"][-1])) + timeframe_ms(timeframe)
        funding = stored_funding(store, y, x, start, end)
    data = PairData.from_tables(
        bars_y, bars_x, y=y, x=x, timeframe=timeframe, funding=funding, max_carry=max_carry
    )
    return BacktestActor(data).result(params, strategy_config)


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

    def start(self, warm: ParamSet | None = None) -> SweepPool:
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
        sets: Sequence[ParamSet],
        train_frac: float | None = None,
        *,
        chunk_size: int | None = None,
        max_in_flight: int = 2,
        progress: bool = False,
        parts: Sequence[tuple[int, int]] | None = None,
    ) -> list[Any]:
        """Stats of every set, in order (``parts``: per set, the stats of each part). Each
        actor works through its own queue (``assign_chunks``) with at most ``max_in_flight``
        calls pending; an actor whose queue is empty takes the last chunk of the longest
        other queue."""
        import ray
        from tqdm import tqdm

        if not self.actors:
            raise ConfigError("SweepPool.run_sets: start() the pool first")
        queues = assign_chunks(sets, len(self.actors), chunk_size)
        results: list[dict[str, Any] | None] = [None] * len(sets)
        pending: dict[Any, tuple[int, list[int]]] = {}
        load = [0] * len(self.actors)
        quiet = not progress or not sys.stderr.isatty()  # no bar (nor \r) in a log file
        with tqdm(
            total=len(sets), unit="set", file=sys.stderr, disable=quiet, desc=self.data.pair
        ) as bar:
            while pending or any(queues):
                for i, actor in enumerate(self.actors):
                    while load[i] < max_in_flight and any(queues):
                        own = queues[i]
                        chunk = own.pop(0) if own else max(queues, key=len).pop()
                        call = actor.run.remote([sets[j] for j in chunk], train_frac, parts)
                        pending[call] = (i, chunk)
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
    max_carry: int | str = "auto",
) -> Any:
    """Run the cartesian product of ``grid`` over ``n_actors`` BacktestActors (Ray must be
    initialised); returns a pandas DataFrame, one row per set: the swept keys, then the stats,
    then ``error``: None, or why the set is invalid (its stats are then missing). When every
    set is invalid, the first one's error is raised instead.

    ``source`` is a store directory (with ``pair``, ``timeframe``, ``start``, ``end`` and
    ``max_carry``, ``analytics.max_carry``) or a ``PairData`` (aligned already). The bars are
    read and the sets checked (``engine.sweep.plan_sweep``, strategies built once by
    ``make_strategy``) here once, before any actor starts; the data goes to Ray's object store
    once and is shared by the actors (``SweepPool``).
    """
    import pandas as pd

    _check_actors(n_actors)
    if isinstance(source, PairData):
        data = source
    else:
        if pair is None or timeframe is None:
            raise ConfigError("sweep over a store needs pair and timeframe")
        data = PairData.from_store(
            source, *parse_pair(pair), timeframe, start, end, max_carry=max_carry
        )
    overrides, sets, errors = plan_sweep(
        data, grid, params, strategy, train_frac, build_strategy=make_strategy
    )
    valid = [ps for ps in sets if ps is not None]
    if not valid:
        raise next(e for e in errors if e is not None)
    with SweepPool(data, min(n_actors, len(valid))).start(valid[0]) as pool:
        results = iter(
            pool.run_sets(
                valid,
                train_frac,
                chunk_size=chunk_size,
                max_in_flight=max_in_flight,
                progress=progress,
            )
        )
    rows = [
        {**o, **next(results), "error": None} if e is None else {**o, "error": str(e)}
        for o, e in zip(overrides, errors, strict=True)
    ]
    return pd.DataFrame(rows)


def walk_forward(
    data: PairData,
    grid: Mapping[str, Sequence[Any]],
    train_bars: int,
    test_bars: int,
    n_actors: int = 2,
    *,
    params: PairParams | None = None,
    strategy: StrategyConfig | None = None,
    key: str = "sharpe",
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Rolling walk-forward over ``data`` (Ray must be initialised): in each window
    (``engine.sweep.walk_windows``) every set of ``grid`` is traded on the train bars, the set
    with the best ``key`` there (not ruined, finite; ``engine.sweep.best_set``) is traded on
    the following test bars. Every part is traded on its own: fresh strategy and capital, no
    position, the pair step over all bars (no look-ahead).

    Returns (one row per window: train/test bar times, the chosen set's keys, its train
    ``key``, its test stats prefixed ``oos_``; a window where no set qualifies has no choice
    and no test stats), and a summary: windows, windows traded, the test parts' compounded
    return (prod(1 + oos total_return) - 1: each part starts from fresh capital, gains
    reinvested) and whether any test part was ruined.
    """
    import pandas as pd

    from engine.backtest_stats import iso_ms
    from engine.sweep import best_set, walk_windows

    _check_actors(n_actors)
    windows = walk_windows(data.n, train_bars, test_bars)
    overrides, sets, errors = plan_sweep(
        data, grid, params, strategy, first_bars=train_bars, build_strategy=make_strategy
    )
    valid = [j for j, ps in enumerate(sets) if ps is not None]
    if not valid:
        raise next(e for e in errors if e is not None)
    trains = [(lo, mid) for lo, mid, _ in windows]
    tests = [(mid, hi) for _, mid, hi in windows]
    with SweepPool(data, min(n_actors, len(valid))).start(sets[valid[0]]) as pool:
        results = pool.run_sets([sets[j] for j in valid], parts=trains + tests, progress=progress)
    if key not in results[0][0]:
        raise ConfigError(
            f"walk-forward key {key!r}: expected a stat, one of {list(results[0][0])}"
        )
    ts = data.aligned.ts
    rows, growth, ruined = [], 1.0, False
    for w, (lo, mid, hi) in enumerate(windows):
        pick = best_set([r[w] for r in results], key)
        row: dict[str, Any] = {
            "window": w,
            "train_first": iso_ms(ts[lo]),
            "test_first": iso_ms(ts[mid]),
            "test_last": iso_ms(ts[hi - 1]),
        }
        if pick is not None:
            oos = results[pick][len(windows) + w]
            row.update(overrides[valid[pick]])
            row["is_" + key] = results[pick][w][key]
            row.update({"oos_" + k: v for k, v in oos.items()})
            growth *= 1.0 + oos["total_return"]
            ruined = ruined or bool(oos["ruined"])
        rows.append(row)
    traded = sum("oos_total_return" in r for r in rows)
    summary = {
        "windows": len(windows),
        "windows_traded": traded,
        "oos_compounded_return": growth - 1.0 if traded else math.nan,
        "oos_ruined": ruined,
    }
    return pd.DataFrame(rows), summary
