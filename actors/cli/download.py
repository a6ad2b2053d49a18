"""``pairstack download``: history from Binance's public-data archive (and REST) into the store."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from engine.binance import BINANCE_PUBLIC_DATA, BINANCE_REST, KLINE_INTERVALS, check_symbol
from engine.errors import DataError

DATA_CHOICES = ("klines", "funding", "trades")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a UTC date YYYY-MM-DD, found {text!r}") from None


def _count(least: int) -> object:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, found {text!r}")
        return value

    return parse


def _listed(allowed: tuple[str, ...]) -> object:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(allowed)}, found {text!r}")
        return items

    return parse


def _symbol(text: str) -> str:
    try:
        return check_symbol(text.upper())
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``download`` verb's arguments."""
    parser.description = (
        "Download history into the store: complete months from Binance's monthly public-data "
        "archive, the other days from the daily one, today's klines and this month's funding "
        "rates from REST. Every .CHECKSUM is verified; files Binance does not have (before a "
        "listing, not yet published) are reported and skipped. Incremental: files already "
        "imported are not fetched again, and an interrupted run resumes where it stopped.")
    parser.add_argument("--store", required=True, metavar="DIR", help="store directory")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--symbols", nargs="+", type=_symbol, metavar="SYM",
                       help="symbols to download, e.g. BTCUSDT ETHUSDT")
    which.add_argument("--top", type=_count(1), metavar="N",
                       help="the N USDT perpetuals with status TRADING and the highest 24 h "
                            "quote volume (from REST exchangeInfo and ticker/24hr)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--days", type=_count(0), metavar="N",
                      help="from 00:00 UTC N days before today up to now (default 30)")
    when.add_argument("--start", type=_date, metavar="DATE",
                      help="first UTC day, YYYY-MM-DD (instead of --days)")
    parser.add_argument("--end", type=_date, metavar="DATE",
                        help="last UTC day, inclusive, with --start (default: today, up to now)")
    parser.add_argument("--data", type=_listed(DATA_CHOICES), default=("klines", "funding"),
                        metavar="KINDS",
                        help="comma-separated: klines (bars of each --timeframes interval), "
                             "funding (funding rates), trades (aggregate trades: ticks plus "
                             "1s/1m/5m bars; large) (default klines,funding)")
    parser.add_argument("--timeframes", type=_listed(KLINE_INTERVALS), default=("1m", "5m"),
                        metavar="TFS",
                        help=f"kline intervals, comma-separated, of {','.join(KLINE_INTERVALS)} "
                             "(default 1m,5m)")
    parser.add_argument("--base-url", default=BINANCE_PUBLIC_DATA, metavar="URL",
                        help="public-data archive host (default %(default)s)")
    parser.add_argument("--rest-url", default=BINANCE_REST, metavar="URL",
                        help="USD-M futures REST base (default %(default)s)")
    parser.add_argument("--jobs", type=_count(1), default=4, metavar="N",
                        help="files downloaded at once (default 4)")


def main(args: argparse.Namespace) -> int:
    from engine.download import date_range, download
    from engine.store import Store

    if args.end is not None and args.start is None:
        print("pairstack download: error: --end needs --start (with --days the range ends now)",
              file=sys.stderr)
        return 2
    now_ms = time.time_ns() // 10**6
    first, last = date_range(args.days, args.start, args.end, now_ms)
    try:
        report = download(Store(args.store), args.symbols, args.top, first, last, data=args.data,
                          timeframes=args.timeframes, base_url=args.base_url,
                          rest_url=args.rest_url, jobs=args.jobs, now_ms=now_ms)
    except KeyboardInterrupt:
        print("pairstack download: interrupted; run it again to resume", file=sys.stderr)
        return 130
    print(report.table())
    return 0
