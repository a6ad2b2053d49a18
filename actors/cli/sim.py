"""``pairstack sim``: serve the local exchange simulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from engine.config import SimulatorConfig, parse_simulator
from engine.simulator.server import DEFAULT_SYMBOLS, Simulator

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sim`` verb's arguments."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    parser.add_argument("--symbols", nargs="+", default=list(DEFAULT_SYMBOLS), metavar="SYM",
                        help="symbols to simulate (default %(default)s)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="mean aggregate trades per second per symbol (default 5)")  # fmt: skip
    parser.add_argument("--history-days", type=float, default=30.0, metavar="N",
                        help="days of market before the start that REST and the public-data "
                             "archive (/data/futures/um/...) serve (default 30)")  # fmt: skip
    faults = parser.add_argument_group("fault injection (all off by default)")
    faults.add_argument("--disconnect-every", type=float, metavar="SECONDS",
                        help="close every websocket after this many seconds")  # fmt: skip
    faults.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        help="fraction of trades left off the stream (REST still has them)",
    )
    faults.add_argument(
        "--corrupt-rate",
        type=float,
        default=0.0,
        help="fraction of trades sent as frames a strict client rejects",
    )
    faults.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.0,
        help="fraction of trades followed by a re-sent earlier frame",
    )
    faults.add_argument(
        "--silent-symbol", metavar="SYM", help="this symbol's streams go quiet until resubscribed"
    )
    faults.add_argument(
        "--silent-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds after subscribing that --silent-symbol goes quiet",
    )
    faults.add_argument(
        "--silent-until",
        choices=("resubscribe", "reconnect"),
        default="resubscribe",
        help="what revives --silent-symbol: a new SUBSCRIBE, or only a new connection",
    )
    faults.add_argument(
        "--slow-consumer",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause sending this long every 5 s on every connection",
    )
    faults.add_argument(
        "--rest-429-every",
        type=int,
        default=0,
        metavar="N",
        help="answer every N-th REST request with 429 + Retry-After",
    )
    parser.add_argument("--ping-interval", type=float, default=180.0, metavar="SECONDS",
                        help="server ping interval (default 180)")  # fmt: skip
    parser.add_argument("--max-lifetime", type=float, default=86_400.0, metavar="SECONDS",
                        help="close connections after this long (default 24 h)")  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> tuple[SimulatorConfig, tuple[str, ...]]:
    """(SimulatorConfig, symbols) from parsed ``sim`` arguments (ConfigError when a value is
    bad, naming the key)."""
    faults = {
        "disconnect_every_s": args.disconnect_every,
        "drop_rate": args.drop_rate,
        "corrupt_rate": args.corrupt_rate,
        "duplicate_rate": args.duplicate_rate,
        "silent_symbol": args.silent_symbol.upper() if args.silent_symbol else None,
        "silent_after_s": args.silent_after,
        "silent_until": args.silent_until,
        "slow_consumer": args.slow_consumer,
        "rest_429_every": args.rest_429_every,
    }
    config = parse_simulator({
        "seed": args.seed,
        "rate": args.rate,
        "host": args.host,
        "port": args.port,
        "faults": faults,
        "ping_interval_s": args.ping_interval,
        "max_lifetime_s": args.max_lifetime,
        "history_days": args.history_days,
    }, source="pairstack sim")  # fmt: skip
    return config, tuple(s.upper() for s in args.symbols)


async def serve_until_stopped(config: SimulatorConfig, symbols: tuple[str, ...]) -> None:
    """Run a simulator, print its URLs, and stop cleanly on SIGINT/SIGTERM."""

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Simulator(config, symbols) as sim:
        sys.stdout.write(
            f"pairstack sim: websocket {sim.url_ws}/stream?streams=<sym>@aggTrade/...\n"
            f"pairstack sim: REST      {sim.url_rest}/fapi/v1/...\n"
            f"pairstack sim: symbols {' '.join(sim.symbols)}; {config.history_days:g} days of "
            f"history (REST, {sim.url_rest}/data/futures/um/...); Ctrl-C to stop\n"
        )
        sys.stdout.flush()
        await stop.wait()


def main(args: argparse.Namespace) -> int:
    """Run the ``sim`` verb; exit code 0 after a clean stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve_until_stopped(*settings_from_args(args)))
    return 0
