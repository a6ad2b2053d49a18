"""``pairstack run --config FILE [--duration S]``: the engine without the UI.

The config is loaded and validated before Ray starts (a bad file exits 2 with the file, key path
and reason). Runs until the duration passes, SIGINT or SIGTERM, then stops cleanly: feeds stop,
stores flush, actors end. Logs a one-line status every few seconds.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from actors.cli.options import add_config_option
from engine.config import Config
from engine.errors import ConfigError

log = logging.getLogger("pairstack.run")

#: seconds between two one-line status logs
STATUS_EVERY_S = 5.0


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser, required=True, help="YAML config file")
    parser.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )


def one_line(status: dict) -> str:
    """A one-line summary of the status object: a feed is up only when healthy, a pair
    stepping only when its last bar is recent (not ``stale``); symbols whose ids went
    backwards are named."""
    feeds = status["feeds"]
    up = sum(f.get("healthy", f["connected"]) for f in feeds)
    rate = sum(f["ticks_per_s"] for f in feeds)
    ticks = sum(f["ticks"] for f in feeds)
    stepped = sum(p["last_bar"] is not None and not p.get("stale") for p in status["pairs"])
    open_pos = sum(p["position"] != 0 for p in status["pairs"])
    lat = status["latency_ms"]
    lat_s = "-" if lat["p50"] is None else f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} ms"
    gaps = [g for f in feeds for g in f.get("open_gap_list", [])]
    gaps_s = ""
    if gaps:  # trades REST could not refill: never hidden (first three named)
        named = [f"{g['symbol']} {g['first']}..{g['last']} ({g['why']})" for g in gaps[:3]]
        gaps_s = f"; open gaps {len(gaps)}: " + ", ".join(named) + (", ..." * (len(gaps) > 3))
    behind = [(s, b) for f in feeds for s, b in f.get("ids_behind", {}).items()]
    if behind:  # every trade rejected: the store was written from another source
        named = [f"{s} stream at {b['stream']}, store at {b['store']}" for s, b in behind[:3]]
        gaps_s += "; ids went backwards: " + ", ".join(named) + (", ..." * (len(behind) > 3))
    return (
        f"feeds {up}/{len(feeds)} up, {rate:.1f} ticks/s, {ticks} ticks;"
        f" pairs {stepped}/{len(status['pairs'])} stepping, {open_pos} open; latency {lat_s}"
        + gaps_s
    )


def main(args: argparse.Namespace, config: Config) -> int:
    """Run the engine of ``config`` (loaded and validated before Ray starts)."""
    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration {args.duration}: expected a positive number of seconds")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import ray

    from actors.engine import clear_engine_record, record_engine, start_engine
    from actors.hub import HUB_NAME, NAMESPACE

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    handle = start_engine(config)
    address = ray.get_runtime_context().gcs_address
    record_engine(config.store.path, address, HUB_NAME, NAMESPACE)
    log.info(
        "engine running on Ray at %s (pairstack status --config %s, or --address %s)",
        address,
        args.config,
        address,
    )
    # after Ray started: its driver installs handlers of its own, ours must win
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set():
            wait = STATUS_EVERY_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            if stop.wait(wait):
                break
            try:
                log.info("%s", one_line(handle.status()))
            except (ray.exceptions.RayError, TimeoutError) as exc:  # keep running; say so
                log.warning("status unavailable: %s", exc)
    finally:
        handle.stop()
        clear_engine_record(config.store.path)
        for s, h in previous.items():
            signal.signal(s, h)
    log.info("stopped cleanly; store flushed at %s", config.store.path)
    return 0
