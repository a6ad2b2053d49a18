"""``pairstack backtest``: the strategy over stored bars, a portfolio of pairs, or a sweep.

Single run: ``--store DIR --pair Y/X [--timeframe TF] [--start ISO] [--end ISO] [--config FILE]
[--json OUT]`` runs ``engine.backtest.run`` in-process, prints a stats table and, with ``--json``,
writes ``{"stats", "trades", "equity": {"ts", "equity"}}`` (docs/semantics.md "CLI") plus what
reproduces it: ``"config"`` (analytics, strategy and costs as used), ``"data"`` (store, pair,
timeframe, first and last bar, bars) and ``"version"`` (package version, git commit or null).
``--json -`` writes the document to stdout and the table to stderr. Without ``--config`` the
documented defaults of ``analytics`` and ``strategy`` apply; the timeframe defaults to
``analytics.timeframe``, ``--store`` to the config's ``store.path``.

Portfolio: ``--pair`` repeated trades every pair on one capital
(``engine.backtest_portfolio``): a table of per-pair and total stats and the correlation of the
pairs' per-bar PnL; ``--json`` then also holds ``"pairs"`` and ``"correlation"``.

Sweep: ``--sweep KEY=V1,V2,...`` (repeatable; the grid is the cartesian product) runs every set
over ``--actors N`` BacktestActors (Ray: ``ray.address`` of the config, ``RAY_ADDRESS``, or a
local cluster), shows a progress bar on a terminal, prints one row per set (an invalid set
shows its ``error``; ruined sets say ``ruined``; ``--sort STAT`` orders rows best first,
ruined and invalid rows last) and with ``--out FILE`` writes the whole table (``.csv`` or
``.parquet``). ``--train-frac F`` reports in-sample (``is_*``) and out-of-sample (``oos_*``)
stats of one train/test split by time; ``--walk-forward TRAIN:TEST`` rolls windows of TRAIN
bars that choose the best set (by ``--sort``, default sharpe) and the next TEST bars that trade
it, one row per window and the compounded out-of-sample return (see ``actors.backtest``); the
sweep grammar is ``engine.sweep``'s.
Bad input exits 2 with the reason (the dispatcher prints PairstackError).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from actors.ray_init import init_ray
from engine.config import Config
from engine.errors import ConfigError
from engine.schemas import TIMEFRAME_MS

#: stats shown in the printed sweep table (the file gets all of them)
SHOWN_STATS = (
    "total_return",
    "sharpe",
    "max_drawdown",
    "trades",
    "win_rate",
    "fees_paid",
    "ruined",
)
#: stats a single run's table marks when the sample is too small to annualise
ANNUALISED = ("sharpe", "sortino")
OUT_FORMATS = (".csv", ".parquet")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="DIR", help="store directory (default: store.path of --config)"
    )
    parser.add_argument(
        "--pair",
        required=True,
        action="append",
        metavar="Y/X",
        help="pair, e.g. ETHUSDT/BTCUSDT; repeat for a portfolio on one capital",
    )
    parser.add_argument(
        "--timeframe",
        choices=tuple(TIMEFRAME_MS),
        default=None,
        help="bar timeframe; bars not stored in it are built from finer stored ones, e.g. 1h from "
        "1m (default: analytics.timeframe of the config)",
    )
    parser.add_argument("--start", metavar="ISO", help="first bar time (inclusive)")
    parser.add_argument("--end", metavar="ISO", help="end time (exclusive)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (analytics + strategy; default: the documented defaults)",
    )
    parser.add_argument(
        "--json",
        metavar="OUT",
        help="write stats, trades, equity, config, data range and version as JSON ('-': stdout)",
    )
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
        help="sweep: one train/test split by time, the first F of the bars train",
    )
    parser.add_argument(
        "--walk-forward",
        metavar="TRAIN:TEST",
        help="sweep: rolling windows of TRAIN aligned bars to pick the best set (--sort stat, "
        "default sharpe) and the next TEST bars to trade it",
    )
    parser.add_argument("--out", metavar="FILE", help="sweep: write the table (.csv/.parquet)")
    parser.add_argument(
        "--sort",
        metavar="STAT",
        help="sweep: order rows by STAT, best (largest) first; ruined and invalid rows last",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_args(args: argparse.Namespace) -> None:
    if len(set(args.pair)) != len(args.pair):
        raise ConfigError(f"--pair: a pair is given twice ({args.pair}); give each pair once")
    if args.sweep:
        if len(args.pair) > 1:
            raise ConfigError("--sweep runs one pair; give one --pair (several: a portfolio run)")
        if args.json:
            raise ConfigError("--json writes a single backtest; with --sweep use --out FILE")
        if args.walk_forward and args.train_frac is not None:
            raise ConfigError("--walk-forward and --train-frac: give one of them")
        if args.actors < 1:
            raise ConfigError(f"--actors {args.actors}: expected a positive integer")
        if args.train_frac is not None and not 0.0 < args.train_frac < 1.0:
            raise ConfigError(
                f"--train-frac {args.train_frac}: expected a fraction strictly between 0 and 1"
            )
        if args.out and Path(args.out).suffix.lower() not in OUT_FORMATS:
            raise ConfigError(f"--out {args.out}: expected a file ending in {OUT_FORMATS}")
    else:
        given = [
            f
            for f, v in (
                ("--train-frac", args.train_frac),
                ("--out", args.out),
                ("--sort", args.sort),
                ("--walk-forward", args.walk_forward),
            )
            if v
        ]
        if given:
            raise ConfigError(f"{' and '.join(given)} only apply to a sweep (--sweep KEY=...)")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def stats_table(stats: dict[str, Any]) -> str:
    """Two aligned columns: stat name and value; Sharpe and Sortino carry the small-sample
    warning beside them."""
    width = max(len(k) for k in stats)
    lines = []
    for k, v in stats.items():
        note = f"  ({stats['warning']})" if k in ANNUALISED and stats.get("warning") else ""
        lines.append(f"{k.ljust(width)}  {_fmt(v)}{note}")
    return "\n".join(lines)


def code_version() -> dict[str, str | None]:
    """The package version and the git commit of the source tree (None when git or the
    repository is absent)."""
    try:
        version: str | None = metadata.version("pairstack")
    except metadata.PackageNotFoundError:
        version = None
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        commit = proc.stdout.strip() if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": version, "commit": commit or None}


def _data_range(store: str, data: Any) -> dict[str, Any]:
    from engine.backtest_stats import iso_ms

    ts = data.aligned.ts
    return {
        "store": str(Path(store).resolve()),
        "pair": data.pair,
        "timeframe": data.timeframe,
        "first_bar": iso_ms(ts[0]),
        "last_bar": iso_ms(ts[-1]),
        "bars": data.n,
        "dropped_partial_first_bar": list(data.dropped),
    }


def _emit(args: argparse.Namespace, doc: dict[str, Any], table: str) -> None:
    """The table on stdout (stderr when the JSON goes to stdout), the JSON where asked."""
    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


def _sweep_table(table: Any, grid: dict[str, Any], args: argparse.Namespace) -> str:
    import pandas as pd

    prefixes = ("is_", "oos_") if args.train_frac is not None else ("",)
    shown = list(grid) + [p + s for p in prefixes for s in SHOWN_STATS]
    if table["error"].notna().any():
        shown.append("error")
    view = table.reindex(columns=shown)
    if args.sort:
        key = prefixes[-1] + args.sort if args.sort not in table else args.sort
        if key not in table:
            raise ConfigError(f"--sort {args.sort}: expected a stat of the table, e.g. sharpe")
        ruined = pd.Series(False, index=table.index)
        for p in prefixes:
            if p + "ruined" in table:
                ruined |= table[p + "ruined"].eq(True)
        rank = ruined.astype(int).where(table["error"].isna(), 2)  # valid, ruined, invalid
        values = pd.to_numeric(table[key], errors="coerce")
        order = pd.DataFrame({"rank": rank, "v": values}).sort_values(
            ["rank", "v"], ascending=[True, False], na_position="last", kind="stable"
        )
        view = view.loc[order.index]
    lines = [view.to_string(index=False, float_format=_fmt)]
    warnings = {w for p in prefixes for w in table.get(p + "warning", pd.Series()).dropna()}
    lines += [f"warning: {w}" for w in sorted(warnings)]
    return "\n".join(lines)


def main(args: argparse.Namespace, config: Config | None) -> int:
    from actors.backtest import sweep, walk_forward
    from engine.backtest import Costs, run
    from engine.backtest_data import PairData
    from engine.backtest_portfolio import portfolio_json, run_portfolio
    from engine.config import AnalyticsConfig, StrategyConfig
    from engine.pairbook import parse_pair
    from engine.pairstep import PairParams
    from engine.sweep import parse_sweep, parse_walk_forward
    from strategies import make_strategy

    _check_args(args)
    grid = parse_sweep(args.sweep) if args.sweep else None
    store = args.store or (config.store.path if config is not None else None)
    if store is None:
        raise ConfigError(
            "no store: expected --store DIR, or --config FILE whose store.path names one"
        )
    analytics = config.analytics if config is not None else AnalyticsConfig()
    strategy = config.strategy if config is not None else StrategyConfig()
    params = PairParams.from_config(analytics)
    timeframe = args.timeframe or analytics.timeframe
    datas = [
        PairData.from_store(
            store, *parse_pair(p), timeframe, args.start, args.end, max_carry=analytics.max_carry
        )
        for p in args.pair
    ]
    costs = Costs.from_config(strategy)
    used = {
        "analytics": {**msgspec.to_builtins(analytics), "timeframe": timeframe},
        "strategy": msgspec.to_builtins(strategy),
        "costs": dataclasses.asdict(costs),
    }
    provenance = {"config": used, "version": code_version()}

    if grid is None and len(datas) == 1:
        data = datas[0]
        result = run(data, params, make_strategy(strategy), costs)
        doc = {**result.to_json_dict(), **provenance, "data": _data_range(store, data)}
        text = f"{data.pair} {timeframe}: {data.n} bars\n" + stats_table(result.stats)
        _emit(args, doc, text)
        return 0
    if grid is None:
        import pandas as pd

        folio = run_portfolio([(d, make_strategy(strategy)) for d in datas], params, costs)
        doc = {
            **portfolio_json(folio),
            **provenance,
            "data": [_data_range(store, d) for d in datas],
        }
        frame = pd.DataFrame(
            {**{p: r.stats for p, r in folio.pairs.items()}, "total": folio.stats}
        ).drop(index="pairs", errors="ignore")
        names = list(folio.pairs)
        corr = pd.DataFrame(folio.correlation, index=names, columns=names)
        text = (
            f"portfolio of {len(datas)} pairs, {timeframe}: {folio.equity.ts.size} bar times\n"
            + frame.to_string(float_format=_fmt)
            + "\ncorrelation of per-bar PnL\n"
            + corr.to_string(float_format=_fmt)
        )
        _emit(args, doc, text)
        return 0

    import ray

    data = datas[0]
    windows = parse_walk_forward(args.walk_forward) if args.walk_forward else None
    owns_ray = init_ray(config.ray.address if config is not None else None, log_to_driver=False)
    try:
        if windows is not None:
            table, summary = walk_forward(
                data,
                grid,
                *windows,
                args.actors,
                params=params,
                strategy=strategy,
                key=args.sort or "sharpe",
                progress=not args.quiet,
            )
        else:
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
    if windows is not None:
        shown = ["window", "test_first", *grid, f"is_{args.sort or 'sharpe'}"]
        shown += ["oos_" + s for s in SHOWN_STATS]
        print(f"{data.pair} {timeframe}: {data.n} bars, walk-forward {args.walk_forward}")
        view = table.reindex(columns=shown)
        print(view.to_string(index=False, float_format=_fmt))
        print("  ".join(f"{k} {_fmt(v)}" for k, v in summary.items()))
        return 0
    print(f"{data.pair} {timeframe}: {data.n} bars, {len(table)} parameter sets")
    print(_sweep_table(table, grid, args))
    return 0
