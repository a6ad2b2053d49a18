"""Parameter sweeps without Ray: the ``--sweep KEY=V1,V2`` grammar, the grid, the checked
parameter sets and how they are cut into chunks for the actors (``actors.backtest`` runs them).

A parameter set is a mapping of overrides on top of a base ``PairParams`` (the ``analytics``
section: price, hedge, delta, obs_var, init_var, ols_window, zscore, zscore_window) and a base
``StrategyConfig`` (name, entry, exit, stop, notional, capital, fee_bps, slippage_bps,
max_hold_half_lives, ...), and ``params.KEY`` keys: one of the strategy's own parameters
(``strategy.params.KEY``, e.g. ``params.cooldown_bars`` of a plug-in strategy). ``capital`` keeps
its configured value when ``notional`` is swept. Overrides are checked by the config types
themselves (``PairParams``, ``StrategyConfig``); the strategy ``name`` and its ``params`` are
checked where strategies are built (``actors.backtest``: engine/ does not import strategies/).

Train/test split (``train_frac``): ``engine.backtest_data.split_index`` splits the aligned bars
once, by time. Rolling walk-forward: ``parse_walk_forward`` (``TRAIN:TEST`` bars),
``walk_windows`` (the windows) and ``best_set`` (the choice in a train part); see
``actors.backtest`` for how each part is traded.

An invalid point of a grid (a threshold out of order, a window too long for the bars) does not
stop the sweep: ``plan_sweep`` gives its error in place of its set, and the sweep reports it in
that row's ``error`` column.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import msgspec

from engine.backtest_data import PairData, check_bars, split_index
from engine.config import StrategyConfig, parse_section
from engine.errors import ConfigError, NumericalError, PairstackError
from engine.pairstep import PairParams

#: sweepable keys of the analytics section (PairParams fields) and of the strategy section
ANALYTICS_KEYS: tuple[str, ...] = tuple(f.name for f in fields(PairParams))
STRATEGY_KEYS: tuple[str, ...] = tuple(k for k in StrategyConfig.__struct_fields__ if k != "params")
#: ``params.KEY``: the key KEY of ``strategy.params`` (the strategy's own parameters)
PARAMS_KEY = re.compile(r"params\.(?P<key>[A-Za-z_]\w*)")
#: upper bound on the default chunk (sets per actor call)
MAX_CHUNK = 32
#: default chunks per actor: enough for the last ones to even out the actors' finishing times
CHUNKS_PER_ACTOR = 8

_INT_KEYS = ("ols_window", "zscore_window")
_STR_KEYS = ("price", "hedge", "zscore", "name", "sizing")
_OPTIONAL_KEYS = ("stop", "capital", "max_hold_half_lives", "vol_target", "max_gross")

#: a resolved parameter set
ParamSet = tuple[PairParams, StrategyConfig]


def _known(key: str) -> bool:
    return key in ANALYTICS_KEYS or key in STRATEGY_KEYS or PARAMS_KEY.fullmatch(key) is not None


def set_label(overrides: Mapping[str, Any]) -> str:
    """``"entry=1.5, exit=0"``: how error messages name a parameter set."""
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def resolve_set(
    overrides: Mapping[str, Any], params: PairParams, strategy: StrategyConfig
) -> ParamSet:
    """The base params and strategy with ``overrides`` applied and validated (ConfigError)."""
    unknown = [k for k in overrides if not _known(k)]
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown}: expected analytics keys {list(ANALYTICS_KEYS)}, "
            f"strategy keys {list(STRATEGY_KEYS)} or params.KEY (a key of strategy.params)"
        )
    a_over = {k: v for k, v in overrides.items() if k in ANALYTICS_KEYS}
    s_over = {k: v for k, v in overrides.items() if k in STRATEGY_KEYS}
    p_over = {
        m["key"]: v for k, v in overrides.items() if (m := PARAMS_KEY.fullmatch(k)) is not None
    }
    if p_over:
        s_over["params"] = {**strategy.params, **p_over}
    label = set_label(overrides)
    try:
        new_params = replace(params, **a_over) if a_over else params
    except ConfigError as exc:
        raise ConfigError(f"parameter set ({label}): {exc}") from None
    if not s_over:
        return new_params, strategy
    merged = {**msgspec.to_builtins(strategy), **s_over}
    return new_params, parse_section(merged, StrategyConfig, f"parameter set ({label})", "strategy")


def _check_strategy(
    build: Callable[[StrategyConfig], object], overrides: Mapping[str, Any], s: StrategyConfig
) -> None:
    try:
        build(s)
    except ConfigError as exc:
        raise ConfigError(f"parameter set ({set_label(overrides)}): {exc}") from None


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


def _parse_param(text: str) -> Any:
    """A ``params.KEY`` value as YAML would read it: integer, number, true/false, none/null,
    else the text (the strategy's ``params_type`` checks it)."""
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        return value
    if not text:
        raise ValueError("empty value")
    return text


def _parse_value(key: str, text: str) -> Any:
    text = text.strip()
    if PARAMS_KEY.fullmatch(key):
        return _parse_param(text)
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
    numbers or ``none``, ``params.KEY`` values integers, numbers, true/false, none or text
    (checked by the strategy), everything else numbers. ConfigError names the bad spec.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--sweep {spec!r}: expected KEY=V1,V2,... (e.g. entry=1.5,2,2.5)")
        if not _known(key):
            raise ConfigError(
                f"--sweep {spec!r}: unknown key {key!r}; expected one of "
                f"{sorted(ANALYTICS_KEYS + STRATEGY_KEYS)} or params.KEY (a key of the "
                "strategy's own params)"
            )
        if key in grid:
            raise ConfigError(f"--sweep {spec!r}: {key} is swept twice; list its values once")
        try:
            parsed = [_parse_value(key, v) for v in values.split(",")]
        except ValueError as exc:
            text_keys = key in _STR_KEYS or PARAMS_KEY.fullmatch(key) is not None
            kind = "integers" if key in _INT_KEYS else "values" if text_keys else "numbers"
            raise ConfigError(
                f"--sweep {spec!r}: {key} takes comma-separated {kind} ({exc})"
            ) from None
        if len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError(f"--sweep {spec!r}: a value is listed twice")
        grid[key] = parsed
    if not grid:
        raise ConfigError("--sweep: no parameters given")
    return grid


def plan_sweep(
    data: PairData,
    grid: Mapping[str, Sequence[Any]],
    params: PairParams | None = None,
    strategy: StrategyConfig | None = None,
    train_frac: float | None = None,
    first_bars: int | None = None,
    build_strategy: Callable[[StrategyConfig], object] | None = None,
) -> tuple[list[dict[str, Any]], list[ParamSet | None], list[PairstackError | None]]:
    """The grid's override dicts, their resolved, checked sets and, per set, the error that
    makes it invalid (ConfigError, NumericalError; then its set is None), before any actor
    starts. ``train_frac`` itself is checked here (ConfigError). ``first_bars``: the z-score
    must warm up within the first so many bars (a walk-forward's first train part; default:
    all of them). ``build_strategy``: the caller's strategy builder
    (``strategies.make_strategy``; engine/ does not import strategies/), called once per set to
    check its strategy name and params (ConfigError), before the bars are checked."""
    split_index(data.n, train_frac)
    overrides = expand_grid(grid)
    base_params, base_strategy = params or PairParams(), strategy or StrategyConfig()
    sets: list[ParamSet | None] = []
    errors: list[PairstackError | None] = []
    for o in overrides:
        try:
            p, s = resolve_set(o, base_params, base_strategy)
            if build_strategy is not None:
                _check_strategy(build_strategy, o, s)
            check_bars(data.n if first_bars is None else first_bars, p, train_frac)
        except (ConfigError, NumericalError) as exc:
            sets.append(None)
            errors.append(exc)
        else:
            sets.append((p, s))
            errors.append(None)
    return overrides, sets, errors


def assign_chunks(
    sets: Sequence[ParamSet], n_actors: int, chunk_size: int | None = None
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


def parse_walk_forward(spec: str) -> tuple[int, int]:
    """``"TRAIN_BARS:TEST_BARS"`` -> (train, test), positive integers of aligned bars."""
    train, sep, test = spec.partition(":")
    try:
        out = (int(train), int(test))
    except ValueError:
        out = (0, 0)
    if not sep or out[0] < 2 or out[1] < 2:
        raise ConfigError(
            f"--walk-forward {spec!r}: expected TRAIN_BARS:TEST_BARS, two integers >= 2 "
            "(e.g. 10080:1440: a week of 1m bars to choose, the next day to trade)"
        )
    return out


def walk_windows(n: int, train: int, test: int) -> list[tuple[int, int, int]]:
    """Rolling walk-forward windows over ``n`` aligned bars: (train_lo, test_lo, test_hi) with
    train bars [train_lo, test_lo) of length ``train`` and test bars [test_lo, test_hi) of
    length ``test`` (the last may be shorter, at least 2 bars); each window starts ``test``
    bars after the one before, so the test parts tile the bars after the first train part.
    ConfigError when not even one window fits."""
    windows = []
    lo = 0
    while lo + train + 2 <= n:
        windows.append((lo, lo + train, min(lo + train + test, n)))
        lo += test
    if not windows:
        raise ConfigError(
            f"--walk-forward {train}:{test}: {n} aligned bars hold no window (train {train} + "
            "at least 2 test bars); shorten the windows or widen the range"
        )
    return windows


def best_set(stats: Sequence[Mapping[str, Any] | None], key: str = "sharpe") -> int | None:
    """Index of the stats with the highest finite ``key`` among runs that are not ruined
    (None entries are invalid sets); the first on ties; None when none qualifies."""
    best, best_value = None, -math.inf
    for j, s in enumerate(stats):
        if s is None or s.get("ruined"):
            continue
        value = s.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and value > best_value:
            best, best_value = j, value
    return best
