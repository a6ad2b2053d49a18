"""``pairstack screen``: every pair of the store's symbols tested for cointegration.

``--store DIR [--timeframe 5m] [--start ISO] [--end ISO] [--symbols SYM ...]
[--min-quote-volume USDT] [--top N] [--out FILE.parquet|.csv] [--config-out FILE.yaml]
[--config-top N] [--config FILE] [--actors N]``: reads the closes of one timeframe from the
store, chooses the symbols (``engine.screen.choose_universe``), tests every pair in both orders
(``engine.screen``; on Ray actors for many pairs, ``actors.screen``), prints the best rows and
the symbols left out, writes the table (``--out``) and keeps it in the store
(``<store>/screens/``). ``--config-out`` writes a pairs config of the ``--config-top`` best rows
(``--top`` chooses symbols, not rows), with the feed, analytics and strategy of ``--config``
when given; the ``analytics.max_carry`` of ``--config`` (default auto) limits the carry of a
symbol's last close. Bad input exits 2 with the reason (the dispatcher prints PairstackError).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from actors.cli.options import add_config_option
from engine.config import Config
from engine.errors import ConfigError
from engine.schemas import TIMEFRAME_MS

OUT_FORMATS = (".parquet", ".csv")
#: rows printed
SHOWN = 20

EPILOG = """\
Symbols: without --symbols every symbol with bars of the timeframe (or finer ones to build them
from) in the store. A symbol is left out (and listed) when it has no bars in the window or fewer
than --min-bars, when its first bar leaves less than 80% of the window after it (listed late:
it would cut everyone's history), when its median daily quote volume (USDT, over the UTC
days it has bars) is below --min-quote-volume, or when it is not among the --top N by that
volume. Closes are aligned on
the union of bar times from where all kept symbols have traded, the last close carried forward
at most analytics.max_carry bars of --config (default auto); a time where a symbol's close is
older is dropped.

Rows: y, x, stat, pvalue (Engle-Granger, statsmodels' coint figures; both orders tested, the
lower p-value kept), qvalue (Benjamini-Hochberg over all pairs), beta (OLS hedge of log
prices), half_life (bars, of the spread y - beta x - alpha), corr (of log returns), n (bars);
sorted by p-value.

Workers: fewer than 2,000 pairs run in this process; more run on Ray actors, one per CPU of
the cluster (RAY_ADDRESS or a local one) unless --actors N says how many; --actors 0 never
uses Ray."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--store", required=True, metavar="DIR", help="store directory")
    parser.add_argument(
        "--timeframe",
        choices=tuple(TIMEFRAME_MS),
        default="5m",
        help="bars to screen; bars not stored in it are built from finer stored ones, e.g. 4h "
        "from 1m (default 5m)",
    )
    parser.add_argument("--start", metavar="ISO", help="first bar time (inclusive)")
    parser.add_argument("--end", metavar="ISO", help="end time (exclusive)")
    parser.add_argument(
        "--symbols", nargs="+", metavar="SYM", help="symbols to screen (default: all in the store)"
    )
    parser.add_argument(
        "--min-quote-volume",
        type=float,
        metavar="USDT",
        help="leave out symbols whose median daily quote volume is below this",
    )
    parser.add_argument(
        "--top", type=int, metavar="N", help="screen only the N symbols of highest quote volume"
    )
    parser.add_argument(
        "--min-bars", type=int, default=100, metavar="N", help="fewest bars a symbol needs (100)"
    )
    parser.add_argument("--out", metavar="FILE", help="write every row (.parquet or .csv)")
    parser.add_argument(
        "--config-out", metavar="FILE.yaml", help="write a pairs config of the best rows"
    )
    parser.add_argument(
        "--config-top",
        type=int,
        default=10,
        metavar="N",
        help="pairs in the --config-out config: the N best rows (default 10)",
    )
    add_config_option(
        parser,
        required=False,
        help="its analytics.max_carry limits how long a symbol's last close is carried; also the "
        "base of the --config-out config (feed, analytics, strategy, store; default: "
        "feed.source binance and this --store)",
    )
    parser.add_argument(
        "--actors",
        type=int,
        metavar="N",
        help="Ray actors (default: one per CPU when there are 2,000 pairs or more; 0: no Ray)",
    )


def _check_args(args: argparse.Namespace) -> None:
    if args.out and Path(args.out).suffix.lower() not in OUT_FORMATS:
        raise ConfigError(f"--out {args.out}: expected a file ending in {' or '.join(OUT_FORMATS)}")
    if args.config_out and Path(args.config_out).suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"--config-out {args.config_out}: expected a file ending in .yaml")
    checks = [
        ("--top", args.top, 2, "at least 2 symbols"),
        ("--config-top", args.config_top, 1, "at least 1 pair"),
        ("--min-bars", args.min_bars, 10, "at least 10 bars (the test needs them)"),
        ("--actors", args.actors, 0, "0 (no Ray) or more actors"),
    ]
    for flag, value, least, what in checks:
        if value is not None and value < least:
            raise ConfigError(f"{flag} {value}: expected {what}")
    if args.min_quote_volume is not None and not args.min_quote_volume >= 0.0:
        raise ConfigError(f"--min-quote-volume {args.min_quote_volume}: expected USDT >= 0")
    if not Path(args.store).is_dir():
        raise ConfigError(f"--store {args.store}: no such directory; give the store of your data")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def table_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Rows as aligned text columns."""
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(args: argparse.Namespace, config: Config | None) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from actors.screen import ScreenRunner
    from engine.screen import COLUMNS, config_for, load_bars, save_screen, screen_bars

    _check_args(args)
    base = config
    bars = load_bars(args.store, args.timeframe, args.symbols, args.start, args.end)
    if not bars:
        raise ConfigError(
            f"--store {args.store}: no {args.timeframe} bars stored; import or download some, "
            "or choose another --timeframe"
        )
    runner = ScreenRunner(args.actors, base.ray.address if base is not None else None)
    try:
        result = screen_bars(
            bars,
            args.timeframe,
            min_bars=args.min_bars,
            min_quote_volume=args.min_quote_volume,
            top=args.top,
            runner=runner,
            window=(args.start, args.end),
            max_carry=base.analytics.max_carry if base is not None else "auto",
        )
    finally:
        runner.close()
    table = result.table
    saved = save_screen(args.store, result)
    if args.out:
        if args.out.lower().endswith(".csv"):
            pacsv.write_csv(table, args.out)
        else:
            pq.write_table(table, args.out)
    if args.config_out:
        text = config_for(table, args.config_top, base, timeframe=args.timeframe, store=args.store)
        Path(args.config_out).write_text(text)
    p = result.params
    where = f"on {runner.workers} Ray actors" if runner.workers else "in this process"
    print(
        f"{len(p['symbols'])} symbols, {p['pairs']} pairs, {p['bars']} {args.timeframe} bars "
        f"each ({where}); {p['carried_bars']} carried, {p['dropped_bars']} dropped (max_carry "
        f"{p['max_carry']}); saved {saved}"
    )
    print(table_text(table.slice(0, SHOWN).to_pylist(), COLUMNS))
    if result.universe.excluded:
        print(f"left out ({len(result.universe.excluded)}):")
        for symbol, reason in result.universe.excluded.items():
            print(f"  {symbol}: {reason}")
    return 0
