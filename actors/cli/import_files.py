"""``pairstack import FILE... --store DIR``: Binance public-data files into the store."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="aggTrades, klines (1s, or any Binance interval 1m ... 1d) or "
                             "fundingRate files, .csv or .zip")
    parser.add_argument("--store", required=True, metavar="DIR", help="store directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from engine.importer import import_files
    from engine.store import Store

    report = import_files(args.files, Store(args.store), progress=not args.quiet)
    print("\n".join(report.lines()))
    return 0
