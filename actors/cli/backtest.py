"""``pairstack backtest``: the strategy over stored bars, or a parameter sweep over Ray.

Single run: ``--store DIR --pair Y/X [--timeframe TF] [--start ISO] [--end ISO] [--config FILE]
[--json OUT]`` runs ``engine.backtest.run`` in-process, prints a stats table and, with
``--json``, writes ``{"stats", "trades", "equity": {"ts", "equity"}}`` (DESIGN.md "CLI").
Without ``--config`` the DESIGN.md defaults of ``analytics`` and ``strategy`` apply; the
timeframe defaults to ``analytics.timeframe``.

Sweep: ``--sweep KEY=V1,V2,...`` (repeatable; the grid is the cartesian product) runs every set
over ``--actors N`` BacktestActors (Ray: ``ray.address`` of the config, ``RAY_ADDRESS``, or a
local cluster), shows a progress bar, prints one row per set and with ``--out FILE`` writes the
whole table (``.csv`` or ``.parquet``). ``--train-frac F`` reports in-sample (``is_*``) and
out-of-sample (``oos_*``) stats of a walk-forward split (see ``actors.backtest``); the sweep
grammar is ``engine.sweep``'s.
Bad input exits 2 with the reason (the dispatcher prints PairstackError).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from actors.ray_init import init_ray
from engine.config import Config
from engine.errors import ConfigError

#: stats shown in the printed sweep table (the file gets all of them)
SHOWN_STATS = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "fees_paid")
OUT_FORMATS = (".csv", ".parquet")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, metavar="DIR", help="store directory")
    parser.add_argument("--pair", required=True, metavar="Y/X", help="pair, e.g. ETHUSDT/BTCUSDT")
    parser.add_argument(
        "--timeframe",
        choices=("1s", "1m", "5m"),
        default=None,
        help="bar timeframe (default: analytics.timeframe of the config)",
    )
    parser.add_argument("--start", metavar="ISO", help="first bar time (inclusive)")
    parser.add_argument("--end", metavar="ISO", help="end time (exclusive)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (analytics + strategy; default: DESIGN.md defaults)",
    )
    parser.add_argument("--json", metavar="OUT", help="write stats, trades and equity as JSON")
    parser.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2,...",
        help="sweep a parameter over values (repeat; cartesian product)",
    )
    parser.add_argument(
        "--actors", type=int, default=2, metavar="N", help="BacktestActors of a sweep (default 2)"
    )
    parser.add_argument(
        "--train-frac",
        type=float,
        default=None,
        metavar="F",
        help="sweep: walk-forward split, the first F of the bars train",
    )
    parser.add_argument("--out", metavar="FILE", help="sweep: write the table (.csv/.parquet)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_args(args: argparse.Namespace) -> None:
    if args.sweep:
        if args.json:
            raise ConfigError("--json writes a single backtest; with --sweep use --out FILE")
        if args.actors < 1:
            raise ConfigError(f"--actors {args.actors}: expected a positive integer")
        if args.train_frac is not None and not 0.0 < args.train_frac < 1.0:
            raise ConfigError(
                f"--train-frac {args.train_frac}: expected a fraction strictly between 0 and 1"
            )
        if args.out and Path(args.out).suffix.lower() not in OUT_FORMATS:
            raise ConfigError(f"--out {args.out}: expected a file ending in {OUT_FORMATS}")
    else:
        given = [f for f, v in (("--train-frac", args.train_frac), ("--out", args.out)) if v]
        if given:
            raise ConfigError(f"{' and '.join(given)} only apply to a sweep (--sweep KEY=...)")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def stats_table(stats: dict[str, Any]) -> str:
    """Two aligned columns: stat name and value."""
    width = max(len(k) for k in stats)
    return "\n".join(f"{k.ljust(width)}  {_fmt(v)}" for k, v in stats.items())


def main(args: argparse.Namespace, config: Config | None) -> int:
    from actors.backtest import sweep
    from engine.backtest import Costs, run
    from engine.backtest_data import PairData
    from engine.config import AnalyticsConfig, StrategyConfig
    from engine.pairbook import parse_pair
    from engine.pairstep import PairParams
    from engine.sweep import parse_sweep
    from strategies import make_strategy

    _check_args(args)
    grid = parse_sweep(args.sweep) if args.sweep else None
    analytics = config.analytics if config is not None else AnalyticsConfig()
    strategy = config.strategy if config is not None else StrategyConfig()
    params = PairParams.from_config(analytics)
    timeframe = args.timeframe or analytics.timeframe
    data = PairData.from_store(args.store, *parse_pair(args.pair), timeframe, args.start, args.end)

    if grid is None:
        result = run(data, params, make_strategy(strategy), Costs.from_config(strategy))
        print(f"{data.pair} {timeframe}: {data.n} bars")
        print(stats_table(result.stats))
        if args.json:
            Path(args.json).write_text(json.dumps(result.to_json_dict(), indent=1) + "\n")
        return 0

    import ray

    owns_ray = init_ray(config.ray.address if config is not None else None, log_to_driver=False)
    try:
        table = sweep(
            data,
            None,
            grid,
            args.actors,
            params=params,
            strategy=strategy,
            train_frac=args.train_frac,
            progress=not args.quiet,
        )
    finally:
        if owns_ray:
            ray.shutdown()
    if args.out:
        if args.out.lower().endswith(".csv"):
            table.to_csv(args.out, index=False)
        else:
            table.to_parquet(args.out, index=False)
    prefixes = ("is_", "oos_") if args.train_frac is not None else ("",)
    shown = list(grid) + [p + s for p in prefixes for s in SHOWN_STATS]
    print(f"{data.pair} {timeframe}: {data.n} bars, {len(table)} parameter sets")
    print(table[shown].to_string(index=False, float_format=_fmt))
    return 0
