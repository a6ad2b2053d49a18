"""``pairstack status [--json]``: the status of a running engine, asked from its Hub."""

from __future__ import annotations

import argparse
import json
import logging
import os

from engine.errors import PairstackError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: the one `pairstack run --config FILE` recorded for"
        " --config, else RAY_ADDRESS, else the last engine started on this machine, else auto)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="the engine's YAML config: its store holds the address `pairstack run` recorded",
    )
    parser.add_argument("--namespace", default=None, help="Ray namespace (default: pairstack)")
    parser.add_argument("--hub", default=None, help="Hub actor name (default: pairstack-hub)")


def format_status(status: dict) -> str:
    """Human-readable lines for the status object."""
    lines = []
    for i, f in enumerate(status["feeds"]):
        state = "up" if f["connected"] else "DOWN"
        rejected = sum(f["rejected"].values())
        lines.append(
            f"feed {i} [{state}] {len(f['symbols'])} symbols  {f['ticks_per_s']:.1f} ticks/s"
            f"  ticks {f['ticks']}  rejected {rejected}  backfilled {f['gaps_backfilled']}"
            f"  late {f['late_ticks']}  reconnects {f['reconnects']}"
        )
    for p in status["pairs"]:
        beta = "nan" if p["beta"] is None else f"{p['beta']:.4f}"
        z = "nan" if p["z"] is None else f"{p['z']:+.3f}"
        lines.append(
            f"pair {p['pair']:<24} last bar {p['last_bar']}  beta {beta}  z {z}"
            f"  position {p['position']:+d}"
        )
    lat = status["latency_ms"]
    if lat["p50"] is None:
        lines.append("latency: no pair steps in the last 60 s")
    else:
        lines.append(
            f"latency ms: p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
        )
    return "\n".join(lines)


def _record(args: argparse.Namespace) -> dict:
    """Where to look (address, hub, namespace) unless --address says: the record in the store
    of --config (required to exist), else RAY_ADDRESS, else the user's last recorded engine."""
    from actors.engine import read_engine_record, record_paths

    if args.address:
        return {}
    if args.config:
        from engine.config import load_config

        store = load_config(args.config).store.path
        path = record_paths(store)[0]
        record = read_engine_record(path)
        if record is None:
            raise PairstackError(
                f"no running engine recorded in {path} (start one with"
                f" `pairstack run --config {args.config}`)"
            )
        return record
    if os.environ.get("RAY_ADDRESS"):
        return {"address": os.environ["RAY_ADDRESS"]}
    return read_engine_record(record_paths(".")[1]) or {}


def main(args: argparse.Namespace) -> int:
    import ray

    from actors.hub import HUB_NAME, NAMESPACE

    record = _record(args)
    namespace = args.namespace or record.get("namespace") or NAMESPACE
    hub_name = args.hub or record.get("hub") or HUB_NAME
    address = args.address or record.get("address") or "auto"
    try:
        ray.init(
            address=address,
            namespace=namespace,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except ConnectionError as exc:
        raise PairstackError(
            f"no running engine found at Ray address {address!r} ({exc});"
            " start one with `pairstack run --config FILE`"
        ) from None
    try:
        try:
            hub = ray.get_actor(hub_name, namespace=namespace)
        except ValueError:
            raise PairstackError(
                f"the Ray cluster at {address!r} runs no pairstack engine"
                f" (no actor {hub_name!r} in namespace {namespace!r})"
            ) from None
        status = ray.get(hub.status.remote(), timeout=30)
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps(status, allow_nan=False))
    else:
        print(format_status(status))
    return 0
